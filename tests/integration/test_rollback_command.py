"""`plumb rollback` as a user runs it: the real console script against real bare repositories and working copies."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pygit2
import pytest

from contract.errors import UsageError
from reconciler.cli.commands import rollback as rollback_module
from reconciler.cli.commands.rollback import roll_back, set_version
from tests.support.gitrepo import bare_repo, commit_files, read_file

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHOP = ROOT / "examples" / "shop"
PLUMB = str(Path(sys.executable).parent / "plumb")
API = "services/api.yaml"
RELEASE_130 = (SHOP / "releases" / "api-1.4.0.yaml").read_text().replace("1.4.0", "1.3.0")


@pytest.fixture(autouse=True)
def no_user_git_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Git config comes only from the repository under test, so the author is predictable."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    levels = (pygit2.enums.ConfigLevel.GLOBAL, pygit2.enums.ConfigLevel.XDG, pygit2.enums.ConfigLevel.SYSTEM)
    saved = {level: pygit2.settings.search_path[level] for level in levels}
    for level in levels:
        pygit2.settings.search_path[level] = str(home)
    yield
    for level, value in saved.items():
        pygit2.settings.search_path[level] = value


def plumb(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PLUMB, *map(str, args)], capture_output=True, text=True, timeout=120)


def shop_repo(path: Path, *, bare: bool = True, changes: dict[str, str] | None = None) -> pygit2.Repository:
    """The shop example committed on main, with `changes` (path -> text) on top."""
    files: dict[str, bytes | str | None] = {
        p.relative_to(SHOP).as_posix(): p.read_bytes() for p in SHOP.rglob("*") if p.is_file()
    }
    files.update(changes or {})
    repo = bare_repo(path) if bare else pygit2.init_repository(str(path), initial_head="main")
    commit_files(repo, "main", files, message="the shop", keep=False)
    if not bare:
        repo.checkout("refs/heads/main", strategy=pygit2.enums.CheckoutStrategy.FORCE)
    return repo


def tip(repo: pygit2.Repository, branch: str = "main") -> str:
    return str(repo.references[f"refs/heads/{branch}"].target)


def changed_paths(repo: pygit2.Repository, commit: str) -> list[str]:
    new = repo[commit].peel(pygit2.Commit)
    diff = new.parents[0].tree.diff_to_tree(new.tree)
    return [delta.new_file.path for delta in diff.deltas]


def changed_lines(before: bytes, after: bytes) -> list[tuple[str, str]]:
    old, new = before.decode().splitlines(keepends=True), after.decode().splitlines(keepends=True)
    assert len(old) == len(new)
    return [(a, b) for a, b in zip(old, new, strict=True) if a != b]


def test_bare_repository_gets_one_commit_changing_one_line(tmp_path: Path) -> None:
    """api resolves ^1.4 to 1.5.0: the rollback pins 1.4.0, one line, and the result validates."""
    repo = shop_repo(tmp_path / "fleet.git")
    before, old_tip = read_file(repo, "main", API), tip(repo)
    result = plumb("rollback", "api", "--repo", tmp_path / "fleet.git", "-m", "1.5.0 leaks connections")
    assert result.returncode == 0, result.stderr
    new_tip = tip(repo)
    assert result.stdout.splitlines() == [
        f'{API}: spec.version "^1.4" -> "1.4.0"',
        "api: 1.5.0 -> 1.4.0",
        f"committed {new_tip[:12]} on main",
    ]
    commit = repo[new_tip].peel(pygit2.Commit)
    assert [str(p) for p in commit.parent_ids] == [old_tip]
    assert changed_paths(repo, new_tip) == [API]
    assert changed_lines(before, read_file(repo, "main", API)) == [
        ('  version: "^1.4"\n', '  version: "1.4.0"\n')
    ]
    assert commit.message.startswith("Roll back api from 1.5.0 to 1.4.0\n\n1.5.0 leaks connections\n")
    assert "Plumb-Rollback: api 1.5.0 -> 1.4.0" in commit.message
    assert (commit.author.name, commit.author.email) == ("Plumb", "plumb@localhost")
    validated = plumb("validate", tmp_path / "fleet.git", "--rev", "main")
    assert validated.returncode == 0, validated.stdout + validated.stderr


def test_twice_goes_one_release_further_back(tmp_path: Path) -> None:
    """A second rollback pins the Release below the pinned one; a third finds none and says so."""
    repo = shop_repo(tmp_path / "fleet.git", changes={"releases/api-1.3.0.yaml": RELEASE_130})
    assert plumb("rollback", "api", "--repo", tmp_path / "fleet.git").returncode == 0
    second = plumb("rollback", "api", "--repo", tmp_path / "fleet.git")
    assert second.stdout.splitlines()[:2] == [
        f'{API}: spec.version "1.4.0" -> "1.3.0"',
        "api: 1.4.0 -> 1.3.0",
    ]
    last = tip(repo)
    third = plumb("rollback", "api", "--repo", tmp_path / "fleet.git")
    assert third.returncode == 1
    assert third.stderr == "plumb: api runs 1.3.0, its earliest Release; nothing earlier to roll back to\n"
    assert tip(repo) == last


def test_working_copy_is_left_as_git_commit_would(tmp_path: Path) -> None:
    """In a clone with the branch checked out, the file and index follow the commit: status stays clean."""
    repo = shop_repo(tmp_path / "work", bare=False)
    repo.config["user.name"] = "Ops Person"
    repo.config["user.email"] = "ops@example.com"
    result = plumb("rollback", "api", "--repo", tmp_path / "work" / "services", "--to", "1.4.0")
    assert result.returncode == 0, result.stderr
    assert b'version: "1.4.0"' in (tmp_path / "work" / API).read_bytes()
    assert repo.status() == {}
    author = repo[tip(repo)].peel(pygit2.Commit).author
    assert (author.name, author.email) == ("Ops Person", "ops@example.com")
    assert plumb("validate", tmp_path / "work", "--rev", "main").returncode == 0


def test_working_copy_with_local_changes_is_refused(tmp_path: Path) -> None:
    """Uncommitted edits to the Service's file are never overwritten."""
    repo = shop_repo(tmp_path / "work", bare=False)
    (tmp_path / "work" / API).write_text("# mine\n" + (tmp_path / "work" / API).read_text())
    before = tip(repo)
    result = plumb("rollback", "api", "--repo", tmp_path / "work")
    assert result.returncode == 1
    assert result.stderr.startswith(f"plumb: {API} has uncommitted changes in ")
    assert tip(repo) == before


def test_other_branch_of_a_working_copy_leaves_the_checkout_alone(tmp_path: Path) -> None:
    """Writing a branch that is not checked out changes only that branch."""
    repo = shop_repo(tmp_path / "work", bare=False)
    repo.branches.local.create("production", repo[tip(repo)].peel(pygit2.Commit))
    result = plumb("rollback", "api", "--repo", tmp_path / "work", "--branch", "production")
    assert result.returncode == 0, result.stderr
    assert tip(repo, "production") != tip(repo, "main")
    assert repo.status() == {}
    assert b'"^1.4"' in (tmp_path / "work" / API).read_bytes()


def test_absent_version_is_added(tmp_path: Path) -> None:
    """A Service without `version` runs its highest Release; the rollback adds the key to spec."""
    api = (SHOP / API).read_text().replace('  version: "^1.4"\n', "")
    repo = shop_repo(tmp_path / "fleet.git", changes={API: api})
    result = plumb("rollback", "api", "--repo", tmp_path / "fleet.git")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f'{API}: spec.version (none) -> "1.4.0"'
    after = read_file(repo, "main", API).decode()
    assert after == api.replace("spec:\n  template:", 'spec:\n  version: "1.4.0"\n  template:')
    assert plumb("validate", tmp_path / "fleet.git", "--rev", "main").returncode == 0


REFUSALS = [
    ("unknown service", ["nope"], "plumb: no Service 'nope' on this branch (services: api, redis, worker)"),
    (
        "service without a Release",
        ["redis"],
        "plumb: service 'redis' resolves to no Release; there is nothing to roll back",
    ),
    (
        "--to without a Release",
        ["api", "--to", "9.9.9"],
        "plumb: api has no Release 9.9.9 (Releases: 1.4.0, 1.5.0)",
    ),
    (
        "--to not a version",
        ["api", "--to", "latest"],
        "plumb: --to 'latest': 'latest' is not a semantic version (MAJOR.MINOR.PATCH)",
    ),
    ("already at that version", ["api", "--to", "1.5.0"], "plumb: api already resolves to 1.5.0"),
    ("unknown branch", ["api", "--branch", "nope"], "plumb: no branch 'nope' in "),
]


@pytest.mark.parametrize(("name", "args", "line"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals_are_one_line_and_write_nothing(
    tmp_path: Path, name: str, args: list[str], line: str
) -> None:
    """Each refusal: exit 1, one line on stderr, the branch where it was."""
    repo = shop_repo(tmp_path / "fleet.git")
    before = tip(repo)
    result = plumb("rollback", *args, "--repo", tmp_path / "fleet.git")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(line) and result.stderr.count("\n") == 1, result.stderr
    assert tip(repo) == before


def test_not_a_repository(tmp_path: Path) -> None:
    result = plumb("rollback", "api", "--repo", tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("plumb: ") and result.stderr.count("\n") == 1


def test_branch_moved_meanwhile_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compare-and-swap: a push landing between read and write wins; the rollback asks to be run again."""
    repo = shop_repo(tmp_path / "fleet.git")
    real_commit = rollback_module._commit

    def commit_while_someone_pushes(*args: Any) -> str:
        commit_files(repo, "main", {"README.md": "someone else\n"}, message="concurrent push")
        written: str = real_commit(*args)
        return written

    monkeypatch.setattr(rollback_module, "_commit", commit_while_someone_pushes)
    pushed = None
    with pytest.raises(UsageError, match="main moved while the rollback was written"):
        pushed = roll_back(tmp_path / "fleet.git", service="api", branch="main", to=None, message=None)
    assert pushed is None
    assert repo[tip(repo)].peel(pygit2.Commit).message == "concurrent push"


def test_help_teaches() -> None:
    result = plumb("rollback", "--help")
    assert result.returncode == 0
    for part in (
        "SERVICE",
        "--to VERSION",
        "--message",
        "--repo",
        "--branch",
        "Examples:",
        "previous Release",
    ):
        assert part in result.stdout
    assert "rollback" in plumb("--help").stdout


SERVICE = "apiVersion: plumb/v1\nkind: Service\nmetadata: {name: api}\n"


def test_set_version_refuses_an_alias() -> None:
    """An aliased value is shared with its anchor: changing it there could change more than the version."""
    text = "apiVersion: plumb/v1\nkind: Service\nmetadata: {name: api, annotations: {v: &v '1.5.0'}}\nspec:\n  version: *v\n"
    with pytest.raises(UsageError, match="edit it by hand"):
        set_version(text, service="api", version="1.4.0")


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "double quoted",
            SERVICE + 'spec:\n  template: t\n  version: "^1.4"  # range\n',
            SERVICE + 'spec:\n  template: t\n  version: "1.4.0"  # range\n',
        ),
        (
            "single quoted",
            SERVICE + "spec:\n  version: '^1.4'\n  template: t\n",
            SERVICE + "spec:\n  version: '1.4.0'\n  template: t\n",
        ),
        (
            "plain",
            SERVICE + "spec:\n    version: 1.5.0\n    template: t\n",
            SERVICE + "spec:\n    version: 1.4.0\n    template: t\n",
        ),
        (
            "flow mapping",
            SERVICE + 'spec: {template: t, version: "^1"}\n',
            SERVICE + 'spec: {template: t, version: "1.4.0"}\n',
        ),
        (
            "absent, block",
            SERVICE + "spec:\n  template: t\n",
            SERVICE + 'spec:\n  version: "1.4.0"\n  template: t\n',
        ),
        (
            "absent, flow",
            SERVICE + "spec: {template: t}\n",
            SERVICE + 'spec: {version: "1.4.0", template: t}\n',
        ),
        (
            "the named document of several",
            SERVICE.replace("api", "web")
            + "spec: {version: '1.5.0'}\n---\n"
            + SERVICE
            + "spec: {version: '1.5.0'}\n",
            SERVICE.replace("api", "web")
            + "spec: {version: '1.5.0'}\n---\n"
            + SERVICE
            + "spec: {version: '1.4.0'}\n",
        ),
        (
            "CRLF line endings kept",
            SERVICE.replace("\n", "\r\n") + "spec:\r\n  template: t\r\n",
            SERVICE.replace("\n", "\r\n") + 'spec:\r\n  version: "1.4.0"\r\n  template: t\r\n',
        ),
        (
            "non-ASCII before it",
            "# café ☕\n" + SERVICE + 'spec:\n  version: "^1.4"\n',
            "# café ☕\n" + SERVICE + 'spec:\n  version: "1.4.0"\n',
        ),
    ],
)
def test_set_version_edits_only_the_value(name: str, text: str, expected: str) -> None:
    """Only the value's characters change (quoting kept); an absent key goes first in spec."""
    assert set_version(text, service="api", version="1.4.0")[0] == expected
