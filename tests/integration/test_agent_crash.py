"""SIGKILL the agent at random points of an apply: every file stays wholly old or wholly new, then converges."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import AgentWorld, resource

pytestmark = pytest.mark.integration
FILES = 40
TRIALS = 30


def variant(name: str) -> list[dict[str, Any]]:
    entries = [resource("directory", {"path": "/srv/data", "mode": "0755"})]
    for index in range(FILES):
        body = f"{name} {index}\n" * 400
        spec = {"path": f"/srv/data/f{index:03}.txt", "mode": "0644", "content": body}
        entries.append(resource("file", spec, after=["directory:/srv/data"]))
    return entries


def contents(world: AgentWorld) -> dict[str, str]:
    return {
        p.name: p.read_text() for p in sorted(world.path("/srv/data").iterdir()) if not p.name.startswith(".")
    }


def whole(text: str, names: tuple[str, str], index: int) -> bool:
    return any(text == f"{name} {index}\n" * 400 for name in names)


class ForkedAgent:
    """`plumb-agent run --once` in a forked child of the test (a real process, without re-importing)."""

    def __init__(self, world: AgentWorld) -> None:
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                world.agent().run(once=True)
                code = 0
            finally:
                os._exit(code)
        self.status: int | None = None

    def poll(self) -> int | None:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            self.status = status if pid else None
        return self.status

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        if self.status is None:
            self.status = os.waitpid(self.pid, 0)[1]


def wait_for_journal(world: AgentWorld, process: ForkedAgent) -> None:
    """Return once the agent has journaled the apply (or has already finished)."""
    journal = world.state_dir / "journal.json"
    while not journal.exists() and process.poll() is None:
        time.sleep(0.001)


def journaled_window(world: AgentWorld) -> float:
    """How long an apply keeps its journal: the window the kills aim at."""
    process = ForkedAgent(world)
    wait_for_journal(world, process)
    began = time.monotonic()
    while (world.state_dir / "journal.json").exists() and process.poll() is None:
        time.sleep(0.001)
    window = time.monotonic() - began
    while process.poll() is None:
        time.sleep(0.01)
    return window


def test_sigkill_mid_apply_never_leaves_a_torn_file(tmp_path: Path) -> None:
    """SIGKILL until 30 kills landed inside an apply; after each, files are whole; the next start converges."""
    world = AgentWorld(tmp_path)
    world.publish(variant("v0"))
    world.agent().run(once=True)
    world.publish(variant("timing"))
    apply_time = journaled_window(world)
    chooser = random.Random(20261122)
    previous, interrupted = "timing", 0
    for trial in range(TRIALS * 3):
        name = f"t{trial}"
        world.publish(variant(name))
        process = ForkedAgent(world)
        wait_for_journal(world, process)
        time.sleep(chooser.uniform(0.0, apply_time))
        process.kill()
        interrupted += (world.state_dir / "journal.json").exists()
        for index, text in enumerate(contents(world).values()):
            assert whole(text, (previous, name), index), f"trial {trial}: f{index:03}.txt is torn"
        world.agent().run(once=True)
        assert list(contents(world).values()) == [f"{name} {i}\n" * 400 for i in range(FILES)]
        assert not list(world.path("/srv/data").glob(".*.plumb-tmp"))
        assert not (world.state_dir / "journal.json").exists()
        previous = name
        if interrupted >= TRIALS:
            break
    assert interrupted >= TRIALS, f"only {interrupted} kills landed inside an apply"


def test_git_locks_a_killed_agent_left_are_cleared_on_start(tmp_path: Path) -> None:
    """A ref lock left in the agent's own repository by a SIGKILL would fail every later report push:
    the next start removes it (it holds the agent lock, so no other writer exists) and reports."""
    world = AgentWorld(tmp_path)
    world.publish(variant("v0"))
    world.agent().run(once=True)
    repo = world.state_dir / "repo.git"
    planted = [
        repo / "refs/heads/plumb/reports/web-1.lock",
        repo / "refs/plumb/state.lock",
        repo / "packed-refs.lock",
    ]
    for lock in planted:
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.write_text("0" * 40 + "\n")
    world.publish(variant("v1"))
    assert world.agent().run(once=True).ok
    assert not [lock for lock in planted if lock.exists()]
    assert world.report()["applied"]["serial"] == 2
