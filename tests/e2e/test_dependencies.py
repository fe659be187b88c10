"""Dependencies at run time, end to end: a service whose dependency nothing serves waits, then starts."""

from __future__ import annotations

import socket
import textwrap
from typing import Any

import pytest

from demo.fleet import free_port
from tests.e2e.conftest import FleetFactory
from tests.e2e.harness import Fleet
from tests.e2e.test_rollout import server_script

pytestmark = pytest.mark.e2e
TIMEOUT = 120.0
SUBNET = "127.0.7"

TEMPLATE = """\
apiVersion: plumb/v1
kind: Template
metadata: {{name: py}}
spec:
  description: A tiny web server written as a file; healthy once its readyFile exists (if it has one)
  parameters:
    type: object
    required: [port]
    properties: {{port: {{type: integer}}, readyFile: {{type: string, default: ""}}}}
  ports: [{{name: http, port: "{{{{ params.port }}}}", protocol: http}}]
  health:
    readiness:
      http: {{port: http, host: "{{{{ node.address }}}}", path: /healthz}}
      period: 1s
      timeout: 1s
      failureThreshold: 1
  resources:
    - file:
        path: "/srv/{{{{ service.name }}}}/server.py"
        mode: "0644"
        content: |
{script}
    - unit:
        name: "{{{{ service.name }}}}.service"
        content: |
          [Service]
          WorkingDirectory=/
          ExecStart=/usr/bin/python3 srv/{{{{ service.name }}}}/server.py {{{{ node.address }}}} {{{{ params.port }}}} {{{{ params.readyFile }}}}
          Restart=on-failure
"""


def desired(db_port: int, app_port: int) -> dict[str, str]:
    """db on n1 (healthy once srv/db-ready exists on n1), app on n1 and n2 depending on it."""
    files = {
        "plumb.yaml": "apiVersion: plumb/v1\nkind: Repository\nmetadata: {name: deps}\n"
        "spec: {allowedPaths: [/srv, /etc/systemd/system], heartbeat: 1s, offlineAfter: 60s}\n",
        "templates/py.yaml": TEMPLATE.format(script=textwrap.indent(server_script("0.1.0"), " " * 10)),
        "services/db.yaml": "apiVersion: plumb/v1\nkind: Service\nmetadata: {name: db}\nspec:\n  template: py\n"
        f"  params: {{port: {db_port}, readyFile: srv/db-ready}}\n  placement: {{nodes: [n1]}}\n",
        "services/app.yaml": "apiVersion: plumb/v1\nkind: Service\nmetadata: {name: app}\nspec:\n  template: py\n"
        f"  params: {{port: {app_port}}}\n  placement: {{nodes: [n1, n2]}}\n  dependsOn: [db]\n",
    }
    for index, name in enumerate(("n1", "n2"), start=1):
        files[f"nodes/{name}.yaml"] = (
            f"apiVersion: plumb/v1\nkind: Node\nmetadata: {{name: {name}}}\nspec:\n  address: {SUBNET}.{index}\n"
        )
    return files


def entry(fleet: Fleet, node: str, ident: str) -> dict[str, Any]:
    try:
        plan = fleet.plan(node)
    except (AssertionError, KeyError):
        return {}
    return next((r for r in plan["resources"] if r["id"] == ident), {})


def instance(fleet: Fleet, node: str, service: str) -> dict[str, Any]:
    try:
        instances = fleet.report(node).get("instances") or []
    except (AssertionError, KeyError):
        return {}
    return next((i for i in instances if i.get("service") == service), {})


def listening(address: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((address, port)) == 0


class TestDependencies:
    """`dependsOn` at run time (issue 5): wait instead of crash-looping, start once the dependency is ready."""

    def test_a_service_waits_for_its_dependency_then_starts(self, make_fleet: FleetFactory) -> None:
        """app waits on both nodes while db is unhealthy (plan says waitingFor, no process), then starts."""
        addresses = [f"{SUBNET}.1", f"{SUBNET}.2"]
        db_port = free_port(addresses)
        app_port = free_port(addresses, start=db_port + 1)
        fleet = make_fleet(files=desired(db_port, app_port))
        fleet.start()

        def waiting(node: str) -> bool:
            planned = entry(fleet, node, "service:app").get("spec", {}).get("waitingFor")
            return planned == ["db"] and instance(fleet, node, "app").get("state") == "waiting"

        fleet.wait_until(
            lambda: instance(fleet, "n1", "db").get("state") == "running" and all(map(waiting, ("n1", "n2"))),
            timeout=TIMEOUT,
            what="db runs unhealthy on n1 and app waits for it on n1 and n2",
        )
        assert not instance(fleet, "n1", "db")["ready"]
        for node, address in zip(("n1", "n2"), addresses, strict=True):
            app = instance(fleet, node, "app")
            assert app["pid"] is None and not app["ready"] and app["restarts"] == 0, app
            assert not listening(address, app_port), f"app listens on {node} while it should wait"
        # on the node that runs both, db comes first
        assert "service:db" in entry(fleet, "n1", "unit:app.service")["after"]
        status = fleet.status("status/nodes/n1.json")
        assert status["state"] == "online", status

        ready = fleet.local.nodes["n1"].root(fleet.workdir) / "srv" / "db-ready"
        ready.write_text("yes\n")

        def started(node: str) -> bool:
            planned = entry(fleet, node, "service:app").get("spec", {})
            app = instance(fleet, node, "app")
            return "waitingFor" not in planned and app.get("state") == "running" and bool(app.get("ready"))

        fleet.wait_until(
            lambda: all(map(started, ("n1", "n2"))),
            timeout=TIMEOUT,
            what="app started on n1 and n2 once db was ready",
        )
        assert instance(fleet, "n1", "db")["ready"]
        assert all(listening(address, app_port) for address in addresses)
        assert fleet.wait_converged(timeout=TIMEOUT)
