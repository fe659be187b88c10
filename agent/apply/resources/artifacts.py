"""The `artifact` resource: download, check sha256, unpack into `<path>/<version>`, switch `current`.

`<path>/current` is a symlink the agent owns, replaced atomically (a new link renamed over the old
one). The two versions before the current one are kept for a quick rollback; older ones are removed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from urllib.error import URLError

from agent.apply.resources.base import Change, Host, unchanged
from agent.host import fsops
from contract.errors import ContractError, PermanentError, TemporaryError
from contract.plan import PlanResource
from contract.vocabulary import Outcome

MARKER = ".plumb-sha256"
KEEP_PREVIOUS = 2
_CHUNK = 1 << 20


def _current(directory: Path) -> str | None:
    try:
        return os.readlink(directory / "current")
    except (FileNotFoundError, OSError):
        return None


def _installed(directory: Path, version: str, sha256: str) -> bool:
    marker = directory / version / MARKER
    return not marker.is_symlink() and marker.is_file() and marker.read_text().strip() == sha256


def download(url: str, sha256: str, into: Path) -> Path:
    """Fetch `url` into a file in `into`, refusing it unless its sha256 matches."""
    digest = hashlib.sha256()
    handle, name = tempfile.mkstemp(prefix=".download-", dir=into)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except (URLError, OSError) as exc:
        os.unlink(name)
        raise TemporaryError(f"{url}: download failed: {exc}") from exc
    if digest.hexdigest() != sha256:
        os.unlink(name)
        raise ContractError(f"{url}: sha256 is {digest.hexdigest()}, the plan expects {sha256}; not used")
    return Path(name)


def unpack(archive: Path, kind: str, target: Path) -> None:
    """Unpack into `target` (created); members may not escape it."""
    target.mkdir(mode=0o755)
    try:
        _unpack(archive, kind, target)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise PermanentError(f"{archive.name}: cannot unpack as {kind}: {exc}") from exc


def _unpack(archive: Path, kind: str, target: Path) -> None:
    if kind in ("tar.gz", "tar"):
        with tarfile.open(archive, "r:gz" if kind == "tar.gz" else "r:") as tar:
            tar.extractall(target, filter="data")
    elif kind == "zip":
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.namelist():
                if member.startswith("/") or ".." in member.split("/"):
                    raise PermanentError(f"{archive.name}: member {member!r} escapes the target")
            zipped.extractall(target)
    else:
        shutil.copyfile(archive, target / "artifact")


def switch_current(directory: Path, version: str) -> None:
    """Point `current` at `version` atomically."""
    os.utime(directory / version)  # versions are kept by when they were last current
    link = directory / ".current.plumb-tmp"
    link.unlink(missing_ok=True)
    os.symlink(version, link)
    os.replace(link, directory / "current")
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prune_versions(directory: Path, current: str) -> list[str]:
    """Remove versions older than the current one and the two before it; return what was removed."""
    versions = [
        p for p in directory.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
    ]
    versions.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    keep = {current, *[p.name for p in versions if p.name != current][:KEEP_PREVIOUS]}
    removed = [p.name for p in versions if p.name not in keep]
    for name in removed:
        shutil.rmtree(directory / name)
    return removed


def converge_artifact(resource: PlanResource, host: Host) -> Change:
    spec = resource.spec
    version, sha256 = spec["version"], spec["sha256"]
    if "/" in version or version in ("", ".", "..", "current"):
        raise PermanentError(f"{resource.id}: version {version!r} cannot name a directory")
    parts = host.confinement.parts(spec["path"])
    fsops.make_directory(host.root, parts, mode=0o755)
    directory = host.confinement.host(spec["path"])
    previous = _current(directory)
    if previous == version and _installed(directory, version, sha256):
        return unchanged(f"{spec['path']}/current already points at {version}")
    if not _installed(directory, version, sha256):
        _install(directory, spec["url"], sha256, spec.get("unpack", "tar.gz"), version)
    switch_current(directory, version)
    removed = prune_versions(directory, version)
    what = f"{spec['path']}/current: {previous or 'none'} -> {version}"
    extra = f"; removed {', '.join(removed)}" if removed else ""
    return Change(Outcome.CHANGED, what + extra, (f"current was {previous}",), (spec["path"],))


def _install(directory: Path, url: str, sha256: str, kind: str, version: str) -> None:
    archive = download(url, sha256, directory)
    staging = directory / f".{version}.plumb-tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        unpack(archive, kind, staging)
        (staging / MARKER).write_text(sha256 + "\n")
        shutil.rmtree(directory / version, ignore_errors=True)
        os.rename(staging, directory / version)
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
