"""The `systemd` runtime: units driven through `systemctl`, checked with `systemd-analyze verify`."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

from agent.apply.runtimes.base import UnitStatus
from agent.host.unitfile import parse_show
from contract.errors import TemporaryError
from contract.vocabulary import InstanceState

_ACTIVE = {
    "active": InstanceState.RUNNING,
    "reloading": InstanceState.RUNNING,
    "activating": InstanceState.STARTING,
    "deactivating": InstanceState.RUNNING,
    "failed": InstanceState.FAILED,
    "inactive": InstanceState.STOPPED,
}
SHOW_PROPERTIES = "ActiveState,SubState,Result,ExecMainCode,ExecMainStatus,MainPID,NRestarts,UnitFileState"
JOURNAL_LINES = 5
_EXITED = "1"  # ExecMainCode: CLD_EXITED; 2 and 3 are killed and dumped, whose status is a signal


def status_from_show(fields: dict[str, str]) -> UnitStatus:
    """Pure: a UnitStatus from parsed `systemctl show` properties.

    systemd's sub-state and result say more than its active state: a unit waiting to be restarted
    after its process died (`activating` / `auto-restart`) is crash-looping, not starting; an
    inactive unit whose last run did not end in `success` failed. A failed unit's `detail` is
    systemd's result and the main process's exit status or signal.
    """
    active, sub = fields.get("ActiveState", ""), fields.get("SubState", "")
    result = fields.get("Result", "")
    state = _ACTIVE.get(active, InstanceState.UNKNOWN)
    if (active, sub) == ("activating", "auto-restart") or (
        state is InstanceState.STOPPED and result not in ("", "success")
    ):
        state = InstanceState.FAILED
    pid = int(fields.get("MainPID", "0") or 0) or None
    restarts = int(fields.get("NRestarts", "0") or 0)
    file_state = fields.get("UnitFileState", "")
    enabled = None if not file_state else file_state in ("enabled", "enabled-runtime", "static", "alias")
    detail = _failure(fields, sub) if state is InstanceState.FAILED else ""
    return UnitStatus(state, pid, restarts, enabled, detail, restarting=sub == "auto-restart")


def last_lines(text: str, *, limit: int = 300) -> str:
    """Pure: a unit's last journal lines as one line ("a | b | c"), at most `limit` characters."""
    joined = " | ".join(line.strip() for line in text.splitlines() if line.strip())
    return joined if len(joined) <= limit else "…" + joined[-(limit - 1) :]


def _failure(fields: dict[str, str], sub: str) -> str:
    """ "exit-code, status 3", "signal, signal 9; restarting (auto-restart)" and the like."""
    result, status = fields.get("Result", "") or "failed", fields.get("ExecMainStatus", "")
    how = "status" if fields.get("ExecMainCode", _EXITED) == _EXITED else "signal"
    text = result + (f", {how} {status}" if status and status != "0" else "")
    return text + ("; restarting (auto-restart)" if sub == "auto-restart" else "")


class SystemdRuntime:
    """systemctl daemon-reload / enable / start / restart / stop / show."""

    name = "systemd"

    def __init__(
        self,
        *,
        unit_dir: Path,
        systemctl: str = "systemctl",
        analyze: str = "systemd-analyze",
        journalctl: str = "journalctl",
    ) -> None:
        self.unit_dir = unit_dir
        self.systemctl = systemctl
        self.analyze = analyze
        self.journalctl = journalctl

    def _run(self, *args: str, check: bool = True) -> str:
        try:
            result = subprocess.run(
                [self.systemctl, *args], capture_output=True, text=True, timeout=120, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TemporaryError(f"systemctl {' '.join(args)}: {exc}") from exc
        if check and result.returncode != 0:
            raise TemporaryError(f"systemctl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def reload(self) -> None:
        self._run("daemon-reload")

    # `--` before every unit name: a name is never read as an option, whatever the plan holds
    def status(self, unit: str) -> UnitStatus:
        """The unit now; a failed one's detail ends with the last lines it logged."""
        status = status_from_show(parse_show(self._run("show", "-p", SHOW_PROPERTIES, "--", unit)))
        if status.state is not InstanceState.FAILED:
            return status
        logged = last_lines(self._journal(unit))
        return replace(status, detail=f"{status.detail}; last lines: {logged}") if logged else status

    def _journal(self, unit: str) -> str:
        try:
            done = subprocess.run(
                [
                    self.journalctl,
                    "--unit",
                    unit,
                    "--lines",
                    str(JOURNAL_LINES),
                    "--no-pager",
                    "--output",
                    "cat",
                ],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout if done.returncode == 0 else ""

    def start(self, unit: str) -> None:
        self._run("start", "--", unit)

    def restart(self, unit: str) -> None:
        self._run("restart", "--", unit)

    def stop(self, unit: str) -> None:
        self._run("stop", "--", unit)

    def set_enabled(self, unit: str, enabled: bool) -> None:
        self._run("enable" if enabled else "disable", "--", unit)

    def reset_failed(self, unit: str) -> None:
        """Forget a removed unit's failed state, so it does not keep the system `degraded`."""
        self._run("reset-failed", "--", unit, check=False)

    def verify(self, unit: str) -> str | None:
        return verify_unit_file(self.unit_dir / unit, analyze=self.analyze)


def verify_unit_file(path: Path, *, analyze: str = "systemd-analyze") -> str | None:
    """Problems `systemd-analyze verify` finds in a unit file, or None (also when it is not installed)."""
    if shutil.which(analyze) is None:
        return None
    try:
        result = subprocess.run(
            [analyze, "verify", "--man=no", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    # verify exits 0 on unknown keys and bad values too, so any line naming the file is a problem
    problems = [line for line in result.stderr.splitlines() if str(path) in line]
    if result.returncode != 0 and not problems:
        problems = [result.stderr.strip() or f"systemd-analyze exited {result.returncode}"]
    return "; ".join(problems) or None
