"""Reconciling a remote over a real sshd on 127.0.0.1: plans pushed back, host keys pinned, races retried, SIGHUP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pygit2
import pytest

from contract.crypto import SigningKey
from contract.documents import verify_document
from contract.errors import PermanentError
from reconciler.drivers.statestore import LocalLocation, RemoteLocation
from reconciler.reconcile import Reconciler
from tests.integration.test_reconcile_pass import STATE, fleet_files, plans, service_doc
from tests.support.gitrepo import bare_repo, commit_files
from tests.support.sshd import SshServer, running_sshd

pytestmark = pytest.mark.integration

PLUMB = str(Path(sys.executable).with_name("plumb"))


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def origin(tmp_path: Path) -> pygit2.Repository:
    repo = bare_repo(tmp_path / "origin.git")
    commit_files(repo, "main", fleet_files())
    return repo


def remote(
    sshd: SshServer, origin: pygit2.Repository, mirror: Path, known_hosts: Path | None = None
) -> RemoteLocation:
    return RemoteLocation(
        sshd.url(origin.path),
        mirror=mirror,
        ssh_key=sshd.client_key,
        known_hosts=known_hosts or sshd.known_hosts,
    )


def source_commit(repo: pygit2.Repository) -> str | None:
    ref = repo.references.get(STATE)
    if ref is None:
        return None
    return str(json.loads(ref.peel(pygit2.Commit).tree["status/source.json"].data)["commit"])


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_plans_are_pushed_back_over_ssh(sshd: SshServer, origin: pygit2.Repository, tmp_path: Path) -> None:
    """A pass over ssh:// writes signed plans to the remote's state branch."""
    key = SigningKey.generate()
    location = remote(sshd, origin, tmp_path / "mirror.git")
    location.refresh()
    result = Reconciler(location, key=key).reconcile()
    assert result.written == str(origin.references[STATE].target)
    for plan in plans(origin).values():
        verify_document(plan, key.verify_key(), what="plan")


def test_unknown_host_key_is_refused_and_nothing_is_written(
    sshd: SshServer, origin: pygit2.Repository, tmp_path: Path
) -> None:
    """A server whose host key is not pinned is refused before anything is fetched or pushed."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    location = remote(sshd, origin, tmp_path / "mirror.git", known_hosts=empty)
    with pytest.raises(PermanentError, match="known_hosts"):
        location.refresh()
    assert origin.references.get(STATE) is None


def test_a_lost_push_race_is_re_read_not_forced(
    sshd: SshServer, origin: pygit2.Repository, tmp_path: Path
) -> None:
    """A reconciler whose mirror is stale has its push rejected, re-reads, and leaves the winner's commit."""
    key = SigningKey.generate()
    location = remote(sshd, origin, tmp_path / "mirror.git")
    location.refresh()
    slow = Reconciler(location, key=key)
    slow.reconcile()
    commit_files(
        origin, "main", {"services/svc-2.yaml": service_doc("svc-2", ["app-2", "app-3"], 8002, "new")}
    )
    location.refresh()
    winner = Reconciler(LocalLocation(Path(origin.path)), key=key).reconcile().written
    assert winner is not None
    later = datetime.now(UTC) + timedelta(hours=1)  # a different commit time, so not the winner's very commit
    result = slow.reconcile(now=later)  # built on the stale tip: rejected, re-fetched, nothing left to do
    assert result.written is None
    assert str(origin.references[STATE].target) == winner
    assert [len(c.parents) for c in origin.walk(origin.references[STATE].target)] == [1, 0]


def test_sighup_fetches_now(sshd: SshServer, origin: pygit2.Repository, tmp_path: Path) -> None:
    """With a long interval, SIGHUP makes a watching reconciler fetch and reconcile a new commit."""
    key_file = tmp_path / "keys" / "reconciler.key"
    SigningKey.generate().save(key_file)
    command = [
        PLUMB, "reconcile", "--repo", sshd.url(origin.path), "--watch", "--interval", "1h",
        "--key-file", str(key_file), "--ssh-key", str(sshd.client_key), "--known-hosts", str(sshd.known_hosts),
        "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    log = (tmp_path / "reconciler.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        first = str(origin.references["refs/heads/main"].target)
        wait_for(lambda: source_commit(origin) == first, 60, "the first pass")
        second = commit_files(origin, "main", {"services/svc-1.yaml": service_doc("svc-1", ["app-1"], 8001)})
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: source_commit(origin) == second, 60, "the pass after SIGHUP")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        log.close()
    assert process.returncode == 0, (tmp_path / "reconciler.log").read_text()
