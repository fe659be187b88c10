"""The whole loop end to end: a real reconciler, real agents (process runtime), real git and a real nginx edge.

One fleet serves every test of this module (starting one costs more than all the checks): two app
nodes run a small HTTP server as the `web` service, and an edge node publishes it through nginx
with the ingress trait of examples/shop, whose upstream lists the healthy endpoints the agents
report. Each test leaves the fleet converged as it found it; the one that kills a process runs last. Every wait is bounded and fails with
the fleet's table and log tails.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from demo.fleet import free_port, nginx_available
from tests.e2e.harness import Fleet, stopped_afterwards

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not nginx_available(), reason="needs nginx (apt-get install nginx-light)"),
]
PLUMB = str(Path(sys.executable).parent / "plumb")
ROOT = Path(__file__).resolve().parents[2]
APPS = {"app-1": "127.0.3.1", "app-2": "127.0.3.2"}
EDGE = ("edge-1", "127.0.3.10")
HOST = "web.example.com"
TIMEOUT = 60.0

REPOSITORY = """\
apiVersion: plumb/v1
kind: Repository
metadata: {name: loop}
spec:
  allowedPaths: [/srv/web, /etc/systemd/system, /etc/nginx/conf.d]
  heartbeat: 1s
  offlineAfter: 6s
"""
NODE = """\
apiVersion: plumb/v1
kind: Node
metadata: {{name: {name}, labels: {{role: {role}}}}}
spec:
  address: {address}
"""
# The server waits while srv/web/hold exists (so a test decides how long a restart takes) and
# creates srv/web/healthz, which readiness asks for (so a test can make it unready by deleting it).
TEMPLATE = """\
apiVersion: plumb/v1
kind: Template
metadata: {name: web}
spec:
  description: A static HTTP server whose readiness is the file srv/web/healthz
  parameters:
    type: object
    additionalProperties: false
    required: [port, message]
    properties: {port: {type: integer}, message: {type: string}}
  ports:
    - {name: http, port: "{{ params.port }}", protocol: http}
  health:
    readiness: {http: {port: http, host: "{{ node.address }}", path: /healthz}, period: 1s, timeout: 1s, failureThreshold: 1}
  resources:
    - file: {path: /srv/web/index.html, mode: "0644", content: "{{ params.message }} from {{ node.name }}\\n"}
    - unit:
        name: web.service
        content: |
          [Service]
          WorkingDirectory=/
          ExecStart=/bin/sh -c 'while [ -e srv/web/hold ]; do sleep 0.1; done; touch srv/web/healthz; exec /usr/bin/python3 -m http.server {{ params.port }} --bind {{ node.address }} --directory srv/web'
          Restart=on-failure
"""
SERVICE = """\
apiVersion: plumb/v1
kind: Service
metadata: {{name: web, labels: {{app: site}}}}
spec:
  template: web
  params: {{port: {port}, message: {message}}}
  placement: {{selector: {{role: app}}}}
  traits:
    - {{type: ingress, params: {{host: {host}, port: {edge_port}}}}}
"""
INVALID = """\
apiVersion: plumb/v1
kind: Service
metadata: {name: broken}
spec:
  template: nope
  params: {port: 1, message: nope}
  placement: {selector: {role: app}}
"""


class Loop:
    """The module's fleet, with what the tests ask of it."""

    def __init__(self, fleet: Fleet, *, port: int, edge_port: int) -> None:
        self.fleet, self.port, self.edge_port = fleet, port, edge_port

    def service_file(self, message: str) -> str:
        return SERVICE.format(port=self.port, message=message, host=HOST, edge_port=self.edge_port)

    def get(self) -> tuple[int, str]:
        answer = self.fleet.get(EDGE[0], self.edge_port, host=HOST)
        return answer.status, answer.body

    def upstream(self) -> list[str]:
        """The servers of the edge's site file as the edge's agent wrote it (what nginx runs)."""
        site = self.fleet.local.nodes[EDGE[0]].root(self.fleet.workdir) / "etc/nginx/conf.d/web.conf"
        return sorted(
            re.findall(r"(?m)^\s*server\s+([0-9.]+:[0-9]+);", site.read_text() if site.exists() else "")
        )

    def root(self, node: str) -> Path:
        return self.fleet.local.nodes[node].root(self.fleet.workdir)

    def status(self, *args: str) -> dict[str, Any]:
        """`plumb status --format json` as an operator runs it."""
        output = self.plumb_status("--format", "json", *args)
        value = json.loads(output)
        assert isinstance(value, dict)
        return value

    def plumb_status(self, *args: str) -> str:
        result = subprocess.run(
            [PLUMB, "status", "--repo", str(self.fleet.local.bare), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def node_state(self, node: str) -> str:
        return str(self.fleet.status(f"status/nodes/{node}.json")["state"])

    def service(self) -> dict[str, Any]:
        return self.fleet.status("status/services/web.json")

    def wait_service(self, state: str) -> None:
        """Until status/services/web.json says `state`; the document and reports are in the failure."""
        try:
            self.fleet.wait_until(
                lambda: self.service()["state"] == state, timeout=TIMEOUT, what=f"web is {state}"
            )
        except AssertionError as error:
            reports = {n: self.fleet.report(n)["instances"] for n in APPS}
            raise AssertionError(f"{error}\nweb: {json.dumps(self.service())}\nreports: {reports}") from None

    def wait_upstream(self, expected: list[str], what: str) -> None:
        self.fleet.wait_until(lambda: self.upstream() == expected, timeout=TIMEOUT, what=what)

    def wait_serving(self) -> None:
        """Both app nodes back in the upstream, answering through the edge, every node converged."""
        self.wait_upstream(everyone(self.port), "both app nodes are in the edge's upstream")
        self.fleet.wait_until(lambda: self.get()[0] == 200, timeout=TIMEOUT, what="the edge answers 200")
        self.fleet.wait_converged(timeout=TIMEOUT)


def everyone(port: int) -> list[str]:
    return sorted(f"{address}:{port}" for address in APPS.values())


def files(
    port: int,
    edge_port: int,
    *,
    apps: Mapping[str, str] = APPS,
    edge: tuple[str, str] = EDGE,
    message: str = "hello",
) -> dict[str, str]:
    """The fleet's desired state: `web` on the app nodes, behind the edge's ingress."""
    found = {
        "plumb.yaml": REPOSITORY,
        "templates/web.yaml": TEMPLATE,
        "traits/ingress.yaml": (ROOT / "examples/shop/traits/ingress.yaml").read_text(),
        f"nodes/{edge[0]}.yaml": NODE.format(name=edge[0], role="edge", address=edge[1]),
        "services/web.yaml": SERVICE.format(port=port, message=message, host=HOST, edge_port=edge_port),
    }
    for name, address in apps.items():
        found[f"nodes/{name}.yaml"] = NODE.format(name=name, role="app", address=address)
    return found


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    """The fleet, started and converged; stopped (and anything left under it killed) at the end."""
    workdir = tmp_path_factory.mktemp("loop")
    port = free_port(APPS.values(), start=18080)
    edge_port = free_port([EDGE[1]], start=18180)
    with stopped_afterwards(Fleet(workdir / "fleet")) as fleet:
        fleet.create(files=files(port, edge_port))
        fleet.start()
        running = Loop(fleet, port=port, edge_port=edge_port)
        running.wait_serving()
        yield running


class TestLoop:
    """Push, converge, lose and regain endpoints and nodes, refuse an invalid push."""

    def test_a_push_converges_every_node(self, loop: Loop) -> None:
        """A new message reaches both app nodes and is served through the edge; status says so."""
        before = loop.fleet.planned()
        commit = loop.fleet.push("a new message", {"services/web.yaml": loop.service_file("changed")})
        changed = loop.fleet.wait_applied(commit, before, timeout=TIMEOUT)
        assert changed == ["app-1", "app-2"]
        answers: list[tuple[int, str]] = []

        def new_message() -> bool:
            answers.append(loop.get())
            return answers[-1] in ((200, "changed from app-1\n"), (200, "changed from app-2\n"))

        try:
            loop.fleet.wait_until(new_message, timeout=TIMEOUT, what="the edge serves the new message")
        except AssertionError as error:
            seen = sorted(set(answers[-20:]))
            raise AssertionError(
                f"{error}\nlast answers: {seen}\nupstream: {loop.upstream()}\n"
                f"web: {json.dumps(loop.service())}"
            ) from None
        loop.fleet.wait_converged(timeout=TIMEOUT)
        view = loop.status()
        assert view["source"]["commit"] == commit and view["source"]["ok"]
        assert {n["node"]: (n["state"], n["inSync"]) for n in view["nodes"]} == {
            "app-1": ("online", True),
            "app-2": ("online", True),
            "edge-1": ("online", True),
        }
        loop.wait_service("running")

    def test_services_roll_up_into_their_application(self, loop: Loop) -> None:
        """web carries `app: site`: status/apps/site.json rolls it up, and `plumb status` shows it."""
        loop.fleet.wait_converged(timeout=TIMEOUT)
        app = loop.fleet.status("status/apps/site.json")
        assert (app["state"], app["services"]) == ("running", {"web": "running"}), app
        assert loop.service()["app"] == "site"
        assert [(a["app"], a["state"]) for a in loop.status()["apps"]] == [("site", "running")]
        assert "site  running  web" in loop.plumb_status()

    def test_every_endpoint_unhealthy_answers_503(self, loop: Loop) -> None:
        """With readiness failing on both app nodes the upstream is empty and the edge answers 503."""
        for node in APPS:
            (loop.root(node) / "srv/web/healthz").unlink()
        try:
            loop.wait_upstream([], "the edge's upstream is empty")
            # One predicate: during a reload an old nginx worker may answer from the old upstream.
            loop.fleet.wait_until(
                lambda: (lambda got: got[0] == 503 and "no healthy endpoint of web" in got[1])(loop.get()),
                timeout=TIMEOUT,
                what="the edge answers 503 saying there is no healthy endpoint",
            )
            loop.wait_service("failed")
        finally:
            for node in APPS:
                (loop.root(node) / "srv/web/healthz").write_text("")
        loop.wait_serving()

    def test_a_stopped_agent_makes_its_node_offline_and_its_endpoints_leave(self, loop: Loop) -> None:
        """No report within offlineAfter: offline, out of the upstream, plan kept; back when the agent is."""
        plan = loop.fleet.plan("app-2")
        loop.fleet.local.children.stop(["agent-app-2"])
        try:
            loop.fleet.wait_until(
                lambda: loop.node_state("app-2") == "offline", timeout=TIMEOUT, what="app-2 is offline"
            )
            loop.wait_upstream([f"{APPS['app-1']}:{loop.port}"], "app-2's endpoint left the upstream")
            assert loop.fleet.plan("app-2") == plan
            nodes = {n["node"]: n for n in loop.status()["nodes"]}
            assert nodes["app-2"]["state"] == "offline" and nodes["app-2"]["reportAge"] >= 6
            assert loop.service()["state"] == "degraded"
            table = loop.plumb_status()
            assert "app-2   offline" in table and "app-1   online" in table, table
        finally:
            loop.fleet.local.start_agent("app-2")
        loop.fleet.wait_until(
            lambda: loop.node_state("app-2") == "online", timeout=TIMEOUT, what="app-2 is back"
        )
        loop.wait_serving()
        assert loop.fleet.plan("app-2")["serial"] == plan["serial"]

    def test_an_invalid_push_changes_no_plan_and_status_shows_the_finding(self, loop: Loop) -> None:
        """Plans stay as they were; `plumb status` names the file and line of the problem."""
        plans = {node: loop.fleet.plan(node) for node in loop.fleet.nodes}
        bad = loop.fleet.push("a broken service", {"services/broken.yaml": INVALID})
        loop.fleet.wait_until(
            lambda: loop.fleet.local.source().get("commit") == bad, timeout=TIMEOUT, what="the push is seen"
        )
        assert {node: loop.fleet.plan(node) for node in loop.fleet.nodes} == plans
        table = loop.plumb_status()
        first = table.splitlines()[0]
        assert f"@ {bad[:12]}  invalid" in first, table
        assert "services/broken.yaml:5:13: spec.template: unknown template 'nope'" in table, table
        source = loop.status()["source"]
        assert not source["ok"] and source["findings"][0]["path"] == "services/broken.yaml"
        good = loop.fleet.push("remove the broken service", {"services/broken.yaml": None})
        loop.fleet.wait_until(
            lambda: loop.fleet.local.source().get("commit") == good and loop.fleet.local.source()["ok"],
            timeout=TIMEOUT,
            what="the fix is reconciled",
        )
        assert {node: loop.fleet.plan(node)["serial"] for node in loop.fleet.nodes} == {
            node: plan["serial"] for node, plan in plans.items()
        }

    def test_a_killed_process_leaves_the_upstream_and_comes_back(self, loop: Loop) -> None:
        """Its endpoint leaves while the restart is held, the edge still answers, then it comes back."""
        pid = next(i["pid"] for i in loop.fleet.report("app-1")["instances"] if i["service"] == "web")
        hold = loop.root("app-1") / "srv/web/hold"
        hold.write_text("")
        try:
            os.kill(pid, signal.SIGKILL)
            loop.wait_upstream([f"{APPS['app-2']}:{loop.port}"], "app-1's endpoint left the upstream")
            status, body = loop.get()
            assert status == 200 and body.endswith("from app-2\n"), body
            loop.wait_service("degraded")
            assert "app-1 unhealthy" in loop.service()["reason"]
        finally:
            hold.unlink()
        loop.wait_serving()
        restarted = next(i for i in loop.fleet.report("app-1")["instances"] if i["service"] == "web")
        assert restarted["pid"] != pid and restarted["ready"]
