"""Attacks on the state branch and the report branches, against a real reconciler and real agents.

Whoever holds one node's Git credentials may be able to write every branch but the desired one.
Each row of the table writes what such an attacker would (straight into the bare repository, as a
push with no server hook would), then checks what must hold after it:

- the attack is named in status (an alert, or the node's status);
- a new desired commit still reaches every node, whose applied plan is the reconciler's, verified
  and derived from that commit, with the content on the host that commit asks for;
- no agent and not the reconciler exited, and their peak memory stays well under 500 MB.

One fleet (two app nodes behind an nginx edge) serves the whole table; rows run in order.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2
import pytest

from contract.crypto import SigningKey, VerifyKey
from contract.documents import sign_document, verify_document
from demo.fleet import free_port, nginx_available
from tests.e2e.harness import Fleet, stopped_afterwards
from tests.e2e.test_loop import HOST, SERVICE, files
from tests.support.gitrepo import commit_files

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not nginx_available(), reason="needs nginx (apt-get install nginx-light)"),
]
PLUMB = str(Path(sys.executable).parent / "plumb")
APPS = {"app-1": "127.0.4.1", "app-2": "127.0.4.2"}
EDGE = ("edge-1", "127.0.4.10")
TIMEOUT = 60.0
MEMORY_BOUND = 500 * 1024 * 1024
BOMB_BYTES = 1 << 30  # a 1 GiB blob of spaces, about 1 MB once compressed


class Attacked:
    """The module's fleet, as the attacker and the checks see it."""

    def __init__(self, fleet: Fleet, *, port: int, edge_port: int) -> None:
        self.fleet, self.port, self.edge_port = fleet, port, edge_port
        self.round = 0

    @property
    def repo(self) -> pygit2.Repository:
        repo: pygit2.Repository = self.fleet.local.repository()
        return repo

    @property
    def reconciler_key(self) -> VerifyKey:
        return VerifyKey.from_b64(self.fleet.local.public_key)

    def node_key(self, node: str) -> SigningKey:
        """The node's own signing key: an attacker who took the node has it."""
        return SigningKey.load(self.fleet.local.nodes[node].state_dir(self.fleet.workdir) / "signing.key")

    def write(self, branch: str, files: dict[str, bytes | tuple[int, str]], *, keep: bool = True) -> str:
        """Commit `files` on `branch` (bytes, or (filemode, object id) for a raw entry)."""
        for _ in range(50):  # the reconciler may hold the ref's lock for a moment: try again
            with contextlib.suppress(OSError, pygit2.GitError):
                return commit_files(self.repo, branch, files, message="attack", keep=keep)
            time.sleep(0.05)
        raise AssertionError(f"could not write {branch}")

    def state(self) -> str:
        return self.fleet.local.state_branch

    def report_branch(self, node: str) -> str:
        return f"{self.fleet.local.reports_prefix}{node}"

    def bomb(self) -> str:
        """A loose blob of BOMB_BYTES spaces, written without ever holding it: its object id."""
        header = f"blob {BOMB_BYTES}\0".encode()
        digest, packer = hashlib.sha1(header, usedforsecurity=False), zlib.compressobj(1)
        chunk, parts = b" " * (1 << 24), [packer.compress(header)]
        for _ in range(BOMB_BYTES // len(chunk)):
            digest.update(chunk)
            parts.append(packer.compress(chunk))
        parts.append(packer.flush())
        oid = digest.hexdigest()
        path = Path(self.repo.path) / "objects" / oid[:2] / oid[2:]
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"".join(parts))
        return oid

    def pid(self, name: str) -> int:
        return next(c.process.pid for c in self.fleet.local.children.started if c.name == name)

    def paused(self, node: str) -> Any:
        """Stop the node's agent (SIGSTOP) while a forged report must stay on its branch."""
        return _Paused(self.pid(f"agent-{node}"))

    def peak_memory(self) -> dict[str, int]:
        """VmHWM of the reconciler and every agent, in bytes."""
        names = ["reconciler", *(f"agent-{n}" for n in self.fleet.nodes)]
        return {name: _vm_hwm(self.pid(name)) for name in names}

    def node_status(self, node: str) -> dict[str, Any]:
        return self.fleet.status(f"status/nodes/{node}.json")

    def alerts(self) -> list[dict[str, Any]]:
        try:
            return list(self.fleet.status("status/alerts.json")["alerts"])
        except (AssertionError, KeyError):
            return []

    def next_round(self) -> None:
        """A desired commit changing every app node's content; it must reach every node."""
        self.round += 1
        message = f"round-{self.round}"
        before = self.fleet.planned()
        commit = self.fleet.push(message, {"services/web.yaml": self.service_file(message)})
        self.fleet.wait_applied(commit, before, timeout=TIMEOUT)
        self.fleet.wait_until(self._in_sync, timeout=TIMEOUT, what="every node applied its plan")
        for node in APPS:
            index = self.fleet.local.nodes[node].root(self.fleet.workdir) / "srv/web/index.html"
            assert index.read_text() == f"{message} from {node}\n"
        for node in self.fleet.nodes:
            plan = self.fleet.plan(node)
            verify_document(plan, self.reconciler_key, what=f"plan of {node}")
            assert plan["node"] == node
            source = plan["source"]["commit"]
            assert source == commit or self.repo.descendant_of(commit, source)

    def _in_sync(self) -> bool:
        """Every node's latest report applied exactly its current plan (the plans may still move:
        a node back from a forged report puts its endpoint back in the edge's plan)."""
        try:
            for node in self.fleet.nodes:
                plan, applied = self.fleet.plan(node), self.fleet.report(node).get("applied") or {}
                if (applied.get("serial"), applied.get("digest")) != (plan["serial"], plan["digest"]):
                    return False
        except (ValueError, RecursionError, KeyError, AssertionError, AttributeError):
            return False  # a forged report its agent has not yet pushed over
        return True

    def service_file(self, message: str) -> str:
        return SERVICE.format(port=self.port, message=message, host=HOST, edge_port=self.edge_port)

    def honest_upstream(self) -> set[str]:
        return {f"{address}:{self.port}" for address in APPS.values()}

    def upstream(self) -> list[str]:
        site = self.fleet.local.nodes[EDGE[0]].root(self.fleet.workdir) / "etc/nginx/conf.d/web.conf"
        return sorted(
            line.split()[1].rstrip(";") for line in site.read_text().splitlines() if "server 127" in line
        )


class _Paused:
    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __enter__(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def __exit__(self, *_: object) -> None:
        os.kill(self.pid, signal.SIGCONT)


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def _report(attacked: Attacked, node: str, **changes: Any) -> dict[str, Any]:
    current = dict(attacked.fleet.report(node))
    current.pop("signature", None)
    current.update(changes)
    return current


# -- the table ------------------------------------------------------------------------------------


def forged_plan(a: Attacked) -> None:
    """app-1's plan made app-2's, serial 1000, unsigned, and copied to app-2."""
    plan = dict(a.fleet.plan("app-1"), node="app-2", serial=1000)
    plan.pop("signature")
    data = json.dumps(plan).encode()
    a.write(a.state(), {"plans/app-1.json": data, "plans/app-2.json": data})


def forged_serial(a: Attacked) -> None:
    a.write(a.state(), {"plans/app-1.json": json.dumps(dict(a.fleet.plan("app-1"), serial=1)).encode()})


def forged_source(a: Attacked) -> None:
    """The last reconciled commit set to one that does not exist: a reconciler believing it stops."""
    source = dict(a.fleet.status("status/source.json"), commit="f" * 40)
    a.write(a.state(), {"status/source.json": json.dumps(source).encode()})


def forged_rollout(a: Attacked) -> None:
    progress = {"service": "web", "from": "1.0.0", "to": "9.9.9", "phase": "succeeded", "batch": 9}
    a.write(a.state(), {"status/releases/web.json": json.dumps(progress).encode()})


def deep_plan(a: Attacked) -> None:
    a.write(a.state(), {"plans/app-1.json": b"[" * 100_000 + b"]" * 100_000})


def big_integer_plan(a: Attacked) -> None:
    a.write(a.state(), {"plans/app-1.json": b'{"serial": ' + b"9" * 5000 + b"}"})


def nan_plan(a: Attacked) -> None:
    a.write(a.state(), {"plans/app-1.json": b'{"serial": NaN}'})


def gitlink_plan(a: Attacked) -> None:
    a.write(a.state(), {"plans/app-1.json": (pygit2.enums.FileMode.COMMIT, "1" * 40)})


def bomb_plan(a: Attacked) -> None:
    a.write(a.state(), {"plans/app-1.json": (pygit2.enums.FileMode.BLOB, a.bomb())})


def deep_report(a: Attacked) -> None:
    a.write(a.report_branch("app-1"), {"report.json": b"[" * 100_000 + b"]" * 100_000}, keep=False)


def bomb_report(a: Attacked) -> None:
    a.write(a.report_branch("app-1"), {"report.json": (pygit2.enums.FileMode.BLOB, a.bomb())}, keep=False)


def big_integer_report(a: Attacked) -> None:
    text = json.dumps(_report(a, "app-1")).replace(
        '"instances": [', '"pid": ' + "9" * 5000 + ', "instances": ['
    )
    a.write(a.report_branch("app-1"), {"report.json": text.encode()}, keep=False)


def nan_report(a: Attacked) -> None:
    text = json.dumps(_report(a, "app-1", agentVersion=float("nan")))  # what no honest agent writes
    a.write(a.report_branch("app-1"), {"report.json": text.encode()}, keep=False)


def gitlink_report(a: Attacked) -> None:
    a.write(a.report_branch("app-1"), {"report.json": (pygit2.enums.FileMode.COMMIT, "1" * 40)}, keep=False)


def unsigned_report(a: Attacked) -> None:
    a.write(a.report_branch("app-1"), {"report.json": json.dumps(_report(a, "app-1")).encode()}, keep=False)


def cross_service_claim(a: Attacked) -> None:
    """The edge, which runs no web instance, signs a report claiming web on port 6666."""
    claim = {"service": "web", "state": "running", "ready": True, "ports": [{"name": "http", "port": 6666}]}
    report = _report(a, EDGE[0], instances=[claim])
    a.write(
        a.report_branch(EDGE[0]),
        {"report.json": json.dumps(sign_document(report, a.node_key(EDGE[0]))).encode()},
        keep=False,
    )


@dataclass(frozen=True)
class Row:
    """One attack, the node whose agent is paused meanwhile (report rows), and how status names it."""

    attack: Callable[[Attacked], None]
    named: Callable[[Attacked], bool]
    paused: str | None = None


def alert_on(path: str) -> Callable[[Attacked], bool]:
    return lambda a: any(alert["path"] == path for alert in a.alerts()[-5:])


def node_reason(node: str, words: str) -> Callable[[Attacked], bool]:
    return lambda a: words in str(a.node_status(node).get("reason"))


def claim_ignored(a: Attacked) -> bool:
    claims = a.node_status(EDGE[0]).get("ignoredClaims") or []
    return any("web" in claim for claim in claims)


TABLE = {
    "forged plan": Row(forged_plan, alert_on("plans/app-2.json")),
    "forged serial": Row(forged_serial, alert_on("plans/app-1.json")),
    "forged last reconciled commit": Row(forged_source, alert_on("status/source.json")),
    "forged rollout progress": Row(forged_rollout, alert_on("status/releases/web.json")),
    "deep plan": Row(deep_plan, alert_on("plans/app-1.json")),
    "big-integer plan": Row(big_integer_plan, alert_on("plans/app-1.json")),
    "NaN plan": Row(nan_plan, alert_on("plans/app-1.json")),
    "gitlink plan": Row(gitlink_plan, alert_on("plans/app-1.json")),
    "compressed bomb plan": Row(bomb_plan, alert_on("plans/app-1.json")),
    "deep report": Row(deep_report, node_reason("app-1", "nests deeper"), paused="app-1"),
    "compressed bomb report": Row(bomb_report, node_reason("app-1", "bytes"), paused="app-1"),
    "big-integer report": Row(
        big_integer_report, node_reason("app-1", "does not fit 64 bits"), paused="app-1"
    ),
    "NaN report": Row(nan_report, node_reason("app-1", "NaN"), paused="app-1"),
    "gitlink report": Row(gitlink_report, node_reason("app-1", "not a file"), paused="app-1"),
    "unsigned report": Row(unsigned_report, node_reason("app-1", "not signed"), paused="app-1"),
    "cross-service endpoint claim": Row(cross_service_claim, claim_ignored, paused=EDGE[0]),
}


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Attacked]:
    workdir = tmp_path_factory.mktemp("attacks")
    port = free_port(APPS.values(), start=18280)
    edge_port = free_port([EDGE[1]], start=18380)
    with stopped_afterwards(Fleet(workdir / "fleet", reconcile_interval="1s")) as fleet:
        fleet.create(files=files(port, edge_port, apps=APPS, edge=EDGE, message="round-0"))
        config = fleet.local.repository().config
        config["gc.auto"] = "0"  # a push would otherwise start `git gc` over the attacker's 1 GiB blobs
        config["receive.autogc"] = "false"
        fleet.start()
        running = Attacked(fleet, port=port, edge_port=edge_port)
        fleet.wait_converged(timeout=TIMEOUT)
        yield running


@pytest.mark.parametrize("name", list(TABLE))
def test_an_attack_is_named_and_changes_nothing_any_host_applies(attacked: Attacked, name: str) -> None:
    row = TABLE[name]
    if row.paused is None:
        row.attack(attacked)
        attacked.fleet.wait_until(
            lambda: row.named(attacked), timeout=TIMEOUT, what=f"status names the {name}"
        )
    else:
        with attacked.paused(row.paused):
            row.attack(attacked)
            attacked.fleet.wait_until(
                lambda: row.named(attacked), timeout=TIMEOUT, what=f"status names the {name}"
            )
            # nothing a report claimed reached the edge: only the app nodes' own web port is there
            assert set(attacked.upstream()) <= attacked.honest_upstream()
    attacked.next_round()
    peaks = attacked.peak_memory()
    assert all(peak < MEMORY_BOUND for peak in peaks.values()), peaks


def test_plumb_status_shows_the_alerts_and_verifies(attacked: Attacked) -> None:
    """The operator's view names what was found, checked with the reconciler's key."""
    forged_serial(attacked)
    attacked.fleet.wait_until(
        lambda: alert_on("plans/app-1.json")(attacked), timeout=TIMEOUT, what="an alert"
    )
    done = subprocess.run(
        [
            PLUMB,
            "status",
            "--repo",
            str(attacked.fleet.local.bare),
            "--reconciler-key",
            attacked.fleet.local.public_key,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    print(f"\npeak memory after the table: {attacked.peak_memory()}")  # figures for the closing note
    assert "ALERT" in done.stdout and "plans/app-1.json" in done.stdout
    assert "Trust" not in done.stdout  # the status shown is the reconciler's own, all of it
