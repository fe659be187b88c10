"""Units under the `process` runtime: real supervised processes, restarts, adoption, stop and removal."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.apply.runtimes.process import process_alive
from tests.support import AgentWorld, resource
from tests.support.sshd import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def world(tmp_path: Path) -> Iterator[AgentWorld]:
    node = AgentWorld(tmp_path)
    try:
        yield node
    finally:
        node.stop_units()


def eventually(check: Callable[[], Any], *, attempts: int = 600) -> Any:
    """Poll `check` until it returns something truthy (bounded by attempts, not asserted on time)."""
    for _ in range(attempts):
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition never held")


def web_service(
    port: int, *, greeting: str = "hello", state: str = "running", bind: str = "127.0.0.1", **service: Any
) -> list[dict[str, Any]]:
    unit = {
        "name": "web.service",
        "content": (
            "[Unit]\nDescription=test web server\n[Service]\n"
            f"ExecStart={sys.executable} -m http.server {port} --bind {bind}\n"
            f"Environment=GREETING={greeting}\nWorkingDirectory=/srv/web\nRestart=on-failure\n"
        ),
        "restartOn": ["/etc/plumb/web.conf"],
    }
    spec = {
        "name": "web",
        "unit": "web.service",
        "state": state,
        "version": "1.0.0",
        "ports": [{"name": "http", "port": port, "protocol": "http"}],
        "health": {"readiness": {"http": {"port": "http", "path": "/"}, "failureThreshold": 1}},
    } | service
    return [
        resource("directory", {"path": "/srv/web", "mode": "0755"}, service="web"),
        resource("file", {"path": "/etc/plumb/web.conf", "mode": "0644", "content": "x\n"}, service="web"),
        resource("unit", unit, service="web", after=["directory:/srv/web"]),
        resource("service", spec, service="web", after=["unit:web.service"]),
    ]


def instance(world: AgentWorld, agent: Any) -> dict[str, Any]:
    agent.cycle(force_report=True)
    return dict(world.report()["instances"][0])


def test_unit_runs_is_probed_and_is_adopted_after_an_agent_restart(world: AgentWorld) -> None:
    """The unit's process runs; its port is seen listening; a new agent adopts it without a restart."""
    port = free_port()
    world.publish(web_service(port))
    agent = world.agent()
    agent.run(once=True)
    ready = eventually(lambda: (i := instance(world, agent))["ready"] and i)
    assert ready["state"] == "running"
    assert ready["ports"] == [{"name": "http", "port": port, "protocol": "http", "listening": True}]
    assert process_alive(ready["pid"], "http.server")
    again = world.agent()
    again.run(once=True)
    report = world.report()
    assert report["instances"][0]["pid"] == ready["pid"]
    assert {e["outcome"] for e in report["resources"]} == {"unchanged"}


def test_probe_without_host_knocks_on_the_node_address(world: AgentWorld) -> None:
    """A server bound to the node's address (not 127.0.0.1) turns ready: the probe goes where it listens."""
    port = free_port()
    world.publish(web_service(port, bind="127.0.0.2"), address="127.0.0.2")
    agent = world.agent()
    agent.run(once=True)
    ready = eventually(lambda: (i := instance(world, agent))["ready"] and i)
    assert ready["probes"]["readiness"]["message"] == f"GET http://127.0.0.2:{port}/ -> 200"
    assert ready["ports"] == [{"name": "http", "port": port, "protocol": "http", "listening": True}]


def test_content_and_restart_on_changes_restart_the_unit(world: AgentWorld) -> None:
    """A changed unit file, then a changed file listed in restartOn, each restart the process."""
    port = free_port()
    world.publish(web_service(port))
    world.agent().run(once=True)
    first = eventually(lambda: world.report()["instances"][0]["pid"])
    world.publish(web_service(port, greeting="bonjour"))
    world.agent().run(once=True)
    second = world.report()["instances"][0]["pid"]
    assert second != first and not process_alive(first, "http.server")
    entries = web_service(port, greeting="bonjour")
    entries[1] = resource(
        "file", {"path": "/etc/plumb/web.conf", "mode": "0644", "content": "y\n"}, service="web"
    )
    world.publish(entries)
    world.agent().run(once=True)
    report = world.report()
    assert report["instances"][0]["pid"] not in (first, second)
    unit = next(e for e in report["resources"] if e["id"] == "unit:web.service")
    assert "restart" in unit["reason"] and "/etc/plumb/web.conf" in unit["reason"]


def test_stopped_state_and_removal_stop_the_process(world: AgentWorld) -> None:
    """state: stopped stops the process; dropping the unit from the plan stops it and removes the file."""
    port = free_port()
    world.publish(web_service(port))
    world.agent().run(once=True)
    pid = eventually(lambda: world.report()["instances"][0]["pid"])
    world.publish(web_service(port, state="stopped"))
    world.agent().run(once=True)
    assert not process_alive(pid, "http.server")
    assert world.report()["instances"][0]["state"] == "stopped"
    world.publish(web_service(port))
    world.agent().run(once=True)
    pid = eventually(lambda: world.report()["instances"][0]["pid"])
    world.publish([resource("file", {"path": "/etc/plumb/other", "mode": "0644", "content": "o"})])
    world.agent().run(once=True)
    assert not process_alive(pid, "http.server")
    assert not world.path("/etc/systemd/system/web.service").exists()


def test_crashing_unit_is_restarted_with_back_off(world: AgentWorld) -> None:
    """Restart=always brings a process that keeps exiting back, counting restarts."""
    unit = {
        "name": "crash.service",
        "content": "[Service]\nExecStart=/bin/sh -c 'exit 3'\nRestart=always\nRestartSec=50ms\n",
    }
    service = {"name": "crash", "unit": "crash.service", "state": "running"}
    world.publish([resource("unit", unit, service="crash"), resource("service", service, service="crash")])
    agent = world.agent()
    agent.run(once=True)
    assert eventually(lambda: instance(world, agent)["restarts"] >= 3)


def test_waiting_for_a_dependency_does_not_start_the_unit(world: AgentWorld) -> None:
    """A service whose plan lists waitingFor is not started, and says so."""
    port = free_port()
    world.publish(web_service(port, waitingFor=["db"]))
    world.agent().run(once=True)
    outcome = world.agent().run(once=True)
    report = world.report()
    unit = next(e for e in report["resources"] if e["id"] == "unit:web.service")
    assert outcome.ok
    assert unit["outcome"] == "skipped" and "waiting for db" in unit["reason"]
    assert report["instances"][0]["state"] == "waiting"
    assert report["instances"][0]["pid"] is None


def test_release_hooks_run_once_per_version(world: AgentWorld, tmp_path: Path) -> None:
    """preStart and postStart run once for a new version, not again after an agent restart."""
    log = tmp_path / "hooks.log"
    hooks = {
        "preStart": [f"echo pre $PLUMB_VERSION >> {log}"],
        "postStart": [f"echo post $PLUMB_VERSION >> {log}"],
    }
    port = free_port()
    world.publish(web_service(port, hooks=hooks))
    world.agent().run(once=True)
    world.agent().run(once=True)
    assert log.read_text() == "pre 1.0.0\npost 1.0.0\n"
    world.publish(web_service(port, hooks=hooks, version="1.1.0"))
    world.agent().run(once=True)
    assert log.read_text().splitlines()[-2:] == ["pre 1.1.0", "post 1.1.0"]
    assert [h["hook"] for h in world.report()["hooks"]] == ["preStart", "postStart"]


def test_supervisor_outlives_the_agent_process(world: AgentWorld) -> None:
    """The supervisor is its own session, not a child of the agent."""
    port = free_port()
    world.publish(web_service(port))
    world.agent().run(once=True)
    supervisor = int((world.state_dir / "supervise" / "web.service" / "supervisor.pid").read_text())
    assert os.getsid(supervisor) == supervisor
    assert os.getpgid(supervisor) != os.getpgid(0)


def test_environment_and_working_directory_are_honoured(world: AgentWorld) -> None:
    """ExecStart runs with the unit's Environment= and in its WorkingDirectory= (mapped under --root)."""
    script = 'echo "$GREETING $(pwd)" > out.txt; exec sleep 3600'
    unit = {
        "name": "env.service",
        "content": f"[Service]\nEnvironment=\"GREETING=hello there\"\nWorkingDirectory=/srv/env\nExecStart=/bin/sh -c '{script}'\n",
    }
    world.publish(
        [
            resource("directory", {"path": "/srv/env", "mode": "0755"}),
            resource("unit", unit, after=["directory:/srv/env"]),
        ]
    )
    world.agent().run(once=True)
    out = world.path("/srv/env/out.txt")
    assert eventually(lambda: out.exists() and out.read_text()) == f"hello there {world.path('/srv/env')}\n"


def test_unit_without_exec_start_is_refused(world: AgentWorld) -> None:
    """The process runtime verifies a unit before using it; a bad one is reverted and reported."""
    world.publish([resource("unit", {"name": "bad.service", "content": "[Service]\nType=simple\n"})])
    assert not world.agent().run(once=True).ok
    assert "no ExecStart" in world.report()["resources"][0]["error"]
    assert not world.path("/etc/systemd/system/bad.service").exists()


def test_missing_executable_is_reported(world: AgentWorld) -> None:
    """An ExecStart that cannot be run fails the unit with the reason."""
    world.publish(
        [resource("unit", {"name": "ghost.service", "content": "[Service]\nExecStart=/nonexistent/ghost\n"})]
    )
    assert not world.agent().run(once=True).ok
    entry = world.report()["resources"][0]
    assert entry["outcome"] == "failed" and "/nonexistent/ghost" in entry["error"]


def test_failed_pre_start_hook_keeps_the_unit_down_and_is_retried(world: AgentWorld, tmp_path: Path) -> None:
    """A failing preStart hook leaves the unit unstarted and the service failed; the next apply retries it."""
    gate = tmp_path / "gate"
    hooks = {"preStart": [f"test -e {gate}"]}
    world.publish(web_service(free_port(), hooks=hooks))
    assert not world.agent().run(once=True).ok
    report = world.report()
    outcomes = {e["id"]: e["outcome"] for e in report["resources"]}
    assert outcomes["service:web"] == "failed" and outcomes["unit:web.service"] != "failed"
    assert report["instances"][0]["pid"] is None
    gate.touch()
    assert world.agent().run(once=True).ok
    assert world.report()["instances"][0]["pid"] is not None


def test_exec_start_paths_inside_allowed_paths_are_mapped_under_the_root(world: AgentWorld) -> None:
    """ExecStart's executable and absolute arguments inside allowedPaths run from under --root; /bin/sh stays."""
    script = '#!/bin/sh\necho "$0 $1" > "$1"\nexec sleep 3600\n'
    unit = {
        "name": "tool.service",
        "content": "[Service]\nExecStart=/opt/tool/bin/run /srv/tool/out.txt\n",
    }
    shell = {
        "name": "shell.service",
        "content": "[Service]\nExecStart=/bin/sh /opt/tool/bin/run /srv/tool/sh.txt\n",
    }
    world.publish(
        [
            resource("directory", {"path": "/srv/tool", "mode": "0755"}),
            resource("file", {"path": "/opt/tool/bin/run", "mode": "0755", "content": script}),
            resource("unit", unit, after=["file:/opt/tool/bin/run", "directory:/srv/tool"]),
            resource("unit", shell, after=["file:/opt/tool/bin/run", "directory:/srv/tool"]),
        ]
    )
    assert world.agent().run(once=True).ok, world.report()["resources"]
    out, by_shell = world.path("/srv/tool/out.txt"), world.path("/srv/tool/sh.txt")
    run = world.path("/opt/tool/bin/run")
    assert eventually(lambda: out.exists() and out.read_text()) == f"{run} {out}\n"
    assert eventually(lambda: by_shell.exists() and by_shell.read_text()) == f"{run} {by_shell}\n"


def test_a_killed_process_is_started_again_by_its_supervisor(world: AgentWorld) -> None:
    """Restart=on-failure brings a SIGKILLed process back with a new pid, running, not stuck in `starting`."""
    port = free_port()
    world.publish(web_service(port))
    agent = world.agent()
    agent.run(once=True)
    first = eventually(lambda: instance(world, agent)["pid"])
    os.kill(first, 9)
    again = eventually(lambda: (i := instance(world, agent))["pid"] not in (None, first) and i["ready"] and i)
    assert again["state"] == "running" and again["restarts"] == 1


def test_a_restart_reuses_the_supervisor_and_runs_the_new_command(world: AgentWorld) -> None:
    """Restarting a unit asks its live supervisor to run the new ExecStart: same supervisor, new process."""
    port = free_port()
    world.publish(web_service(port))
    world.agent().run(once=True)
    supervisor = int((world.state_dir / "supervise" / "web.service" / "supervisor.pid").read_text())
    first = eventually(lambda: world.report()["instances"][0]["pid"])
    world.publish(web_service(port, greeting="bonjour"))
    world.agent().run(once=True)
    second = world.report()["instances"][0]["pid"]
    assert second not in (None, first) and not process_alive(first, "http.server")
    assert b"GREETING=bonjour" in Path(f"/proc/{second}/environ").read_bytes()
    assert int((world.state_dir / "supervise" / "web.service" / "supervisor.pid").read_text()) == supervisor
    assert process_alive(supervisor, str(world.state_dir / "supervise" / "web.service"))


def test_ports_of_a_child_process_are_seen_listening(world: AgentWorld) -> None:
    """A port opened by a child of the unit's main process counts as listening (the process tree is walked)."""
    port = free_port()
    entries = web_service(port)
    entries[2]["spec"]["content"] = (
        f"[Service]\nExecStart=/bin/sh -c '{sys.executable} -m http.server {port} --bind 127.0.0.1 & wait'\n"
        "WorkingDirectory=/srv/web\n"
    )
    entries[2] = resource("unit", entries[2]["spec"], service="web", after=["directory:/srv/web"])
    world.publish(entries)
    agent = world.agent()
    agent.run(once=True)
    found = eventually(lambda: (i := instance(world, agent))["ready"] and i)
    assert found["ports"][0]["listening"] is True
    assert Path(f"/proc/{found['pid']}/cmdline").read_bytes().split(b"\0")[0] == b"/bin/sh"
