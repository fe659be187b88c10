"""One reconcile pass on a real bare repository: plans, status, no-op passes, invalid and rewound commits."""

from __future__ import annotations

import gc
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pygit2
import pytest

from contract.crypto import SealingKey, SigningKey, unseal
from contract.documents import sign_document, verify_document
from contract.errors import ContractError, RewindRefused
from reconciler.core.compile import schemas
from reconciler.drivers.keys import seal_secret, secrets_key
from reconciler.drivers.statestore import LocalLocation
from reconciler.reconcile import Reconciler
from tests.support import node_key
from tests.support.gitrepo import bare_repo, commit_files, read_file

pytestmark = pytest.mark.integration

STATE = "refs/heads/plumb/state"
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)

TEMPLATE = """\
apiVersion: plumb/v1
kind: Template
metadata: {name: web}
spec:
  parameters:
    type: object
    required: [port]
    properties: {port: {type: integer}, greeting: {type: string, default: hi}}
  ports: [{name: http, port: "{{ params.port }}", protocol: http}]
  resources:
    - file:
        path: "/srv/{{ service.name }}/index.html"
        mode: "0644"
        content: "{{ params.greeting }} from {{ node.name }}\\n"
    - unit:
        name: "{{ service.name }}.service"
        restartOn: ["/srv/{{ service.name }}/index.html"]
        content: "[Service]\\nExecStart=/usr/bin/python3 -m http.server {{ params.port }}\\n"
"""
INGRESS = """\
apiVersion: plumb/v1
kind: Trait
metadata: {name: ingress}
spec:
  appliesTo: ["*"]
  parameters: {type: object, required: [host], properties: {host: {type: string}}}
  placement: {selector: {role: edge}}
  resources:
    - nginx:
        site: "{{ service.name }}"
        content: |
          upstream {{ service.name }} {
          {% for e in endpoints(service.name, "http") %}  server {{ e.address }}:{{ e.port }};
          {% else %}  server 127.0.0.1:1 down;
          {% endfor %}}
          server { listen 80; server_name {{ params.host }};
                   location / { proxy_pass http://{{ service.name }}; } }
"""

PLUMB_YAML = """\
apiVersion: plumb/v1
kind: Repository
metadata: {name: test}
spec: {allowedPaths: [/srv, /etc/systemd/system, /etc/nginx/conf.d]}
"""
INVALID_SERVICE = """\
apiVersion: plumb/v1
kind: Service
metadata: {name: svc-2}
spec: {template: nope, placement: {nodes: [app-2]}}
"""


def node_doc(name: str, role: str, index: int, signing: str | None = None, sealing: str | None = None) -> str:
    """A Node enrolled with `node_key(name)` unless other keys are given."""
    signing = signing or node_key(name).public_b64()
    sealing = sealing or SealingKey.generate().public_b64()
    keys = f"\n  keys: {{signing: {signing}, sealing: {sealing}}}"
    return (
        f"apiVersion: plumb/v1\nkind: Node\nmetadata: {{name: {name}, labels: {{role: {role}}}}}\n"
        f"spec:\n  address: 10.0.0.{index}{keys}\n"
    )


def service_doc(name: str, nodes: list[str], port: int, greeting: str = "hi", ingress: bool = False) -> str:
    traits = f"\n  traits: [{{type: ingress, params: {{host: {name}.example.com}}}}]" if ingress else ""
    return (
        f"apiVersion: plumb/v1\nkind: Service\nmetadata: {{name: {name}}}\n"
        f"spec:\n  template: web\n  params: {{port: {port}, greeting: {greeting}}}\n"
        f"  placement: {{nodes: [{', '.join(nodes)}]}}{traits}\n"
    )


def fleet_files(apps: int = 3, services: int = 3, keys: Mapping[str, str] | None = None) -> dict[str, str]:
    """`apps` app nodes and an edge node; services spread over the apps, the first behind ingress."""
    keys = keys or {}
    files = {
        "plumb.yaml": PLUMB_YAML,
        "templates/web.yaml": TEMPLATE,
        "traits/ingress.yaml": INGRESS,
        "nodes/edge-1.yaml": node_doc("edge-1", "edge", 100, keys.get("edge-1")),
    }
    for i in range(1, apps + 1):
        files[f"nodes/app-{i}.yaml"] = node_doc(f"app-{i}", "app", i, keys.get(f"app-{i}"))
    for s in range(1, services + 1):
        nodes = [f"app-{(s - 1) % apps + 1}", f"app-{s % apps + 1}"]
        files[f"services/svc-{s}.yaml"] = service_doc(f"svc-{s}", nodes, 8000 + s, ingress=s == 1)
    return files


def state_files(repo: pygit2.Repository, prefix: str = "") -> dict[str, Any]:
    """Every JSON file of the state branch under `prefix`, parsed."""
    tree = repo.references[STATE].peel(pygit2.Commit).tree
    out: dict[str, Any] = {}

    def walk(t: pygit2.Tree, base: str) -> None:
        for entry in t:
            if isinstance(entry, pygit2.Tree):
                walk(entry, f"{base}{entry.name}/")
            elif f"{base}{entry.name}".startswith(prefix):
                out[f"{base}{entry.name}"] = json.loads(entry.data)

    walk(tree, "")
    return out


def plans(repo: pygit2.Repository) -> dict[str, Any]:
    return {path[6:-5]: doc for path, doc in state_files(repo, "plans/").items()}


def state_tip(repo: pygit2.Repository) -> str | None:
    ref = repo.references.get(STATE)
    return str(ref.target) if ref is not None else None


def push_report(
    repo: pygit2.Repository,
    node: str,
    plan: Mapping[str, Any] | None,
    *,
    key: SigningKey | None,
    when: datetime,
    ready: bool = True,
    port: int = 8001,
    service: str = "svc-1",
) -> None:
    """What an agent pushes: a report.json on plumb/reports/<node>, signed with `key`, else with the
    key the node enrolled with in these tests (`node_key`)."""
    report: dict[str, Any] = {
        "apiVersion": "plumb/v1",
        "kind": "NodeReport",
        "node": node,
        "agentVersion": "test",
        "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "applied": {
            "serial": plan["serial"],
            "commit": plan["source"]["commit"],
            "digest": plan["digest"],
            "at": "x",
            "ok": True,
        }
        if plan
        else None,
        "resources": [],
        "drift": [],
        "capabilities": ["process"],
        "instances": [
            {
                "service": service,
                "state": "running",
                "ready": ready,
                "ports": [{"name": "http", "port": port}],
            }
        ],
    }
    document = sign_document(report, key or node_key(node))
    commit_files(repo, f"plumb/reports/{node}", {"report.json": json.dumps(document)}, keep=False)


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def origin(tmp_path: Path) -> pygit2.Repository:
    repo = bare_repo(tmp_path / "fleet.git")
    commit_files(repo, "main", fleet_files())
    return repo


def reconciler(repo: pygit2.Repository, key: SigningKey, **options: Any) -> Reconciler:
    return Reconciler(LocalLocation(Path(repo.path)), key=key, **options)


class TestPass:
    """A pass writes signed plans once and nothing more until something changes."""

    def test_first_pass_writes_signed_plans_and_status(
        self, origin: pygit2.Repository, key: SigningKey
    ) -> None:
        """Every node gets a plan signed by the reconciler key, in apply order, plus its status."""
        result = reconciler(origin, key).reconcile(now=NOW)
        assert result.written == state_tip(origin)
        found = plans(origin)
        assert set(found) == {"app-1", "app-2", "app-3", "edge-1"}
        for plan in found.values():
            verify_document(plan, key.verify_key(), what="plan")
            assert list(schemas.validator("plan").iter_errors(plan)) == []
            assert plan["serial"] == 1
        ids = [r["id"] for r in found["app-1"]["resources"]]
        assert ids.index("file:/srv/svc-1/index.html") < ids.index("unit:svc-1.service")
        status = state_files(origin, "status/")
        assert status["status/source.json"]["commit"] == origin.references["refs/heads/main"].target.__str__()
        assert status["status/nodes/app-1.json"]["state"] == "offline"
        assert {"status/services/svc-1.json", "status/services/svc-3.json"} <= set(status)
        message = origin[result.written].message
        assert result.desired in message and "app-1" in message

    def test_second_pass_without_new_commit_writes_nothing(
        self, origin: pygit2.Repository, key: SigningKey
    ) -> None:
        """Reconciling twice, even from a fresh process, writes no second commit."""
        reconciler(origin, key).reconcile(now=NOW)
        tip = state_tip(origin)
        assert reconciler(origin, key).reconcile(now=NOW + timedelta(seconds=5)).written is None
        warm = reconciler(origin, key)
        warm.reconcile(now=NOW)
        assert warm.reconcile(now=NOW + timedelta(seconds=1)).skipped
        assert state_tip(origin) == tip

    def test_one_service_change_rewrites_only_its_nodes(
        self, origin: pygit2.Repository, key: SigningKey
    ) -> None:
        """A parameter of svc-2 (on app-2, app-3) changes exactly those plans, serials rise by one."""
        worker = reconciler(origin, key)
        worker.reconcile(now=NOW)
        before = plans(origin)
        commit_files(
            origin, "main", {"services/svc-2.yaml": service_doc("svc-2", ["app-2", "app-3"], 8002, "hello")}
        )
        result = worker.reconcile(now=NOW + timedelta(minutes=1))
        after = plans(origin)
        assert result.changed_nodes == ("app-2", "app-3")
        assert {n for n in after if after[n] != before[n]} == {"app-2", "app-3"}
        assert [after[n]["serial"] for n in ("app-1", "app-2", "app-3", "edge-1")] == [1, 2, 2, 1]
        assert after["app-2"]["source"]["commit"] == result.desired
        assert after["app-1"]["source"]["commit"] != result.desired
        parent = origin[result.written].parents[0]
        assert origin[result.written].tree["templates" if False else "plans"].id != parent.tree["plans"].id

    def test_unchanged_subtrees_are_reused(self, origin: pygit2.Repository, key: SigningKey) -> None:
        """A commit that changes plans only keeps the services status tree object as it was."""
        worker = reconciler(origin, key)
        first = worker.reconcile(now=NOW).written
        commit_files(
            origin, "main", {"services/svc-2.yaml": service_doc("svc-2", ["app-2", "app-3"], 8002, "hello")}
        )
        second = worker.reconcile(now=NOW).written
        assert first and second
        old, new = origin[first].peel(pygit2.Commit).tree, origin[second].peel(pygit2.Commit).tree
        assert old["status/services"].id == new["status/services"].id

    def test_a_pass_leaves_the_garbage_collector_alone(
        self, origin: pygit2.Repository, key: SigningKey
    ) -> None:
        """GC tuning is the long-running command's to do: a pass freezes no object of the process."""
        before = gc.get_freeze_count()
        assert reconciler(origin, key).reconcile(now=NOW).written
        assert gc.get_freeze_count() == before

    def test_two_reconcilers_share_no_cache(self, origin: pygit2.Repository, key: SigningKey) -> None:
        """Each Reconciler reads the desired commit into its own caches; another one's stay empty."""
        first, second = reconciler(origin, key), reconciler(origin, key)
        first.reconcile(now=NOW)
        assert first.source_cache.trees and first.compile_cache.parsed
        assert not second.source_cache.trees and not second.compile_cache.parsed

    def test_invalid_commit_keeps_plans_and_records_findings(
        self, origin: pygit2.Repository, key: SigningKey
    ) -> None:
        """An invalid desired commit changes no plan; status/source.json names the findings."""
        worker = reconciler(origin, key)
        worker.reconcile(now=NOW)
        before = plans(origin)
        commit_files(origin, "main", {"services/svc-2.yaml": INVALID_SERVICE})
        result = worker.reconcile(now=NOW)
        assert not result.ok and result.findings
        assert plans(origin) == before
        source = state_files(origin, "status/source.json")["status/source.json"]
        assert source["ok"] is False and source["findings"][0]["path"] == "services/svc-2.yaml"
        assert source["lastGood"] != source["commit"]

    def test_rewind_is_refused_unless_allowed(self, origin: pygit2.Repository, key: SigningKey) -> None:
        """Moving main back to an older commit is refused; --allow-rewind accepts it."""
        first = str(origin.references["refs/heads/main"].target)
        commit_files(
            origin, "main", {"services/svc-2.yaml": service_doc("svc-2", ["app-2", "app-3"], 8002, "hello")}
        )
        reconciler(origin, key).reconcile(now=NOW)
        origin.references.create("refs/heads/main", pygit2.Oid(hex=first), force=True)
        tip = state_tip(origin)
        with pytest.raises(RewindRefused):
            reconciler(origin, key).reconcile(now=NOW)
        assert state_tip(origin) == tip
        result = reconciler(origin, key, allow_rewind=True).reconcile(now=NOW)
        assert result.written is not None and plans(origin)["app-2"]["serial"] == 2

    def test_plans_carry_the_node_address_and_change_with_it(
        self, origin: pygit2.Repository, key: SigningKey
    ) -> None:
        """Each plan names its node's address (where probes knock); a moved node alone gets a new plan."""
        reconciler(origin, key).reconcile(now=NOW)
        before = plans(origin)
        assert {n: p["address"] for n, p in before.items()} == {
            "app-1": "10.0.0.1",
            "app-2": "10.0.0.2",
            "app-3": "10.0.0.3",
            "edge-1": "10.0.0.100",
        }
        commit_files(origin, "main", {"nodes/app-2.yaml": node_doc("app-2", "app", 9)})
        reconciler(origin, key).reconcile(now=NOW + timedelta(seconds=5))
        after = plans(origin)
        assert (after["app-2"]["address"], after["app-2"]["serial"]) == ("10.0.0.9", 2)
        assert after["app-2"]["resources"] == before["app-2"]["resources"]
        assert {n: after[n] for n in ("app-1", "app-3")} == {n: before[n] for n in ("app-1", "app-3")}
        verify_document(after["app-2"], key.verify_key(), what="plan")

    def test_expiry_is_renewed_with_the_same_serial(self, origin: pygit2.Repository, key: SigningKey) -> None:
        """After half of planExpiry the plans are re-signed with a new expiry and the same serial."""
        reconciler(origin, key).reconcile(now=NOW)
        before = plans(origin)
        reconciler(origin, key).reconcile(now=NOW + timedelta(days=4))
        after = plans(origin)
        assert after["app-1"]["serial"] == before["app-1"]["serial"]
        assert after["app-1"]["resources"] == before["app-1"]["resources"]
        assert after["app-1"]["expires"] > before["app-1"]["expires"]
        verify_document(after["app-1"], key.verify_key(), what="plan")


class TestReports:
    """Reports feed status and endpoints; heartbeats alone write nothing."""

    def test_report_endpoints_reach_the_edge_upstream(self, tmp_path: Path, key: SigningKey) -> None:
        """A ready svc-1 instance on app-1 becomes an upstream on edge-1, and only edge-1 is re-planned."""
        node_keys = {n: SigningKey.generate() for n in ("app-1", "app-2", "app-3", "edge-1")}
        repo = bare_repo(tmp_path / "fleet.git")
        commit_files(repo, "main", fleet_files(keys={n: k.public_b64() for n, k in node_keys.items()}))
        worker = reconciler(repo, key)
        worker.reconcile(now=NOW)
        push_report(repo, "app-1", plans(repo)["app-1"], key=node_keys["app-1"], when=NOW)
        result = worker.reconcile(now=NOW + timedelta(seconds=1))
        assert result.changed_nodes == ("edge-1",)
        site = next(r for r in plans(repo)["edge-1"]["resources"] if r["id"] == "nginx:svc-1")
        assert "server 10.0.0.1:8001;" in site["spec"]["content"]
        status = state_files(repo, "status/")
        assert status["status/nodes/app-1.json"]["state"] == "online"
        assert status["status/nodes/app-1.json"]["inSync"] is True
        assert status["status/services/svc-1.json"]["endpoints"][0]["healthy"] is True
        # a heartbeat: same content, later time -> no commit
        tip = state_tip(repo)
        push_report(
            repo, "app-1", plans(repo)["app-1"], key=node_keys["app-1"], when=NOW + timedelta(seconds=30)
        )
        assert worker.reconcile(now=NOW + timedelta(seconds=31)).written is None
        assert state_tip(repo) == tip
        # silence past offlineAfter: offline, endpoint unhealthy, upstream back to "down"
        result = worker.reconcile(now=NOW + timedelta(seconds=200))
        assert result.changed_nodes == ("edge-1",)
        assert state_files(repo, "status/nodes/app-1.json")["status/nodes/app-1.json"]["state"] == "offline"

    def test_a_report_cannot_join_another_service_s_upstream(self, tmp_path: Path, key: SigningKey) -> None:
        """app-3, whose plan does not place svc-1, signs a report claiming svc-1 on port 6666: ignored."""
        node_keys = {n: SigningKey.generate() for n in ("app-1", "app-2", "app-3", "edge-1")}
        repo = bare_repo(tmp_path / "fleet.git")
        commit_files(repo, "main", fleet_files(keys={n: k.public_b64() for n, k in node_keys.items()}))
        worker = reconciler(repo, key)
        worker.reconcile(now=NOW)
        assert "service:svc-1" not in [r["id"] for r in plans(repo)["app-3"]["resources"]]
        push_report(repo, "app-1", plans(repo)["app-1"], key=node_keys["app-1"], when=NOW)
        push_report(repo, "app-3", plans(repo)["app-3"], key=node_keys["app-3"], when=NOW, port=6666)
        worker.reconcile(now=NOW + timedelta(seconds=1))
        site = next(r for r in plans(repo)["edge-1"]["resources"] if r["id"] == "nginx:svc-1")
        assert "server 10.0.0.1:8001;" in site["spec"]["content"]
        assert "6666" not in site["spec"]["content"] and "10.0.0.3" not in site["spec"]["content"]
        endpoints = state_files(repo, "status/services/svc-1.json")["status/services/svc-1.json"]["endpoints"]
        assert [e["node"] for e in endpoints] == ["app-1"]
        status = state_files(repo, "status/nodes/app-3.json")["status/nodes/app-3.json"]
        assert status["ignoredClaims"] == ["an instance of svc-1, which its plan does not place on this node"]

    def test_a_node_without_enrolled_keys_has_no_report_believed(
        self, tmp_path: Path, key: SigningKey
    ) -> None:
        """A keyless node (allowed only while it runs nothing) is offline whatever it pushes; its
        status names the command to run."""
        repo = bare_repo(tmp_path / "fleet.git")
        files = fleet_files()
        files["nodes/spare.yaml"] = (
            "apiVersion: plumb/v1\nkind: Node\nmetadata: {name: spare, labels: {role: spare}}\n"
            "spec: {address: 10.0.0.77}\n"
        )
        commit_files(repo, "main", files)
        worker = reconciler(repo, key)
        assert worker.reconcile(now=NOW).ok
        push_report(repo, "spare", plans(repo)["spare"], key=SigningKey.generate(), when=NOW)
        worker.reconcile(now=NOW + timedelta(seconds=1))
        status = state_files(repo, "status/nodes/spare.json")["status/nodes/spare.json"]
        assert status["state"] == "offline"
        assert "no enrolled signing key" in status["reason"]
        assert "plumb-agent enroll --node spare" in status["reason"]

    def test_report_with_a_bad_signature_is_ignored(self, tmp_path: Path, key: SigningKey) -> None:
        """A report signed by another key does not count; the node's status says why."""
        repo = bare_repo(tmp_path / "fleet.git")
        commit_files(repo, "main", fleet_files(keys={"app-1": SigningKey.generate().public_b64()}))
        worker = reconciler(repo, key)
        worker.reconcile(now=NOW)
        push_report(repo, "app-1", plans(repo)["app-1"], key=SigningKey.generate(), when=NOW)
        worker.reconcile(now=NOW)
        status = state_files(repo, "status/nodes/app-1.json")["status/nodes/app-1.json"]
        assert status["state"] == "offline" and "pinned" in status["report"]["problem"]
        assert (
            "server 127.0.0.1:1 down;"
            in next(r for r in plans(repo)["edge-1"]["resources"] if r["kind"] == "nginx")["spec"]["content"]
        )


def test_a_malformed_report_is_ignored_not_fatal(tmp_path: Path, key: SigningKey) -> None:
    """A report that breaks the schema does not stop the pass; the node's status names the problem."""
    repo = bare_repo(tmp_path / "fleet.git")
    commit_files(repo, "main", fleet_files())
    worker = reconciler(repo, key)
    worker.reconcile(now=NOW)
    broken = {"apiVersion": "plumb/v1", "kind": "NodeReport", "node": "app-1", "instances": "oops"}
    signed = sign_document(broken, node_key("app-1"))
    commit_files(repo, "plumb/reports/app-1", {"report.json": json.dumps(signed)}, keep=False)
    assert worker.reconcile(now=NOW).ok
    status = state_files(repo, "status/nodes/app-1.json")["status/nodes/app-1.json"]
    assert status["state"] == "offline" and "report schema" in status["report"]["problem"]


def secret_doc(sealed: str) -> str:
    return f"apiVersion: plumb/v1\nkind: Secret\nmetadata: {{name: db}}\nspec: {{data: {{password: '{sealed}'}}}}\n"


SECRET_FILES = {
    "templates/vault.yaml": """\
apiVersion: plumb/v1
kind: Template
metadata: {name: vault}
spec:
  resources:
    - file: {path: "/srv/{{ service.name }}/db.conf", mode: "0600", content: "password={{ secret('db', 'password') }}\\n"}
""",
    "services/vault.yaml": "apiVersion: plumb/v1\nkind: Service\nmetadata: {name: vault}\nspec: {template: vault, placement: {nodes: [app-1, app-2]}}\n",
}


def test_secret_bearing_files_are_sealed_per_node_or_withheld(tmp_path: Path, key: SigningKey) -> None:
    """Each node gets the file sealed to its own key, the secret's value opened and sealed again;
    one node's copy cannot be opened with another's key. The value never appears in clear."""
    sealing = SealingKey.generate()
    repo = bare_repo(tmp_path / "fleet.git")
    recipient = secrets_key(key).public_b64()
    files = {**fleet_files(), **SECRET_FILES}
    files["secrets/db.yaml"] = secret_doc(seal_secret(b"hunter2", recipient, name="db", field="password"))
    files["nodes/app-1.yaml"] = node_doc(
        "app-1", "app", 1, SigningKey.generate().public_b64(), sealing.public_b64()
    )
    commit_files(repo, "main", files)
    reconciler(repo, key).reconcile(now=NOW)
    found = plans(repo)
    assert list(schemas.validator("plan").iter_errors(found["app-1"])) == []
    sealed = next(r for r in found["app-1"]["resources"] if r["id"] == "file:/srv/vault/db.conf")
    assert "content" not in sealed["spec"]
    opened = unseal(sealed["spec"]["sealed"], sealing, context="app-1|file:/srv/vault/db.conf")
    assert opened == b"password=hunter2\n"
    assert b"hunter2" not in b"".join(read_file(repo, "plumb/state", p) for p in ("plans/app-1.json",))
    other = next(r for r in found["app-2"]["resources"] if r["id"] == "file:/srv/vault/db.conf")
    with pytest.raises(ContractError):
        unseal(other["spec"]["sealed"], sealing, context="app-2|file:/srv/vault/db.conf")
    assert reconciler(repo, key).reconcile(now=NOW).written is None  # sealing again changes nothing


def test_a_secret_bearing_file_without_a_mode_is_0600(tmp_path: Path, key: SigningKey) -> None:
    """A file whose content reads a secret defaults to 0600 (others stay 0644): nobody else reads it."""
    repo = bare_repo(tmp_path / "fleet.git")
    files = {**fleet_files(), **SECRET_FILES}
    files["templates/vault.yaml"] = (
        files["templates/vault.yaml"]
        .replace('mode: "0600", ', "")
        .replace(
            "  resources:\n",
            '  resources:\n    - file: {path: "/srv/{{ service.name }}/plain.conf", content: "x"}\n',
        )
    )
    files["secrets/db.yaml"] = secret_doc(
        seal_secret(b"hunter2", secrets_key(key).public_b64(), name="db", field="password")
    )
    sealing = SealingKey.generate()
    files["nodes/app-1.yaml"] = node_doc(
        "app-1", "app", 1, SigningKey.generate().public_b64(), sealing.public_b64()
    )
    commit_files(repo, "main", files)
    assert reconciler(repo, key).reconcile(now=NOW).ok
    vault = [r for r in plans(repo)["app-1"]["resources"] if r["id"].startswith("file:/srv/vault/")]
    modes = {r["id"]: r["spec"]["mode"] for r in vault}
    assert modes == {"file:/srv/vault/db.conf": "0600", "file:/srv/vault/plain.conf": "0644"}


def test_a_secret_not_sealed_to_this_reconciler_is_withheld(tmp_path: Path, key: SigningKey) -> None:
    """A value sealed to another reconciler cannot be opened: the file is withheld, never planned wrong."""
    sealing = SealingKey.generate()
    repo = bare_repo(tmp_path / "fleet.git")
    other = secrets_key(SigningKey.generate()).public_b64()
    files = {**fleet_files(), **SECRET_FILES}
    files["secrets/db.yaml"] = secret_doc(seal_secret(b"hunter2", other, name="db", field="password"))
    files["nodes/app-1.yaml"] = node_doc(
        "app-1", "app", 1, SigningKey.generate().public_b64(), sealing.public_b64()
    )
    commit_files(repo, "main", files)
    assert reconciler(repo, key).reconcile(now=NOW).ok
    assert "file:/srv/vault/db.conf" not in [r["id"] for r in plans(repo)["app-1"]["resources"]]
    status = state_files(repo, "status/nodes/app-1.json")["status/nodes/app-1.json"]
    assert status["withheld"][0]["id"] == "file:/srv/vault/db.conf"


def _forge(repo: pygit2.Repository, node: str, change: Any) -> None:
    """What anyone with push access to the state branch can do: rewrite a plan, unsigned or re-keyed."""
    document = plans(repo)[node]
    change(document)
    commit_files(repo, STATE, {f"plans/{node}.json": json.dumps(document)})


FORGERIES: list[tuple[str, Any]] = [
    (
        "another node's plan, high serial, unsigned",
        lambda d: (d.update(node="app-2", serial=1000), d.pop("signature")),
    ),
    ("serial rewritten low, bad signature", lambda d: d.update(serial=1)),
    (
        "resources emptied, signed by another key",
        lambda d: d.update(sign_document({**d, "resources": []}, SigningKey.generate())),
    ),
    ("not JSON at all", None),
]


@pytest.mark.parametrize(("name", "change"), FORGERIES, ids=[f[0] for f in FORGERIES])
def test_the_reconciler_signs_only_plans_it_derived(
    tmp_path: Path, key: SigningKey, name: str, change: Any
) -> None:
    """A plan forged on the state branch is never signed as it is: the node's plan goes back to the last
    one this reconciler signed (same serial, same resources), and serials go on from there."""
    repo = bare_repo(tmp_path / "fleet.git")
    files = fleet_files()
    commit_files(repo, "main", files)
    worker = reconciler(repo, key)
    worker.reconcile(now=NOW)
    files["services/svc-1.yaml"] = service_doc(
        "svc-1", ["app-1", "app-2"], 8001, greeting="two", ingress=True
    )
    commit_files(repo, "main", files)
    worker.reconcile(now=NOW)
    honest = plans(repo)["app-1"]
    if change is None:
        commit_files(repo, STATE, {"plans/app-1.json": b"\xff not a plan"})
    else:
        _forge(repo, "app-1", change)
    reconciler(repo, key).reconcile(now=NOW + timedelta(seconds=1))  # a restarted reconciler: no memory
    restored = plans(repo)["app-1"]
    verify_document(restored, key.verify_key(), what="plan")
    assert (restored["node"], restored["serial"], restored["digest"]) == (
        "app-1",
        honest["serial"],
        honest["digest"],
    )
    files["services/svc-1.yaml"] = service_doc(
        "svc-1", ["app-1", "app-2"], 8001, greeting="three", ingress=True
    )
    commit_files(repo, "main", files)
    reconciler(repo, key).reconcile(now=NOW + timedelta(seconds=2))
    assert plans(repo)["app-1"]["serial"] == honest["serial"] + 1
