"""The reconciler believes only state it signed: the manifest over the state branch, serial floors, alerts.

Each test writes to `plumb/state` as someone holding a node's Git credentials could, then runs a
reconciler (a fresh one, so nothing is remembered in memory) and checks what it believed and wrote.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pygit2
import pytest

from contract.crypto import SigningKey
from contract.documents import sign_document, verify_document
from reconciler.core.decide.trust import ALERTS_PATH, MANIFEST_PATH, verified_manifest
from tests.integration.test_reconcile_pass import (
    NOW,
    STATE,
    fleet_files,
    plans,
    push_report,
    reconciler,
    service_doc,
    state_files,
)
from tests.integration.test_reconcile_rollout import (
    NODES,
    T0,
    base_files,
    on_version,
    release,
    rollout,
    service,
    versions,
)
from tests.support import node_key
from tests.support.gitrepo import bare_repo, commit_files

pytestmark = pytest.mark.integration


def blob_ids(repo: pygit2.Repository) -> dict[str, str]:
    out: dict[str, str] = {}

    def walk(tree: pygit2.Tree, base: str) -> None:
        for entry in tree:
            if isinstance(entry, pygit2.Tree):
                walk(entry, f"{base}{entry.name}/")
            else:
                out[f"{base}{entry.name}"] = str(entry.id)

    walk(repo.references[STATE].peel(pygit2.Commit).tree, "")
    return out


def alerts(repo: pygit2.Repository) -> list[dict[str, Any]]:
    return list(state_files(repo, ALERTS_PATH).get(ALERTS_PATH, {}).get("alerts", []))


def change_greeting(repo: pygit2.Repository, files: dict[str, str], greeting: str) -> None:
    files["services/svc-1.yaml"] = service_doc("svc-1", ["app-1", "app-2"], 8001, greeting=greeting)
    commit_files(repo, "main", files)


@pytest.fixture
def fleet(tmp_path: Any, key: SigningKey) -> tuple[pygit2.Repository, dict[str, str]]:
    """A reconciled fleet whose app-1 plan has been changed once (serial 2)."""
    repo = bare_repo(tmp_path / "fleet.git")
    files = fleet_files()
    commit_files(repo, "main", files)
    reconciler(repo, key).reconcile(now=NOW)
    change_greeting(repo, files, "two")
    reconciler(repo, key).reconcile(now=NOW + timedelta(seconds=1))
    assert plans(repo)["app-1"]["serial"] == 2
    return repo, files


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


class TestManifest:
    """Every state commit carries a manifest the reconciler signed over every other file."""

    def test_the_manifest_lists_every_file_by_object_id_and_each_nodes_serial(
        self, fleet: tuple[pygit2.Repository, dict[str, str]], key: SigningKey
    ) -> None:
        repo, _ = fleet
        document = state_files(repo, MANIFEST_PATH)[MANIFEST_PATH]
        manifest = verified_manifest(document, key.verify_key())
        assert manifest is not None
        assert manifest.files == {p: b for p, b in blob_ids(repo).items() if p != MANIFEST_PATH}
        assert manifest.serials == {node: plan["serial"] for node, plan in plans(repo).items()}
        assert verified_manifest(document, SigningKey.generate().verify_key()) is None

    def test_an_unchanged_pass_writes_no_new_manifest(
        self, fleet: tuple[pygit2.Repository, dict[str, str]], key: SigningKey
    ) -> None:
        repo, _ = fleet
        tip = repo.references[STATE].target
        assert reconciler(repo, key).reconcile(now=NOW + timedelta(seconds=2)).written is None
        assert repo.references[STATE].target == tip


class TestForgedState:
    """What someone else wrote on the state branch is treated as absent, repaired and named."""

    def test_a_status_document_changed_by_someone_else_is_written_again_and_alerted(
        self, fleet: tuple[pygit2.Repository, dict[str, str]], key: SigningKey
    ) -> None:
        repo, _ = fleet
        honest = state_files(repo, "status/nodes/app-1.json")["status/nodes/app-1.json"]
        forged = dict(honest, state="cordoned", reason="forged")
        commit_files(repo, STATE, {"status/nodes/app-1.json": json.dumps(forged)})
        forging_commit = str(repo.references[STATE].target)
        reconciler(repo, key).reconcile(now=NOW + timedelta(seconds=2))
        assert state_files(repo, "status/nodes/app-1.json")["status/nodes/app-1.json"] == honest
        [alert] = alerts(repo)
        assert alert["path"] == "status/nodes/app-1.json" and alert["commit"] == forging_commit
        assert "changed by someone other than this reconciler" in alert["message"]

    def test_a_file_added_by_someone_else_is_removed_and_alerted(
        self, fleet: tuple[pygit2.Repository, dict[str, str]], key: SigningKey
    ) -> None:
        repo, _ = fleet
        commit_files(repo, STATE, {"plans/intruder.json": "{}", "notes/readme.txt": "hello"})
        reconciler(repo, key).reconcile(now=NOW + timedelta(seconds=2))
        files = blob_ids(repo)
        assert "notes/readme.txt" not in files and "plans/intruder.json" not in files
        assert {a["path"] for a in alerts(repo)} == {"notes/readme.txt", "plans/intruder.json"}

    def test_a_deleted_manifest_costs_the_status_but_never_the_serials(
        self, fleet: tuple[pygit2.Repository, dict[str, str]], key: SigningKey
    ) -> None:
        repo, _ = fleet
        commit_files(repo, STATE, {MANIFEST_PATH: None, "plans/app-1.json": None})
        reconciler(repo, key).reconcile(now=NOW + timedelta(seconds=2))
        assert plans(repo)["app-1"]["serial"] == 3  # not 1: the last verified manifest said 2
        assert [a["path"] for a in alerts(repo)] == [MANIFEST_PATH]
        manifest = verified_manifest(state_files(repo, MANIFEST_PATH)[MANIFEST_PATH], key.verify_key())
        assert manifest is not None and manifest.files.keys() == blob_ids(repo).keys() - {MANIFEST_PATH}

    def test_a_forged_last_reconciled_commit_cannot_refuse_or_allow_a_rewind(
        self, fleet: tuple[pygit2.Repository, dict[str, str]], key: SigningKey
    ) -> None:
        repo, files = fleet
        source = state_files(repo, "status/source.json")["status/source.json"]
        commit_files(repo, STATE, {"status/source.json": json.dumps(dict(source, commit="f" * 40))})
        change_greeting(repo, files, "three")
        result = reconciler(repo, key).reconcile(now=NOW + timedelta(seconds=2))
        assert result.ok and "app-1" in result.changed_nodes
        assert state_files(repo, "status/source.json")["status/source.json"]["commit"] == str(
            repo.references["refs/heads/main"].target
        )

    def test_an_older_signed_plan_put_back_is_replaced_above_the_highest_serial(
        self, fleet: tuple[pygit2.Repository, dict[str, str]], key: SigningKey
    ) -> None:
        repo, _ = fleet
        walker = repo.walk(repo.references[STATE].target)
        first = list(walker)[-1]  # the first state commit: app-1 at serial 1
        old_plan = first.tree["plans"].peel(pygit2.Tree)["app-1.json"].peel(pygit2.Blob).data
        assert json.loads(old_plan)["serial"] == 1
        commit_files(repo, STATE, {"plans/app-1.json": old_plan})
        reconciler(repo, key).reconcile(now=NOW + timedelta(seconds=2))
        plan = plans(repo)["app-1"]
        verify_document(plan, key.verify_key(), what="plan")
        assert plan["serial"] == 3  # the replayed serial-1 plan's work, signed above the floor of 2
        assert [a["path"] for a in alerts(repo)] == ["plans/app-1.json"]

    def test_an_alert_is_recorded_once_per_commit(
        self, fleet: tuple[pygit2.Repository, dict[str, str]], key: SigningKey
    ) -> None:
        repo, files = fleet
        commit_files(repo, STATE, {"status/services/svc-2.json": "{}"})
        worker = reconciler(repo, key)
        worker.reconcile(now=NOW + timedelta(seconds=2))
        change_greeting(repo, files, "three")
        worker.reconcile(now=NOW + timedelta(seconds=3))
        assert len(alerts(repo)) == 1


def test_forged_rollout_progress_does_not_skip_a_batch(tmp_path: Any) -> None:
    """`phase: succeeded` written on the branch mid-rollout: the rollout goes on batch by batch."""
    repo = bare_repo(tmp_path / "fleet.git")
    commit_files(repo, "main", base_files() | service("web", 8080) | release("1.0.0"))
    key = SigningKey.generate()
    reconciler(repo, key).reconcile(now=T0)
    on_version(repo, "1.0.0", T0 + timedelta(seconds=5))
    reconciler(repo, key).reconcile(now=T0 + timedelta(seconds=5))
    t1 = T0 + timedelta(minutes=1)
    commit_files(repo, "main", release("1.1.0"))
    reconciler(repo, key).reconcile(now=t1)
    canary = rollout(repo)["batches"][0][0]
    assert versions(repo) == {n: "1.1.0" if n == canary else "1.0.0" for n in NODES}

    forged = dict(rollout(repo), phase="succeeded")
    commit_files(repo, STATE, {"status/releases/web.json": json.dumps(forged)})
    reconciler(repo, key).reconcile(now=t1 + timedelta(seconds=5))
    assert sum(v == "1.1.0" for v in versions(repo).values()) == 1
    assert rollout(repo)["phase"] != "succeeded"
    assert "status/releases/web.json" in {a["path"] for a in alerts(repo)}


class TestStatusCommand:
    """`plumb status` shows only what the reconciler signed when it has its key, and the alerts."""

    def test_a_forged_document_is_hidden_and_the_alert_shown(
        self,
        fleet: tuple[pygit2.Repository, dict[str, str]],
        key: SigningKey,
        tmp_path: Any,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        from click.testing import CliRunner

        from reconciler.cli.main import cli

        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no local reconciler key
        repo, _ = fleet
        reconciler(repo, key).reconcile(now=NOW + timedelta(seconds=2))
        commit_files(repo, STATE, {"notes/x.txt": "x"})
        reconciler(repo, key).reconcile(now=NOW + timedelta(seconds=3))
        forged = {"node": "app-9", "state": "online", "address": "10.9.9.9"}
        commit_files(repo, STATE, {"status/nodes/app-9.json": json.dumps(forged)})

        def status(*args: str) -> Any:
            result = CliRunner().invoke(cli, ["status", "--repo", repo.path, "--format", "json", *args])
            assert result.exit_code == 0, result.output
            return json.loads(result.output)

        unchecked = status()
        assert unchecked["verified"] is None and "app-9" in {n["node"] for n in unchecked["nodes"]}
        checked = status("--reconciler-key", key.public_b64())
        assert checked["verified"] is True
        assert "app-9" not in {n["node"] for n in checked["nodes"]}
        assert checked["unverifiedDocuments"] == ["status/nodes/app-9.json"]
        assert [a["path"] for a in checked["alerts"]] == ["notes/x.txt"]
        other = status("--reconciler-key", SigningKey.generate().public_b64())
        assert other["verified"] is False and other["nodes"] == []

        table = CliRunner().invoke(cli, ["status", "--repo", repo.path, "--reconciler-key", key.public_b64()])
        assert "ALERT" in table.output and "notes/x.txt" in table.output
        assert "1 status documents not signed by the reconciler" in table.output


def test_a_plan_too_big_for_agents_is_an_error_not_a_write(
    fleet: tuple[pygit2.Repository, dict[str, str]], key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node keeps its last plan and serial; the source status names the node and the size."""
    import reconciler.reconcile as reconcile_module

    repo, files = fleet
    before = plans(repo)
    limit = max(len(json.dumps(p)) for p in before.values()) + 400
    monkeypatch.setattr(reconcile_module, "MAX_PLAN_BYTES", limit)
    change_greeting(repo, files, "x" * limit)  # svc-1 is on app-1 and app-2
    result = reconciler(repo, key).reconcile(now=NOW + timedelta(seconds=2))
    after = plans(repo)
    assert {n: after[n]["serial"] for n in ("app-1", "app-2")} == {
        n: before[n]["serial"] for n in ("app-1", "app-2")
    }
    assert after["app-3"] == before["app-3"] and "app-1" not in result.changed_nodes
    source = state_files(repo, "status/source.json")["status/source.json"]
    refused = [f for f in source["findings"] if f["code"] == "plan-too-big"]
    assert [f["path"] for f in refused] == ["nodes/app-1.yaml", "nodes/app-2.yaml"]
    assert f"more than the {limit:,} agents accept" in refused[0]["message"]
    manifest = verified_manifest(state_files(repo, MANIFEST_PATH)[MANIFEST_PATH], key.verify_key())
    assert manifest is not None and manifest.serials["app-1"] == before["app-1"]["serial"]


def test_a_report_commit_that_reaches_beyond_its_report_is_alerted(
    fleet: tuple[pygit2.Repository, dict[str, str]], key: SigningKey
) -> None:
    """A report commit also pushed as another branch's tip, or holding other files, is named."""
    repo, _ = fleet
    push_report(repo, "app-1", plans(repo)["app-1"], key=None, when=NOW)
    tip = str(repo.references["refs/heads/plumb/reports/app-1"].target)
    repo.references.create("refs/heads/plumb/reports/app-2", pygit2.Oid(hex=tip), force=True)
    report = json.loads(repo[tip].peel(pygit2.Commit).tree["report.json"].data)
    report = sign_document(dict(report, node="app-3"), node_key("app-3"))
    extra = {"report.json": json.dumps(report), "notes.txt": "x"}
    with_extra = commit_files(repo, "plumb/reports/app-3", extra, keep=False)
    reconciler(repo, key).reconcile(now=NOW + timedelta(seconds=2))
    found = {(a["path"], a["commit"]): a["message"] for a in alerts(repo)}
    assert "also the tip of plumb/reports/app-1" in found[("plumb/reports/app-2", tip)]
    assert "also holds notes.txt" in found[("plumb/reports/app-3", with_extra)]
    status = state_files(repo, "status/nodes/app-3.json")["status/nodes/app-3.json"]
    assert status["report"]["verified"] and "notes.txt" in status["report"]["warning"]
