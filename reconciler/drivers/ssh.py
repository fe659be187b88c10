"""A host over SSH (paramiko) for `plumb bootstrap`: pinned host key, commands, files.

The host key is checked against a known_hosts file with the same rules as the Git transport
(`contract.transport.knownhosts`): an unknown or changed key is refused with its fingerprint and
what to do, before any credential is sent. Commands run through `sh -c` (under `sudo -n` when asked);
their failures carry the command, its exit status and its last line of output.
"""

from __future__ import annotations

import base64
import io
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from contract.errors import TemporaryError, UsageError
from contract.transport import knownhosts

DEFAULT_KNOWN_HOSTS = Path.home() / ".ssh" / "known_hosts"


class HostKeyRefused(UsageError):
    """The host's key is not the one known_hosts pins (or there is none)."""


@dataclass(frozen=True)
class Target:
    """`[USER@]HOST[:PORT]` as given on the command line."""

    user: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Target:
        user, _, rest = text.rpartition("@")
        host, port = rest, 22
        if rest.startswith("["):  # [v6::addr]:port
            host, _, tail = rest[1:].partition("]")
            port = int(tail[1:]) if tail.startswith(":") and tail[1:].isdigit() else 22
        elif rest.count(":") == 1:
            host, _, number = rest.partition(":")
            if not number.isdigit():
                raise UsageError(f"{text}: the port must be a number")
            port = int(number)
        if not host:
            raise UsageError(f"{text}: no host name")
        return cls(user or "root", host, port)

    def __str__(self) -> str:
        return f"{self.user}@{knownhosts.host_token(self.host, self.port)}"


@dataclass(frozen=True)
class Result:
    status: int
    output: str


class _Pinned(paramiko.MissingHostKeyPolicy):
    """Accept only the key known_hosts pins for this host and port."""

    def __init__(self, target: Target, known_hosts: Path) -> None:
        self.target, self.known_hosts = target, known_hosts

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        try:
            entries = knownhosts.parse(self.known_hosts.read_text())
        except OSError:
            entries = ()
        sha256 = knownhosts.fingerprint(key.asbytes())
        found = knownhosts.verdict(entries, host=self.target.host, port=self.target.port, sha256=sha256)
        if found is knownhosts.HostKeyVerdict.TRUSTED:
            return
        shown = "SHA256:" + base64.b64encode(sha256).decode().rstrip("=")
        token = knownhosts.host_token(self.target.host, self.target.port)
        how = (
            f"check it with the host's console (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then "
            f"add `{token} {key.get_name()} {key.get_base64()}` to {self.known_hosts}"
        )
        if found is knownhosts.HostKeyVerdict.UNKNOWN:
            raise HostKeyRefused(f"{token}: unknown host key {shown}; {how}")
        raise HostKeyRefused(
            f"{token}: host key {shown} is not the one pinned in {self.known_hosts} ({found.value}); "
            "refusing to connect (if the host was reinstalled, replace its line)"
        )


class Host:
    """One SSH connection to a host being bootstrapped."""

    def __init__(
        self, target: Target, *, identity: Path | None, known_hosts: Path, sudo: bool = False
    ) -> None:
        self.target, self.sudo = target, sudo
        self.client = paramiko.SSHClient()
        self.client.set_missing_host_key_policy(_Pinned(target, known_hosts))
        try:
            self.client.connect(
                target.host,
                port=target.port,
                username=target.user,
                key_filename=str(identity) if identity else None,
                look_for_keys=identity is None,
                allow_agent=identity is None,
                timeout=15,
                auth_timeout=15,
                banner_timeout=15,
            )
        except HostKeyRefused:
            raise
        except paramiko.AuthenticationException as exc:
            raise UsageError(
                f"{target}: authentication failed ({exc}); check --identity and the user"
            ) from exc
        except (TimeoutError, paramiko.SSHException, OSError) as exc:
            raise TemporaryError(f"{target}: cannot connect: {exc}") from exc

    def close(self) -> None:
        self.client.close()

    def run(
        self, command: str, *, check: bool = True, stdin: str | None = None, as_login: bool = False
    ) -> Result:
        """`command` in `sh -c` on the host (as root through `sudo -n` with --sudo, unless `as_login`)."""
        wrapped = f"sh -c {shlex.quote(command)}"
        if self.sudo and not as_login:
            wrapped = f"sudo -n {wrapped}"
        channel_in, channel_out, _ = self.client.exec_command(wrapped + " 2>&1", timeout=600)
        if stdin is not None:
            channel_in.write(stdin)
        channel_in.channel.shutdown_write()
        output = channel_out.read().decode(errors="replace")
        status = channel_out.channel.recv_exit_status()
        if check and status != 0:
            last = output.strip().splitlines()[-1] if output.strip() else "no output"
            raise TemporaryError(f"`{command}` exited with {status}: {last}")
        return Result(status, output)

    def put(self, data: bytes, path: str, *, mode: int = 0o644) -> None:
        """Write `data` to `path` on the host, as root: uploaded into a directory only the login user
        can enter (mktemp -d, 0700), so no other local user can swap the file before it is installed."""
        private = self.run("mktemp -d /tmp/plumb-bootstrap.XXXXXXXX", as_login=True).output.strip()
        staging = f"{private}/{Path(path).name}"
        try:
            sftp = self.client.open_sftp()
            try:
                sftp.putfo(io.BytesIO(data), staging)
            finally:
                sftp.close()
            self.run(f"install -D -m {mode:o} {shlex.quote(staging)} {shlex.quote(path)}")
        finally:
            self.run(f"rm -rf {shlex.quote(private)}", check=False, as_login=True)
