"""Safe filesystem operations: walk without following symlinks, write atomically, keep modes exact.

Every operation starts from the root directory and opens each component with O_NOFOLLOW, so a
symlink anywhere on the path fails with PathError instead of being followed. Writes go to a
temporary file in the same directory (`.<name>.plumb-tmp`), are fsynced, then renamed over the
target, and the directory is fsynced: a file is always either wholly old or wholly new.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import json
import os
import pwd
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract.errors import PathError, PermanentError

TMP_SUFFIX = ".plumb-tmp"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Observed:
    """What is at a path now: nothing, or a file or directory with its mode and owners."""

    kind: str  # "missing" | "file" | "directory" | "other"
    mode: int = 0
    uid: int = -1
    gid: int = -1
    content: bytes | None = None

    @property
    def exists(self) -> bool:
        return self.kind != "missing"


MISSING = Observed("missing")


def temp_name(name: str) -> str:
    """The temporary file a write of `name` stages its content in."""
    return f".{name}{TMP_SUFFIX}"


def _open_dir(parent: int, name: str, *, where: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise PathError(
                f"{where}: {name!r} is a symlink or not a directory; refusing to cross it"
            ) from exc
        raise


@contextlib.contextmanager
def parent_dir(
    root: Path, parts: Sequence[str], *, create: bool, dir_mode: int = 0o755
) -> Iterator[int | None]:
    """Yield an fd of the directory holding `parts[-1]`, or None if it is missing and not created."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for index, name in enumerate(parts[:-1]):
            where = "/" + "/".join(parts[: index + 1])
            try:
                child = _open_dir(fd, name, where=where)
            except FileNotFoundError:
                if not create:
                    yield None
                    return
                os.mkdir(name, dir_mode, dir_fd=fd)
                child = _open_dir(fd, name, where=where)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISREG(mode):
        return "file"
    return "directory" if stat.S_ISDIR(mode) else "other"


def _stat(fd: int, name: str, *, where: str) -> os.stat_result | None:
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise PathError(f"{where} is a symlink; refusing to follow it")
    return st


def _read(fd: int, name: str) -> bytes:
    handle = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    with os.fdopen(handle, "rb") as reader:
        return reader.read()


def observe(root: Path, parts: Sequence[str], *, read: bool = True) -> Observed:
    """Look at a path without following symlinks; read a regular file's content if `read`."""
    where = "/" + "/".join(parts)
    with parent_dir(root, parts, create=False) as fd:
        st = None if fd is None else _stat(fd, parts[-1], where=where)
        if fd is None or st is None:
            return MISSING
        kind = _kind(st.st_mode)
        content = _read(fd, parts[-1]) if read and kind == "file" else None
        return Observed(kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, content)


def _unlink_quietly(fd: int, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=fd)


def write_file(
    root: Path, parts: Sequence[str], data: bytes, *, mode: int, uid: int = -1, gid: int = -1
) -> None:
    """Atomically replace the file at `parts` with `data`, mode and owners set before the rename."""
    name, tmp = parts[-1], temp_name(parts[-1])
    with parent_dir(root, parts, create=True) as fd:
        assert fd is not None
        if _stat(fd, name, where="/" + "/".join(parts)) is not None:
            _refuse_directory(fd, name, parts)
        _unlink_quietly(fd, tmp)
        handle = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd
        )
        try:
            _fill(handle, data, mode=mode, uid=uid, gid=gid)
        finally:
            os.close(handle)
        os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        os.fsync(fd)


def _refuse_directory(fd: int, name: str, parts: Sequence[str]) -> None:
    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        raise PermanentError(f"/{'/'.join(parts)} is a directory; refusing to replace it with a file")


def _fill(handle: int, data: bytes, *, mode: int, uid: int, gid: int) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(handle, view) :]
    if uid != -1 or gid != -1:
        os.fchown(handle, uid, gid)
    os.fchmod(handle, mode)
    os.fsync(handle)


def set_attributes(root: Path, parts: Sequence[str], *, mode: int, uid: int = -1, gid: int = -1) -> None:
    """Set mode and owners of an existing file or directory, never through a symlink."""
    with parent_dir(root, parts, create=False) as fd:
        if fd is None:
            raise PermanentError(f"/{'/'.join(parts)} disappeared")
        handle = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        try:
            if uid != -1 or gid != -1:
                os.fchown(handle, uid, gid)
            os.fchmod(handle, mode)
        finally:
            os.close(handle)


def make_directory(root: Path, parts: Sequence[str], *, mode: int) -> None:
    """Create a directory (and missing parents) without following symlinks."""
    with parent_dir(root, parts, create=True) as fd:
        assert fd is not None
        with contextlib.suppress(FileExistsError):
            os.mkdir(parts[-1], mode, dir_fd=fd)
        if _stat(fd, parts[-1], where="/" + "/".join(parts)) is None:
            raise PermanentError(f"/{'/'.join(parts)} could not be created")


def remove(root: Path, parts: Sequence[str]) -> bool:
    """Remove a file (or an empty directory); False if it was already gone."""
    with parent_dir(root, parts, create=False) as fd:
        if fd is None:
            return False
        st = _stat(fd, parts[-1], where="/" + "/".join(parts))
        if st is None:
            return False
        if stat.S_ISDIR(st.st_mode):
            try:
                os.rmdir(parts[-1], dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ENOTEMPTY:
                    return False
                raise
        else:
            os.unlink(parts[-1], dir_fd=fd)
        os.fsync(fd)
        return True


def discard_temp(root: Path, parts: Sequence[str]) -> bool:
    """Remove a temporary file a killed write left next to `parts[-1]`; True if there was one."""
    with parent_dir(root, parts, create=False) as fd:
        if fd is None:
            return False
        try:
            os.unlink(temp_name(parts[-1]), dir_fd=fd)
        except FileNotFoundError:
            return False
        return True


def owner_ids(owner: str | None, group: str | None) -> tuple[int, int]:
    """Numeric uid and gid for names or numbers; -1 leaves one unchanged."""
    return _lookup(owner, pwd.getpwnam, "user"), _lookup(group, grp.getgrnam, "group")


def _lookup(name: str | None, getter: Callable[[str], Any], what: str) -> int:
    if name is None or name == "":
        return -1
    if name.isdigit():
        return int(name)
    try:
        entry = getter(name)
    except KeyError as exc:
        raise PermanentError(f"unknown {what} {name!r}") from exc
    return int(entry[2])


def write_json(path: Path, value: Any, *, durable: bool = True) -> None:
    """Atomically replace a JSON state file (temp file, fsync unless not `durable`, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        json.dump(value, handle, sort_keys=True)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """A JSON state file's content, or None if it does not exist."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
