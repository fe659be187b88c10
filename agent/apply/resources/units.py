"""The `unit` resource: a systemd unit file or drop-in, enabled or not, running or stopped.

Writing the file is the first phase (`converge_unit`); once every file of the plan is written,
`settle_unit` brings the runtime in line: restart when the unit's own file, one of its drop-ins,
or a file listed in `restartOn` changed in this apply; start or stop to match `state`. The choice
of actions is a pure function (`decide`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from agent.apply.resources.base import Change, Host
from agent.apply.resources.files import Wanted, ensure_file
from agent.apply.runtimes.base import UnitStatus
from agent.host import fsops
from contract.errors import PermanentError
from contract.plan import PlanResource
from contract.vocabulary import InstanceState, Outcome

UNIT_DIR = "/etc/systemd/system"


class UnitAction(StrEnum):
    """What the runtime is asked to do with a unit."""

    ENABLE = "enable"
    DISABLE = "disable"
    START = "start"
    RESTART = "restart"
    STOP = "stop"


@dataclass(frozen=True)
class Decision:
    """Actions to take on a unit, in order, with the reason for each; or why nothing is needed.

    `corrections` are the reasons that are drift (the host moved away from the plan: someone
    stopped, started, enabled or disabled the unit); a restart the plan's changes call for is not,
    and neither is a unit whose process failed: `failure` says what systemd reported."""

    actions: tuple[tuple[UnitAction, str], ...]
    note: str = ""
    corrections: tuple[str, ...] = ()
    failure: str | None = None


def unit_path(spec: Mapping[str, Any]) -> str:
    """Where a unit file or drop-in lives (as a plan path)."""
    if spec.get("dropIn"):
        return f"{UNIT_DIR}/{spec['name']}.d/{spec['dropIn']}"
    return f"{UNIT_DIR}/{spec['name']}"


def decide(
    *,
    want_running: bool,
    want_enabled: bool | None,
    status: UnitStatus,
    changed: tuple[str, ...],
    waiting: tuple[str, ...],
) -> Decision:
    """Pure: the actions that bring a unit from `status` to what is wanted.

    A failed unit is started again (unless its runtime is already restarting it), and reported as
    failing, not as drift; a restart for this apply's changes is planned, not drift either."""
    actions: list[tuple[UnitAction, str]] = []
    corrections: list[str] = []
    if want_enabled is not None and status.enabled is not None and want_enabled != status.enabled:
        actions.append((UnitAction.ENABLE if want_enabled else UnitAction.DISABLE, "enablement differs"))
        corrections.append(f"was {'disabled' if want_enabled else 'enabled'}")
    if not want_running:
        if status.active:
            actions.append((UnitAction.STOP, "state is stopped"))
            corrections.append(f"was {status.state.value}")
        return Decision(tuple(actions), "" if actions else "already stopped", tuple(corrections))
    if waiting and not status.active:
        note = f"not started: waiting for {', '.join(waiting)}"
        return Decision(tuple(actions), note, tuple(corrections))
    failure = f"failed ({status.detail or 'no detail'})" if status.state is InstanceState.FAILED else None
    if failure is not None and status.restarting:
        return Decision(tuple(actions), f"{failure}; systemd restarts it", tuple(corrections), failure)
    if failure is not None:
        actions.append((UnitAction.START, f"{failure}; started again"))
    elif not status.active:
        actions.append((UnitAction.START, f"was {status.state.value}"))
        corrections.append(f"was {status.state.value}")
    elif changed:
        actions.append((UnitAction.RESTART, f"changed: {', '.join(changed)}"))
    return Decision(tuple(actions), "" if actions else "already running", tuple(corrections), failure)


def converge_unit(resource: PlanResource, host: Host) -> Change:
    """Phase one: the unit file or drop-in, mode 0644, checked before the runtime sees it."""
    path = unit_path(resource.spec)
    content = str(resource.spec["content"]).encode()
    change = ensure_file(host, path, Wanted(content, 0o644, -1, -1), keep_previous=True)
    if change.outcome is not Outcome.CHANGED or not change.previous:
        return change
    problem = host.runtime.verify(resource.spec["name"])
    if problem is None:
        return change
    restore(host, path, change.previous.get(path))
    raise PermanentError(f"{path}: refused by verification, previous version kept: {problem}")


def restore(host: Host, path: str, previous: bytes | None) -> None:
    """Put a file back as it was before this apply (remove it if it did not exist)."""
    parts = host.confinement.parts(path)
    if previous is None:
        fsops.remove(host.root, parts)
    else:
        have = fsops.observe(host.root, parts, read=False)
        fsops.write_file(host.root, parts, previous, mode=have.mode or 0o644)


def settle_unit(
    resource: PlanResource,
    host: Host,
    *,
    changed: tuple[str, ...],
    waiting: tuple[str, ...],
    want_running: bool,
) -> Change:
    """Phase two: enable, start, restart or stop the unit as the spec and this apply's changes say."""
    name = resource.spec["name"]
    status = host.runtime.status(name)
    decision = decide(
        want_running=want_running,
        want_enabled=resource.spec.get("enabled", True),
        status=status,
        changed=changed,
        waiting=waiting,
    )
    for action, _reason in decision.actions:
        _perform(host, name, action)
    done = "; ".join(f"{action.value} ({reason})" for action, reason in decision.actions)
    if decision.failure is not None:
        return Change(Outcome.FAILED, f"{name}: {done or decision.note}", error=f"{name} {decision.failure}")
    if not decision.actions:
        outcome = Outcome.SKIPPED if waiting and want_running and not status.active else Outcome.UNCHANGED
        return Change(outcome, f"{name}: {decision.note}")
    return Change(Outcome.CHANGED, f"{name}: {done}", decision.corrections)


def _perform(host: Host, unit: str, action: UnitAction) -> None:
    runtime = host.runtime
    if action in (UnitAction.ENABLE, UnitAction.DISABLE):
        runtime.set_enabled(unit, action is UnitAction.ENABLE)
    elif action is UnitAction.START:
        runtime.start(unit)
    elif action is UnitAction.RESTART:
        runtime.restart(unit)
    else:
        runtime.stop(unit)
