"""The agent's own state directory: keys, the applied plan, the ledger, the journal, hook records.

<state-dir>/signing.key       node Ed25519 key (0600)      sealing.key   node X25519 key (0600)
<state-dir>/applied.json      serial, commit, digest, time and outcome of the last apply
<state-dir>/plan.json         the last verified plan (re-applied after a crash)
<state-dir>/journal.json      present only while an apply runs: which plan it was applying
<state-dir>/ledger.json       what the agent manages: resource id -> kind, digest, paths it created
<state-dir>/hooks.json        release hooks run, per service and version
<state-dir>/report.json       the last report pushed or saying something new (not fsynced: rebuilt each cycle)
<state-dir>/repo.git          bare repository for fetching plans and pushing reports
<state-dir>/supervise/        the process runtime's supervisors
<state-dir>/agent.lock        held (flock) by the running agent, so two never apply at once
<state-dir>/downloads/        artifacts being downloaded (unnamed files, 0700)

A damaged state file (not JSON, not an object, a directory in its place) is moved aside to
`<name>.json.damaged-<time>` with one warning line, and the agent goes on as if it were absent;
what that costs is small and on the safe side for each file:
    applied   the serial floor for new plans still holds: plan.json's serial (that plan was
              verified against the applied one) counts too, see `Agent.serial_floor`
    plan      nothing to re-apply until the next fetch brings a verified plan
    ledger    resources created earlier are no longer pruned (left on disk, never wrongly removed)
    journal   the interrupted apply is finished by the next apply anyway; what it created is not pruned
    hooks     release hooks of the current versions may run once more
A file that cannot be read or written right now (I/O error, read-only or full disk) is a
TemporaryError: the cycle says so in one line and the next one tries again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from agent.host.fsops import DamagedState, read_json, saying, write_json
from contract.crypto import write_private
from contract.errors import TemporaryError

log = structlog.get_logger("plumb.agent")


@dataclass(frozen=True)
class StateDir:
    """Paths and readers of the agent's state directory."""

    path: Path

    @property
    def signing_key(self) -> Path:
        return self.path / "signing.key"

    @property
    def sealing_key(self) -> Path:
        return self.path / "sealing.key"

    @property
    def repo(self) -> Path:
        return self.path / "repo.git"

    def file(self, name: str) -> Path:
        return self.path / f"{name}.json"

    def load(self, name: str) -> Any:
        """A state file's object, or None if absent; a damaged one is moved aside (and is absent)."""
        path = self.file(name)
        try:
            value = read_json(path)
            if value is None or isinstance(value, dict):
                return value
            raise DamagedState(f"{path}: is not a JSON object")
        except DamagedState as exc:
            self._set_aside(path, str(exc))
            return None

    def _set_aside(self, path: Path, problem: str) -> None:
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
        with saying(problem, doing="moving it aside", temporary=True):
            os.rename(path, aside)
        log.warning("damaged state file moved aside", problem=problem, moved_to=aside.name)

    def save(self, name: str, value: Any, *, durable: bool = True) -> None:
        """Replace a state file; `durable=False` for what is rebuilt anyway (the report), no fsync."""
        path = self.file(name)
        if path.is_dir() and not path.is_symlink():
            self._set_aside(path, f"{path}: is a directory, not a file")
        write_json(path, value, durable=durable)

    def drop(self, name: str) -> None:
        path = self.file(name)
        if os.path.lexists(path):  # unlinking a missing file still fails on a read-only disk
            with saying(str(path), doing="removing it", temporary=True):
                path.unlink(missing_ok=True)

    def save_private(self, path: Path, text: str) -> None:
        write_private(path, text)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the agent lock for the duration; TemporaryError if another agent holds it."""
        lock = self.path / "agent.lock"
        with saying(str(lock), doing="opening it", temporary=True):
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            handle = os.open(lock, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)  # works read-only too
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise TemporaryError(
                    f"{self.path}: another plumb-agent is running with this state directory"
                ) from exc
            yield
        finally:
            os.close(handle)
