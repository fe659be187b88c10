"""When the agent pushes a report: at once when what the reconciler acts on changes, not for a new time."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_agent_process import eventually, web_service
from tests.support import AgentWorld, resource
from tests.support.sshd import free_port

pytestmark = pytest.mark.integration
QUIET = 3600  # a heartbeat no test waits for


@pytest.fixture
def world(tmp_path: Path) -> Iterator[AgentWorld]:
    node = AgentWorld(tmp_path)
    try:
        yield node
    finally:
        node.stop_units()


def pushed_instance(world: AgentWorld, agent: Any) -> dict[str, Any]:
    """Run one ordinary cycle (no forced push) and return the instance as the remote has it."""
    agent.cycle()
    return dict(world.report()["instances"][0])


def gated_web(port: int, gate: Path, *, config: str) -> list[dict[str, Any]]:
    """A web service whose process serves only once `gate` exists; a new `config` restarts it."""
    command = f"while [ ! -e {gate} ]; do sleep 0.05; done; exec {sys.executable} -m http.server {port}"
    entries = web_service(port)
    entries[1]["spec"]["content"] = config
    entries[1] = resource("file", entries[1]["spec"], service="web")
    entries[2]["spec"]["content"] = f"[Service]\nExecStart=/bin/sh -c '{command} --bind 127.0.0.1'\n"
    entries[2] = resource("unit", entries[2]["spec"], service="web", after=["directory:/srv/web"])
    health = {"readiness": {"http": {"port": "http", "path": "/"}, "failureThreshold": 3}}
    entries[3]["spec"]["health"] = health
    entries[3] = resource("service", entries[3]["spec"], service="web", after=["unit:web.service"])
    return entries


def test_readiness_changes_are_pushed_at_once_and_unchanged_reports_are_not(
    world: AgentWorld, tmp_path: Path
) -> None:
    """An instance turning ready, then its process killed, each reach the remote within a cycle."""
    port, gate = free_port(), tmp_path / "gate"
    gate.touch()
    world.publish(gated_web(port, gate, config="one\n"), heartbeat=QUIET)
    agent = world.agent()
    agent.run(once=True)
    ready = eventually(lambda: (i := pushed_instance(world, agent))["ready"] and i)
    assert ready["ports"][0]["listening"]
    assert not agent.cycle().pushed  # only the time changed
    gate.unlink()  # the process started in its place waits: it cannot turn ready again
    os.kill(ready["pid"], signal.SIGKILL)
    assert eventually(lambda: not pushed_instance(world, agent)["ready"])


def test_a_restart_by_an_apply_is_not_ready_until_its_probe_passes_again(
    world: AgentWorld, tmp_path: Path
) -> None:
    """Readiness of a process restarted by an apply is earned afresh, not kept for failureThreshold probes."""
    port, gate = free_port(), tmp_path / "gate"
    gate.touch()
    world.publish(gated_web(port, gate, config="one\n"), heartbeat=QUIET)
    agent = world.agent()
    agent.run(once=True)
    first = eventually(lambda: (i := pushed_instance(world, agent))["ready"] and i)
    gate.unlink()
    world.publish(gated_web(port, gate, config="two\n"), heartbeat=QUIET)
    assert agent.cycle().applied
    restarted = world.report()["instances"][0]
    assert restarted["pid"] != first["pid"] and restarted["ready"] is False
    gate.touch()
    assert eventually(lambda: pushed_instance(world, agent)["ready"])
