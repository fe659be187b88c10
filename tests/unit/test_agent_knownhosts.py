"""known_hosts parsing and host-key verdicts, and remote URL classification (pure)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from contract.transport import knownhosts
from contract.transport.gitremote import Endpoint, parse_url
from contract.transport.knownhosts import HostKeyVerdict

KEY_A = b"\x00\x00\x00\x0bssh-ed25519" + b"A" * 36
KEY_B = b"\x00\x00\x00\x0bssh-ed25519" + b"B" * 36
A64 = base64.b64encode(KEY_A).decode()
B64 = base64.b64encode(KEY_B).decode()
SALT = b"0123456789abcdefghij"


def hashed(token: str) -> str:
    digest = hmac.new(SALT, token.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(SALT).decode()}|{base64.b64encode(digest).decode()}"


VERDICTS = [
    # (known_hosts text, host, port, presented key, verdict)
    (f"[127.0.0.1]:2222 ssh-ed25519 {A64}\n", "127.0.0.1", 2222, KEY_A, HostKeyVerdict.TRUSTED),
    (f"[127.0.0.1]:2222 ssh-ed25519 {A64}\n", "127.0.0.1", 2222, KEY_B, HostKeyVerdict.CHANGED),
    (f"[127.0.0.1]:2222 ssh-ed25519 {A64}\n", "127.0.0.1", 22, KEY_A, HostKeyVerdict.UNKNOWN),
    (f"127.0.0.1 ssh-ed25519 {A64}\n", "127.0.0.1", 22, KEY_A, HostKeyVerdict.TRUSTED),
    (f"git.example.com,10.0.0.1 ssh-ed25519 {A64}\n", "10.0.0.1", 22, KEY_A, HostKeyVerdict.TRUSTED),
    (
        f"{hashed('[git.example.com]:2200')} ssh-ed25519 {A64}\n",
        "git.example.com",
        2200,
        KEY_A,
        HostKeyVerdict.TRUSTED,
    ),
    (
        f"{hashed('git.example.com')} ssh-ed25519 {A64}\n",
        "git.example.com",
        2200,
        KEY_A,
        HostKeyVerdict.UNKNOWN,
    ),
    (f"# comment\n\n@cert-authority * ssh-ed25519 {A64}\n", "h", 22, KEY_A, HostKeyVerdict.UNKNOWN),
    (f"h ssh-ed25519 {A64}\n@revoked * ssh-ed25519 {A64}\n", "h", 22, KEY_A, HostKeyVerdict.REVOKED),
    (f"h ssh-ed25519 {A64}\nh ssh-ed25519 {B64}\n", "h", 22, KEY_B, HostKeyVerdict.TRUSTED),
    ("h ssh-ed25519 not-base64!\n", "h", 22, KEY_A, HostKeyVerdict.UNKNOWN),
    ("", "h", 22, KEY_A, HostKeyVerdict.UNKNOWN),
]


@pytest.mark.parametrize(("text", "host", "port", "key", "expected"), VERDICTS)
def test_verdict(text: str, host: str, port: int, key: bytes, expected: HostKeyVerdict) -> None:
    """The presented key is trusted only when pinned for exactly this host and port."""
    entries = knownhosts.parse(text)
    sha256 = knownhosts.fingerprint(key)
    assert knownhosts.verdict(entries, host=host, port=port, sha256=sha256) is expected


URLS = [
    ("file:///srv/git/fleet.git", Endpoint("file", "file:///srv/git/fleet.git")),
    ("/srv/git/fleet.git", Endpoint("file", "/srv/git/fleet.git")),
    (
        "ssh://root@127.0.0.1:2222/srv/f.git",
        Endpoint("ssh", "ssh://root@127.0.0.1:2222/srv/f.git", "127.0.0.1", 2222, "root"),
    ),
    (
        "ssh://git.example.com/f.git",
        Endpoint("ssh", "ssh://git.example.com/f.git", "git.example.com", 22, "git"),
    ),
    (
        "git@github.com:org/fleet.git",
        Endpoint("ssh", "git@github.com:org/fleet.git", "github.com", 22, "git"),
    ),
    (
        "https://git.example.com/f.git",
        Endpoint("https", "https://git.example.com/f.git", "git.example.com", 443),
    ),
]


@pytest.mark.parametrize(("url", "expected"), URLS)
def test_parse_url(url: str, expected: Endpoint) -> None:
    """Each URL form maps to its transport, host, port and user."""
    assert parse_url(url) == expected
