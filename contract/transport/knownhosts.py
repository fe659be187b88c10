"""Parse an OpenSSH known_hosts file and decide whether a presented host key is the pinned one.

Pure: takes text and bytes, returns values. Supports plain and hashed (`|1|salt|hmac`) host
patterns, `[host]:port` for non-standard ports, comma-separated patterns and the `@revoked`
marker; `@cert-authority` lines and negated or wildcard patterns are ignored (never trusted).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum


class HostKeyVerdict(StrEnum):
    """What known_hosts says about a presented key."""

    TRUSTED = "trusted"
    UNKNOWN = "unknown"  # no entry for this host at all
    CHANGED = "changed"  # entries exist for this host, none with this key
    REVOKED = "revoked"


@dataclass(frozen=True)
class KnownHost:
    """One usable known_hosts entry."""

    patterns: tuple[str, ...]
    key_type: str
    blob: bytes
    revoked: bool = False


def host_token(host: str, port: int) -> str:
    """The name known_hosts uses for `host` on `port`."""
    return host if port == 22 else f"[{host}]:{port}"


def _decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.encode(), validate=True)
    except (binascii.Error, ValueError):
        return None


def parse_line(line: str) -> KnownHost | None:
    """Parse one known_hosts line; None for comments, blanks, CA lines and malformed lines."""
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return None
    revoked = fields[0] == "@revoked"
    if fields[0].startswith("@") and not revoked:
        return None
    fields = fields[1:] if revoked else fields
    if len(fields) < 3:
        return None
    blob = _decode(fields[2])
    if blob is None:
        return None
    return KnownHost(tuple(fields[0].split(",")), fields[1], blob, revoked)


def parse(text: str) -> tuple[KnownHost, ...]:
    """Parse a whole known_hosts file, skipping what cannot be used."""
    return tuple(entry for entry in map(parse_line, text.splitlines()) if entry is not None)


def _pattern_matches(pattern: str, token: str) -> bool:
    if pattern.startswith("|1|"):
        parts = pattern.split("|")
        salt, digest = (_decode(parts[2]), _decode(parts[3])) if len(parts) == 4 else (None, None)
        if salt is None or digest is None:
            return False
        return hmac.compare_digest(hmac.new(salt, token.encode(), hashlib.sha1).digest(), digest)
    return pattern == token


def matches_host(entry: KnownHost, token: str) -> bool:
    """Whether `entry` names the host `token` (as made by `host_token`)."""
    return any(_pattern_matches(pattern, token) for pattern in entry.patterns)


def fingerprint(blob: bytes) -> bytes:
    """The SHA-256 fingerprint of a public key blob (what `ssh-keygen -l` shows, unencoded)."""
    return hashlib.sha256(blob).digest()


def verdict(entries: tuple[KnownHost, ...], *, host: str, port: int, sha256: bytes) -> HostKeyVerdict:
    """Compare the SHA-256 fingerprint of the key a server presented with the pinned entries."""
    token = host_token(host, port)
    if any(e.revoked and fingerprint(e.blob) == sha256 for e in entries):
        return HostKeyVerdict.REVOKED
    pinned = [e for e in entries if not e.revoked and matches_host(e, token)]
    if not pinned:
        return HostKeyVerdict.UNKNOWN
    if any(hmac.compare_digest(fingerprint(e.blob), sha256) for e in pinned):
        return HostKeyVerdict.TRUSTED
    return HostKeyVerdict.CHANGED
