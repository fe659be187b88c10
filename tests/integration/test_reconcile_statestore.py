"""The state store on a real bare repository: compare-and-swap, lock files, packed refs, tree reuse."""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pygit2
import pytest

from contract.errors import PushRejected
from reconciler.drivers.statestore import (
    PACK_THRESHOLD,
    StateStore,
    compare_and_swap,
    current_target,
    state_json,
)
from tests.support.gitrepo import bare_repo, commit_files

pytestmark = pytest.mark.integration

REF = "refs/heads/plumb/state"
WHEN = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def repo(tmp_path: Path) -> pygit2.Repository:
    return bare_repo(tmp_path / "fleet.git")


def write(repo: pygit2.Repository, changes: dict[str, bytes | None]) -> str:
    store = StateStore(repo, REF)
    base = store.read()
    commit = store.commit(base=base, changes=changes, message="test", when=WHEN)
    compare_and_swap(Path(repo.path), REF, old=base.tip, new=commit)
    return commit


class TestCompareAndSwap:
    """The ref moves only from the value that was read."""

    def test_moves_from_the_expected_value(self, repo: pygit2.Repository) -> None:
        """Two writes in a row each move the ref; files accumulate."""
        first = write(repo, {"plans/a.json": b"{}\n"})
        second = write(repo, {"plans/b.json": b"{}\n"})
        assert current_target(Path(repo.path), REF) == second
        assert repo[second].parents[0].id == repo[first].id
        assert set(StateStore(repo, REF).read().files) == {"plans/a.json", "plans/b.json"}

    def test_refuses_a_stale_old_value(self, repo: pygit2.Repository) -> None:
        """A writer that read an older tip is rejected and the ref keeps the winner."""
        store = StateStore(repo, REF)
        stale = store.read()
        winner = write(repo, {"plans/a.json": b"1\n"})
        loser = store.commit(base=stale, changes={"plans/a.json": b"2\n"}, message="late", when=WHEN)
        with pytest.raises(PushRejected):
            compare_and_swap(Path(repo.path), REF, old=stale.tip, new=loser)
        assert current_target(Path(repo.path), REF) == winner

    def test_a_fresh_lock_rejects_and_a_stale_one_is_cleared(self, repo: pygit2.Repository) -> None:
        """A lock being written right now means someone else is updating; an old one was left by a kill."""
        first = write(repo, {"plans/a.json": b"1\n"})
        lock = Path(repo.path) / (REF + ".lock")
        lock.write_text("")
        store = StateStore(repo, REF)
        commit = store.commit(base=store.read(), changes={"plans/a.json": b"2\n"}, message="m", when=WHEN)
        with pytest.raises(PushRejected, match="locked"):
            compare_and_swap(Path(repo.path), REF, old=first, new=commit)
        old = time.time() - 60
        os.utime(lock, (old, old))
        compare_and_swap(Path(repo.path), REF, old=first, new=commit)
        assert current_target(Path(repo.path), REF) == commit and not lock.exists()

    def test_reads_and_moves_a_packed_ref(self, repo: pygit2.Repository) -> None:
        """A ref that lives only in packed-refs is read and moved like a loose one."""
        first = write(repo, {"plans/a.json": b"1\n"})
        subprocess.run(["git", "-C", repo.path, "pack-refs", "--all", "--prune"], check=True)
        assert not (Path(repo.path) / REF).exists()
        assert current_target(Path(repo.path), REF) == first
        second = write(repo, {"plans/a.json": b"2\n"})
        assert (
            subprocess.run(
                ["git", "-C", repo.path, "rev-parse", REF], check=True, capture_output=True, text=True
            ).stdout.strip()
            == second
        )


class TestCommit:
    """Commits carry only the changed files and reuse everything else."""

    def test_unchanged_subtrees_are_reused_and_empty_ones_dropped(self, repo: pygit2.Repository) -> None:
        """Changing plans keeps the status tree object; deleting the last status file drops the tree."""
        first = write(repo, {"plans/a.json": b"1\n", "status/nodes/a.json": b"{}\n"})
        second = write(repo, {"plans/a.json": b"2\n"})
        assert (
            repo[first].peel(pygit2.Commit).tree["status"].id
            == repo[second].peel(pygit2.Commit).tree["status"].id
        )
        third = write(repo, {"status/nodes/a.json": None})
        assert "status" not in repo[third].peel(pygit2.Commit).tree

    def test_state_files_are_readable_json(self, repo: pygit2.Repository) -> None:
        """A state file parses back to its document and keeps one list item per line."""
        document = {"b": [{"x": 1}, {"y": "é\n"}], "a": {"k": [1, 2]}, "c": []}
        text = state_json(document).decode()
        assert json.loads(text) == document
        assert '    {"x": 1},' in text.splitlines()

    def test_desired_branch_is_untouched(self, repo: pygit2.Repository) -> None:
        """Writing the state branch never moves another branch."""
        main = commit_files(repo, "main", {"a.yaml": "a: 1\n"})
        write(repo, {"plans/a.json": b"1\n"})
        assert str(repo.references["refs/heads/main"].target) == main


# name, number of files (over PACK_THRESHOLD they go into one pack)
SIZES = [("loose objects", 5), ("one pack", 300)]


@pytest.mark.parametrize(("name", "count"), SIZES, ids=[s[0] for s in SIZES])
def test_objects_match_git_and_pass_fsck(tmp_path: Path, name: str, count: int) -> None:
    """Trees, blobs and the commit equal what libgit2 builds for the same files, and git fsck agrees."""
    files = {f"plans/n{i}.json": f'{{"n": {i}}}\n'.encode() for i in range(count)}
    files |= {
        "x.json": b"1\n",
        "x-y.json": b"2\n",
        "x/a.json": b"3\n",
        "x0.json": b"4\n",
        "status/source.json": b"{}\n",
    }
    ours = bare_repo(tmp_path / "ours.git")
    commit = write(ours, files)
    reference = bare_repo(tmp_path / "reference.git")
    commit_files(reference, "main", files)
    tree = ours[commit].peel(pygit2.Commit).tree
    assert tree.id == reference.references["refs/heads/main"].peel(pygit2.Commit).tree.id
    packs = list((Path(ours.path) / "objects" / "pack").glob("*.pack"))
    assert len(packs) == (1 if count > PACK_THRESHOLD else 0)
    subprocess.run(
        ["git", "-C", ours.path, "fsck", "--strict", "--no-dangling"], check=True, capture_output=True
    )
    assert ours[commit].message == "test" and ours[commit].author.name == "plumb reconciler"
    second = write(ours, {"plans/n0.json": b"changed\n"})
    assert ours[second].peel(pygit2.Commit).tree["plans/n0.json"].data == b"changed\n"
