"""Read a desired-state repository's files from a working directory or from any Git commit.

A commit is read straight from the object database through pygit2 (no checkout), so `plumb
validate --rev` and the reconciler see exactly what was committed, with Git's blob ids for caching.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pygit2

from contract.errors import UsageError
from reconciler.core.compile.desired import SourceFile, is_plumb_file

MAX_FILES = 100_000


def open_repository(path: Path) -> pygit2.Repository:
    """Open the Git repository at or above `path` (bare or not)."""
    try:
        found = pygit2.discover_repository(str(path))
    except pygit2.GitError as exc:
        raise UsageError(f"{path}: cannot open a Git repository: {exc}") from exc
    if found is None:
        raise UsageError(f"{path}: not inside a Git repository (needed for --rev)")
    return pygit2.Repository(found)


def resolve_commit(repo: pygit2.Repository, rev: str) -> pygit2.Commit:
    try:
        obj = repo.revparse_single(rev)
        commit = obj.peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError) as exc:
        raise UsageError(f"unknown revision {rev!r} in {repo.path}") from exc
    return commit


class _TreeKey(NamedTuple):
    """A tree of one repository read under one prefix (paths of its files start with the prefix)."""

    repo: str
    tree: str
    prefix: str


class _DirectoryKey(NamedTuple):
    """A directory of one repository, whatever tree it held last."""

    repo: str
    prefix: str


@dataclass
class SourceCache:
    """What reading earlier commits learned, so reading the next one does not start over.

    Trees and blobs are content-addressed, so what a tree holds never changes: `trees` maps a tree
    (`_TreeKey`) to the Plumb files under it, most recently used last, at most `size` of them; and
    `last_listing` maps a directory (`_DirectoryKey`) to the files directly in it when it was last
    read, by path, so a changed tree re-reads only the blobs that are new. The caller owns one (a
    Reconciler, a command), so two readers in one process never share what they learned.
    """

    trees: OrderedDict[_TreeKey, tuple[SourceFile, ...]] = field(default_factory=OrderedDict)
    last_listing: dict[_DirectoryKey, dict[str, SourceFile]] = field(default_factory=dict)
    size: int = 4096

    def get(self, key: _TreeKey) -> tuple[SourceFile, ...] | None:
        found = self.trees.get(key)
        if found is not None:
            self.trees.move_to_end(key)
        return found

    def put(self, key: _TreeKey, files: tuple[SourceFile, ...]) -> tuple[SourceFile, ...]:
        self.trees[key] = files
        depth = key.prefix.count("/")
        directory = _DirectoryKey(key.repo, key.prefix)
        self.last_listing[directory] = {f.path: f for f in files if f.path.count("/") == depth}
        if len(self.trees) > self.size:
            self.trees.popitem(last=False)
        return files


def read_commit_files(
    repo: pygit2.Repository, rev: str, *, cache: SourceCache, subdir: str = ""
) -> tuple[str, list[SourceFile]]:
    """The commit id and every Plumb file of `rev` (under `subdir`, paths relative to it)."""
    commit = resolve_commit(repo, rev)
    tree = commit.tree
    if subdir:
        try:
            entry = tree[subdir.strip("/")]
        except KeyError as exc:
            raise UsageError(f"{subdir!r} does not exist in {rev}") from exc
        tree = repo[entry.id].peel(pygit2.Tree)
    files = list(_files_of(repo, tree, "", cache))
    if len(files) > MAX_FILES:
        raise UsageError(f"more than {MAX_FILES} files; is this the right repository?")
    return str(commit.id), files


def _files_of(
    repo: pygit2.Repository, tree: pygit2.Tree, prefix: str, cache: SourceCache
) -> tuple[SourceFile, ...]:
    key = _TreeKey(repo.path, str(tree.id), prefix)
    found = cache.get(key)
    if found is not None:
        return found
    out: list[SourceFile] = []
    last = cache.last_listing.get(_DirectoryKey(repo.path, prefix), {})
    for entry in tree:
        path = f"{prefix}{entry.name}"
        if entry.type_str == "tree":
            if not (entry.name or "").startswith("."):
                out.extend(_files_of(repo, repo[entry.id].peel(pygit2.Tree), path + "/", cache))
        elif entry.type_str == "blob" and is_plumb_file(path) and entry.filemode != pygit2.GIT_FILEMODE_LINK:
            blob_id = str(entry.id)
            known = last.get(path)
            if known is None or known.blob_id != blob_id:
                known = SourceFile(path, repo[entry.id].peel(pygit2.Blob).data, blob_id)
            out.append(known)
        if len(out) > MAX_FILES:
            raise UsageError(f"more than {MAX_FILES} files; is this the right repository?")
    return cache.put(key, tuple(out))


def read_worktree_files(root: Path) -> list[SourceFile]:
    """Every Plumb file under `root` as it is on disk (symbolic links are not followed)."""
    if not root.is_dir():
        raise UsageError(f"{root}: not a directory")
    files: list[SourceFile] = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(names):
            full = Path(directory, name)
            path = full.relative_to(root).as_posix()
            if is_plumb_file(path) and not full.is_symlink():
                files.append(SourceFile(path, full.read_bytes()))
                if len(files) > MAX_FILES:
                    raise UsageError(f"{root}: more than {MAX_FILES} files; is this the right directory?")
    return files
