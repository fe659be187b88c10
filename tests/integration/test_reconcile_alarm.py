"""The watching reconciler acts on deadlines by itself: no commit, no report, no interval needed."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pygit2
import pytest

from contract.crypto import SigningKey
from tests.integration.test_reconcile_pass import fleet_files, plans, push_report, state_files
from tests.support.gitrepo import bare_repo, commit_files

pytestmark = pytest.mark.integration
PLUMB = str(Path(sys.executable).parent / "plumb")


def _wait(what: str, check: object, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _node_state(repo: pygit2.Repository, node: str) -> str | None:
    try:
        return str(state_files(repo, f"status/nodes/{node}.json")[f"status/nodes/{node}.json"]["state"])
    except (KeyError, pygit2.GitError):
        return None


def test_a_silent_node_goes_offline_without_waiting_for_the_interval(tmp_path: Path) -> None:
    """With --interval 1h, a node whose report ages past offlineAfter is marked offline within seconds:
    the pass that saw its report said when its status would change, and the loop woke then."""
    node_key, key = SigningKey.generate(), SigningKey.generate()
    key_file = tmp_path / "reconciler.key"
    key.save(key_file)
    files = fleet_files(keys={"app-1": node_key.public_b64()})
    files["plumb.yaml"] = files["plumb.yaml"].replace("spec: {", "spec: {offlineAfter: 3s, heartbeat: 1s, ")
    repo = bare_repo(tmp_path / "fleet.git")
    commit_files(repo, "main", files)
    command = [
        PLUMB,
        "reconcile",
        "--repo",
        repo.path,
        "--watch",
        "--interval",
        "1h",
        "--key-file",
        str(key_file),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(
            "the first plans",
            lambda: "app-1" in plans(repo) if repo.references.get("refs/heads/plumb/state") else False,
        )
        push_report(repo, "app-1", plans(repo)["app-1"], key=node_key, when=datetime.now(UTC))
        _wait("app-1 online after its report", lambda: _node_state(repo, "app-1") == "online")
        _wait(
            "app-1 offline once its report is older than offlineAfter",
            lambda: _node_state(repo, "app-1") == "offline",
        )
    finally:
        process.terminate()
        process.wait(timeout=20)
