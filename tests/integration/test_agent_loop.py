"""The agent's loop against a remote on this machine: a new plan starts a cycle without waiting for the interval."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.integration.test_agent_process import eventually
from tests.support import AgentWorld, resource

pytestmark = pytest.mark.integration
HOUR = 3600.0


def plan_file(content: str) -> list[dict[str, object]]:
    return [resource("file", {"path": "/etc/plumb/greeting", "mode": "0644", "content": content})]


def test_a_new_plan_on_a_local_remote_wakes_the_agent(tmp_path: Path) -> None:
    """With an interval and heartbeat of an hour, only the watched state branch can bring the new plan in."""
    world = AgentWorld(tmp_path)
    world.publish(plan_file("one\n"), heartbeat=int(HOUR))
    agent = world.agent(interval=HOUR)
    stop = threading.Event()
    loop = threading.Thread(target=agent.run, kwargs={"stop": stop.is_set}, daemon=True)
    loop.start()
    greeting = world.path("/etc/plumb/greeting")
    try:
        eventually(lambda: greeting.exists() and greeting.read_text() == "one\n")
        world.publish(plan_file("two\n"), heartbeat=int(HOUR))
        eventually(lambda: greeting.read_text() == "two\n")
        assert world.report()["applied"]["serial"] == world.serial
    finally:
        stop.set()
        world.publish(plan_file("three\n"), heartbeat=int(HOUR))  # wakes the loop so it sees `stop`
        loop.join(timeout=60)
    assert not loop.is_alive()
