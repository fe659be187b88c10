"""A tiny detached supervisor for one unit: runs its command, restarts it per `Restart=`, stops on SIGTERM.

Started by the `process` runtime as `python -m agent.apply.runtimes.supervise DIR`. It forks, the child
becomes a session leader that outlives the agent, and the parent exits once `DIR/supervisor.pid`
is written. The supervisor reads `DIR/config.json`, writes `DIR/status.json` at every change, sends
the service's output to `DIR/output.log`, and restarts with exponential back-off (from RestartSec,
doubling, at most 30 s; reset after 10 s of healthy running). SIGTERM stops the service's process
group (SIGKILL after 5 s) and ends the supervisor. SIGHUP restarts the service: stop it, read
`config.json` again, start it at once; `status.json` then carries the config's `generation`, so
the runtime knows the restart is done without starting another interpreter.

It imports little, and `agent.host.unitfile` only once a process has ended: a unit's start waits for
this interpreter to come up.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

MAX_BACKOFF = 30.0
HEALTHY_AFTER = 10.0
STOP_GRACE = 5.0
_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP}


def write_json(path: Path, value: Any) -> None:
    """Atomically replace a small JSON file (renamed into place, not fsynced).

    Status and config describe processes that do not survive a reboot: a power cut may lose them,
    and no crash of the agent or the supervisor ever leaves a half-written one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        json.dump(value, handle)
    os.replace(tmp, path)


class Supervisor:
    """One unit's process, its restarts and its status file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.config: dict[str, Any] = json.loads((directory / "config.json").read_text())
        self.child: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.delay = float(self.config["restart_sec"])
        self.started = 0.0

    def status(self, state: str, **extra: Any) -> None:
        pid = self.child.pid if self.child is not None else None
        record = {"supervisor": os.getpid(), "pid": pid, "state": state, "restarts": self.restarts}
        record["generation"] = self.config.get("generation")
        write_json(self.directory / "status.json", record | extra)

    def spawn(self) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")} | dict(
            self.config["environment"]
        )
        cwd = self.config["working_directory"]
        with open(self.directory / "output.log", "ab") as log:
            self.child = subprocess.Popen(
                self.config["argv"],
                env=env,
                cwd=cwd,
                user=self.config["user"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, set()),
            )
        self.started = time.monotonic()
        self.status("running")

    def reap(self) -> tuple[int | None, int | None] | None:
        """(exit code, signal) if the child ended, else None."""
        if self.child is None or self.child.poll() is None:
            return None
        code = self.child.returncode
        return (None, -code) if code < 0 else (code, None)

    def next_delay(self) -> float:
        wait, self.delay = backoff(
            self.delay, base=float(self.config["restart_sec"]), ran_for=time.monotonic() - self.started
        )
        return wait

    def halt(self) -> None:
        """Stop the service's process group: SIGTERM, SIGKILL after STOP_GRACE."""
        if self.child is not None and self.child.poll() is None:
            _signal_group(self.child.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            while self.child.poll() is None and time.monotonic() < deadline:
                signal.sigtimedwait({signal.SIGCHLD}, 0.05)
            _signal_group(self.child.pid, signal.SIGKILL)
            self.child.wait()

    def stop(self) -> None:
        self.halt()
        self.status("stopped")

    def reload(self) -> float:
        """SIGHUP: stop the service, take the new config, and say when to start it (now)."""
        self.halt()
        self.child = None
        self.config = json.loads((self.directory / "config.json").read_text())
        self.restarts, self.delay = 0, float(self.config["restart_sec"])
        return time.monotonic()

    def ended(self) -> float | None:
        """After the service ended: when to start it again, or None when Restart= says not to."""
        from agent.host.unitfile import should_restart  # only now: keeps the supervisor's start cheap

        code, sig = self.reap() or (None, None)
        self.child = None  # reaped once: the next wake-up must not count this end again
        if not should_restart(self.config["restart"], exit_code=code, signal=sig):
            self.status("stopped" if code == 0 else "failed", exitCode=code, signal=sig)
            return None
        self.restarts += 1
        self.status("starting", exitCode=code, signal=sig)
        return time.monotonic() + self.next_delay()

    def run(self) -> None:
        next_start: float | None = time.monotonic()
        while True:
            if next_start is not None and time.monotonic() >= next_start:
                self.spawn()
                next_start = None
            timeout = 1.0 if next_start is None else max(0.0, next_start - time.monotonic())
            received = signal.sigtimedwait(_SIGNALS, timeout)
            signo = received.si_signo if received is not None else None
            if signo in (signal.SIGTERM, signal.SIGINT):
                self.stop()
                return
            if signo == signal.SIGHUP:
                next_start = self.reload()
            elif self.reap() is not None:
                next_start = self.ended()
                if next_start is None:
                    return


def backoff(current: float, *, base: float, ran_for: float) -> tuple[float, float]:
    """Pure: (how long to wait before this restart, the wait after the next failure).

    Waits double from RestartSec up to MAX_BACKOFF; a process that ran HEALTHY_AFTER seconds
    starts again from RestartSec.
    """
    wait = base if ran_for >= HEALTHY_AFTER else current
    return wait, min(max(wait * 2, 0.1), MAX_BACKOFF)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def daemonize(directory: Path) -> None:
    """Fork; the child becomes a session leader and supervises; the parent exits once the pid is written."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        os.read(read_end, 1)
        os._exit(0)
    os.close(read_end)
    os.setsid()
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    (directory / "supervisor.pid").write_text(f"{os.getpid()}\n")
    os.write(write_end, b"x")
    os.close(write_end)


def main() -> None:
    directory = Path(sys.argv[1])
    daemonize(directory)
    supervisor = Supervisor(directory)
    try:
        supervisor.run()
    except Exception as exc:  # the supervisor must leave a status behind, whatever happened
        supervisor.status("failed", error=f"{type(exc).__name__}: {exc}")
        raise


if __name__ == "__main__":
    main()
