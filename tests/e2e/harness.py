"""`Fleet`: a whole local fleet (bare repository, reconciler, agents, nginx) for end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from demo.fleet import Answer, FleetError, LocalFleet, NodeProgress, http_get

DEFAULT_TIMEOUT = 90.0


class Fleet:
    """A `demo.fleet.LocalFleet` under test: bounded waits that fail with the fleet's table and logs.

    `stop()` ends every process the fleet started and is safe to call twice. Use it through the
    `make_fleet` fixture of `tests/e2e/conftest.py`, which stops every fleet even when a test fails:

        fleet = make_fleet(files={...})      # or source=Path("examples/shop"), prepare=tiny_fleet...
        fleet.start()
        fleet.wait_converged()
        before = fleet.planned()
        commit = fleet.push("change", files={"services/api.yaml": ...})
        fleet.wait_applied(commit, before)
    """

    def __init__(
        self,
        workdir: Path,
        *,
        agent_interval: str = "0.5s",
        reconcile_interval: str = "2s",
        local_artifacts: Path | None = None,
    ) -> None:
        self.local = LocalFleet(
            workdir,
            agent_interval=agent_interval,
            reconcile_interval=reconcile_interval,
            local_artifacts=local_artifacts,
        )

    # set-up

    def create(
        self,
        *,
        source: Path | None = None,
        files: Mapping[str, str] | None = None,
        prepare: Callable[[Path], object] | None = None,
    ) -> str:
        """Workspace, keys, the desired state (copied, written, and/or made by `prepare(work)`), every
        node enrolled, pushed."""
        self.local.create(source)
        self.write(files or {})
        if prepare is not None:
            prepare(self.local.work)
        self.local.enroll()
        commit, _ = self.local.publish("initial desired state")
        return commit

    def write(self, files: Mapping[str, str | None]) -> None:
        """Write (or, for None, delete) files of the working tree; nothing is pushed yet."""
        for relative, text in files.items():
            path = self.local.work / relative
            if text is None:
                path.unlink(missing_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def push(self, message: str, files: Mapping[str, str | None] | None = None) -> str:
        """Write `files`, commit everything and `git push`; the new desired commit."""
        self.write(files or {})
        commit, _ = self.local.publish(message)
        return commit

    def start(self) -> None:
        self.local.start()

    def stop(self) -> None:
        self.local.stop()

    # reading

    @property
    def nodes(self) -> list[str]:
        return list(self.local.nodes)

    @property
    def workdir(self) -> Path:
        return self.local.workdir

    def progress(self) -> list[NodeProgress]:
        return self.local.progress()

    def planned(self) -> dict[str, int | None]:
        return self.local.planned()

    def plan(self, node: str) -> dict[str, Any]:
        return self._state_json(f"plans/{node}.json")

    def status(self, path: str) -> dict[str, Any]:
        """A status document of the state branch, e.g. `status/services/api.json`."""
        return self._state_json(path)

    def report(self, node: str) -> dict[str, Any]:
        ref = f"refs/heads/{self.local.reports_prefix}{node}"
        return _read_json(self.local.repository(), ref, "report.json")

    def _state_json(self, path: str) -> dict[str, Any]:
        return _read_json(self.local.repository(), f"refs/heads/{self.local.state_branch}", path)

    def get(self, node: str, port: int, *, host: str, path: str = "/") -> Answer:
        """An HTTP GET to `node`'s address (e.g. through its nginx) with a Host header."""
        return http_get(self.local.nodes[node].address, port, host=host, path=path)

    # waiting

    def wait_until(
        self, condition: Callable[[], bool], *, timeout: float = DEFAULT_TIMEOUT, what: str
    ) -> None:
        """Poll `condition` until it holds; fail with the fleet's state and logs when `timeout` passes."""
        deadline = time.monotonic() + timeout
        while not condition():
            self.local.check_children()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f} s waiting until {what}\n{self.explain()}"
                )
            time.sleep(0.1)

    def wait_converged(self, *, timeout: float = DEFAULT_TIMEOUT) -> list[NodeProgress]:
        """Every node applied its current plan, all resources ok, all instances ready."""
        self.wait_until(lambda: all(p.converged for p in self.progress()), timeout=timeout, what="converged")
        return self.progress()

    def wait_applied(
        self, commit: str, before: Mapping[str, int | None], *, timeout: float = DEFAULT_TIMEOUT
    ) -> list[str]:
        """`commit` reconciled and applied on every node whose plan it changed; those nodes."""
        try:
            return self.local.wait_applied(commit, before, timeout=timeout)
        except FleetError as error:
            raise AssertionError(f"{error}\n{self.explain()}") from error

    def explain(self) -> str:
        """The fleet's table and the last lines of every log, for failure messages."""
        lines = [f"{p.node}: plan {p.planned} applied {p.applied}: {p.describe()}" for p in self.progress()]
        for log in sorted((self.workdir / "logs").glob("*.log")):
            tail = log.read_text(errors="replace").strip().splitlines()[-8:]
            lines += [f"--- {log.name}", *tail]
        return "\n".join(lines)


def _read_json(repo: Any, ref: str, path: str) -> dict[str, Any]:
    reference = repo.references.get(ref)
    if reference is None:
        raise AssertionError(f"{ref} does not exist")
    value = json.loads(reference.peel().tree[path].data)
    assert isinstance(value, dict)
    return value


@contextlib.contextmanager
def stopped_afterwards(fleet: Fleet) -> Iterator[Fleet]:
    """Yield `fleet`; then stop it and kill whatever is left under its directory, failing if anything was."""
    try:
        yield fleet
    finally:
        try:
            fleet.stop()
        finally:
            leftovers = kill_processes_under(fleet.workdir)
        assert not leftovers, f"processes left running under {fleet.workdir}: {leftovers}"


def processes_under(path: Path) -> list[int]:
    """Pids whose command line mentions `path` or whose working directory is inside it."""
    found, mark = [], str(path.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
            zombie = (entry / "stat").read_text().rpartition(")")[2].split()[0] == "Z"
            if not zombie and (mark in cmdline or cwd == mark or cwd.startswith(mark + "/")):
                found.append(int(entry.name))
    return found


def kill_processes_under(path: Path) -> list[int]:
    """SIGKILL whatever `processes_under(path)` finds (test teardown after a failure); the pids."""
    pids = processes_under(path)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return pids
