"""Git I/O of the agent: fetch only the state branch and read the node's plan; push a report commit."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pygit2

from contract.defaults import MAX_PLAN_BYTES
from contract.documents import to_file_json
from contract.errors import TemporaryError
from contract.transport.gitread import read_file
from contract.transport.gitremote import Remote

TRACKING = "refs/plumb/state"
_SIGNATURE_NAME = "plumb-agent"


def open_repo(path: Path) -> pygit2.Repository:
    """The agent's private bare repository (created on first use)."""
    if (path / "HEAD").exists():
        return pygit2.Repository(str(path))
    return pygit2.init_repository(str(path), bare=True)


def clear_stale_locks(path: Path) -> list[str]:
    """Remove ref lock files a killed agent left in its private repository; the names removed.

    Call only while holding the agent lock: no other writer of this repository can exist then, so
    every `.lock` is stale, and left alone it would fail every later fetch or report push.
    """
    packed = path / "packed-refs.lock"  # only if present: unlinking a missing file fails read-only
    found = [*path.joinpath("refs").rglob("*.lock"), *([packed] if packed.exists() else [])]
    removed = []
    for lock in found:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
            removed.append(str(lock.relative_to(path)))
    return removed


class StateSync:
    """Reads plans from the state branch and writes reports to the node's report branch."""

    def __init__(
        self, remote: Remote, repo: pygit2.Repository, *, node: str, state_branch: str, reports_prefix: str
    ):
        self.remote = remote
        self.repo = repo
        self.node = node
        self.state_branch = state_branch
        self.report_ref = f"refs/heads/{reports_prefix}{node}"

    def fetch_plan(self) -> tuple[bytes | None, str | None]:
        """Fetch the state branch; (plans/<node>.json or None, state commit id or None).

        A repository on this machine is read in place instead: libgit2's local transport packs in
        the fetching process, inflating every new object whole, so one huge blob on the branch
        would cost its size in the agent's memory (over ssh and https, the server packs and the
        agent indexes the pack as a stream). ContractError when the entry is not a file or is larger
        than any plan may be (checked from the object header, before it is read)."""
        local = self.remote.local_path()
        if local is not None:
            return self._read_plan(_open_local(local), f"refs/heads/{self.state_branch}")
        self.remote.fetch(self.repo, [f"+refs/heads/{self.state_branch}:{TRACKING}"])
        return self._read_plan(self.repo, TRACKING)

    def _read_plan(self, repo: pygit2.Repository, ref_name: str) -> tuple[bytes | None, str | None]:
        ref = repo.references.get(ref_name)
        if ref is None:
            return None, None
        commit = ref.peel(pygit2.Commit)
        path = f"plans/{self.node}.json"
        return read_file(repo, commit.tree, path, what="plan", limit=MAX_PLAN_BYTES), str(commit.id)

    def state_marker(self) -> tuple[tuple[int, int, int] | None, ...] | None:
        """Cheap sign of the state branch moving on a remote on this machine (no fetch); None elsewhere."""
        local = self.remote.local_path()
        if local is None:
            return None
        return tuple(_stat(local / name) for name in (f"refs/heads/{self.state_branch}", "packed-refs"))

    def push_report(self, report: Mapping[str, Any]) -> str:
        """Push `report` as the single commit of the node's report branch (history is not kept)."""
        try:
            commit = self._report_commit(report)
        except (pygit2.GitError, OSError) as exc:  # a full or read-only state directory
            raise TemporaryError(f"{self.repo.path}: cannot record the report: {exc}") from exc
        self.remote.push(self.repo, [f"+{self.report_ref}:{self.report_ref}"])
        return str(commit)

    def _report_commit(self, report: Mapping[str, Any]) -> pygit2.Oid:
        blob = self.repo.create_blob(to_file_json(report))
        builder = self.repo.TreeBuilder()
        builder.insert("report.json", blob, pygit2.enums.FileMode.BLOB)
        signature = pygit2.Signature(_SIGNATURE_NAME, f"{self.node}@plumb.invalid", int(time.time()), 0)
        message = f"report from {self.node}"
        commit = self.repo.create_commit(None, signature, signature, message, builder.write(), [])
        self.repo.references.create(self.report_ref, commit, force=True)
        return commit


def _open_local(path: Path) -> pygit2.Repository:
    try:
        return pygit2.Repository(str(path))
    except (pygit2.GitError, KeyError) as exc:
        raise TemporaryError(f"{path}: cannot open the repository: {exc}") from exc


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_ino, found.st_mtime_ns, found.st_size
