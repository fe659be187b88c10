"""One small Git transport over pygit2 for file://, ssh:// and https:// remotes (and plain paths).

    PermanentError
    └── HostKeyError        the SSH server's host key is unknown, changed or revoked
    TemporaryError
    └── PushRejected        the remote refused a ref update (stale, non-fast-forward, hook)

Every other pygit2 failure (unreachable host, refused connection, broken pipe) becomes a
TemporaryError naming the remote. SSH host keys are pinned against a known_hosts file: libgit2
hands the presented key to `certificate_check`, which pygit2 1.x does not pass on, so this module
reads it from the raw `git_cert_hostkey` (see `_presented_sha256`) and fails closed when it cannot.
A remote is anonymous: nothing is written to the local repository's config.
"""

from __future__ import annotations

import base64
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pygit2
from pygit2.ffi import ffi

from contract.errors import PermanentError, PushRejected, TemporaryError
from contract.transport import knownhosts

# libgit2's wording when it refuses a push itself (a local remote, or a tip it already knows moved).
_REJECTION_SIGNS = ("fast-forward", "fastforward", "rejected", "not present locally")
_SCP_LIKE = re.compile(r"^(?P<user>[A-Za-z0-9._-]+@)?(?P<host>[A-Za-z0-9._-]+):(?P<path>[^/].*|/.*)$")

# Layout of libgit2's git_cert_hostkey (libgit2 >= 1.2), which pygit2's cdef declares only in part:
# cert_type:int@0, type:int@4, md5[16]@8, sha1[20]@24, sha256[32]@44, raw_type:int@76,
# hostkey:char*@80, hostkey_len:size_t@88.
_CERT_HOSTKEY_LIBSSH2 = 2
_SSH_SHA256 = 1 << 2
_SSH_RAW = 1 << 3


class HostKeyError(PermanentError):
    """The SSH server presented a host key that is not pinned in known_hosts."""


@dataclass(frozen=True)
class Endpoint:
    """Where a remote URL points: its transport, host, port and user (for SSH)."""

    scheme: str
    url: str
    host: str = ""
    port: int = 22
    user: str = ""


def parse_url(url: str) -> Endpoint:
    """Classify a remote URL; a plain path is a local repository."""
    if "://" not in url:
        scp = _SCP_LIKE.match(url)
        if scp and not url.startswith("/"):
            user = (scp.group("user") or "git@")[:-1]
            return Endpoint("ssh", url, scp.group("host"), 22, user)
        return Endpoint("file", str(Path(url).absolute()))
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return Endpoint("file", url)
    if scheme in ("ssh", "git+ssh", "ssh+git"):
        return Endpoint("ssh", url, parts.hostname or "", parts.port or 22, parts.username or "git")
    if scheme in ("https", "http"):
        return Endpoint(scheme, url, parts.hostname or "", parts.port or (443 if scheme == "https" else 80))
    raise PermanentError(f"{url}: unsupported remote scheme {scheme!r} (use file, ssh or https)")


def _presented_sha256(cert: Any) -> bytes | None:
    """The SHA-256 fingerprint of the host key libgit2 was shown, or None if not available."""
    if cert is None or int(cert.cert_type) != _CERT_HOSTKEY_LIBSSH2:
        return None
    raw = ffi.cast("unsigned char *", cert)
    kinds = int(ffi.cast("int *", raw + 4)[0])
    if kinds & _SSH_RAW:
        pointer = ffi.cast("char **", raw + 80)[0]
        length = int(ffi.cast("size_t *", raw + 88)[0])
        return knownhosts.fingerprint(bytes(ffi.buffer(pointer, length)))
    if kinds & _SSH_SHA256:
        return bytes(ffi.buffer(raw + 44, 32))
    return None


class _Callbacks(pygit2.RemoteCallbacks):
    """Credentials, host-key pinning and push results for one operation."""

    def __init__(self, endpoint: Endpoint, ssh_key: Path | None, known_hosts: Path | None) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.ssh_key = ssh_key
        self.known_hosts = known_hosts
        self.rejected: dict[str, str] = {}
        self.credential_calls = 0

    def credentials(self, url: str, username_from_url: str | None, allowed_types: int) -> Any:
        self.credential_calls += 1
        if self.endpoint.scheme != "ssh":
            raise PermanentError(f"{self.endpoint.url}: the remote asks for credentials; none are configured")
        if self.ssh_key is None:
            raise PermanentError(f"{self.endpoint.url}: an SSH remote needs a private key (--ssh-key)")
        if self.credential_calls > 1:
            raise PermanentError(f"{self.endpoint.url}: the server refused the SSH key {self.ssh_key}")
        user = username_from_url or self.endpoint.user
        public = self.ssh_key.with_name(self.ssh_key.name + ".pub")
        return pygit2.Keypair(user, str(public) if public.exists() else None, str(self.ssh_key), "")

    def certificate_check(self, certificate: None, valid: bool, host: bytes) -> bool:
        if self.endpoint.scheme != "ssh":
            return valid
        # pygit2 passes None for the certificate; its C callback's frame holds the real one.
        presented = _presented_sha256(sys._getframe(1).f_locals.get("cert_i"))
        self._check_host_key(presented)
        return True

    def _check_host_key(self, presented: bytes | None) -> None:
        where = f"{self.endpoint.host} port {self.endpoint.port}"
        if presented is None:
            raise HostKeyError(f"{where}: cannot read the server's host key, refusing to connect")
        if self.known_hosts is None:
            raise HostKeyError(f"{where}: no known_hosts file is pinned, refusing an unverified host key")
        try:
            entries = knownhosts.parse(self.known_hosts.read_text())
        except OSError as exc:
            raise HostKeyError(f"{self.known_hosts}: cannot read known_hosts: {exc.strerror}") from exc
        verdict = knownhosts.verdict(
            entries, host=self.endpoint.host, port=self.endpoint.port, sha256=presented
        )
        if verdict is not knownhosts.HostKeyVerdict.TRUSTED:
            raise HostKeyError(_host_key_message(verdict, where, self.known_hosts, presented))

    def push_update_reference(self, refname: str, message: str | None) -> None:
        if message is not None:
            self.rejected[refname] = message


def _host_key_message(verdict: knownhosts.HostKeyVerdict, where: str, file: Path, sha256: bytes) -> str:
    shown = "SHA256:" + base64.b64encode(sha256).decode().rstrip("=")
    reasons = {
        knownhosts.HostKeyVerdict.UNKNOWN: "is not in",
        knownhosts.HostKeyVerdict.CHANGED: "does not match the key pinned for this host in",
        knownhosts.HostKeyVerdict.REVOKED: "is marked @revoked in",
    }
    return f"{where}: host key {shown} {reasons[verdict]} {file}; refusing to connect"


def _is_rejection(exc: pygit2.GitError) -> bool:
    text = str(exc).lower()
    return any(sign in text for sign in _REJECTION_SIGNS)


class Remote:
    """A Git remote reached by URL: fetch, push and list refs, with SSH host-key pinning."""

    def __init__(self, url: str, *, ssh_key: Path | None = None, known_hosts: Path | None = None) -> None:
        self.endpoint = parse_url(url)
        self.url = url
        self.ssh_key = ssh_key
        self.known_hosts = known_hosts

    def _callbacks(self) -> _Callbacks:
        return _Callbacks(self.endpoint, self.ssh_key, self.known_hosts)

    def local_path(self) -> Path | None:
        """The repository's directory when the remote is on this machine (file:// or a path)."""
        if self.endpoint.scheme != "file":
            return None
        url = self.endpoint.url
        return Path(unquote(urlsplit(url).path)) if url.startswith("file://") else Path(url)

    def _anonymous(self, repo: pygit2.Repository) -> Any:
        return repo.remotes.create_anonymous(self.endpoint.url)

    def fetch(self, repo: pygit2.Repository, refspecs: Sequence[str]) -> None:
        """Fetch `refspecs`; TemporaryError when the remote cannot be reached."""
        try:
            self._anonymous(repo).fetch(list(refspecs), callbacks=self._callbacks())
        except pygit2.GitError as exc:
            raise TemporaryError(f"{self.url}: fetch failed: {exc}") from exc

    def push(self, repo: pygit2.Repository, refspecs: Sequence[str]) -> None:
        """Push `refspecs`; PushRejected when the remote refuses an update."""
        callbacks = self._callbacks()
        try:
            self._anonymous(repo).push(list(refspecs), callbacks=callbacks)
        except pygit2.GitError as exc:
            if _is_rejection(exc):
                raise PushRejected(f"{self.url}: push rejected: {exc}") from exc
            raise TemporaryError(f"{self.url}: push failed: {exc}") from exc
        if callbacks.rejected:
            details = ", ".join(f"{ref}: {why}" for ref, why in sorted(callbacks.rejected.items()))
            raise PushRejected(f"{self.url}: push rejected: {details}")

    def list_refs(self, repo: pygit2.Repository) -> dict[str, str]:
        """The remote's refs (name -> commit id hex), without fetching objects."""
        try:
            heads = self._anonymous(repo).list_heads(callbacks=self._callbacks())
        except pygit2.GitError as exc:
            raise TemporaryError(f"{self.url}: listing refs failed: {exc}") from exc
        return {head.name: str(head.oid) for head in heads if head.name}
