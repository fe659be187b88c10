"""`plumb status` on a real repository: a reconciled fleet with reports, read as people and machines read it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pygit2
import pytest
from click.testing import CliRunner

from contract.crypto import SigningKey
from reconciler.cli.main import cli
from tests.integration.test_reconcile_pass import (
    INVALID_SERVICE,
    fleet_files,
    plans,
    push_report,
    reconciler,
)
from tests.support.gitrepo import bare_repo, commit_files

pytestmark = pytest.mark.integration
FLEET_KEY = SigningKey.generate()  # the reconciler's key: state it did not sign is not believed
PLUMB = str(Path(sys.executable).parent / "plumb")
ROLLOUT = {
    "service": "svc-1",
    "from": "1.0.0",
    "to": "1.1.0",
    "phase": "failed",
    "batch": 1,
    "batchTotal": 3,
    "batches": [["app-1"], ["app-2"]],
    "batchStarted": None,
    "ready": {},
    "already": [],
    "held": {},
    "nodesDone": 1,
    "reason": "app-2: unhealthy for longer than 10m",
}


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["status", *args])
    return result.exit_code, result.output


@pytest.fixture
def fleet(tmp_path: Path) -> pygit2.Repository:
    """A reconciled fleet: app-1 reports svc-1 ready, app-2 reports it not ready, the rest never reported."""
    repo = bare_repo(tmp_path / "fleet.git")
    files = fleet_files()
    files["services/svc-1.yaml"] = files["services/svc-1.yaml"].replace(
        "{name: svc-1}", "{name: svc-1, labels: {app: shop}}"
    )
    commit_files(repo, "main", files)
    passes = reconciler(repo, FLEET_KEY)
    passes.reconcile()
    now = datetime.now(UTC)
    push_report(repo, "app-1", plans(repo)["app-1"], key=None, when=now)
    push_report(repo, "app-2", plans(repo)["app-2"], key=None, when=now - timedelta(seconds=30), ready=False)
    passes.reconcile()
    return repo


def status_json(repo: pygit2.Repository, *args: str) -> Any:
    code, output = invoke("--repo", repo.path, "--format", "json", *args)
    assert code == 0, output
    return json.loads(output)


class TestFleet:
    """The whole fleet at a glance."""

    def test_nodes_have_live_report_ages_and_serials(self, fleet: pygit2.Repository) -> None:
        """Ages come from the report branches now; serials from the report against the plan."""
        nodes = {n["node"]: n for n in status_json(fleet)["nodes"]}
        assert [nodes[n]["state"] for n in ("app-1", "app-2", "app-3")] == ["online", "online", "offline"]
        assert 30 <= nodes["app-2"]["reportAge"] < 120
        assert nodes["app-3"]["reportAge"] is None and nodes["app-3"]["appliedSerial"] is None
        assert (nodes["app-1"]["appliedSerial"], nodes["app-1"]["planSerial"]) == (1, 1)
        assert nodes["app-3"]["pending"] and not nodes["app-1"]["pending"]

    def test_services_have_states_endpoints_and_reasons(self, fleet: pygit2.Repository) -> None:
        """svc-1 waits for app-2's instance; services nobody reported are pending."""
        services = {s["service"]: s for s in status_json(fleet)["services"]}
        assert services["svc-1"]["state"] == "deploying"
        assert services["svc-1"]["reason"] == "1/2 ready; waiting for app-2"
        assert services["svc-1"]["healthyEndpoints"] == 1 and len(services["svc-1"]["endpoints"]) == 2
        assert services["svc-2"]["state"] == "pending"

    def test_table_is_plain_when_not_a_terminal(self, fleet: pygit2.Repository) -> None:
        """No colour codes and no trailing blanks when piped; every section is there."""
        code, output = invoke("--repo", fleet.path)
        assert code == 0, output
        assert "\x1b[" not in output and all(line == line.rstrip() for line in output.splitlines())
        assert output.startswith("Source  main @ ") and " ok " in output.splitlines()[0]
        for expected in ("NODE", "app-1   online", "app-3   offline", "never", "svc-1", "1/2 healthy"):
            assert expected in output, output

    def test_a_node_silent_past_offline_after_shows_offline_before_the_reconciler_says_so(
        self, tmp_path: Path
    ) -> None:
        """The state branch says online, but the live report age is past offlineAfter."""
        repo = bare_repo(tmp_path / "fleet.git")
        commit_files(repo, "main", fleet_files())
        passes = reconciler(repo, FLEET_KEY)
        passes.reconcile()
        old = datetime.now(UTC) - timedelta(seconds=600)
        push_report(repo, "app-1", plans(repo)["app-1"], key=None, when=old)
        passes.reconcile(now=old + timedelta(seconds=1))
        node = status_json(repo, "--node", "app-1")["node"]
        assert node["state"] == "offline" and "not yet recorded" in node["reason"]


class TestOneNodeOrService:
    """`--node` and `--service` go into detail."""

    def test_node_detail_lists_pending_actions(self, fleet: pygit2.Repository) -> None:
        """A node that never reported has everything still to create."""
        code, output = invoke("--repo", fleet.path, "--node", "app-3")
        assert code == 0, output
        assert "Node app-3 (10.0.0.3): offline — no report yet" in output
        assert "create" in output and "file:/srv/svc-2/index.html" in output

    def test_service_detail_shows_its_rollout(self, fleet: pygit2.Repository) -> None:
        """Phase, batch, nodes done and the failure reason come from status/releases/<name>.json."""
        commit_files(fleet, "plumb/state", {"status/releases/svc-1.json": json.dumps(ROLLOUT)})
        view = status_json(fleet, "--service", "svc-1")
        assert view["rollout"]["phase"] == "failed" and view["service"]["service"] == "svc-1"
        code, output = invoke("--repo", fleet.path, "--service", "svc-1")
        assert code == 0, output
        assert "Rollout 1.0.0 → 1.1.0: failed, batch 2/3, 1 node(s) done" in output
        assert "app-2: unhealthy for longer than 10m" in output
        assert "app-2  10.0.0.2  8001  http  no" in output

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (("--node", "web-9"), "plumb: unknown node 'web-9'; known: app-1, app-2, app-3, edge-1"),
            (("--service", "nope"), "plumb: unknown service 'nope'; known: svc-1, svc-2, svc-3"),
            (("--node", "app-1", "--service", "svc-1"), "plumb: give --node or --service, not both"),
        ],
    )
    def test_unknown_names_are_one_line_errors(
        self, fleet: pygit2.Repository, args: tuple[str, ...], message: str
    ) -> None:
        """Exit 1 with one line naming what is known."""
        assert invoke("--repo", fleet.path, *args) == (1, message + "\n")


class TestSource:
    """Which desired commit was reconciled, and why it was refused."""

    def test_invalid_commit_shows_its_findings_with_file_and_line(self, fleet: pygit2.Repository) -> None:
        """The finding's file:line:col and the commit whose plans nodes keep."""
        good = status_json(fleet)["source"]["commit"]
        bad = commit_files(fleet, "main", {"services/svc-2.yaml": INVALID_SERVICE})
        reconciler(fleet, FLEET_KEY).reconcile()
        source = status_json(fleet)["source"]
        assert (source["commit"], source["ok"], source["lastGood"]) == (bad, False, good)
        code, output = invoke("--repo", fleet.path)
        assert code == 0, output
        assert f"invalid (plans kept from {good[:12]})" in output.splitlines()[0]
        assert "services/svc-2.yaml:4:18: spec.template: unknown template 'nope'" in output


class TestRepository:
    """Where status is read from."""

    def test_no_state_branch_yet(self, tmp_path: Path) -> None:
        """A repository nobody reconciled says what to run."""
        repo = bare_repo(tmp_path / "fleet.git")
        commit_files(repo, "main", fleet_files())
        code, output = invoke("--repo", repo.path)
        assert code == 1 and output.count("\n") == 1
        assert "no state branch 'plumb/state' yet; run `plumb reconcile" in output

    def test_not_a_repository(self, tmp_path: Path) -> None:
        assert invoke("--repo", str(tmp_path)) == (
            1,
            f"plumb: {tmp_path}: not a Git repository (give the fleet's repository with --repo)\n",
        )

    def test_a_clone_reads_the_remote_tracking_branches(
        self, fleet: pygit2.Repository, tmp_path: Path
    ) -> None:
        """In a working clone, `plumb status` (default --repo .) reads origin's plumb/* branches."""
        clone = tmp_path / "clone"
        subprocess.run(["git", "clone", "--quiet", fleet.path, str(clone)], check=True)
        result = subprocess.run(
            [PLUMB, "status", "--format", "json"], cwd=clone, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        view = json.loads(result.stdout)
        assert view["stateBranch"] == "refs/remotes/origin/plumb/state"
        assert {n["node"]: n["appliedSerial"] for n in view["nodes"]}["app-1"] == 1


class TestWatch:
    """`--watch` redraws until Ctrl-C."""

    def test_watch_prints_a_view_per_period_and_ends_on_ctrl_c(self, fleet: pygit2.Repository) -> None:
        """Not on a terminal, each period prints one JSON line; SIGINT ends it with status 0."""
        watch = subprocess.Popen(
            [PLUMB, "status", "--repo", fleet.path, "--watch", "--format", "json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert watch.stdout is not None
            first, second = watch.stdout.readline(), watch.stdout.readline()
            watch.send_signal(signal.SIGINT)
            _, errors = watch.communicate(timeout=30)
        finally:
            if watch.poll() is None:
                os.kill(watch.pid, signal.SIGKILL)
                watch.wait()
        assert json.loads(first)["stateCommit"] == json.loads(second)["stateCommit"]
        assert watch.returncode == 0, errors
