"""`plumb plan` on a real repository: exactly the nodes a change touches, diffs, findings, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pygit2
import pytest
from click.testing import CliRunner

from contract.crypto import SigningKey
from reconciler.cli.main import cli
from reconciler.drivers.statestore import LocalLocation
from reconciler.reconcile import Reconciler
from tests.integration.test_reconcile_pass import fleet_files, service_doc
from tests.support.gitrepo import bare_repo, commit_files

pytestmark = pytest.mark.integration


@pytest.fixture
def repo(tmp_path: Path) -> pygit2.Repository:
    repo = bare_repo(tmp_path / "fleet.git")
    commit_files(repo, "main", fleet_files())
    commit_files(repo, "refs/heads/base", {})  # a branch name for the first commit
    return repo


def run(repo: pygit2.Repository, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["plan", "--repo", repo.path, *args])
    return result.exit_code, result.output


def change(repo: pygit2.Repository, files: dict[str, str]) -> str:
    return commit_files(repo, "main", files)


# name, change to commit on main, expected exit, nodes listed
CASES = [
    ("no change", {}, 0, []),
    (
        "svc-2 parameter: its two nodes",
        {"services/svc-2.yaml": service_doc("svc-2", ["app-2", "app-3"], 8002, "yo")},
        2,
        ["app-2", "app-3"],
    ),
    (
        "svc-1 behind ingress: its nodes only (no endpoints yet)",
        {"services/svc-1.yaml": service_doc("svc-1", ["app-1", "app-2"], 8001, "yo", ingress=True)},
        2,
        ["app-1", "app-2"],
    ),
    (
        "ingress host: the edge node",
        {"services/svc-1.yaml": service_doc("svc-1", ["app-1", "app-2"], 8001, ingress=False)},
        2,
        ["edge-1"],
    ),
    (
        "new service placed on app-3",
        {"services/svc-9.yaml": service_doc("svc-9", ["app-3"], 8009)},
        2,
        ["app-3"],
    ),
]


@pytest.mark.parametrize(("name", "files", "code", "nodes"), CASES, ids=[c[0] for c in CASES])
def test_plan_lists_exactly_the_changed_nodes(
    repo: pygit2.Repository, name: str, files: dict[str, str], code: int, nodes: list[str]
) -> None:
    """The JSON output names exactly the nodes whose plans the head would change, and the reconciler
    then re-plans exactly those; exit 0 or 2."""
    reconciler = Reconciler(LocalLocation(Path(repo.path)), key=SigningKey.generate())
    reconciler.reconcile()
    base = str(repo.references["refs/heads/main"].target)
    head = change(repo, files) if files else base
    exit_code, output = run(repo, "--base", base, "--head", head, "--format", "json")
    assert exit_code == code, output
    assert [n["node"] for n in json.loads(output)["nodes"]] == nodes
    assert list(reconciler.reconcile().changed_nodes) == nodes


def test_text_shows_actions_and_unified_diffs(repo: pygit2.Repository) -> None:
    """Text output lists updates, restarts and the content diff."""
    base = str(repo.references["refs/heads/main"].target)
    head = change(repo, {"services/svc-2.yaml": service_doc("svc-2", ["app-2", "app-3"], 8002, "yo")})
    exit_code, output = run(repo, "--base", base, "--head", head)
    assert exit_code == 2
    assert "update file:/srv/svc-2/index.html: content changed" in output
    assert "restart svc-2.service" in output
    assert "-hi from app-2" in output and "+yo from app-2" in output


def test_markdown_has_a_table_and_a_section_per_node(repo: pygit2.Repository) -> None:
    """Markdown: a summary table row and a <details> block per changed node."""
    base = str(repo.references["refs/heads/main"].target)
    head = change(repo, {"services/svc-2.yaml": service_doc("svc-2", ["app-2", "app-3"], 8002, "yo")})
    exit_code, output = run(repo, "--base", base, "--head", head, "--format", "markdown")
    assert exit_code == 2
    assert "| Node | Changes |" in output and "| `app-2` | 1 update, 1 restart |" in output
    assert output.count("<details>") == 2 and "```diff" in output


def test_invalid_head_prints_findings_and_exits_1(repo: pygit2.Repository) -> None:
    """An invalid head exits 1 and names the file and line of each finding."""
    base = str(repo.references["refs/heads/main"].target)
    head = change(
        repo,
        {
            "services/svc-2.yaml": "apiVersion: plumb/v1\nkind: Service\nmetadata: {name: svc-2}\nspec: {template: nope}\n"
        },
    )
    exit_code, output = run(repo, "--base", base, "--head", head, "--format", "markdown")
    assert exit_code == 1
    assert "`services/svc-2.yaml:" in output and "invalid" in output


def test_unknown_revision_exits_1(repo: pygit2.Repository) -> None:
    """A revision that does not exist is an error, not 'no change'."""
    exit_code, output = run(repo, "--base", "main", "--head", "no-such-branch")
    assert exit_code == 1 and "no-such-branch" in output
