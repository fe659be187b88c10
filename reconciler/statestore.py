"""The state branch in Git without a checkout: read its files, write one commit, move its ref by CAS.

A commit is built from the previous tree with only the changed files replaced, so unchanged
subtrees are reused as they are. Objects are written before the ref moves, so the branch never
points at a partial commit. The ref moves only from the commit that was read (compare-and-swap):
locally under Git's own `<ref>.lock` protocol, remotely by a non-forced push; a lost race raises
PushRejected and the caller re-reads and retries. A `Location` says where the repository is: a
local bare repository worked on in place, or a remote mirrored into a local bare repository.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import pygit2

from agent import gitremote
from agent.contract import MAX_PLAN_BYTES, parse_json_document
from agent.errors import ContractError
from agent.errors import PlumbError as AgentError
from agent.errors import TemporaryError as AgentTemporaryError
from reconciler.errors import PermanentError, PushRejected, TemporaryError, UsageError

AUTHOR_NAME = "plumb reconciler"
AUTHOR_EMAIL = "plumb@localhost"
STALE_LOCK_SECONDS = 2.0


@dataclass(frozen=True)
class StateSnapshot:
    """The state branch as read: its tip (None before the first reconcile) and file path -> blob id."""

    ref: str
    tip: str | None
    tree: str | None
    files: Mapping[str, str]


class StateStore:
    """Reads and writes the state branch of one repository; parsed documents are cached by blob id."""

    def __init__(self, repo: pygit2.Repository, ref: str) -> None:
        self.repo = repo
        self.ref = ref
        self._json: dict[str, dict[str, Any]] = {}

    def read(self) -> StateSnapshot:
        """The state branch now (after the caller refreshed the repository)."""
        tip = current_target(Path(self.repo.path), self.ref)
        if tip is None:
            return StateSnapshot(ref=self.ref, tip=None, tree=None, files={})
        commit = self.repo[tip].peel(pygit2.Commit)
        files: dict[str, str] = {}
        _walk(commit.tree, "", files)
        live = set(files.values())
        self._json = {blob: doc for blob, doc in self._json.items() if blob in live}
        return StateSnapshot(ref=self.ref, tip=tip, tree=str(commit.tree_id), files=files)

    def load_json(self, blob_id: str, *, what: str) -> dict[str, Any]:
        """A JSON document of the state branch; the same blob is parsed once."""
        cached = self._json.get(blob_id)
        if cached is None:
            data = self.repo[blob_id].peel(pygit2.Blob).data
            cached = parse_json_document(data, what=what, limit=MAX_PLAN_BYTES)
            self._json[blob_id] = cached
        return cached

    def remember(self, blob_id: str, document: dict[str, Any]) -> None:
        """Cache a document this process is about to write, so it is not parsed back."""
        self._json[blob_id] = document

    def try_load(self, snapshot: StateSnapshot, path: str) -> dict[str, Any] | None:
        blob_id = snapshot.files.get(path)
        if blob_id is None:
            return None
        try:
            return self.load_json(blob_id, what=path)
        except ContractError:
            return None

    def commit(
        self, *, base: StateSnapshot, changes: Mapping[str, bytes | None], message: str, when: datetime
    ) -> str:
        """Write a commit on top of `base` with `changes` (None deletes a file); the ref is not moved."""
        tree = _build_tree(self.repo, base.tree, _nest(changes))
        signature = pygit2.Signature(AUTHOR_NAME, AUTHOR_EMAIL, int(when.timestamp()), 0)
        parents = [pygit2.Oid(hex=base.tip)] if base.tip else []
        oid = self.repo.create_commit(None, signature, signature, message, tree, parents)
        return str(oid)


_COMPACT = json.JSONEncoder(sort_keys=True, separators=(", ", ": "), ensure_ascii=False, allow_nan=False)


def state_json(document: Mapping[str, Any], *, encoded: Mapping[str, Sequence[str]] | None = None) -> bytes:
    """A document as a file of the state branch: one member per line, one list item per line.

    Diffs stay readable (a changed resource is one changed line) while the C encoder does the work;
    indenting every level would need Python's slow pure encoder for thousands of plans. `encoded`
    gives list members whose items are already JSON text (a plan's canonical resource entries).
    """
    encoded = encoded or {}
    lines = ["{"]
    keys = sorted(document)
    for index, key in enumerate(keys):
        comma = "," if index < len(keys) - 1 else ""
        value = document[key]
        name = _COMPACT.encode(key)
        if isinstance(value, list) and value:
            items = encoded.get(key) or [_COMPACT.encode(item) for item in value]
            lines.append(f"  {name}: [\n    " + ",\n    ".join(items) + f"\n  ]{comma}")
        else:
            lines.append(f"  {name}: {_COMPACT.encode(value)}{comma}")
    lines.append("}\n")
    return "\n".join(lines).encode()


def _walk(tree: pygit2.Tree, prefix: str, out: dict[str, str]) -> None:
    for entry in tree:
        path = prefix + str(entry.name)
        if isinstance(entry, pygit2.Tree):
            _walk(entry, path + "/", out)
        else:
            out[path] = str(entry.id)


def _nest(changes: Mapping[str, bytes | None]) -> dict[str, Any]:
    """{"plans/a.json": b"..."} -> {"plans": {"a.json": b"..."}}."""
    root: dict[str, Any] = {}
    for path, data in changes.items():
        *dirs, name = path.split("/")
        node = root
        for part in dirs:
            node = node.setdefault(part, {})
        node[name] = data
    return root


def _build_tree(repo: pygit2.Repository, base: str | None, changes: Mapping[str, Any]) -> pygit2.Oid:
    old = repo[base].peel(pygit2.Tree) if base else None
    builder = repo.TreeBuilder(old) if old is not None else repo.TreeBuilder()
    for name, change in sorted(changes.items()):
        existing = old[name] if old is not None and name in old else None
        if isinstance(change, dict):
            sub = _build_tree(repo, str(existing.id) if existing is not None else None, change)
            if len(repo[sub].peel(pygit2.Tree)) == 0:
                _remove(builder, name)
            else:
                builder.insert(name, sub, pygit2.GIT_FILEMODE_TREE)
        elif change is None:
            _remove(builder, name)
        else:
            builder.insert(name, repo.create_blob(change), pygit2.GIT_FILEMODE_BLOB)
    return builder.write()


def _remove(builder: pygit2.TreeBuilder, name: str) -> None:
    if builder.get(name) is not None:
        builder.remove(name)


def current_target(git_dir: Path, ref: str) -> str | None:
    """Read a ref straight from disk (loose file, then packed-refs), bypassing any cache."""
    try:
        text = (git_dir / ref).read_text().strip()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return _packed_target(git_dir, ref)
    if text.startswith("ref: "):
        return current_target(git_dir, text[5:])
    return text or None


def _packed_target(git_dir: Path, ref: str) -> str | None:
    try:
        lines = (git_dir / "packed-refs").read_text().splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        oid, _, name = line.partition(" ")
        if name == ref and not line.startswith(("#", "^")):
            return oid
    return None


@contextlib.contextmanager
def _reconciler_lock(git_dir: Path) -> Iterator[None]:
    """Serialise reconcilers on one machine; the kernel drops the lock when a holder dies."""
    fd = os.open(git_dir / "plumb-reconciler.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def compare_and_swap(git_dir: Path, ref: str, *, old: str | None, new: str) -> None:
    """Move `ref` from `old` to `new` with Git's lock-file protocol; PushRejected if it moved meanwhile."""
    with _reconciler_lock(git_dir):
        lock = git_dir / (ref + ".lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        _clear_stale(lock)
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError as exc:
            raise PushRejected(f"{ref} is locked by another writer") from exc
        try:
            _swap(git_dir, ref, lock, fd, old=old, new=new)
        finally:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()


def _swap(git_dir: Path, ref: str, lock: Path, fd: int, *, old: str | None, new: str) -> None:
    with os.fdopen(fd, "w") as handle:
        current = current_target(git_dir, ref)
        if current != old:
            raise PushRejected(f"{ref} moved from {old} to {current}")
        handle.write(new + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(lock, git_dir / ref)


def _clear_stale(lock: Path) -> None:
    """A lock older than a moment, found while holding the reconciler lock, was left by a killed writer."""
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age > STALE_LOCK_SECONDS:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


def open_repository(path: str | Path) -> pygit2.Repository:
    """Open a repository, translating pygit2's error."""
    try:
        return pygit2.Repository(str(path))
    except (pygit2.GitError, KeyError) as exc:
        raise TemporaryError(f"{path}: cannot open repository: {exc}") from exc


class Location(Protocol):
    """Where the repository is: a local bare repository, or a remote mirrored into a local one."""

    repo: pygit2.Repository
    is_local: bool

    def refresh(self) -> None: ...

    def update_ref(self, ref: str, *, old: str | None, new: str) -> None: ...


class LocalLocation:
    """A bare repository on this machine: read in place, refs moved by compare-and-swap."""

    is_local = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self.repo = open_repository(path)
        self.git_dir = Path(self.repo.path)

    def refresh(self) -> None:
        """Nothing to fetch; refs are read straight from disk."""

    def update_ref(self, ref: str, *, old: str | None, new: str) -> None:
        compare_and_swap(self.git_dir, ref, old=old, new=new)


class RemoteLocation:
    """A remote (ssh://, https://) fetched into a local bare mirror; the state branch is pushed back."""

    is_local = False

    def __init__(self, url: str, *, mirror: Path, ssh_key: Path | None, known_hosts: Path | None) -> None:
        self.remote = gitremote.Remote(url, ssh_key=ssh_key, known_hosts=known_hosts)
        mirror.mkdir(parents=True, exist_ok=True)
        self.repo = (
            pygit2.Repository(str(mirror))
            if (mirror / "HEAD").exists()
            else pygit2.init_repository(str(mirror), bare=True)
        )

    def refresh(self) -> None:
        """Fetch every branch; nothing is pruned, so a failed or partial fetch loses nothing."""
        with _translated():
            self.remote.fetch(self.repo, ["+refs/heads/*:refs/heads/*"])

    def update_ref(self, ref: str, *, old: str | None, new: str) -> None:
        """Push `new` without force: the remote accepts it only as a fast-forward of what it has."""
        pending = "refs/plumb/pending-state"
        self.repo.references.create(pending, pygit2.Oid(hex=new), force=True)
        with _translated():
            self.remote.push(self.repo, [f"{pending}:{ref}"])
        self.repo.references.create(ref, pygit2.Oid(hex=new), force=True)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """The transport's (agent) errors as the reconciler's own, keeping whether a retry can help."""
    try:
        yield
    except gitremote.PushRejected as exc:
        raise PushRejected(str(exc)) from exc
    except AgentTemporaryError as exc:
        raise TemporaryError(str(exc)) from exc
    except AgentError as exc:
        raise PermanentError(str(exc)) from exc


def open_location(
    url_or_path: str,
    *,
    cache_dir: Path | None = None,
    ssh_key: Path | None = None,
    known_hosts: Path | None = None,
) -> Location:
    """A plain path or file:// URL is worked on in place; anything else is mirrored under `cache_dir`."""
    path = url_or_path.removeprefix("file://")
    if "://" not in path and Path(path).exists():
        return LocalLocation(Path(path))
    if "://" not in url_or_path and gitremote.parse_url(url_or_path).scheme != "ssh":
        raise UsageError(f"{url_or_path}: no such repository")
    base = cache_dir or Path.home() / ".cache" / "plumb" / "mirrors"
    mirror = base / hashlib.sha256(url_or_path.encode()).hexdigest()[:16]
    return RemoteLocation(url_or_path, mirror=mirror, ssh_key=ssh_key, known_hosts=known_hosts)
