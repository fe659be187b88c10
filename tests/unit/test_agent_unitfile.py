"""Unit file parsing for the process runtime, Restart= semantics and `systemctl show` output."""

from __future__ import annotations

import pytest

from agent.apply.runtimes.base import UnitStatus
from agent.apply.runtimes.systemd import last_lines, status_from_show
from agent.host.unitfile import ExecConfig, exec_config, parse_show, parse_timespan, should_restart
from contract.errors import PermanentError
from contract.vocabulary import InstanceState

EXEC_CONFIGS = [
    # (unit file and drop-ins, expected)
    (["[Service]\nExecStart=/bin/sleep 1\n"], ExecConfig(("/bin/sleep", "1"))),
    (
        ["[Service]\nExecStart=-/usr/bin/env A=1 server --port 80\nRestart=on-failure\nRestartSec=2s\n"],
        ExecConfig(("/usr/bin/env", "A=1", "server", "--port", "80"), restart="on-failure", restart_sec=2.0),
    ),
    (
        [
            '[Service]\nEnvironment=A=1 "B=two words"\nEnvironment=C=3\nExecStart=/bin/x\nWorkingDirectory=/srv/app\n'
        ],
        ExecConfig(("/bin/x",), (("A", "1"), ("B", "two words"), ("C", "3")), "/srv/app"),
    ),
    (
        [
            "[Service]\nExecStart=/bin/old\nEnvironment=A=1\n",
            "[Service]\nExecStart=\nExecStart=/bin/new\nEnvironment=\n",
        ],
        ExecConfig(("/bin/new",)),
    ),
    (
        ["[Unit]\nExecStart=/not/service\n[Service]\nExecStart=/bin/a \\\n  --flag\nUser=www\n"],
        ExecConfig(("/bin/a", "--flag"), user="www"),
    ),
    (
        ["# comment\n; other\n[Service]\nExecStart=/bin/a\nRestartSec=1min 30s\n"],
        ExecConfig(("/bin/a",), restart_sec=90.0),
    ),
]


@pytest.mark.parametrize(("texts", "expected"), EXEC_CONFIGS)
def test_exec_config(texts: list[str], expected: ExecConfig) -> None:
    """ExecStart, Environment, WorkingDirectory, Restart, RestartSec and User, with drop-ins and resets."""
    assert exec_config(texts, unit="x.service") == expected


BAD_UNITS = [
    ("[Service]\nType=simple\n", "no ExecStart"),
    ("[Service]\nExecStart=/bin/a\nRestart=sometimes\n", "Restart=sometimes"),
    ("[Service]\nExecStart=/bin/a\nRestartSec=soon\n", "not a time span"),
]


@pytest.mark.parametrize(("text", "message"), BAD_UNITS)
def test_exec_config_refuses(text: str, message: str) -> None:
    """A unit the process runtime cannot run is a PermanentError naming the problem."""
    with pytest.raises(PermanentError, match=message):
        exec_config([text], unit="x.service")


SPANS = [("5", 5.0), ("500ms", 0.5), ("1min 30s", 90.0), ("2h", 7200.0), ("1.5s", 1.5)]


@pytest.mark.parametrize(("text", "seconds"), SPANS)
def test_parse_timespan(text: str, seconds: float) -> None:
    """systemd time spans in seconds."""
    assert parse_timespan(text) == pytest.approx(seconds)


RESTARTS = [
    # (policy, exit code, signal, restart?)
    ("no", 1, None, False),
    ("always", 0, None, True),
    ("on-failure", 0, None, False),
    ("on-failure", 3, None, True),
    ("on-failure", None, 9, True),
    ("on-success", 0, None, True),
    ("on-abnormal", 1, None, False),
    ("on-abnormal", None, 9, True),
    ("on-abort", None, 15, False),
    ("on-abort", None, 6, True),
]


@pytest.mark.parametrize(("policy", "code", "signal", "expected"), RESTARTS)
def test_should_restart(policy: str, code: int | None, signal: int | None, expected: bool) -> None:
    """Restart= decides from how the process ended, as systemd does."""
    assert should_restart(policy, exit_code=code, signal=signal) is expected


SHOWS = [
    (
        "ActiveState=active\nSubState=running\nMainPID=812\nNRestarts=2\nUnitFileState=enabled\n",
        UnitStatus(InstanceState.RUNNING, 812, 2, True),
    ),
    (
        "ActiveState=inactive\nMainPID=0\nNRestarts=0\nUnitFileState=disabled\n",
        UnitStatus(InstanceState.STOPPED, None, 0, False),
    ),
    (
        "ActiveState=failed\nMainPID=0\nUnitFileState=\n",
        UnitStatus(InstanceState.FAILED, None, 0, None, "failed"),
    ),
    ("ActiveState=activating\nMainPID=77\n", UnitStatus(InstanceState.STARTING, 77, 0, None)),
    # what systemd 252 says of a Type=simple unit whose process exited 3 right after start
    (
        "ActiveState=failed\nSubState=failed\nResult=exit-code\nExecMainCode=1\nExecMainStatus=3\n"
        "MainPID=0\nNRestarts=0\nUnitFileState=enabled\n",
        UnitStatus(InstanceState.FAILED, None, 0, True, "exit-code, status 3"),
    ),
    # ... of one in a crash loop (Restart=always), between two attempts: not starting, failing
    (
        "ActiveState=activating\nSubState=auto-restart\nResult=exit-code\nExecMainCode=1\n"
        "ExecMainStatus=1\nMainPID=0\nNRestarts=4\n",
        UnitStatus(
            InstanceState.FAILED, None, 4, None, "exit-code, status 1; restarting (auto-restart)", True
        ),
    ),
    (
        "ActiveState=failed\nSubState=failed\nResult=signal\nExecMainCode=2\nExecMainStatus=9\nMainPID=0\n",
        UnitStatus(InstanceState.FAILED, None, 0, None, "signal, signal 9"),
    ),
    (
        "ActiveState=inactive\nSubState=dead\nResult=success\nExecMainCode=1\nExecMainStatus=0\n",
        UnitStatus(InstanceState.STOPPED),
    ),
    (
        "ActiveState=inactive\nSubState=dead\nResult=timeout\nExecMainCode=0\nExecMainStatus=0\n",
        UnitStatus(InstanceState.FAILED, detail="timeout"),
    ),
    ("ActiveState=active\nSubState=exited\nResult=success\n", UnitStatus(InstanceState.RUNNING)),
    ("ActiveState=activating\nSubState=start\nMainPID=90\n", UnitStatus(InstanceState.STARTING, 90)),
]


@pytest.mark.parametrize(("output", "expected"), SHOWS)
def test_systemctl_show(output: str, expected: UnitStatus) -> None:
    """`systemctl show -p ...` output becomes a UnitStatus."""
    assert status_from_show(parse_show(output)) == expected


LOGGED = [
    ("", ""),
    ("starting\n\nboom: no such file\n", "starting | boom: no such file"),
    ("x" * 400, "…" + "x" * 299),
]


@pytest.mark.parametrize(("text", "line"), LOGGED)
def test_last_journal_lines_become_one_line(text: str, line: str) -> None:
    """What a failed unit logged last, on one line and bounded, for its report."""
    assert last_lines(text) == line
