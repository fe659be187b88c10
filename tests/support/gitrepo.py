"""Tiny helpers to make bare Git repositories and commit files into them with pygit2."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pygit2

SIGNATURE = pygit2.Signature("Plumb Tests", "tests@plumb.invalid", 1_700_000_000, 0)


def bare_repo(path: Path) -> pygit2.Repository:
    """Create (or open) a bare repository at `path`."""
    if (path / "HEAD").exists():
        return pygit2.Repository(str(path))
    return pygit2.init_repository(str(path), bare=True)


Entry = bytes | tuple[int, str] | None  # content, (file mode, object id) as it is, or removed


def _tree(repo: pygit2.Repository, files: Mapping[str, Entry], base: pygit2.Tree | None) -> pygit2.Oid:
    """Build a tree from `base` with `files` written (bytes), entered as given ((mode, id): a gitlink,
    an object written elsewhere) or removed (None); paths may nest."""
    builder = repo.TreeBuilder(base) if base is not None else repo.TreeBuilder()
    nested: dict[str, dict[str, Entry]] = {}
    for name, data in files.items():
        head, _, rest = name.partition("/")
        if rest:
            nested.setdefault(head, {})[rest] = data
        elif data is None:
            if builder.get(head) is not None:
                builder.remove(head)
        elif isinstance(data, tuple):
            builder.insert(head, pygit2.Oid(hex=data[1]), data[0])
        else:
            builder.insert(head, repo.create_blob(data), pygit2.enums.FileMode.BLOB)
    for head, children in nested.items():
        sub = base[head] if base is not None and head in base else None
        sub_tree = repo[sub.id] if sub is not None else None
        oid = _tree(repo, children, sub_tree if isinstance(sub_tree, pygit2.Tree) else None)
        builder.insert(head, oid, pygit2.enums.FileMode.TREE)
    return builder.write()


def commit_files(
    repo: pygit2.Repository,
    branch: str,
    files: Mapping[str, bytes | str | tuple[int, str] | None],
    *,
    message: str = "test commit",
    keep: bool = True,
) -> str:
    """Commit `files` (path -> content, None removes) on `branch`; return the new commit id (hex).

    With `keep` the new tree starts from the branch's current tree, otherwise from empty.
    """
    ref_name = branch if branch.startswith("refs/") else f"refs/heads/{branch}"
    encoded = {k: (v.encode() if isinstance(v, str) else v) for k, v in files.items()}
    ref = repo.references.get(ref_name)
    parents = [ref.target] if ref is not None else []
    base = repo[ref.target].peel(pygit2.Tree) if (ref is not None and keep) else None
    tree = _tree(repo, encoded, base)
    oid = repo.create_commit(None, SIGNATURE, SIGNATURE, message, tree, parents)
    repo.references.create(ref_name, oid, force=True)
    return str(oid)


def read_file(repo: pygit2.Repository, branch: str, path: str) -> bytes:
    """Return the content of `path` at the tip of `branch`."""
    ref_name = branch if branch.startswith("refs/") else f"refs/heads/{branch}"
    tree = repo.references[ref_name].peel(pygit2.Commit).tree
    blob = tree[path]
    return bytes(repo[blob.id].read_raw())
