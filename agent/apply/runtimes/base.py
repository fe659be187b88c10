"""The interface both runtimes offer for units: start, stop, restart, enable, and what is running now."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from contract.vocabulary import InstanceState


@dataclass(frozen=True)
class UnitStatus:
    """What a runtime knows about one unit now."""

    state: InstanceState  # a runtime never says `waiting`: only the instance view does
    pid: int | None = None
    restarts: int = 0
    enabled: bool | None = None
    detail: str = ""  # for a failed unit, what the runtime says happened (e.g. "exit-code, status 3")
    restarting: bool = False  # failed, and the runtime itself is about to start it again

    @property
    def active(self) -> bool:
        return self.state in (InstanceState.RUNNING, InstanceState.STARTING)


class Runtime(Protocol):
    """Runs units. `unit_dir` holds the unit files the agent wrote."""

    name: str

    def reload(self) -> None: ...

    def status(self, unit: str) -> UnitStatus: ...

    def start(self, unit: str) -> None: ...

    def restart(self, unit: str) -> None: ...

    def stop(self, unit: str) -> None: ...

    def set_enabled(self, unit: str, enabled: bool) -> None: ...

    def verify(self, unit: str) -> str | None: ...
