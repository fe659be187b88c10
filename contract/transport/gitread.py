"""Read one file of a fetched Git tree as hostile input: a plain blob, its size checked from the
object header before a byte of it is inflated (a 2 MB pack can hold gigabytes of spaces)."""

from __future__ import annotations

import pygit2

from contract.errors import ContractError

_FILE_MODES = {pygit2.GIT_FILEMODE_BLOB, pygit2.GIT_FILEMODE_BLOB_EXECUTABLE}
_MODE_NAMES = {
    pygit2.GIT_FILEMODE_TREE: "a directory",
    pygit2.GIT_FILEMODE_LINK: "a symbolic link",
    pygit2.GIT_FILEMODE_COMMIT: "a submodule (gitlink)",
}


def read_file(
    repo: pygit2.Repository, tree: pygit2.Tree, path: str, *, what: str, limit: int
) -> bytes | None:
    """The content of `path` in `tree`, None if there is no such entry; ContractError if it is not a
    regular file of at most `limit` bytes."""
    try:
        entry = tree[path]
    except KeyError:
        return None
    if entry.filemode not in _FILE_MODES:
        raise ContractError(f"{what} is {_MODE_NAMES.get(entry.filemode, 'not a regular file')}, not a file")
    return read_blob(repo, entry.id, what=what, limit=limit)


def read_blob(repo: pygit2.Repository, oid: pygit2.Oid | str, *, what: str, limit: int) -> bytes:
    """A blob's bytes, refused from its header alone when it is larger than `limit`."""
    key = oid if isinstance(oid, pygit2.Oid) else pygit2.Oid(hex=oid)
    try:
        kind, size = repo.odb.read_header(key)
    except (KeyError, ValueError, pygit2.GitError) as exc:
        raise ContractError(f"{what} cannot be read from the repository: {exc}") from exc
    if kind != pygit2.GIT_OBJECT_BLOB:
        raise ContractError(f"{what} is not a file (a Git {kind.name.lower()} object)")
    if size > limit:
        raise ContractError(f"{what} is {size} bytes, more than the limit of {limit}")
    return bytes(repo.odb.read(key)[1])
