"""Progressive rollouts end to end (real reconciler, agents and artifacts), checked from the state branch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pygit2
import pytest

from demo.fleet import executable, free_port, pack_server
from tests.e2e.conftest import FleetFactory
from tests.e2e.harness import Fleet

pytestmark = pytest.mark.e2e
PLUMB = str(Path(sys.executable).parent / "plumb")
NODES = ("n1", "n2", "n3", "n4")
HEALTHY_FOR = 2  # seconds a batch must stay healthy
TIMEOUT = 120.0  # bound of every wait in these tests

SERVER = '''#!/usr/bin/env python3
"""A tiny web server, version {version}: / answers its version, /healthz is 200 when healthy."""
import http.server
import os
import sys

VERSION = "{version}"
HEALTHY = {healthy}
address, port = sys.argv[1], int(sys.argv[2])
ready_file = sys.argv[3] if len(sys.argv) > 3 else None


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz":
            ok = HEALTHY and (ready_file is None or os.path.exists(ready_file))
            status, body = (200, b"ok\\n") if ok else (500, b"unhealthy\\n")
        else:
            status, body = 200, f"web {{VERSION}}\\n".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


print(f"web {{VERSION}} on {{address}}:{{port}}", flush=True)
http.server.ThreadingHTTPServer((address, port), Handler).serve_forever()
'''

TEMPLATE = """\
apiVersion: plumb/v1
kind: Template
metadata: {name: web}
spec:
  description: A tiny web server from its Release's artifact
  parameters: {type: object, required: [port], properties: {port: {type: integer}}}
  ports: [{name: http, port: "{{ params.port }}", protocol: http}]
  health:
    readiness:
      http: {port: http, host: "{{ node.address }}", path: /healthz}
      period: 1s
      timeout: 1s
      failureThreshold: 1
  resources:
    - artifact: {path: "/opt/{{ service.name }}"}
    - unit:
        name: "{{ service.name }}.service"
        restartOn: ["/opt/{{ service.name }}", "/opt/{{ service.name }}/current"]
        content: |
          [Service]
          WorkingDirectory=/
          ExecStart=/usr/bin/python3 opt/{{ service.name }}/current/bin/server {{ node.address }} {{ params.port }}
          Restart=on-failure
"""


def server_script(version: str, *, healthy: bool = True) -> str:
    return SERVER.format(version=version, healthy=healthy)


def build_artifact(directory: Path, version: str, *, healthy: bool = True) -> tuple[str, str]:
    """A tar.gz holding `bin/server` of `version`; (file:// url, sha256)."""
    return pack_server(directory / f"web-{version}.tar.gz", server_script(version, healthy=healthy))


def release(
    directory: Path,
    version: str,
    *,
    healthy: bool = True,
    timeout: str = "60s",
    batches: str = '[1, "50%", "100%"]',
) -> dict[str, str]:
    """The Release file of `version`, with its artifact built; onFailure: rollback."""
    url, sha256 = build_artifact(directory, version, healthy=healthy)
    text = (
        "apiVersion: plumb/v1\nkind: Release\n"
        f"metadata: {{name: web-{version.replace('.', '-')}}}\n"
        f"spec:\n  service: web\n  version: {version}\n"
        f"  artifact: {{url: {url}, sha256: {sha256}, unpack: tar.gz}}\n"
        f"  rollout: {{batches: {batches}, healthyFor: {HEALTHY_FOR}s, timeout: {timeout}, onFailure: rollback}}\n"
    )
    return {f"releases/web-{version}.yaml": text}


def service(port: int, *, version: str = "^1.0", paused: bool = False) -> dict[str, str]:
    text = (
        "apiVersion: plumb/v1\nkind: Service\nmetadata: {name: web}\nspec:\n  template: web\n"
        f'  version: "{version}"\n  params: {{port: {port}}}\n  placement: {{selector: {{role: web}}}}\n'
        + ("  paused: true\n" if paused else "")
    )
    return {"services/web.yaml": text}


def fleet_files(subnet: str, *, nodes: tuple[str, ...] = NODES) -> dict[str, str]:
    """plumb.yaml (1 s heartbeat, so readiness reaches the reconciler promptly), nodes and the template."""
    files = {
        "plumb.yaml": "apiVersion: plumb/v1\nkind: Repository\nmetadata: {name: rollout}\n"
        "spec: {allowedPaths: [/opt, /etc/systemd/system, /srv], heartbeat: 1s, offlineAfter: 60s}\n",
        "templates/web.yaml": TEMPLATE,
    }
    for index, name in enumerate(nodes, start=1):
        files[f"nodes/{name}.yaml"] = (
            f"apiVersion: plumb/v1\nkind: Node\nmetadata: {{name: {name}, labels: {{role: web}}}}\n"
            f"spec:\n  address: {subnet}.{index}\n"
        )
    return files


def addresses(subnet: str, nodes: tuple[str, ...] = NODES) -> list[str]:
    return [f"{subnet}.{i}" for i in range(1, len(nodes) + 1)]


# -- reading the fleet ---------------------------------------------------------------------------


def release_status(fleet: Fleet) -> dict[str, Any]:
    try:
        return fleet.status("status/releases/web.json")
    except (AssertionError, KeyError):
        return {}


def reported(fleet: Fleet, node: str) -> tuple[str | None, bool]:
    """(version, ready) of the web instance in the node's latest report."""
    try:
        instances = fleet.report(node).get("instances") or []
    except (AssertionError, KeyError):
        return None, False
    web = next((i for i in instances if i.get("service") == "web"), {})
    return web.get("version"), bool(web.get("ready"))


def answers(fleet: Fleet, node: str, port: int) -> str:
    """What the node's server says on / (its version), or why it did not answer."""
    address = fleet.local.nodes[node].address
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/", timeout=3) as response:
            return str(response.read().decode().strip())
    except (urllib.error.URLError, OSError) as error:
        return f"no answer: {error}"


@dataclass
class Mover:
    """Records, while waiting, the order in which nodes first report a version ready."""

    fleet: Fleet
    version: str
    order: list[str] = field(default_factory=list)

    def poll(self) -> None:
        fresh = [
            n
            for n in self.fleet.nodes
            if n not in self.order and reported(self.fleet, n) == (self.version, True)
        ]
        self.order += sorted(fresh, key=lambda n: _ready_since(self.fleet, n))  # several seen in one poll


def _ready_since(fleet: Fleet, node: str) -> str:
    instances = fleet.report(node).get("instances") or []
    web = next((i for i in instances if i.get("service") == "web"), {})
    return str(web.get("readySince") or fleet.report(node)["time"])


def wait_rolled_out(fleet: Fleet, version: str, mover: Mover | None = None) -> None:
    """Until the rollout to `version` succeeded and every node reports it ready."""

    def done() -> bool:
        if mover is not None:
            mover.poll()
        status = release_status(fleet)
        settled = status.get("to") == version and status.get("phase") == "succeeded"
        return settled and all(reported(fleet, n) == (version, True) for n in fleet.nodes)

    fleet.wait_until(done, timeout=TIMEOUT, what=f"web {version} rolled out and ready on every node")


@dataclass(frozen=True)
class Step:
    """One state commit: when, the rollout document, and the web version each node's plan asks for."""

    commit: str
    release: Mapping[str, Any]
    planned: Mapping[str, str | None]


def history(fleet: Fleet) -> list[Step]:
    """Every commit of the state branch, oldest first (it only moves fast-forward)."""
    repo = fleet.local.repository()
    commit = repo.references[f"refs/heads/{fleet.local.state_branch}"].peel(pygit2.Commit)
    steps = []
    while True:
        steps.append(
            Step(str(commit.id), _json(commit.tree, "status/releases/web.json"), _planned(commit.tree))
        )
        if not commit.parents:
            return steps[::-1]
        commit = commit.parents[0]


def _json(tree: pygit2.Tree, path: str) -> dict[str, Any]:
    try:
        value = json.loads(tree[path].peel(pygit2.Blob).data)
    except KeyError:
        return {}
    assert isinstance(value, dict)
    return value


def _planned(tree: pygit2.Tree) -> dict[str, str | None]:
    planned: dict[str, str | None] = {}
    for node in NODES:
        plan = _json(tree, f"plans/{node}.json")
        entry = next((r for r in plan.get("resources", []) if r.get("id") == "service:web"), {})
        planned[node] = entry.get("spec", {}).get("version")
    return planned


def rollout_steps(steps: list[Step], version: str) -> list[Step]:
    """The commits of the latest rollout to `version`, from the one that started it."""
    other = [i for i, s in enumerate(steps) if s.release.get("to") != version]
    walk = steps[other[-1] + 1 :] if other else steps
    assert walk, f"no rollout to {version} on the state branch"
    return walk


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def check_walk(steps: list[Step], old: str, new: str) -> list[list[str]]:
    """Assert the rollout to `new` moved its batches in order, each behind a kept health gate; the batches."""
    walk = rollout_steps(steps, new)
    final = walk[-1].release
    assert final["phase"] == "succeeded", final
    batches: list[list[str]] = [b for b in final["batches"] if b]
    assert sorted(n for b in batches for n in b) == sorted(NODES), final
    assert [len(b) for b in batches] == [1, 1, 2], final  # batches [1, "50%", "100%"] of 4 nodes
    moved: list[str] = []
    for index, batch in enumerate(batches):
        start = next(s for s in walk if s.release.get("batch") == index and s.release.get("batchStarted"))
        # when a batch starts, its nodes move and the rest stay on the old version
        expected = {n: new if n in moved or n in batch else old for n in NODES}
        assert dict(start.planned) == expected, (index, start.release)
        if index > 0:
            gate = [s for s in walk if s.release.get("batch") == index - 1 and s.release.get("ready")]
            assert gate, f"batch {index} started with no record of batch {index - 1} being ready"
            ready = gate[-1].release["ready"]
            assert set(ready) <= set(batches[index - 1]), (ready, batches)
            began = _time(start.release["batchStarted"])
            for node, since in ready.items():
                assert began - _time(since) >= timedelta(seconds=HEALTHY_FOR), (node, since, began)
            assert began - _time(gate[-1].release["batchStarted"]) >= timedelta(seconds=HEALTHY_FOR)
        moved += batch
    return batches


def in_batch_order(order: list[str], batches: list[list[str]]) -> bool:
    """Nodes of each batch come before every node of a later batch."""
    rank = {node: index for index, batch in enumerate(batches) for node in batch}
    ranks = [rank[n] for n in order]
    return ranks == sorted(ranks) and len(order) == len(rank)


def plumb(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PLUMB, *map(str, args)], capture_output=True, text=True, timeout=60, check=False)


def start_fleet(make_fleet: FleetFactory, tmp_path: Path, subnet: str, *versions: str) -> tuple[Fleet, int]:
    """A fleet of four nodes running web (the highest of `versions`, all good), converged."""
    port = free_port(addresses(subnet))
    files = fleet_files(subnet) | service(port)
    for version in versions:
        files |= release(tmp_path / "artifacts", version)
    fleet = make_fleet(files=files)
    fleet.start()
    wait_rolled_out(fleet, versions[-1])
    return fleet, port


# -- the tests -----------------------------------------------------------------------------------


class TestRollout:
    """Releases move through the fleet batch by batch, gated on health, as DESIGN.md section 9 says."""

    def test_a_good_release_walks_every_batch_in_order_and_plumb_rollback_walks_back(
        self, make_fleet: FleetFactory, tmp_path: Path
    ) -> None:
        """1.1.0 moves one node, then half, then all, each after the last was healthy; the rollback commit too."""
        fleet, port = start_fleet(make_fleet, tmp_path, "127.0.2", "1.0.0")
        assert release_status(fleet)["reason"].startswith("first deployment"), release_status(fleet)
        mover = Mover(fleet, "1.1.0")
        fleet.push("release 1.1.0", release(tmp_path / "artifacts", "1.1.0"))
        wait_rolled_out(fleet, "1.1.0", mover)
        batches = check_walk(history(fleet), "1.0.0", "1.1.0")
        assert in_batch_order(mover.order, batches), (mover.order, batches)
        assert {answers(fleet, n, port) for n in NODES} == {"web 1.1.0"}

        done = plumb("rollback", "web", "--repo", fleet.local.bare, "-m", "e2e: back to 1.0.0")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "web: 1.1.0 -> 1.0.0" in done.stdout
        back = Mover(fleet, "1.0.0")
        wait_rolled_out(fleet, "1.0.0", back)
        batches = check_walk(history(fleet), "1.1.0", "1.0.0")
        assert in_batch_order(back.order, batches), (back.order, batches)
        assert {answers(fleet, n, port) for n in NODES} == {"web 1.0.0"}

    def test_a_release_failing_readiness_stops_at_the_first_batch_and_rolls_back(
        self, make_fleet: FleetFactory, tmp_path: Path
    ) -> None:
        """2.0.0's /healthz fails: only its first node ever gets it, and every node ends on 1.0.0, healthy."""
        fleet, port = start_fleet(make_fleet, tmp_path, "127.0.3", "1.0.0")
        bad = release(tmp_path / "artifacts", "2.0.0", healthy=False, timeout="8s")
        fleet.push("release 2.0.0", bad | service(port, version="^2.0"))

        def rolled_back() -> bool:
            status = release_status(fleet)
            settled = status.get("to") == "2.0.0" and status.get("phase") == "rolled-back"
            return settled and all(reported(fleet, n) == ("1.0.0", True) for n in NODES)

        fleet.wait_until(rolled_back, timeout=TIMEOUT, what="2.0.0 rolled back to 1.0.0 on every node")
        final = release_status(fleet)
        assert len(final["batches"]) == 1 and len(final["batches"][0]) == 1, final
        assert "not healthy within 8s" in final["reason"] and "rolling back to 1.0.0" in final["reason"]
        walk = rollout_steps(history(fleet), "2.0.0")
        canary = final["batches"][0][0]
        ever = {n for s in walk for n, v in s.planned.items() if v == "2.0.0"}
        assert ever == {canary}, walk
        assert dict(walk[-1].planned) == dict.fromkeys(NODES, "1.0.0")
        assert {answers(fleet, n, port) for n in NODES} == {"web 1.0.0"}
        before = fleet.planned()
        commit = fleet.push("a heartbeat's worth of nothing")  # a new commit changes no plan
        assert fleet.wait_applied(commit, before) == []
        assert release_status(fleet)["phase"] == "rolled-back"

    def test_a_paused_rollout_does_not_move_until_resumed(
        self, make_fleet: FleetFactory, tmp_path: Path
    ) -> None:
        """With spec.paused every node keeps its version while reports keep coming; resuming finishes it."""
        fleet, port = start_fleet(make_fleet, tmp_path, "127.0.4", "1.0.0")
        paused = fleet.push(
            "release 1.1.0, paused", release(tmp_path / "artifacts", "1.1.0") | service(port, paused=True)
        )
        fleet.wait_until(
            lambda: (
                fleet.local.source().get("commit") == paused
                and release_status(fleet).get("phase") == "paused"
            ),
            timeout=TIMEOUT,
            what="the rollout to 1.1.0 is paused",
        )
        beats(fleet, 1)  # whatever the pause itself changed has been written
        held = history(fleet)[-1]
        beats(fleet, 3)  # several heartbeats and health gates later, nothing moved
        assert history(fleet)[-1].commit == held.commit, "the state branch moved on heartbeats alone"
        assert dict(history(fleet)[-1].planned) == dict.fromkeys(NODES, "1.0.0")
        assert all(reported(fleet, n) == ("1.0.0", True) for n in NODES)
        fleet.push("resume", service(port))
        wait_rolled_out(fleet, "1.1.0")
        check_walk(history(fleet), "1.0.0", "1.1.0")

    def test_a_killed_reconciler_resumes_the_rollout_without_skipping_a_gate(
        self, make_fleet: FleetFactory, tmp_path: Path
    ) -> None:
        """SIGKILL while the first batch is being watched; a new reconciler carries on from Git."""
        fleet, _ = start_fleet(make_fleet, tmp_path, "127.0.5", "1.0.0")
        fleet.push("release 1.1.0", release(tmp_path / "artifacts", "1.1.0"))
        fleet.wait_until(
            lambda: release_status(fleet).get("to") == "1.1.0" and release_status(fleet).get("batch") == 0,
            timeout=TIMEOUT,
            what="the first batch of 1.1.0 started",
        )
        first = release_status(fleet)["batches"][0]
        reconciler = next(c for c in fleet.local.children.started if c.name == "reconciler")
        os.killpg(reconciler.process.pid, signal.SIGKILL)
        reconciler.process.wait()
        fleet.local.children.started.remove(reconciler)
        assert release_status(fleet)["phase"] == "progressing"
        argv = [executable("plumb"), "reconcile", "--repo", str(fleet.local.bare), "--watch"]
        fleet.local.children.start(
            "reconciler-2", [*argv, "--interval", "2s", "--key-file", str(fleet.local.key_file)]
        )
        wait_rolled_out(fleet, "1.1.0")
        batches = check_walk(history(fleet), "1.0.0", "1.1.0")
        assert batches[0] == first


def beats(fleet: Fleet, count: int) -> None:
    """Wait until every node reported at least `count` heartbeats (1 s each) after its latest report now."""
    since = {n: _time(fleet.report(n)["time"]) for n in NODES}
    fleet.wait_until(
        lambda: all(_time(fleet.report(n)["time"]) - since[n] >= timedelta(seconds=count) for n in NODES),
        timeout=TIMEOUT,
        what=f"{count} more heartbeat(s) from every node",
    )
