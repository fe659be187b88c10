"""Rollouts and dependency waiting in the reconcile pass, on a real bare repository with the clock passed in."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pygit2
import pytest
from click.testing import CliRunner

from contract.crypto import SigningKey
from contract.documents import sign_document
from reconciler.cli.main import cli
from reconciler.core.decide.review import batch_cuts
from reconciler.core.decide.rollout import order
from reconciler.drivers.statestore import LocalLocation
from reconciler.reconcile import PassResult, Reconciler
from tests.integration.test_reconcile_pass import node_doc, plans, state_files, state_tip
from tests.support import node_key
from tests.support.gitrepo import bare_repo, commit_files

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 10, tzinfo=UTC)
NODES = ("app-1", "app-2", "app-3", "app-4")
RELEASES = "status/releases/"
TEMPLATE = """\
apiVersion: plumb/v1
kind: Template
metadata: {name: web}
spec:
  parameters: {type: object, required: [port], properties: {port: {type: integer}}}
  ports: [{name: http, port: "{{ params.port }}", protocol: http}]
  resources:
    - artifact: {path: "/opt/{{ service.name }}"}
    - unit: {name: "{{ service.name }}.service", content: "[Service]\\nExecStart=/opt/{{ service.name }}/run\\n"}
"""


def release(version: str) -> dict[str, str]:
    name = "web-" + version.replace(".", "-")
    text = (
        f"apiVersion: plumb/v1\nkind: Release\nmetadata: {{name: {name}}}\nspec:\n  service: web\n"
        f'  version: {version}\n  artifact: {{url: "https://example.com/{name}.tgz", sha256: "{"b" * 64}"}}\n'
        '  rollout: {batches: [1, "50%", "100%"], healthyFor: 30s, timeout: 10m, onFailure: rollback}\n'
    )
    return {f"releases/{name}.yaml": text}


def service(name: str, port: int, *, depends: str = "", version: str | None = "^1.0") -> dict[str, str]:
    template = "web" if version else "plain"
    text = (
        f"apiVersion: plumb/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  template: {template}\n"
        f"  params: {{port: {port}}}\n  placement: {{nodes: [{', '.join(NODES)}]}}\n"
        + (f'  version: "{version}"\n' if version else "")
        + (f"  dependsOn: [{depends}]\n" if depends else "")
    )
    return {f"services/{name}.yaml": text}


def base_files() -> dict[str, str]:
    files = {
        "plumb.yaml": "apiVersion: plumb/v1\nkind: Repository\nmetadata: {name: t}\n"
        "spec: {allowedPaths: [/opt, /etc/systemd/system], offlineAfter: 120s}\n",
        "templates/web.yaml": TEMPLATE,
        "templates/plain.yaml": TEMPLATE.replace("name: web", "name: plain").replace(
            '    - artifact: {path: "/opt/{{ service.name }}"}\n', ""
        ),
    }
    for index, node in enumerate(NODES, start=1):
        files[f"nodes/{node}.yaml"] = node_doc(node, "app", index)
    return files


def report(
    repo: pygit2.Repository, node: str, when: datetime, instances: list[dict[str, Any]], *, serial: int = 1
) -> None:
    """A report with the given instances, signed with the key the node enrolled with (`node_key`)."""
    document = {
        "apiVersion": "plumb/v1",
        "kind": "NodeReport",
        "node": node,
        "agentVersion": "test",
        "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "applied": {
            "serial": serial,
            "commit": "c" * 40,
            "digest": "sha256:" + "0" * 64,
            "at": "x",
            "ok": True,
        },
        "resources": [],
        "drift": [],
        "capabilities": ["process"],
        "instances": instances,
    }
    signed = sign_document(document, node_key(node))
    commit_files(repo, f"plumb/reports/{node}", {"report.json": json.dumps(signed)}, keep=False)


def web(version: str, ready: bool = True, since: datetime | None = None) -> dict[str, Any]:
    stamp = since.strftime("%Y-%m-%dT%H:%M:%SZ") if since is not None else None
    return {"service": "web", "state": "running", "ready": ready, "version": version, "readySince": stamp}


def versions(repo: pygit2.Repository, service_name: str = "web") -> dict[str, str | None]:
    found = {}
    for node, plan in plans(repo).items():
        entry = next((r for r in plan["resources"] if r["id"] == f"service:{service_name}"), {})
        found[node] = entry.get("spec", {}).get("version")
    return found


def rollout(repo: pygit2.Repository) -> dict[str, Any]:
    return dict(state_files(repo, RELEASES).get(f"{RELEASES}web.json") or {})


@pytest.fixture
def origin(tmp_path: Path) -> pygit2.Repository:
    repo = bare_repo(tmp_path / "fleet.git")
    commit_files(repo, "main", base_files() | service("web", 8080) | release("1.0.0"))
    return repo


@pytest.fixture
def reconciler(origin: pygit2.Repository) -> Reconciler:
    return Reconciler(LocalLocation(Path(origin.path)), key=SigningKey.generate())


def on_version(repo: pygit2.Repository, version: str, when: datetime, nodes: tuple[str, ...] = NODES) -> None:
    for node in nodes:
        report(repo, node, when, [web(version, since=when - timedelta(hours=1))])


class TestRolloutPass:
    """The reconcile pass runs each service's rollout step and renders with its pins."""

    def test_a_release_moves_batch_by_batch_woken_by_its_deadlines(
        self, origin: pygit2.Repository, reconciler: Reconciler
    ) -> None:
        first = reconciler.reconcile(now=T0)
        assert rollout(origin)["phase"] == "succeeded" and rollout(origin)["to"] == "1.0.0"
        on_version(origin, "1.0.0", T0 + timedelta(seconds=5))
        reconciler.reconcile(now=T0 + timedelta(seconds=5))
        t1 = T0 + timedelta(minutes=1)
        commit_files(origin, "main", release("1.1.0"))
        started = reconciler.reconcile(now=t1)
        state = rollout(origin)
        assert (state["phase"], state["batch"], state["from"], state["to"]) == (
            "progressing",
            0,
            "1.0.0",
            "1.1.0",
        )
        canary = state["batches"][0][0]
        assert versions(origin) == {n: "1.1.0" if n == canary else "1.0.0" for n in NODES}
        assert (
            started.changed_nodes == (canary,)
            and started.wake_at is not None
            and started.wake_at <= t1 + timedelta(minutes=10)
        )
        assert first.written is not None

        # the canary reports the new version ready: recorded, and a wake-up set healthyFor later
        ready_at = t1 + timedelta(seconds=4)
        report(origin, canary, t1 + timedelta(seconds=5), [web("1.1.0", since=ready_at)], serial=2)
        seen = reconciler.reconcile(now=t1 + timedelta(seconds=5))
        assert rollout(origin)["ready"] == {canary: ready_at.strftime("%Y-%m-%dT%H:%M:%SZ")}
        assert seen.wake_at == ready_at + timedelta(seconds=30)

        # a heartbeat changes nothing; the same inputs before the deadline are skipped
        report(origin, canary, t1 + timedelta(seconds=15), [web("1.1.0", since=ready_at)], serial=2)
        tip = state_tip(origin)
        assert reconciler.reconcile(now=t1 + timedelta(seconds=15)).written is None
        assert reconciler.reconcile(now=t1 + timedelta(seconds=20)).skipped
        assert state_tip(origin) == tip

        # at the deadline, with no new commit or report, the next batch starts
        moved = reconciler.reconcile(now=ready_at + timedelta(seconds=30))
        assert moved.written is not None and rollout(origin)["batch"] == 1
        assert sum(v == "1.1.0" for v in versions(origin).values()) == 2

    def test_a_readiness_older_than_the_batch_does_not_pass_its_gate(
        self, origin: pygit2.Repository, reconciler: Reconciler
    ) -> None:
        """A report saying ready since before the batch started counts from the batch's start only."""
        reconciler.reconcile(now=T0)
        on_version(origin, "1.0.0", T0 + timedelta(seconds=5))
        t1 = T0 + timedelta(minutes=1)
        commit_files(origin, "main", release("1.1.0"))
        reconciler.reconcile(now=t1)
        canary = rollout(origin)["batches"][0][0]
        report(origin, canary, t1 + timedelta(seconds=2), [web("1.1.0", since=T0)], serial=2)
        result = reconciler.reconcile(now=t1 + timedelta(seconds=2))
        assert rollout(origin)["batch"] == 0 and rollout(origin)["ready"] == {
            canary: t1.strftime("%Y-%m-%dT%H:%M:%SZ")
        }
        assert result.wake_at == t1 + timedelta(seconds=30)

    def test_an_invalid_commit_runs_no_rollout_step(
        self, origin: pygit2.Repository, reconciler: Reconciler
    ) -> None:
        reconciler.reconcile(now=T0)
        on_version(origin, "1.0.0", T0 + timedelta(seconds=5))
        commit_files(origin, "main", release("1.1.0"))
        reconciler.reconcile(now=T0 + timedelta(minutes=1))
        before, planned = rollout(origin), versions(origin)
        commit_files(
            origin,
            "main",
            {
                "services/broken.yaml": "apiVersion: plumb/v1\nkind: Service\nmetadata: {name: x}\nspec: {template: nope}\n"
            },
        )
        result = reconciler.reconcile(now=T0 + timedelta(hours=1))  # long past the batch's timeout
        assert not result.ok
        assert rollout(origin) == before and versions(origin) == planned

    def test_a_service_that_leaves_takes_its_rollout_document_along(
        self, origin: pygit2.Repository, reconciler: Reconciler
    ) -> None:
        reconciler.reconcile(now=T0)
        assert f"{RELEASES}web.json" in state_files(origin, RELEASES)
        commit_files(
            origin,
            "main",
            {"services/web.yaml": None, "releases/web-1-0-0.yaml": None}
            | service("other", 8081, version=None),
        )
        reconciler.reconcile(now=T0 + timedelta(seconds=1))
        assert state_files(origin, RELEASES) == {}


class TestDependencyWaiting:
    """A service whose dependency no reachable node reports ready has `waitingFor` in its plan entry."""

    def test_waits_until_a_dependency_is_ready_somewhere(self, tmp_path: Path) -> None:
        repo = bare_repo(tmp_path / "deps.git")
        commit_files(
            repo,
            "main",
            base_files()
            | service("db", 5432, version=None)
            | service("api", 8080, depends="db", version=None),
        )
        recon = Reconciler(LocalLocation(Path(repo.path)), key=SigningKey.generate())
        recon.reconcile(now=T0)
        assert _waiting(repo) == {n: ["db"] for n in NODES}
        report(
            repo, "app-3", T0 + timedelta(seconds=5), [{"service": "db", "state": "running", "ready": False}]
        )
        recon.reconcile(now=T0 + timedelta(seconds=5))
        assert _waiting(repo) == {n: ["db"] for n in NODES}
        report(
            repo, "app-3", T0 + timedelta(seconds=9), [{"service": "db", "state": "running", "ready": True}]
        )
        result: PassResult = recon.reconcile(now=T0 + timedelta(seconds=9))
        assert _waiting(repo) == dict.fromkeys(NODES)
        assert set(result.changed_nodes) == set(NODES)
        # the report goes stale: db's only ready instance is on an offline node, so api waits again
        recon.reconcile(now=T0 + timedelta(seconds=9 + 121))
        assert _waiting(repo) == {n: ["db"] for n in NODES}


def _waiting(repo: pygit2.Repository) -> dict[str, list[str] | None]:
    found = {}
    for node, plan in plans(repo).items():
        entry = next(r for r in plan["resources"] if r["id"] == "service:api")
        found[node] = entry["spec"].get("waitingFor")
    return found


class TestPlanCommand:
    """`plumb plan` on a release pull request shows the batches; a cordoned node's plan does not change."""

    def test_release_pull_request(self, origin: pygit2.Repository) -> None:
        cordoned = node_doc("app-2", "app", 2).replace(
            "address: 10.0.0.2", "address: 10.0.0.2\n  cordoned: true"
        )
        commit_files(origin, "main", {"nodes/app-2.yaml": cordoned})
        middle = str(origin.references["refs/heads/main"].target)
        head = commit_files(origin, "main", release("1.1.0"))
        result = CliRunner().invoke(cli, ["plan", "--repo", origin.path, "--base", middle, "--head", head])
        assert result.exit_code == 2, result.output
        batches = batch_cuts([n for n in order("web", "1.1.0", NODES) if n != "app-2"], (1, "50%", "100%"))
        expected = [f"  batch {i}: {', '.join(b)}" for i, b in enumerate(batches, start=1)]
        assert (
            "rollout web 1.0.0 -> 1.1.0 in 3 batches (healthyFor 30s, timeout 10m, onFailure rollback)"
            in result.output
        )
        assert "\n".join([*expected, "  held (cordoned): app-2"]) in result.output
        assert "node app-2:" not in result.output and "node app-1:" in result.output
