"""Path confinement: every plan path is absolute, free of `..`, inside allowedPaths, mapped under --root.

The check is pure and runs again on the agent whatever the plan says; `agent.host.fsops` then walks
the mapped path one directory at a time without following symlinks, so a symlink planted on the
host cannot lead a write outside either.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from contract.errors import PathError


def _check_absolute(path: str, *, what: str) -> str:
    if not path.startswith("/"):
        raise PathError(f"{what} {path!r} is not absolute")
    if "\x00" in path:
        raise PathError(f"{what} {path!r} contains a NUL byte")
    parts = path.split("/")[1:]
    if ".." in parts:
        raise PathError(f"{what} {path!r} uses '..'")
    if posixpath.normpath(path) != path:
        raise PathError(f"{what} {path!r} is not in normal form (no '.', '//' or trailing '/')")
    return path


def inside(path: str, prefix: str) -> bool:
    """Whether `path` is `prefix` or below it (both normalised, absolute)."""
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


@dataclass(frozen=True)
class Confinement:
    """Where plan paths may point (`allowed`) and where they land on this host (`root`)."""

    root: Path
    allowed: tuple[str, ...]

    @classmethod
    def create(cls, *, root: Path, allowed: Iterable[str]) -> Confinement:
        checked = tuple(_check_absolute(p.rstrip("/") or "/", what="allowed path") for p in allowed)
        return cls(root, checked)

    def check(self, path: str) -> str:
        """Return `path` if it may be written; PathError naming the reason otherwise."""
        _check_absolute(path, what="path")
        if not any(inside(path, prefix) for prefix in self.allowed):
            raise PathError(f"path {path!r} is outside allowedPaths ({', '.join(self.allowed) or 'none'})")
        return path

    def parts(self, path: str) -> tuple[str, ...]:
        """The components of a checked plan path, relative to `root`."""
        return tuple(self.check(path).split("/")[1:])

    def host(self, path: str) -> Path:
        """Where a checked plan path lives on this host (for messages and read-only use)."""
        return self.root.joinpath(*self.parts(path))
