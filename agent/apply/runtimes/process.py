"""The `process` runtime: units run under one detached supervisor each (`agent.apply.runtimes.supervise`).

For hosts and containers without systemd, for demos and for tests. A unit's command comes from
the unit file and drop-ins the agent wrote (under --root). Under --root, `WorkingDirectory=` is
mapped under the root, and so is every word of `ExecStart=` (the executable and each argument)
that is an absolute path inside the plan's allowedPaths: the plan put those files there.
`/usr/bin/python3`, `/bin/sh` and other paths outside allowedPaths stay the host's, as do
relative paths and options such as `--config=/etc/app.conf` (write `--config /etc/app.conf`, or
a path relative to `WorkingDirectory=`). An allowedPaths entry `/` maps nothing on the command
line: the host's own programs would disappear under the root. Supervisors outlive the agent; their
state lives in `<state-dir>/supervise/<unit>/`, and a restarted agent re-adopts them after
checking that the recorded pid is alive and really is that unit's supervisor. A restart asks the
live supervisor (SIGHUP) to restart the service with the unit's new config: no new interpreter.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agent.apply.runtimes import supervise
from agent.apply.runtimes.base import UnitStatus
from agent.host import fsops
from agent.host.paths import Confinement, inside
from agent.host.unitfile import ExecConfig, exec_config
from contract.errors import PermanentError, TemporaryError
from contract.vocabulary import InstanceState

UNIT_DIR = "/etc/systemd/system"
STOP_TIMEOUT = 10.0
START_TIMEOUT = 10.0
_STATES = {
    "running": InstanceState.RUNNING,
    "starting": InstanceState.STARTING,
    "failed": InstanceState.FAILED,
}


def process_alive(pid: int, marker: str) -> bool:
    """Whether `pid` is a live (not zombie) process whose command line contains `marker`."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return marker.encode() in cmdline and stat.rpartition(")")[2].split()[0] != "Z"


class ProcessRuntime:
    """Runs each unit's ExecStart under a detached supervisor with Restart= semantics."""

    name = "process"

    def __init__(self, *, confinement: Confinement, state_dir: Path) -> None:
        self.confinement = confinement
        self.base = state_dir / "supervise"

    def _dir(self, unit: str) -> Path:
        return self.base / unit

    def _unit_texts(self, unit: str) -> list[str]:
        root, unit_dir = self.confinement.root, UNIT_DIR.lstrip("/").split("/")
        main = fsops.observe(root, [*unit_dir, unit])
        if main.content is None:
            raise PermanentError(f"{unit}: no unit file at {UNIT_DIR}/{unit}")
        texts = [main.content.decode()]
        dropin_dir = self.confinement.root.joinpath(*unit_dir, f"{unit}.d")
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for name in sorted(n for n in os.listdir(dropin_dir) if n.endswith(".conf")):
                content = fsops.observe(root, [*unit_dir, f"{unit}.d", name]).content
                texts.append((content or b"").decode())
        return texts

    def config(self, unit: str) -> ExecConfig:
        """The command the unit runs, from its files as they are on the host now."""
        return exec_config(self._unit_texts(unit), unit=unit)

    def _config_json(self, unit: str) -> dict[str, Any]:
        config = asdict(self.config(unit))
        config["argv"] = [self._mapped(word) for word in config["argv"]]
        workdir = config["working_directory"]
        if workdir:
            optional = workdir.startswith("-")
            mapped = self.confinement.root / workdir.lstrip("-").lstrip("/")
            config["working_directory"] = None if optional and not mapped.is_dir() else str(mapped)
        return config

    def _mapped(self, word: str) -> str:
        """A command-line word, mapped under the root when it is a path inside allowedPaths."""
        if not word.startswith("/") or self.confinement.root == Path("/"):
            return word
        if any(prefix != "/" and inside(word, prefix) for prefix in self.confinement.allowed):
            return str(self.confinement.root / word.lstrip("/"))
        return word

    def _read(self, unit: str, name: str) -> Any:
        try:
            return json.loads((self._dir(unit) / name).read_text())
        except (OSError, ValueError):
            return None

    def supervisor_pid(self, unit: str) -> int | None:
        """The pid of the unit's live supervisor, if there is one."""
        try:
            pid = int((self._dir(unit) / "supervisor.pid").read_text())
        except (OSError, ValueError):
            return None
        return pid if process_alive(pid, str(self._dir(unit))) else None

    def reload(self) -> None:
        """Nothing to reload: unit files are read at each start."""

    def status(self, unit: str) -> UnitStatus:
        enabled = (self._dir(unit) / "enabled").exists()
        supervisor = self.supervisor_pid(unit)
        record = self._read(unit, "status.json") or {}
        if supervisor is None:
            failed = record.get("state") == "failed"
            return UnitStatus(InstanceState.FAILED if failed else InstanceState.STOPPED, None, 0, enabled)
        state = _STATES.get(record.get("state", "starting"), InstanceState.STARTING)
        return UnitStatus(state, record.get("pid"), int(record.get("restarts", 0)), enabled)

    def _write_config(self, unit: str) -> str:
        """Write the unit's config for its supervisor; the generation the supervisor will report."""
        generation = f"{time.time_ns():x}"
        directory = self._dir(unit)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        config = self._config_json(unit) | {"generation": generation}
        supervise.write_json(directory / "config.json", config)
        return generation

    def start(self, unit: str) -> None:
        if self.supervisor_pid(unit) is not None:
            return
        self._write_config(unit)
        directory = self._dir(unit)
        for stale in ("status.json", "supervisor.pid"):
            (directory / stale).unlink(missing_ok=True)
        # -S: no site-packages to scan; the supervisor needs only the standard library and this agent
        command = [sys.executable, "-S", "-m", "agent.apply.runtimes.supervise", str(directory)]
        result = subprocess.run(command, capture_output=True, timeout=30, check=False, env=_child_env())
        if result.returncode != 0 or self.supervisor_pid(unit) is None:
            raise TemporaryError(
                f"{unit}: supervisor did not start: {result.stderr.decode(errors='replace')}"
            )
        self._await_status(unit)
        self._check_started(unit)

    def _check_started(self, unit: str) -> None:
        record = self._read(unit, "status.json") or {}
        if record.get("error"):
            raise TemporaryError(f"{unit}: cannot run ExecStart: {record['error']}")

    def _await_status(self, unit: str) -> None:
        """Wait until the supervisor has spawned the service (first status), so status() means something."""
        deadline = time.monotonic() + START_TIMEOUT
        while self._read(unit, "status.json") is None and time.monotonic() < deadline:
            if self.supervisor_pid(unit) is None:
                return
            time.sleep(0.005)

    def stop(self, unit: str) -> None:
        pid = self.supervisor_pid(unit)
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.supervisor_pid(unit) is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.supervisor_pid(unit) is not None:
            _kill_leftovers(pid, self._read(unit, "status.json"))

    def restart(self, unit: str) -> None:
        """Have the live supervisor restart the service; stop and start when it cannot (or is too old to)."""
        pid = self.supervisor_pid(unit)
        if pid is None or "generation" not in (self._read(unit, "status.json") or {}):
            self.stop(unit)
            self.start(unit)
            return
        generation = self._write_config(unit)
        os.kill(pid, signal.SIGHUP)
        if self._await_generation(unit, generation):
            self._check_started(unit)
            return
        self.stop(unit)  # it ended meanwhile (or hangs): start afresh
        self.start(unit)

    def _await_generation(self, unit: str, generation: str) -> bool:
        """Wait until the supervisor runs the service with config `generation`; False if it went away."""
        deadline = time.monotonic() + STOP_TIMEOUT + START_TIMEOUT
        while time.monotonic() < deadline:
            if (self._read(unit, "status.json") or {}).get("generation") == generation:
                return True
            if self.supervisor_pid(unit) is None:
                return False
            time.sleep(0.005)
        return False

    def set_enabled(self, unit: str, enabled: bool) -> None:
        marker = self._dir(unit) / "enabled"
        marker.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if enabled:
            marker.touch()
        else:
            marker.unlink(missing_ok=True)

    def verify(self, unit: str) -> str | None:
        try:
            self.config(unit)
        except PermanentError as exc:
            return str(exc)
        return None

    def forget(self, unit: str) -> None:
        """Stop the unit and remove its supervisor state (the unit was removed from the plan)."""
        self.stop(unit)
        for name in ("config.json", "status.json", "supervisor.pid", "enabled", "output.log"):
            (self._dir(unit) / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self._dir(unit).rmdir()


def _kill_leftovers(supervisor: int, record: Any) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(supervisor, signal.SIGKILL)
    child = record.get("pid") if isinstance(record, dict) else None
    if isinstance(child, int):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child, signal.SIGKILL)


def _child_env() -> dict[str, str]:
    """The supervisor's environment: PATH, and PYTHONPATH so it imports this very agent."""
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH", "")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": f"{package_root}:{path}".rstrip(":"),
    }
