"""What every resource kind shares: the outcome of converging one resource and the host it runs on."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent.host.paths import Confinement
from contract.vocabulary import Outcome

if TYPE_CHECKING:
    from agent.apply.runtimes.base import Runtime
    from agent.host.nginxctl import Nginx
    from contract.crypto import SealingKey


@dataclass(frozen=True)
class Change:
    """The result of converging one resource: what was done, or why nothing was."""

    outcome: Outcome
    reason: str
    differences: tuple[str, ...] = ()  # what the host had that the spec did not want
    paths: tuple[str, ...] = ()  # plan paths this resource wrote in this apply
    created: tuple[str, ...] = ()  # plan paths that did not exist before
    previous: dict[str, bytes | None] = field(
        default_factory=dict
    )  # old content of written files, for revert
    error: str | None = None


def unchanged(reason: str) -> Change:
    return Change(Outcome.UNCHANGED, reason)


def failed(error: str) -> Change:
    return Change(Outcome.FAILED, "not converged", error=error)


@dataclass(frozen=True)
class Host:
    """Everything a resource needs to observe and change this host."""

    node: str
    confinement: Confinement
    state_dir: Path
    runtime: Runtime
    nginx: Nginx | None = None
    sealing_key: SealingKey | None = None
    local_artifacts: Path | None = None  # where file:// artifacts may be read from (None: nowhere)

    @property
    def root(self) -> Path:
        return self.confinement.root


def parse_mode(text: str) -> int:
    """A mode string from a plan ("0644", "755") as an int."""
    return int(text, 8)
