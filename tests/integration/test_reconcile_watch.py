"""Watching a local bare repository with watchdog: a push wakes the reconciler, lock files do not."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pygit2
import pytest

from contract.crypto import SigningKey
from reconciler.drivers import watch
from reconciler.drivers.watch import is_ref_change, watching_refs
from tests.integration.test_reconcile_pass import STATE, fleet_files, service_doc
from tests.support.gitrepo import bare_repo, commit_files

pytestmark = pytest.mark.integration

PLUMB = str(Path(sys.executable).with_name("plumb"))
IGNORED = frozenset({"refs/heads/plumb/state"})

# name, path inside the repository, counts as a ref change
PATHS = [
    ("branch", "refs/heads/main", True),
    ("nested report branch", "refs/heads/plumb/reports/web-1", True),
    ("packed-refs", "packed-refs", True),
    ("a ref's lock file", "refs/heads/main.lock", False),
    ("packed-refs lock", "packed-refs.lock", False),
    ("the state branch itself", "refs/heads/plumb/state", False),
    ("an object", "objects/ab/cdef", False),
    ("outside the repository", "../elsewhere/refs/heads/main", False),
]


@pytest.mark.parametrize(("name", "relative", "expected"), PATHS, ids=[p[0] for p in PATHS])
def test_is_ref_change(tmp_path: Path, name: str, relative: str, expected: bool) -> None:
    """Only refs and packed-refs wake the reconciler; locks, objects and its own branch do not."""
    assert is_ref_change(tmp_path, str(tmp_path / relative), ignored=IGNORED) is expected


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_watchdog_sees_loose_and_packed_ref_updates(tmp_path: Path) -> None:
    """A branch update and a rewrite of packed-refs each set the wake event."""
    repo = bare_repo(tmp_path / "fleet.git")
    commit_files(repo, "main", {"a.yaml": "a: 1\n"})
    wake = threading.Event()
    with watching_refs(Path(repo.path), wake, ignored=IGNORED):
        commit_files(repo, "main", {"a.yaml": "a: 2\n"})
        wait_for(wake.is_set, 10, "a loose ref update")
        wake.clear()
        subprocess.run(["git", "-C", repo.path, "pack-refs", "--all"], check=True)
        wait_for(wake.is_set, 10, "packed-refs to be rewritten")


def test_a_push_is_reconciled_without_waiting_for_the_interval(tmp_path: Path) -> None:
    """With an interval of an hour, only the watcher can make the reconciler see a new commit."""
    key_file = tmp_path / "keys" / "reconciler.key"
    SigningKey.generate().save(key_file)
    repo = bare_repo(tmp_path / "fleet.git")
    first = commit_files(repo, "main", fleet_files())
    command = [PLUMB, "reconcile", "--repo", repo.path, "--interval", "1h", "--key-file", str(key_file)]
    log = (tmp_path / "reconciler.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def source() -> str | None:
        ref = repo.references.get(STATE)
        return json.loads(ref.peel(pygit2.Commit).tree["status/source.json"].data)["commit"] if ref else None

    try:
        wait_for(lambda: source() == first, 60, "the first pass")
        second = commit_files(repo, "main", {"services/svc-1.yaml": service_doc("svc-1", ["app-1"], 8001)})
        wait_for(lambda: source() == second, 30, "the pushed commit to be reconciled")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        log.close()
    assert process.returncode == 0, (tmp_path / "reconciler.log").read_text()


def test_reading_refs_reaches_no_handler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fetches read refs all the time: their opens and closes are filtered out before the handler."""
    repo = bare_repo(tmp_path / "fleet.git")
    commit_files(repo, "main", {"a.yaml": "a: 1\n"})
    commit_files(repo, "plumb/reports/web-1", {"report.json": "{}\n"})
    seen: list[str] = []
    original = watch._RefEvents.dispatch
    monkeypatch.setattr(
        watch._RefEvents, "dispatch", lambda self, e: (seen.append(e.event_type), original(self, e))
    )
    wake = threading.Event()
    with watching_refs(Path(repo.path), wake, ignored=IGNORED):
        commit_files(repo, "main", {"a.yaml": "a: 2\n"})
        wait_for(wake.is_set, 10, "a loose ref update")
        clone = tmp_path / "clone.git"
        subprocess.run(["git", "clone", "--quiet", "--mirror", repo.path, str(clone)], check=True)
        for _ in range(5):
            subprocess.run(["git", "-C", str(clone), "fetch", "--quiet", "origin"], check=True)
        commit_files(repo, "main", {"a.yaml": "a: 3\n"})
        wait_for(lambda: seen.count("moved") + seen.count("created") >= 2, 10, "the second update")
    assert set(seen) <= {"created", "modified", "moved", "deleted"}, seen
