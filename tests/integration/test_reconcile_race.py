"""Two reconcilers at once on one repository: linear history, rising serials, the same final plans."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pygit2
import pytest

from contract.crypto import SigningKey
from reconciler.drivers.statestore import LocalLocation
from reconciler.reconcile import Reconciler
from tests.integration.test_reconcile_pass import STATE, fleet_files, plans, service_doc
from tests.support.gitrepo import bare_repo, commit_files

pytestmark = pytest.mark.integration

PLUMB = str(Path(sys.executable).with_name("plumb"))
COMMITS = 50


def start_reconciler(repo: Path, key_file: Path, log: Path) -> subprocess.Popen[bytes]:
    """A real `plumb reconcile --watch` process on the bare repository."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                PLUMB,
                "reconcile",
                "--repo",
                str(repo),
                "--watch",
                "--interval",
                "1s",
                "--key-file",
                str(key_file),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def source_commit(repo: pygit2.Repository) -> str | None:
    ref = repo.references.get(STATE)
    if ref is None:
        return None
    tree = ref.peel(pygit2.Commit).tree
    return str(json.loads(tree["status/source.json"].data)["commit"])


def wait_for(predicate: Any, timeout: float, what: str, details: Any = list) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {details()}")
        time.sleep(0.05)


def history(repo: pygit2.Repository) -> list[pygit2.Commit]:
    """The state branch from its first commit to its tip; fails if any commit has two parents."""
    commits = []
    commit: pygit2.Commit | None = repo.references[STATE].peel(pygit2.Commit)
    while commit is not None:
        assert len(commit.parents) <= 1, "state history is not linear"
        commits.append(commit)
        commit = commit.parents[0] if commit.parents else None
    return commits[::-1]


def test_two_reconcilers_fed_fifty_commits(tmp_path: Path) -> None:
    """History stays linear, serials per node never repeat or go back, final plans match one reconciler's."""
    key = SigningKey.generate()
    key_file = tmp_path / "keys" / "reconciler.key"
    key.save(key_file)
    path = tmp_path / "fleet.git"
    repo = bare_repo(path)
    commit_files(repo, "main", fleet_files(apps=4, services=6))
    workers = [start_reconciler(path, key_file, tmp_path / f"reconciler-{i}.log") for i in range(2)]
    try:
        for n in range(COMMITS):
            s = n % 6 + 1
            nodes = [f"app-{(s - 1) % 4 + 1}", f"app-{s % 4 + 1}"]
            commit_files(
                repo, "main", {f"services/svc-{s}.yaml": service_doc(f"svc-{s}", nodes, 8000 + s, f"v{n}")}
            )
            time.sleep(0.02)
        final = str(repo.references["refs/heads/main"].target)
        logs = tmp_path.glob("reconciler-*.log")
        wait_for(
            lambda: source_commit(repo) == final, 60, "the last commit", lambda: [p.read_text() for p in logs]
        )
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=20)
    assert all(w.returncode == 0 for w in workers), [p.read_text() for p in tmp_path.glob("*.log")]

    seen: dict[str, dict[int, str]] = {}
    last_serial: dict[str, int] = {}
    for commit in history(repo):
        for entry in commit.tree["plans"]:
            plan = json.loads(entry.data)
            node, serial = plan["node"], plan["serial"]
            assert serial >= last_serial.get(node, 0), f"{node}: serial went back"
            assert seen.setdefault(node, {}).setdefault(serial, plan["digest"]) == plan["digest"], (
                f"{node}: serial reused"
            )
            last_serial[node] = serial

    single = bare_repo(tmp_path / "single.git")
    (Path(single.path) / "objects" / "info" / "alternates").write_text(str(path / "objects") + "\n")
    single = pygit2.Repository(single.path)
    single.references.create("refs/heads/main", pygit2.Oid(hex=final))
    Reconciler(LocalLocation(Path(single.path)), key=key).reconcile()
    ours, theirs = plans(repo), plans(single)
    assert {n: (p["digest"], p["resources"]) for n, p in ours.items()} == {
        n: (p["digest"], p["resources"]) for n, p in theirs.items()
    }
