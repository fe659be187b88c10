"""Semantic versions and the ranges a Service's `version` may use (npm/cargo style).

Accepted ranges: an exact version (`1.5.0`, `=1.5.0`), `^1.4`, `~1.4.2`, comparisons
(`>=1.4 <2.0.0`, space-separated, all must hold), wildcards (`1.x`, `1.4.*`, `*`), and
alternatives joined by `||`. Pre-releases only match a range that names a pre-release of the
same major.minor.patch, as in npm.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import total_ordering

_VERSION = re.compile(
    r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$"
)
_PARTIAL = re.compile(r"^v?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:-([0-9A-Za-z.-]+))?$")
_COMPARATOR = re.compile(r"^(\^|~|>=|<=|>|<|=)?\s*(.+)$")


class RangeError(ValueError):
    """A version or range that cannot be parsed."""


@total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    prerelease: tuple[int | str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Version:
        match = _VERSION.match(text.strip())
        if not match:
            raise RangeError(f"{text!r} is not a semantic version (MAJOR.MINOR.PATCH)")
        major, minor, patch, pre = match.groups()
        return cls(int(major), int(minor), int(patch), _prerelease(pre))

    def _key(self) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
        # A release sorts after its pre-releases; numeric identifiers sort before alphanumeric ones.
        pre = tuple((0, p) if isinstance(p, int) else (1, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def __str__(self) -> str:
        core = f"{self.major}.{self.minor}.{self.patch}"
        return core + ("-" + ".".join(str(p) for p in self.prerelease) if self.prerelease else "")


def _prerelease(text: str | None) -> tuple[int | str, ...]:
    if not text:
        return ()
    return tuple(int(p) if p.isdigit() else p for p in text.split("."))


@dataclass(frozen=True)
class _Bound:
    op: str  # one of >=, >, <=, <, =
    version: Version

    def holds(self, v: Version) -> bool:
        if self.op == ">=":
            return v >= self.version
        if self.op == ">":
            return v > self.version
        if self.op == "<=":
            return v <= self.version
        if self.op == "<":
            return v < self.version
        return v == self.version


@dataclass(frozen=True)
class Range:
    """A parsed range: alternatives (`||`) of conjunctions of bounds."""

    text: str
    alternatives: tuple[tuple[_Bound, ...], ...]

    @classmethod
    def parse(cls, text: str) -> Range:
        stripped = text.strip()
        if not stripped:
            raise RangeError("an empty version range")
        alternatives = tuple(_conjunction(part) for part in stripped.split("||"))
        return cls(stripped, alternatives)

    def matches(self, version: Version) -> bool:
        return any(self._allows(bounds, version) for bounds in self.alternatives)

    def best(self, versions: Iterable[Version]) -> Version | None:
        """The highest of `versions` that the range allows."""
        allowed = [v for v in versions if self.matches(v)]
        return max(allowed) if allowed else None

    @staticmethod
    def _allows(bounds: tuple[_Bound, ...], version: Version) -> bool:
        if not all(b.holds(version) for b in bounds):
            return False
        if not version.prerelease:
            return True
        same_core = (version.major, version.minor, version.patch)
        return any(
            b.version.prerelease and (b.version.major, b.version.minor, b.version.patch) == same_core
            for b in bounds
        )


def _conjunction(text: str) -> tuple[_Bound, ...]:
    tokens = re.sub(r"(>=|<=|>|<|=|\^|~)\s+", r"\1", text.strip()).split()
    if not tokens:
        raise RangeError(f"{text!r} is an empty alternative")
    bounds: list[_Bound] = []
    for token in tokens:
        bounds.extend(_comparator(token))
    return tuple(bounds)


def _comparator(token: str) -> list[_Bound]:
    match = _COMPARATOR.match(token)
    if not match:
        raise RangeError(f"{token!r} is not a version comparator")
    op, rest = match.group(1) or "", match.group(2)
    partial = _PARTIAL.match(rest)
    if not partial:
        raise RangeError(f"{rest!r} is not a version")
    parts = [None if p is None or p in "xX*" else int(p) for p in partial.groups()[:3]]
    pre = _prerelease(partial.group(4))
    return _expand(op, parts, pre, token)


def _expand(op: str, parts: list[int | None], pre: tuple[int | str, ...], token: str) -> list[_Bound]:
    major, minor, patch = parts
    if major is None:
        if op in ("", "=", ">=", "<=", "^", "~"):
            return [_Bound(">=", Version(0, 0, 0))]
        raise RangeError(f"{token!r} compares with a wildcard")
    low = Version(major, minor or 0, patch or 0, pre)
    if op in ("", "=") and minor is not None and patch is not None:
        return [_Bound("=", low)]
    if op in ("", "=") or (op == "~" and (minor is None or patch is None)):
        return [_Bound(">=", low), _Bound("<", _next(major, minor))]
    if op == "~":
        return [_Bound(">=", low), _Bound("<", Version(major, (minor or 0) + 1, 0, (0,)))]
    if op == "^":
        return [_Bound(">=", low), _Bound("<", _caret_limit(major, minor, patch))]
    return _compare(op, major, minor, patch, low)


def _next(major: int, minor: int | None) -> Version:
    """The lowest version above a partial one (`1` -> 2.0.0-0, `1.4` -> 1.5.0-0)."""
    if minor is None:
        return Version(major + 1, 0, 0, (0,))
    return Version(major, minor + 1, 0, (0,))


def _caret_limit(major: int, minor: int | None, patch: int | None) -> Version:
    if major > 0 or minor is None:
        return Version(major + 1, 0, 0, (0,))
    if minor > 0 or patch is None:
        return Version(0, minor + 1, 0, (0,))
    return Version(0, 0, patch + 1, (0,))


def _compare(op: str, major: int, minor: int | None, patch: int | None, low: Version) -> list[_Bound]:
    exact = minor is not None and patch is not None
    if op == ">" and not exact:
        return [_Bound(">=", _next(major, minor))]
    if op == "<=" and not exact:
        return [_Bound("<", _next(major, minor))]
    if op == "<" and not exact:
        return [_Bound("<", Version(low.major, low.minor, low.patch, (0,)))]
    return [_Bound(op, low)]


def is_exact(text: str) -> bool:
    """Whether `text` names one version rather than a range."""
    return bool(_VERSION.match(text.strip().lstrip("=")))
