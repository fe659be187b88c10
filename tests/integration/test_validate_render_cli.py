"""`plumb validate` and `plumb render` as a user runs them: real processes, real Git repositories."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pygit2
import pytest

from tests.support.gitrepo import bare_repo, commit_files

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHOP = ROOT / "examples" / "shop"
PLUMB = [str(Path(sys.executable).parent / "plumb")]


def plumb(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PLUMB, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def _files(root: Path) -> dict[str, bytes | str | None]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("example", ["minimal", "shop"])
def test_examples_validate_clean(example: str) -> None:
    """Both examples validate with no finding and exit 0."""
    result = plumb("validate", str(ROOT / "examples" / example))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""
    assert "valid: 0 error(s), 0 warning(s)" in result.stderr


def test_invalid_worktree_names_file_line_and_exits_1(tmp_path: Path) -> None:
    """A typo in a working directory is reported as path:line:col: field: message [code]."""
    shutil.copytree(SHOP, tmp_path / "shop")
    api = tmp_path / "shop" / "services" / "api.yaml"
    api.write_text(api.read_text().replace("port: 8080", "port: 70000"))
    result = plumb("validate", str(tmp_path / "shop"))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    assert lines[0].startswith(f"{tmp_path}/shop/services/api.yaml:")
    assert "spec.params.port: 70000 is greater than the maximum of 65535" in lines[0]
    assert lines[0].endswith("[params]")


def test_formats_json_and_github(tmp_path: Path) -> None:
    """--format json gives machine-readable findings; --format github gives ::error annotations."""
    shutil.copytree(SHOP, tmp_path / "shop")
    (tmp_path / "shop" / "services" / "broken.yaml").write_text(
        "apiVersion: plumb/v1\nkind: Service\nmetadata: {name: broken}\nspec:\n  template: nope\n"
    )
    as_json = plumb("validate", str(tmp_path / "shop"), "--format", "json")
    assert as_json.returncode == 1
    findings = json.loads(as_json.stdout)
    assert [(f["path"], f["line"], f["code"]) for f in findings] == [
        ("services/broken.yaml", 5, "unknown-template")
    ]
    github = plumb("validate", str(tmp_path / "shop"), "--format", "github")
    assert github.stdout.startswith(f"::error file={tmp_path}/shop/services/broken.yaml,line=5,col=")


def test_rev_reads_a_commit_without_checkout(tmp_path: Path) -> None:
    """--rev validates and renders what was committed, whatever the working directory holds."""
    repo = pygit2.init_repository(str(tmp_path / "work"))
    good = commit_files(repo, "main", _files(SHOP), message="good")
    broken = dict(_files(SHOP))
    broken["services/api.yaml"] = b"kind: Service\nspec: [unclosed\n"
    bad = commit_files(repo, "main", broken, message="bad")
    work = tmp_path / "work"
    assert plumb("validate", str(work), "--rev", good).returncode == 0
    failed = plumb("validate", str(work), "--rev", bad)
    assert failed.returncode == 1
    assert failed.stdout.startswith("services/api.yaml:3:1:") and "[yaml]" in failed.stdout
    assert plumb("validate", str(work), "--rev", "main").returncode == 1
    rendered = plumb("render", str(work), "--rev", f"{good}", "--node", "edge-1", "--format", "json")
    assert rendered.returncode == 0, rendered.stderr
    assert [r["id"] for r in json.loads(rendered.stdout)["resources"]] == ["nginx:api"]


def test_rev_in_a_bare_repository_and_unknown_rev(tmp_path: Path) -> None:
    """A bare repository works with --rev; an unknown revision is one clear line and exit 1."""
    repo = bare_repo(tmp_path / "fleet.git")
    commit_files(repo, "main", _files(ROOT / "examples" / "minimal"))
    assert plumb("validate", str(tmp_path / "fleet.git"), "--rev", "main").returncode == 0
    missing = plumb("validate", str(tmp_path / "fleet.git"), "--rev", "no-such-branch")
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("plumb: unknown revision 'no-such-branch'")
    assert "Traceback" not in missing.stderr


def test_render_orders_dependencies_first_and_names_sources() -> None:
    """render prints a node's resources in apply order, each with its service and source line."""
    result = plumb("render", str(SHOP), "--node", "app-1", "--format", "json")
    assert result.returncode == 0, result.stderr
    resources = json.loads(result.stdout)["resources"]
    ids = [r["id"] for r in resources]
    assert ids.index("service:api") > ids.index("unit:api.service") > ids.index("file:/etc/api/config.yaml")
    assert all(r["source"].split(":")[0].endswith(".yaml") for r in resources)
    seen: set[str] = set()
    for resource in resources:
        assert set(resource["after"]) <= seen, resource["id"]
        seen.add(resource["id"])


@pytest.mark.parametrize("node", ["app-1", "edge-1"])
def test_render_yaml_is_the_json_as_people_read_it(node: str) -> None:
    """The default output: YAML with files as `|` blocks, the same resources as --format json."""
    import yaml

    as_yaml = plumb("render", str(SHOP), "--node", node)
    assert as_yaml.returncode == 0, as_yaml.stderr
    as_json = plumb("render", str(SHOP), "--node", node, "--format", "json")
    assert yaml.safe_load(as_yaml.stdout) == json.loads(as_json.stdout)
    assert "content: |" in as_yaml.stdout


def test_render_unknown_node_is_an_error() -> None:
    result = plumb("render", str(SHOP), "--node", "nope")
    assert result.returncode == 1
    assert "unknown node 'nope'" in result.stderr


def test_help_teaches() -> None:
    """`--help` explains what each command does and shows examples."""
    result = plumb("validate", "--help")
    assert result.returncode == 0
    assert "Exit status: 0 valid, 1 invalid." in result.stdout
    assert "plumb validate examples/shop" in result.stdout
