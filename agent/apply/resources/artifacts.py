"""The `artifact` resource: download privately, check sha256, unpack into `<path>/<version>`, switch.

Nothing another user can touch is trusted between the download and the switch:

    1. download   into an unnamed file in `<state-dir>/downloads/` (0700, the agent's own), hashing
                  while writing; http(s) only, or file:// below `--local-artifacts` (demos, tests)
    2. verify     sha256 of what was written; a mismatch is refused and the file vanishes with its fd
    3. open       `<path>` walked from the root without following symlinks; every directory on the way
                  must be writable by no one but root or the agent, or nobody could stop its owner from
                  swapping what the unit runs; everything after this is done through this fd
    4. unpack     from the same open file (never re-opened by name) into a staging directory made
                  (0700) under that fd, within LIMITS, with no member or link leaving it, no devices
    5. switch     staging renamed to `<version>`, `current` replaced atomically (a new link renamed
                  over the old one); the two versions before the current one are kept, older removed

A failure at any step removes the staging directory; the download never had a name.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.error import URLError
from urllib.parse import unquote, urlsplit

from agent.apply.resources.base import Change, Host, unchanged
from agent.host import fsops
from contract.errors import ContractError, PathError, PermanentError, TemporaryError
from contract.plan import PlanResource
from contract.vocabulary import Outcome

MARKER = ".plumb-sha256"
KEEP_PREVIOUS = 2
DOWNLOADS = "downloads"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    """How big an artifact may be, downloaded and unpacked."""

    download_bytes: int = 2 << 30
    unpacked_bytes: int = 8 << 30
    member_bytes: int = 4 << 30
    members: int = 100_000


LIMITS = Limits()


@dataclass(frozen=True)
class Source:
    """Where an artifact comes from, and where file:// artifacts may be read (None: nowhere)."""

    url: str
    sha256: str
    local_artifacts: Path | None = None


# Only the http(s) handlers: a redirect cannot lead to file:// or ftp:// either.
_OPENER = urllib.request.OpenerDirector()
for _handler in (
    urllib.request.ProxyHandler(),
    urllib.request.HTTPHandler(),
    urllib.request.HTTPSHandler(),
    urllib.request.HTTPDefaultErrorHandler(),
    urllib.request.HTTPRedirectHandler(),
    urllib.request.HTTPErrorProcessor(),
):
    _OPENER.add_handler(_handler)


def private_downloads(state_dir: Path) -> Path:
    """`<state-dir>/downloads`, a directory only the agent may enter."""
    directory = state_dir / DOWNLOADS
    with fsops.saying(str(directory), doing="creating it"):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.stat(directory, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise PathError(f"{directory} is not a directory of this agent's own; refusing to download there")
        os.chmod(directory, 0o700)
    return directory


@contextlib.contextmanager
def _opened(source: Source) -> Iterator[IO[bytes]]:
    scheme = urlsplit(source.url).scheme
    if scheme in ("http", "https"):
        with _OPENER.open(source.url, timeout=60) as response:
            yield response
    elif scheme == "file":
        with _local(source) as reader:
            yield reader
    else:
        raise PermanentError(f"{source.url}: artifacts are fetched over http or https only")


@contextlib.contextmanager
def _local(source: Source) -> Iterator[IO[bytes]]:
    """A file:// artifact: only a regular file below --local-artifacts, reached without symlinks."""
    allowed = source.local_artifacts
    path = unquote(urlsplit(source.url).path)
    if allowed is None:
        raise PermanentError(f"{source.url}: file:// artifacts are refused (see --local-artifacts)")
    relative = os.path.relpath(path, allowed)
    if os.path.normpath(path) != path or relative.startswith("..") or relative == ".":
        raise PermanentError(f"{source.url}: not a file below --local-artifacts {allowed}")
    parts = relative.split("/")
    with fsops.parent_dir(allowed, parts, create=False) as fd:
        if fd is None:
            raise PermanentError(f"{source.url}: no such file")
        handle = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=fd)
    with os.fdopen(handle, "rb") as reader:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            raise PermanentError(f"{source.url}: not a regular file")
        yield reader


@contextlib.contextmanager
def download(source: Source, into: Path, *, limits: Limits = LIMITS) -> Iterator[IO[bytes]]:
    """An unnamed file in `into` holding what `source` serves, its sha256 checked; at offset 0.

    It has no name from the start (O_TMPFILE), so it is gone when closed, even after a SIGKILL."""
    with fsops.saying(str(into), doing="downloading"), tempfile.TemporaryFile(dir=into) as out:
        digest = _copy(source, out, limits=limits)
        if digest != source.sha256:
            expects = f"the plan expects {source.sha256}"
            raise ContractError(f"{source.url}: sha256 is {digest}, {expects}; not used")
        out.seek(0)
        yield out


def _copy(source: Source, out: IO[bytes], *, limits: Limits) -> str:
    digest, size = hashlib.sha256(), 0
    try:
        with _opened(source) as response:
            while chunk := response.read(_CHUNK):
                size += len(chunk)
                if size > limits.download_bytes:
                    limit = limits.download_bytes
                    raise PermanentError(f"{source.url}: larger than the limit of {limit} bytes")
                digest.update(chunk)
                out.write(chunk)
            _check_length(response, size)
        out.flush()
    except (URLError, OSError, http.client.HTTPException) as exc:  # a body cut short is the last
        raise TemporaryError(f"{source.url}: download failed: {_reason(exc)}") from exc
    return digest.hexdigest()


def _check_length(response: IO[bytes], size: int) -> None:
    """A body shorter than its Content-Length was cut short: worth another try, unlike a bad digest."""
    headers = getattr(response, "headers", None)
    declared = headers.get("Content-Length") if headers is not None else None
    if declared is not None and declared.isdigit() and int(declared) != size:
        raise http.client.IncompleteRead(b"", int(declared) - size)


def _reason(exc: Exception) -> str:
    reason = fsops.TEMPORARY_ERRNOS.get(getattr(exc, "errno", None) or 0)
    return reason or str(getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc)


# -- unpacking ----------------------------------------------------------------------------------


@dataclass
class _Budget:
    """What an archive has unpacked so far, against the limits; refuses the member that breaks one."""

    name: str
    limits: Limits
    members: int = 0
    size: int = 0

    def admit(self, member: str, size: int) -> None:
        self.members += 1
        self.size += size
        for what, found, limit in (
            ("members", self.members, self.limits.members),
            (f"bytes in member {member!r}", size, self.limits.member_bytes),
            ("unpacked bytes", self.size, self.limits.unpacked_bytes),
        ):
            if found > limit:
                raise PermanentError(f"{self.name}: more than {limit} {what}; refusing to unpack it")


def unpack(archive: IO[bytes], kind: str, staging: int, *, name: str, limits: Limits = LIMITS) -> None:
    """Unpack the open `archive` into the directory `staging` (an fd); members may not escape it."""
    target = f"/proc/self/fd/{staging}"  # the directory itself, whatever is done to its path
    budget = _Budget(name, limits)
    try:
        if kind in ("tar.gz", "tar"):
            _untar(archive, target, budget, gz=kind == "tar.gz")
        elif kind == "zip":
            _unzip(archive, target, budget)
        else:
            _copy_raw(archive, staging, budget)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise PermanentError(f"{name}: cannot unpack as {kind}: {exc}") from exc


def _untar(archive: IO[bytes], target: str, budget: _Budget, *, gz: bool) -> None:
    def admitted(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        checked = tarfile.data_filter(member, path)  # no absolute paths, `..`, outside links, devices
        budget.admit(member.name, member.size)
        return checked

    with tarfile.open(fileobj=archive, mode="r:gz") if gz else tarfile.open(fileobj=archive) as tar:
        tar.extractall(target, filter=admitted)


def _unzip(archive: IO[bytes], target: str, budget: _Budget) -> None:
    with zipfile.ZipFile(archive) as zipped:
        for info in zipped.infolist():  # the reader stops at the declared size, so this bounds it
            if info.filename.startswith("/") or ".." in info.filename.split("/"):
                raise PermanentError(f"{budget.name}: member {info.filename!r} escapes the target")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise PermanentError(f"{budget.name}: member {info.filename!r} is a link")
            budget.admit(info.filename, info.file_size)
        zipped.extractall(target)


def _copy_raw(archive: IO[bytes], staging: int, budget: _Budget) -> None:
    budget.admit("artifact", os.fstat(archive.fileno()).st_size)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open("artifact", flags, 0o644, dir_fd=staging), "wb") as out:
        shutil.copyfileobj(archive, out, _CHUNK)


# -- the directory of versions, by fd -----------------------------------------------------------


def _current(directory: int) -> str | None:
    try:
        return os.readlink("current", dir_fd=directory)
    except OSError:
        return None


def _installed(directory: int, version: str, sha256: str) -> bool:
    try:
        fd = os.open(version, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
    except OSError:
        return False
    try:
        handle = os.open(MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        with os.fdopen(handle, "rb") as marker:
            return marker.read(100).strip() == sha256.encode()
    except OSError:
        return False
    finally:
        os.close(fd)


def switch_current(directory: int, version: str) -> None:
    """Point `current` at `version` atomically."""
    os.utime(version, dir_fd=directory, follow_symlinks=False)  # versions are kept by when last current
    link = ".current" + fsops.TMP_SUFFIX
    with contextlib.suppress(FileNotFoundError):
        os.unlink(link, dir_fd=directory)
    os.symlink(version, link, dir_fd=directory)
    os.replace(link, "current", src_dir_fd=directory, dst_dir_fd=directory)
    os.fsync(directory)


def prune_versions(directory: int, current: str) -> list[str]:
    """Remove versions older than the current one and the two before it; return what was removed."""
    with os.scandir(directory) as entries:
        versions = [
            (e.stat(follow_symlinks=False).st_mtime, e.name)
            for e in entries
            if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")
        ]
    versions.sort(reverse=True)
    keep = {current, *[name for _, name in versions if name != current][:KEEP_PREVIOUS]}
    removed = [name for _, name in versions if name not in keep]
    for name in removed:
        _discard(directory, name)
    return removed


def converge_artifact(resource: PlanResource, host: Host) -> Change:
    spec = resource.spec
    version, sha256 = spec["version"], spec["sha256"]
    if "/" in version or version in ("", ".", "..", "current") or version.startswith("."):
        raise PermanentError(f"{resource.id}: version {version!r} cannot name a directory")
    where = spec["path"]
    with fsops.saying(where, doing="installing an artifact"):
        with fsops.trusted_directory(host.root, host.confinement.parts(where), mode=0o755) as directory:
            previous = _current(directory)
            installed = _installed(directory, version, sha256)
            if previous == version and installed:
                return unchanged(f"{where}/current already points at {version}")
        if not installed:
            source = Source(spec["url"], sha256, host.local_artifacts)
            _install(host, source, where, version=version, kind=spec.get("unpack", "tar.gz"))
        with fsops.trusted_directory(host.root, host.confinement.parts(where), mode=0o755) as directory:
            switch_current(directory, version)
            removed = prune_versions(directory, version)
    what = f"{where}/current: {previous or 'none'} -> {version}"
    extra = f"; removed {', '.join(removed)}" if removed else ""
    return Change(Outcome.CHANGED, what + extra, (f"current was {previous}",), (where,))


def _install(host: Host, source: Source, where: str, *, version: str, kind: str) -> None:
    """Download and verify, then unpack from that same file into `<where>/<version>`."""
    with download(source, private_downloads(host.state_dir)) as archive:
        parts = host.confinement.parts(where)
        with fsops.trusted_directory(host.root, parts, mode=0o755) as directory:
            staging = fsops.temp_name(version)
            _discard(directory, staging)
            os.mkdir(staging, 0o700, dir_fd=directory)
            try:
                name = f"{where} {version}"
                _fill_staging(archive, directory, staging, kind=kind, name=name, sha256=source.sha256)
                _discard(directory, version)
                os.rename(staging, version, src_dir_fd=directory, dst_dir_fd=directory)
            finally:
                _discard(directory, staging)


def _fill_staging(
    archive: IO[bytes], directory: int, staging: str, *, kind: str, name: str, sha256: str
) -> None:
    fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
    try:
        unpack(archive, kind, fd, name=name)
        marker = os.open(MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=fd)
        with os.fdopen(marker, "w") as out:
            out.write(sha256 + "\n")
        os.fchmod(fd, 0o755)
    finally:
        os.close(fd)


def _discard(directory: int, name: str) -> None:
    """Remove `name` in `directory` (a tree, without following symlinks, or anything else)."""
    try:
        st = os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=directory)
    else:
        os.unlink(name, dir_fd=directory)
