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
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.host.fsops import read_json, write_json
from contract.crypto import write_private
from contract.errors import TemporaryError


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
        return read_json(self.file(name))

    def save(self, name: str, value: Any, *, durable: bool = True) -> None:
        """Replace a state file; `durable=False` for what is rebuilt anyway (the report), no fsync."""
        write_json(self.file(name), value, durable=durable)

    def drop(self, name: str) -> None:
        self.file(name).unlink(missing_ok=True)

    def save_private(self, path: Path, text: str) -> None:
        write_private(path, text)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the agent lock for the duration; TemporaryError if another agent holds it."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.path / "agent.lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise TemporaryError(
                    f"{self.path}: another plumb-agent is running with this state directory"
                ) from exc
            yield
