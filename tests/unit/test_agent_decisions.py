"""Pure decisions of the resources: file differences, unit actions, hook transitions, probe thresholds."""

from __future__ import annotations

import errno
import hashlib
import os
from datetime import UTC, datetime

import pytest

from agent.apply.resources.files import Wanted, file_differences
from agent.apply.resources.services import hooks_for, transition
from agent.apply.resources.units import Decision, UnitAction, decide
from agent.apply.runtimes.base import UnitStatus
from agent.host.fsops import MISSING, Observed, translated
from agent.host.probes import ProbeResult, ProbeTracker, resolve_port
from contract.errors import PermanentError, TemporaryError
from contract.plan import parse_probe
from contract.vocabulary import InstanceState

WANT = Wanted(b"a", 0o640, 0, 0)
FILES = [
    (MISSING, ("missing",)),
    (Observed("file", 0o640, 0, 0, b"a"), ()),
    (Observed("file", 0o644, 0, 0, b"a"), ("mode 0644 instead of 0640",)),
    (Observed("file", 0o640, 1000, 0, b"b"), ("content", "owner 1000 instead of 0")),
    (Observed("directory", 0o755, 0, 0), ("is a directory, not a file",)),
    (Observed("file", 0o640, 0, 0, sha256=hashlib.sha256(b"a").hexdigest()), ()),
    (Observed("file", 0o640, 0, 0, sha256=hashlib.sha256(b"b").hexdigest()), ("content",)),
]


@pytest.mark.parametrize(("have", "expected"), FILES)
def test_file_differences(have: Observed, expected: tuple[str, ...]) -> None:
    """Only what differs is named, in words."""
    assert file_differences(WANT, have) == expected


WRITE_ERRORS = [
    (errno.ENOSPC, False, TemporaryError, "/etc/x: no space left on device while writing"),
    (errno.EROFS, False, TemporaryError, "/etc/x: read-only file system while writing"),
    (errno.EDQUOT, False, TemporaryError, "/etc/x: disk quota exceeded while writing"),
    (errno.EIO, False, TemporaryError, "/etc/x: input/output error while writing"),
    (errno.EACCES, False, PermanentError, "/etc/x: permission denied while writing"),
    (errno.EACCES, True, TemporaryError, "/etc/x: permission denied while writing"),
]


@pytest.mark.parametrize(("code", "temporary", "kind", "line"), WRITE_ERRORS)
def test_an_os_error_becomes_one_line(code: int, temporary: bool, kind: type, line: str) -> None:
    """A full or read-only disk can pass, so it is temporary; the line says where and what."""
    error = translated(OSError(code, os.strerror(code)), "/etc/x", doing="writing", temporary=temporary)
    assert type(error) is kind and str(error) == line


RUNNING = UnitStatus(InstanceState.RUNNING, 10, 0, True)
STOPPED = UnitStatus(InstanceState.STOPPED, None, 0, True)
DISABLED = UnitStatus(InstanceState.STOPPED, None, 0, False)
DECISIONS = [
    # (want running, want enabled, status, changed files, waiting for, expected actions, note)
    (True, True, RUNNING, (), (), (), "already running"),
    (True, True, STOPPED, (), (), (UnitAction.START,), ""),
    (True, True, RUNNING, ("/etc/x",), (), (UnitAction.RESTART,), ""),
    (True, True, STOPPED, ("/etc/x",), (), (UnitAction.START,), ""),
    (False, True, RUNNING, (), (), (UnitAction.STOP,), ""),
    (False, True, STOPPED, ("/etc/x",), (), (), "already stopped"),
    (True, True, DISABLED, (), (), (UnitAction.ENABLE, UnitAction.START), ""),
    (True, False, RUNNING, (), (), (UnitAction.DISABLE,), ""),
    (True, True, STOPPED, (), ("db",), (), "not started: waiting for db"),
    (True, True, RUNNING, ("/etc/x",), ("db",), (UnitAction.RESTART,), ""),
]


@pytest.mark.parametrize(("running", "enabled", "status", "changed", "waiting", "actions", "note"), DECISIONS)
def test_unit_decisions(
    running: bool,
    enabled: bool,
    status: UnitStatus,
    changed: tuple[str, ...],
    waiting: tuple[str, ...],
    actions: tuple[UnitAction, ...],
    note: str,
) -> None:
    """Start, restart, stop, enable or nothing, from the status, the changes and waitingFor."""
    decision = decide(
        want_running=running, want_enabled=enabled, status=status, changed=changed, waiting=waiting
    )
    assert isinstance(decision, Decision)
    assert tuple(action for action, _reason in decision.actions) == actions
    assert decision.note == note


CRASHED = UnitStatus(InstanceState.FAILED, None, 0, True, "exit-code, status 3")
LOOPING = UnitStatus(InstanceState.FAILED, None, 4, True, "exit-code, status 1", restarting=True)
DRIFT = [
    # (want running, status, changed files, expected actions, drift, failure)
    (True, STOPPED, (), (UnitAction.START,), ("was stopped",), None),
    (False, RUNNING, (), (UnitAction.STOP,), ("was running",), None),
    (True, DISABLED, (), (UnitAction.ENABLE, UnitAction.START), ("was disabled", "was stopped"), None),
    (True, RUNNING, ("/etc/x",), (UnitAction.RESTART,), (), None),  # planned: restartOn, a drop-in
    (True, CRASHED, (), (UnitAction.START,), (), "failed (exit-code, status 3)"),
    (True, LOOPING, (), (), (), "failed (exit-code, status 1)"),  # systemd is restarting it already
]


@pytest.mark.parametrize(("running", "status", "changed", "actions", "drift", "failure"), DRIFT)
def test_what_is_drift_and_what_is_failure(
    running: bool,
    status: UnitStatus,
    changed: tuple[str, ...],
    actions: tuple[UnitAction, ...],
    drift: tuple[str, ...],
    failure: str | None,
) -> None:
    """Drift is a unit moved away from the plan; a planned restart is not, nor is a unit whose
    process failed, which is reported failed with what systemd said."""
    decision = decide(want_running=running, want_enabled=True, status=status, changed=changed, waiting=())
    assert tuple(action for action, _reason in decision.actions) == actions
    assert decision.corrections == drift and decision.failure == failure


TRANSITIONS = [
    # (recorded, version, expected (previous, rollback) or None)
    (None, "1.0.0", (None, False)),
    ({"version": "1.0.0", "previous": None}, "1.0.0", None),
    ({"version": "1.0.0", "previous": None}, "1.1.0", ("1.0.0", False)),
    ({"version": "1.1.0", "previous": "1.0.0"}, "1.0.0", ("1.1.0", True)),
    ({"version": "1.1.0"}, None, None),
]


@pytest.mark.parametrize(("record", "version", "expected"), TRANSITIONS)
def test_version_transitions(record: dict[str, str] | None, version: str | None, expected: object) -> None:
    """Hooks run on a new version; going back to the previous one is a rollback."""
    assert transition(record, version) == expected


@pytest.mark.parametrize(
    ("phase", "rollback", "hooks"),
    [("pre", False, ("preStart",)), ("pre", True, ("rollback", "preStart")), ("post", True, ("postStart",))],
)
def test_hooks_for(phase: str, rollback: bool, hooks: tuple[str, ...]) -> None:
    """Which hook lists run before and after the unit starts."""
    assert hooks_for(phase, rollback=rollback) == hooks


NOW = datetime(2026, 1, 1, tzinfo=UTC)
SERIES = [
    # (probe thresholds, results in order, state after each)
    ({}, [True, True], [True, True]),
    ({"failureThreshold": 3}, [True, False, False, False], [True, True, True, False]),
    ({"failureThreshold": 2}, [True, False, True, False, False], [True, True, True, True, False]),
    ({"successThreshold": 2}, [False, True, True], [False, False, True]),
]


@pytest.mark.parametrize(("probe", "results", "states"), SERIES)
def test_probe_thresholds(probe: dict[str, int], results: list[bool], states: list[bool]) -> None:
    """A probe's state flips only after failureThreshold failures or successThreshold successes in a row."""
    tracker = ProbeTracker()
    spec = parse_probe(probe)
    seen = [tracker.record(("api", "readiness"), spec, ProbeResult(ok, ""), NOW) for ok in results]
    assert seen == states


@pytest.mark.parametrize(("value", "port"), [(8080, 8080), ("8081", 8081), ("http", 9000)])
def test_resolve_port(value: int | str, port: int) -> None:
    """Probe ports are numbers or names of the service's ports."""
    assert resolve_port(value, {"http": 9000}) == port
