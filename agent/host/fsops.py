"""Safe filesystem operations: walk without following symlinks, write atomically, keep modes exact.

Every operation starts from the root directory and opens each component with O_NOFOLLOW, so a
symlink anywhere on the path fails with PathError instead of being followed. Writes go to a
temporary file in the same directory (`.<name>.plumb-tmp`), are fsynced, then renamed over the
target, and the directory is fsynced: a file is always either wholly old or wholly new. A write
that fails removes its temporary file; a full disk, a read-only filesystem, a quota or an I/O
error becomes one TemporaryError line (`/etc/x: no space left on device while writing`), since
the next cycle succeeds once the cause is gone. Files are compared by a streamed sha256, never
read whole.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import hashlib
import json
import os
import pwd
import shutil
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract.errors import PathError, PermanentError, TemporaryError
from contract.files import replace_file

TMP_SUFFIX = ".plumb-tmp"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Failures the host's state causes and a later cycle may not meet again, in the words of the line.
TEMPORARY_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EIO: "input/output error",
}


def translated(
    exc: OSError, where: str, *, doing: str, temporary: bool = False
) -> PermanentError | TemporaryError:
    """One clear line for an OSError: temporary when the disk or filesystem is at fault (or always,
    with `temporary`, for what the agent keeps for itself and can only retry)."""
    reason = TEMPORARY_ERRNOS.get(exc.errno or 0)
    line = f"{where}: {reason or (exc.strerror or str(exc)).lower()} while {doing}"
    return TemporaryError(line) if reason is not None or temporary else PermanentError(line)


@contextlib.contextmanager
def saying(where: str, *, doing: str, temporary: bool = False) -> Iterator[None]:
    """Translate an OSError raised inside into `translated(...)`; PlumbErrors pass unchanged."""
    try:
        yield
    except OSError as exc:
        raise translated(exc, where, doing=doing, temporary=temporary) from exc


@dataclass(frozen=True)
class Observed:
    """What is at a path now: nothing, or a file or directory with its mode and owners."""

    kind: str  # "missing" | "file" | "directory" | "other"
    mode: int = 0
    uid: int = -1
    gid: int = -1
    content: bytes | None = None
    sha256: str | None = None  # hex digest of a regular file's content, streamed (`digest=True`)

    @property
    def exists(self) -> bool:
        return self.kind != "missing"

    @property
    def fingerprint(self) -> str | None:
        """The sha256 of the content, from the streamed digest or the content read."""
        if self.sha256 is not None:
            return self.sha256
        return None if self.content is None else hashlib.sha256(self.content).hexdigest()


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


@contextlib.contextmanager
def trusted_directory(root: Path, parts: Sequence[str], *, mode: int) -> Iterator[int]:
    """Yield an fd of the directory at `parts` (created with `mode` where missing), walked from
    `root` without following symlinks, every directory on the way checked on its fd: owned by
    root or this agent and writable by no one else (a sticky bit excuses a parent, not the
    directory itself). Whoever else could write one of them could swap what is below it."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for index, name in enumerate(parts):
            where = "/" + "/".join(parts[: index + 1])
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, mode, dir_fd=fd)
            child = _open_dir(fd, name, where=where)
            os.close(fd)
            fd = child
            _check_trusted(os.fstat(fd), where, last=index == len(parts) - 1)
        yield fd
    finally:
        os.close(fd)


def _check_trusted(st: os.stat_result, where: str, *, last: bool) -> None:
    if st.st_uid not in (0, os.geteuid()):
        raise PathError(f"{where} is owned by uid {st.st_uid}; refusing to install below it")
    shared = st.st_mode & 0o022 and (last or not st.st_mode & stat.S_ISVTX)
    if shared:
        raise PathError(
            f"{where} is writable by its group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            "refusing to install below it"
        )


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


def _digest(fd: int, name: str) -> str:
    """sha256 of a file, read in chunks: memory stays flat whatever its size."""
    handle = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    with os.fdopen(handle, "rb") as reader:
        return hashlib.file_digest(reader, "sha256").hexdigest()


def observe(root: Path, parts: Sequence[str], *, read: bool = True, digest: bool = False) -> Observed:
    """Look at a path without following symlinks; read a regular file's content if `read`, or
    only stream its sha256 if `digest`."""
    where = "/" + "/".join(parts)
    with parent_dir(root, parts, create=False) as fd:
        st = None if fd is None else _stat(fd, parts[-1], where=where)
        if fd is None or st is None:
            return MISSING
        kind = _kind(st.st_mode)
        content = _read(fd, parts[-1]) if read and kind == "file" else None
        sha256 = _digest(fd, parts[-1]) if digest and kind == "file" else None
        return Observed(kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, content, sha256)


def _unlink_quietly(fd: int, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=fd)


def write_file(
    root: Path, parts: Sequence[str], data: bytes, *, mode: int, uid: int = -1, gid: int = -1
) -> None:
    """Atomically replace the file at `parts` with `data`, mode and owners set before the rename.

    On any failure the temporary file is removed before the error is raised."""
    name, tmp, where = parts[-1], temp_name(parts[-1]), "/" + "/".join(parts)
    with saying(where, doing="writing"), parent_dir(root, parts, create=True) as fd:
        assert fd is not None
        if _stat(fd, name, where=where) is not None:
            _refuse_directory(fd, name, parts)
        _unlink_quietly(fd, tmp)
        handle = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd
        )
        try:
            try:
                _fill(handle, data, mode=mode, uid=uid, gid=gid)
            finally:
                os.close(handle)
            os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            _unlink_quietly(fd, tmp)
            raise
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
    with saying("/" + "/".join(parts), doing="setting its mode"), parent_dir(root, parts, create=False) as fd:
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
    with saying("/" + "/".join(parts), doing="creating it"), parent_dir(root, parts, create=True) as fd:
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


def remove_tree(root: Path, parts: Sequence[str]) -> bool:
    """Remove a directory and everything below it by fd, never following a symlink; False if gone."""
    with parent_dir(root, parts, create=False) as fd:
        if fd is None or _stat(fd, parts[-1], where="/" + "/".join(parts)) is None:
            return False
        shutil.rmtree(parts[-1], dir_fd=fd)
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
    """Atomically replace a JSON state file (`contract.files.replace_file`: a unique temp file, fsync
    unless not `durable`, rename, the temp file removed on any failure)."""
    with saying(str(path), doing="writing", temporary=True):
        replace_file(path, json.dumps(value, sort_keys=True), durable=durable)


class DamagedState(PermanentError):
    """A state file exists but cannot be used: not JSON, not an object, not a regular file."""


def read_json(path: Path) -> Any:
    """A JSON state file's content, or None if it does not exist; DamagedState if it is unusable,
    TemporaryError if it cannot be read now."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise DamagedState(f"{path}: is a {_kind(st.st_mode)}, not a file")
    with saying(str(path), doing="reading", temporary=True):
        text = _read_file(path)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise DamagedState(f"{path}: is not valid JSON ({str(exc)[:80]})") from exc


def _read_file(path: Path) -> bytes:
    handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(handle, "rb") as reader:
        return reader.read()
