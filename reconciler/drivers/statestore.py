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
import struct
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import pygit2

from contract.defaults import MAX_PLAN_BYTES
from contract.documents import parse_json_document
from contract.errors import ContractError, PushRejected, TemporaryError, UsageError
from contract.transport import gitremote
from contract.transport.gitread import read_blob

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
            data = read_blob(self.repo, blob_id, what=what, limit=MAX_PLAN_BYTES)
            cached = parse_json_document(data, what=what, limit=MAX_PLAN_BYTES)
            self._json[blob_id] = cached
        return cached

    def remember(self, blob_id: str, document: dict[str, Any]) -> None:
        """Cache a document this process is about to write, so it is not parsed back."""
        self._json[blob_id] = document

    def history_blobs(self, snapshot: StateSnapshot, path: str, *, limit: int) -> Iterator[str]:
        """The blob ids `path` had in the state branch's commits, newest first, at most `limit` commits."""
        if snapshot.tip is None:
            return
        walk = self.repo.walk(pygit2.Oid(hex=snapshot.tip), pygit2.enums.SortMode.TOPOLOGICAL)
        for count, commit in enumerate(walk):
            if count >= limit:
                return
            with contextlib.suppress(KeyError):
                yield str(commit.tree[path].id)

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
        objects = _Objects(self.repo)
        tree = _build_tree(self.repo, objects, base.tree, _nest(changes)) or objects.add("tree", b"")
        author = f"{AUTHOR_NAME} <{AUTHOR_EMAIL}> {int(when.timestamp())} +0000"
        header = [f"tree {tree}", *([f"parent {base.tip}"] if base.tip else []), f"author {author}"]
        commit = objects.add(
            "commit", ("\n".join([*header, f"committer {author}"]) + "\n\n" + message).encode()
        )
        objects.write()
        return commit


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


_TREE, _BLOB = 0o40000, 0o100644
_PACK_TYPES = {"commit": 1, "tree": 2, "blob": 3}
_ODB_TYPES = {
    "commit": pygit2.GIT_OBJECT_COMMIT,
    "tree": pygit2.GIT_OBJECT_TREE,
    "blob": pygit2.GIT_OBJECT_BLOB,
}
PACK_THRESHOLD = 64  # a commit with more new objects than this is written as one pack, not loose files


class _Objects:
    """The new objects of one commit, kept in memory and written together once complete.

    A few objects are written loose; many (a cold reconcile writes thousands of plans and status
    files) go into one pack, so the file system sees two files instead of thousands.
    """

    def __init__(self, repo: pygit2.Repository) -> None:
        self.repo = repo
        self.pending: dict[str, tuple[str, bytes]] = {}

    def add(self, kind: str, data: bytes) -> str:
        oid = hashlib.sha1(f"{kind} {len(data)}\0".encode() + data, usedforsecurity=False).hexdigest()
        self.pending.setdefault(oid, (kind, data))
        return oid

    def write(self) -> None:
        new = {oid: item for oid, item in self.pending.items() if pygit2.Oid(hex=oid) not in self.repo.odb}
        if len(new) <= PACK_THRESHOLD:
            for kind, data in new.values():
                self.repo.odb.write(_ODB_TYPES[kind], data)
        else:
            write_pack(Path(self.repo.path) / "objects" / "pack", new)


def _build_tree(
    repo: pygit2.Repository, objects: _Objects, base: str | None, changes: Mapping[str, Any]
) -> str | None:
    """The id of `base` with `changes` applied (None when the result is empty); subtrees kept by id."""
    old = repo[base].peel(pygit2.Tree) if base else None
    entries = {str(e.name): (int(e.filemode), str(e.id)) for e in old} if old is not None else {}
    for name, change in changes.items():
        if isinstance(change, dict):
            existing = entries.get(name)
            sub = _build_tree(
                repo, objects, existing[1] if existing and existing[0] == _TREE else None, change
            )
            if sub is None:
                entries.pop(name, None)
            else:
                entries[name] = (_TREE, sub)
        elif change is None:
            entries.pop(name, None)
        else:
            entries[name] = (_BLOB, objects.add("blob", change))
    return objects.add("tree", _tree_bytes(entries)) if entries else None


def _tree_bytes(entries: Mapping[str, tuple[int, str]]) -> bytes:
    """Git's tree encoding: entries sorted by name, a tree's name compared as if it ended in '/'."""

    def order(name: str) -> bytes:
        return (name + "/" if entries[name][0] == _TREE else name).encode()

    return b"".join(
        f"{entries[name][0]:o} {name}".encode() + b"\0" + bytes.fromhex(entries[name][1])
        for name in sorted(entries, key=order)
    )


def write_pack(directory: Path, objects: Mapping[str, tuple[str, bytes]]) -> None:
    """Write whole (undeltified) objects as one pack and its version-2 index, the index last."""
    body = bytearray(b"PACK" + struct.pack(">II", 2, len(objects)))
    index: list[tuple[bytes, int, int]] = []
    for oid, (kind, data) in objects.items():
        packed = _pack_header(_PACK_TYPES[kind], len(data)) + zlib.compress(data, 1)
        index.append((bytes.fromhex(oid), zlib.crc32(packed), len(body)))
        body += packed
    checksum = hashlib.sha1(body, usedforsecurity=False).digest()
    body += checksum
    name = directory / f"pack-{checksum.hex()}"
    directory.mkdir(parents=True, exist_ok=True)
    _write_file(name.with_suffix(".pack"), bytes(body))
    _write_file(name.with_suffix(".idx"), _pack_index(index, checksum))


def _pack_header(kind: int, size: int) -> bytes:
    out = bytearray()
    byte = (kind << 4) | (size & 0x0F)
    size >>= 4
    while size:
        out.append(byte | 0x80)
        byte, size = size & 0x7F, size >> 7
    out.append(byte)
    return bytes(out)


def _pack_index(entries: list[tuple[bytes, int, int]], pack_checksum: bytes) -> bytes:
    entries = sorted(entries)
    fanout = [0] * 256
    for sha, _, _ in entries:
        fanout[sha[0]] += 1
    for i in range(1, 256):
        fanout[i] += fanout[i - 1]
    large = [offset for _, _, offset in entries if offset >= 1 << 31]
    small = [offset if offset < 1 << 31 else (1 << 31) | large.index(offset) for _, _, offset in entries]
    out = b"\377tOc" + struct.pack(">I", 2) + struct.pack(">256I", *fanout)
    out += b"".join(sha for sha, _, _ in entries)
    out += b"".join(struct.pack(">I", crc & 0xFFFFFFFF) for _, crc, _ in entries)
    out += struct.pack(f">{len(small)}I", *small) + struct.pack(f">{len(large)}Q", *large)
    out += pack_checksum
    return out + hashlib.sha1(out, usedforsecurity=False).digest()


def _write_file(path: Path, data: bytes) -> None:
    """Write under a temporary name and rename, so no reader ever sees half a file."""
    tmp = path.with_name(f"tmp_{path.name}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o444)
    os.replace(tmp, path)


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
        self.remote.fetch(self.repo, ["+refs/heads/*:refs/heads/*"])

    def update_ref(self, ref: str, *, old: str | None, new: str) -> None:
        """Push `new` without force: the remote accepts it only as a fast-forward of what it has."""
        pending = "refs/plumb/pending-state"
        self.repo.references.create(pending, pygit2.Oid(hex=new), force=True)
        self.remote.push(self.repo, [f"{pending}:{ref}"])
        self.repo.references.create(ref, pygit2.Oid(hex=new), force=True)


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
