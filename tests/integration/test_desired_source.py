"""Reading desired commits with pygit2: what a reader's cache keeps, and that it is the caller's alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.drivers.desired_source import SourceCache, read_commit_files
from tests.support.gitrepo import bare_repo, commit_files

pytestmark = pytest.mark.integration

FILES = {
    "nodes/a.yaml": "kind: Node\n",
    "services/web.yaml": "kind: Service\n",
    "services/api.yaml": "kind: Service\n",
    "README.md": "not a Plumb file\n",
    ".github/ci.yaml": "in a dot-directory\n",
}


class TestSourceCache:
    """A SourceCache is owned by its caller: it speeds up the next read and is shared with no one."""

    def test_a_read_fills_only_the_cache_it_is_given(self, tmp_path: Path) -> None:
        """Two readers in one process: reading with one leaves the other empty."""
        repo = bare_repo(tmp_path / "fleet.git")
        commit = commit_files(repo, "main", FILES)
        mine, theirs = SourceCache(), SourceCache()
        _, files = read_commit_files(repo, commit, cache=mine)
        assert sorted(f.path for f in files) == ["nodes/a.yaml", "services/api.yaml", "services/web.yaml"]
        assert mine.trees and mine.last_listing
        assert not theirs.trees and not theirs.last_listing

    def test_the_next_commit_reuses_unchanged_files(self, tmp_path: Path) -> None:
        """A file whose blob did not change is the very object read before; a changed one is new."""
        repo = bare_repo(tmp_path / "fleet.git")
        first = commit_files(repo, "main", FILES)
        second = commit_files(repo, "main", {"services/web.yaml": "kind: Service\n# changed\n"})
        cache = SourceCache()
        before = {f.path: f for f in read_commit_files(repo, first, cache=cache)[1]}
        after = {f.path: f for f in read_commit_files(repo, second, cache=cache)[1]}
        assert after["services/api.yaml"] is before["services/api.yaml"]
        assert after["nodes/a.yaml"] is before["nodes/a.yaml"]
        assert after["services/web.yaml"].data == b"kind: Service\n# changed\n"

    def test_a_fresh_cache_reads_the_same_files(self, tmp_path: Path) -> None:
        """Caching changes how much is read, never what: a warm and a cold reader agree."""
        repo = bare_repo(tmp_path / "fleet.git")
        first = commit_files(repo, "main", FILES)
        second = commit_files(repo, "main", {"services/api.yaml": None, "nodes/b.yaml": "kind: Node\n"})
        warm = SourceCache()
        read_commit_files(repo, first, cache=warm)
        assert read_commit_files(repo, second, cache=warm) == read_commit_files(
            repo, second, cache=SourceCache()
        )

    def test_the_cache_keeps_at_most_size_trees(self, tmp_path: Path) -> None:
        """The least recently read trees are forgotten first."""
        repo = bare_repo(tmp_path / "fleet.git")
        cache = SourceCache(size=2)
        for index in range(3):
            read_commit_files(repo, commit_files(repo, "main", {f"n{index}.yaml": "a: 1\n"}), cache=cache)
        assert len(cache.trees) == 2
