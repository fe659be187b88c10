"""The `service` resource: release hooks once per version transition, and the instance the report shows.

Hooks run through `/bin/sh -c` with PLUMB_SERVICE, PLUMB_VERSION and PLUMB_PREVIOUS_VERSION set.
Which hooks ran for which transition is recorded in the state directory, so a restarted agent
does not run them again; a failed hook is retried at the next apply. `rollback` hooks run when a
service goes back to the version it had before the current one.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from contract.plan import PlanResource

HOOK_TIMEOUT = 300
OUTPUT_LIMIT = 4096


@dataclass(frozen=True)
class HookRun:
    """One hook command run for a version transition."""

    service: str
    hook: str
    version: str
    ok: bool
    output: str


def transition(record: Mapping[str, Any] | None, version: str | None) -> tuple[str | None, bool] | None:
    """Pure: (previous version, is a rollback) when `version` is new for the service, else None."""
    if version is None:
        return None
    current = (record or {}).get("version")
    if current == version:
        return None
    return current, version == (record or {}).get("previous")


def hooks_for(phase: str, *, rollback: bool) -> tuple[str, ...]:
    """Which hook lists run in a phase ("pre" before the unit starts, "post" after)."""
    if phase == "pre":
        return ("rollback", "preStart") if rollback else ("preStart",)
    return ("postStart",)


def run_command(command: str, env: Mapping[str, str], cwd: str) -> tuple[bool, str]:
    """Run one hook command; (succeeded, the tail of its output)."""
    try:
        result = subprocess.run(
            ["/bin/sh", "-c", command],
            capture_output=True,
            timeout=HOOK_TIMEOUT,
            env={**os.environ, **env},
            cwd=cwd,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    output = (result.stdout + result.stderr).decode(errors="replace")[-OUTPUT_LIMIT:]
    return result.returncode == 0, output


def run_hooks(
    resource: PlanResource, phase: str, state: MutableMapping[str, Any], *, cwd: str
) -> list[HookRun]:
    """Run the phase's hooks for a pending version transition, once; record what ran in `state`."""
    spec = resource.typed_service
    record = state.setdefault(spec.name, {})
    pending = transition(record, spec.version)
    if pending is None or spec.version is None:
        return []
    previous, rollback = pending
    progress = record.setdefault("pending", {"version": spec.version, "done": []})
    if progress.get("version") != spec.version:
        progress.clear()
        progress.update({"version": spec.version, "done": []})
    runs = []
    env = {
        "PLUMB_SERVICE": spec.name,
        "PLUMB_VERSION": spec.version,
        "PLUMB_PREVIOUS_VERSION": previous or "",
    }
    for hook in hooks_for(phase, rollback=rollback):
        if hook in progress["done"]:
            continue
        for command in spec.hooks.get(hook, ()):
            ok, output = run_command(command, env, cwd)
            runs.append(HookRun(spec.name, hook, spec.version, ok, output))
            if not ok:
                return runs
        progress["done"].append(hook)
    if phase == "post":
        state[spec.name] = {"version": spec.version, "previous": previous}
    return runs
