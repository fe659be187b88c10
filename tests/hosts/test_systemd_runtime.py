"""The agent's systemd runtime on systemd as PID 1: plumb-agent installed from the wheel in a Debian container.

The node gets Plumb as a host without a package index would: a virtualenv made with the node's own
python3, installed from `make wheelhouse` (the locked dependencies) and the wheel `make dist` built
from this checkout. Plans are signed here and committed to a bare repository inside the node's
root; the agent runs there with the systemd runtime and no --root, as on a real machine.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from contract.crypto import SigningKey
from contract.documents import to_file_json
from tests.hosts.harness import HostLab, TestHost
from tests.support import make_plan, resource
from tests.support.gitrepo import bare_repo, commit_files

pytestmark = pytest.mark.hosts
ROOT = Path(__file__).resolve().parents[2]
WHEELHOUSE = ROOT / "wheelhouse"
AGENT = "/opt/plumb/bin/plumb-agent"
NODE = "node-a"


class Node:
    """The container with the agent installed, and the plans this test signs for it."""

    def __init__(self, host: TestHost) -> None:
        self.host = host
        self.key = SigningKey.generate()
        self.origin = bare_repo(host.root / "srv/fleet.git")
        self.serial = 0

    def publish(self, resources: list[dict[str, Any]]) -> None:
        self.serial += 1
        plan = make_plan(NODE, resources, serial=self.serial, key=self.key)
        commit_files(self.origin, "plumb/state", {f"plans/{NODE}.json": to_file_json(plan)})

    def agent_once(self) -> dict[str, Any]:
        """`plumb-agent run --once` on the node; its report (the JSON it prints)."""
        argv = [AGENT, "run", "--repo", "file:///srv/fleet.git", "--node", NODE, "--once", "--format", "json"]
        argv += ["--reconciler-key", self.key.public_b64(), "--runtime", "systemd", "--interval", "1s"]
        done = self.host.run(argv, timeout=120)
        assert done.returncode in (0, 2), done.stderr
        report = json.loads(done.stdout)
        assert isinstance(report, dict)
        return report

    def systemctl(self, *args: str) -> str:
        return self.host.run(["systemctl", *args]).stdout.strip()


def _install(host: TestHost) -> None:
    wheels = sorted((ROOT / "dist").glob("plumb_gitops-*.whl"))
    if not (WHEELHOUSE / ".done").exists() or not wheels:
        pytest.skip("needs `make wheelhouse` and `make dist` (the node reaches no package index)")
    target = host.root / "opt/wheelhouse"
    shutil.copytree(WHEELHOUSE, target, dirs_exist_ok=True)
    shutil.copy(wheels[-1], target)
    host.run(["python3", "-m", "venv", "/opt/plumb"], check=True, timeout=120)
    pip = ["/opt/plumb/bin/pip", "install", "--quiet", "--no-index", "--find-links", "/opt/wheelhouse"]
    host.run([*pip, f"/opt/wheelhouse/{wheels[-1].name}"], check=True, timeout=300)
    host.run([AGENT, "enroll", "--node", NODE], check=True)


@pytest.fixture(scope="module")
def node(host_lab: HostLab) -> Iterator[Node]:
    host = host_lab.boot(NODE)
    host.wait_running()
    _install(host)
    node = Node(host)
    yield node
    node.origin.free()  # its open files are inside the node's root, which the lab unmounts


def unit(name: str, body: str, **spec: Any) -> dict[str, Any]:
    return resource(
        "unit", {"name": name, "content": f"[Service]\n{body}", **spec}, service=name.split(".")[0]
    )


def service(name: str, **spec: Any) -> dict[str, Any]:
    entry = {"name": name, "unit": f"{name}.service", "state": "running", **spec}
    return resource("service", entry, service=name, after=[f"unit:{name}.service"])


def eventually(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.3)


def by_id(report: Mapping[str, Any], ident: str) -> dict[str, Any]:
    return next(dict(r) for r in report["resources"] if r["id"] == ident)


def test_a_unit_that_exits_after_start_is_reported_failed_with_its_exit_status(node: Node) -> None:
    """Type=simple exiting 3: the resource fails with systemd's result, not as drift, every run."""
    body = "ExecStart=/bin/sh -c 'sleep 0.2; echo cannot open /etc/quits.conf; exit 3'\n"
    node.publish([unit("quits.service", body), service("quits")])
    node.agent_once()
    assert eventually(lambda: node.systemctl("is-failed", "quits.service") == "failed")
    for _ in range(2):
        report = node.agent_once()
        entry = by_id(report, "unit:quits.service")
        assert entry["outcome"] == "failed" and "exit-code, status 3" in entry["error"], entry
        assert "last lines: " in entry["error"] and "cannot open /etc/quits.conf" in entry["error"]
        assert report["drift"] == []
        [instance] = [i for i in report["instances"] if i["service"] == "quits"]
        assert instance["ready"] is False


def test_a_crash_loop_is_failing_not_starting(node: Node) -> None:
    """Restart=always with a process that keeps exiting: failed, not ready, restarts counted."""
    body = "ExecStart=/bin/sh -c 'exit 1'\nRestart=always\nRestartSec=1s\n"
    node.publish([unit("loops.service", body), service("loops")])
    node.agent_once()

    def looping() -> dict[str, Any] | None:
        report = node.agent_once()
        [instance] = [i for i in report["instances"] if i["service"] == "loops"]
        return instance if instance["restarts"] >= 2 and instance["state"] == "failed" else None

    instance = eventually(looping)
    assert instance is not None, node.systemctl(
        "show", "-p", "ActiveState,SubState,NRestarts", "loops.service"
    )
    assert instance["ready"] is False


def test_a_restart_the_plan_asks_for_is_not_drift(node: Node) -> None:
    """A file listed in restartOn changes: the unit restarts (new main pid), and no drift is reported."""
    conf = {"path": "/etc/plumb/steady.conf", "mode": "0644", "content": "one\n"}
    steady = unit("steady.service", "ExecStart=/bin/sleep infinity\n", restartOn=["/etc/plumb/steady.conf"])
    node.publish([resource("file", conf, service="steady"), steady, service("steady")])
    node.agent_once()
    before = node.systemctl("show", "-p", "MainPID", "--value", "steady.service")
    node.publish([resource("file", conf | {"content": "two\n"}, service="steady"), steady, service("steady")])
    report = node.agent_once()
    after = node.systemctl("show", "-p", "MainPID", "--value", "steady.service")
    assert before != after and after != "0"
    assert report["drift"] == []
    assert "restart" in by_id(report, "unit:steady.service")["reason"]


def test_a_unit_stopped_by_hand_is_drift_and_started_again(node: Node) -> None:
    node.publish([unit("kept.service", "ExecStart=/bin/sleep infinity\n"), service("kept")])
    node.agent_once()
    node.systemctl("stop", "kept.service")
    report = node.agent_once()
    assert [d["id"] for d in report["drift"]] == ["unit:kept.service"]
    assert node.systemctl("is-active", "kept.service") == "active"


def test_a_drop_in_for_a_distribution_unit_reaches_its_running_process(node: Node) -> None:
    """nginx.service is Debian's; the plan adds a drop-in: systemd reloads and nginx restarts with it
    (a new main process, started after the reload)."""
    assert node.systemctl("is-active", "nginx.service") == "active"
    before = node.systemctl("show", "-p", "MainPID", "--value", "nginx.service")
    spec = {
        "name": "nginx.service",
        "dropIn": "plumb.conf",
        "content": "[Service]\nEnvironment=PLUMB_DROPIN=1\n",
    }
    node.publish([resource("unit", spec, service="edge")])
    report = node.agent_once()
    pid = node.systemctl("show", "-p", "MainPID", "--value", "nginx.service")
    assert pid not in (before, "0")
    # nginx rewrites its process title over its environment, so read what systemd started it with
    assert "PLUMB_DROPIN=1" in node.systemctl("show", "-p", "Environment", "--value", "nginx.service")
    assert report["drift"] == [] and "restart" in by_id(report, "unit:nginx.service/plumb.conf")["reason"]


def test_removed_units_leave_the_system_running_not_degraded(node: Node) -> None:
    """Pruning stops, disables and removes the units, and resets their failed state (runs last)."""
    node.publish([resource("file", {"path": "/etc/plumb/only", "mode": "0644", "content": "x\n"})])
    node.agent_once()
    for name in ("quits", "loops", "steady", "kept"):
        assert not (node.host.root / f"etc/systemd/system/{name}.service").exists()
        assert node.systemctl("is-active", f"{name}.service") in ("inactive", "unknown")
    assert node.host.run(["systemctl", "is-system-running"]).stdout.strip() == "running", node.systemctl(
        "list-units", "--failed", "--no-legend"
    )
