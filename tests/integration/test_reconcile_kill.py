"""SIGKILL at random points of real `plumb reconcile --once` processes never leaves a partial state commit."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pygit2
import pytest

from contract.crypto import SigningKey
from contract.documents import resource_digest, resources_digest, verify_document
from tests.integration.test_reconcile_pass import STATE, fleet_files, service_doc
from tests.support.gitrepo import bare_repo, commit_files

pytestmark = pytest.mark.integration

PLUMB = str(Path(sys.executable).with_name("plumb"))
ROUNDS = 30
APPS, SERVICES = 30, 40


def changed(s: int, round_: int) -> str:
    nodes = [f"app-{(s - 1) % APPS + 1}", f"app-{s % APPS + 1}"]
    return service_doc(f"svc-{s}", nodes, 8000 + s, f"r{round_}")


def assert_complete(repo: pygit2.Repository, key: SigningKey, nodes: int) -> None:
    """The state branch, if any, points at a commit whose every plan is whole, signed and consistent."""
    ref = repo.references.get(STATE)
    if ref is None:
        return
    tree = ref.peel(pygit2.Commit).tree
    json.loads(tree["status/source.json"].data)
    entries = list(tree["plans"])
    assert len(entries) == nodes
    for entry in entries:
        plan = json.loads(entry.data)
        verify_document(plan, key.verify_key(), what=entry.name)
        assert plan["digest"] == resources_digest(plan["resources"])
        assert all(r["digest"] == resource_digest(r["kind"], r["spec"]) for r in plan["resources"])


def test_sigkill_during_thirty_reconciles(tmp_path: Path) -> None:
    """Kill each reconciler after a random delay; the state branch is always whole, and a last run converges."""
    key = SigningKey.generate()
    key_file = tmp_path / "keys" / "reconciler.key"
    key.save(key_file)
    path = tmp_path / "fleet.git"
    repo = bare_repo(path)
    commit_files(repo, "main", fleet_files(apps=APPS, services=SERVICES))
    command = [PLUMB, "reconcile", "--repo", str(path), "--once", "--key-file", str(key_file)]
    started = time.monotonic()
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    full_run = time.monotonic() - started  # kills land anywhere from start-up to the ref update
    rng = random.Random(7)
    killed = 0
    for round_ in range(ROUNDS):
        # every fifth commit touches every service, so its state commit is written as a pack
        touched = range(1, SERVICES + 1) if round_ % 5 == 4 else [rng.randint(1, SERVICES)]
        commit_files(repo, "main", {f"services/svc-{s}.yaml": changed(s, round_) for s in touched})
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            process.wait(timeout=rng.uniform(0.0, full_run * 1.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            killed += 1
        assert_complete(repo, key, nodes=APPS + 1)
    assert killed > 0
    assert list((path / "objects" / "pack").glob("*.idx")), "no state commit was written as a pack"
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert_complete(repo, key, nodes=APPS + 1)
    source = json.loads(repo.references[STATE].peel(pygit2.Commit).tree["status/source.json"].data)
    assert source["commit"] == str(repo.references["refs/heads/main"].target)
