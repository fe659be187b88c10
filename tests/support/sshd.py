"""A real OpenSSH server on 127.0.0.1 for tests: its own host key, client key and known_hosts."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
SERVER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class SshServer:
    """A running sshd: where it listens and the client's key and known_hosts."""

    port: int
    client_key: Path
    known_hosts: Path
    host_key: Path
    log: Path

    def url(self, path: Path | str) -> str:
        """The ssh:// URL of an absolute path on this server."""
        return f"ssh://root@127.0.0.1:{self.port}{Path(path).resolve()}"

    def known_hosts_line(self, public_key: Path | None = None) -> str:
        """A known_hosts line for this server, with its own or another public key."""
        key = (public_key or self.host_key.with_suffix(".pub")).read_text().split()
        return f"[127.0.0.1]:{self.port} {key[0]} {key[1]}\n"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def keygen(path: Path, *, kind: str = "ed25519") -> Path:
    """Generate an unencrypted key pair at `path` (and `path`.pub)."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "plumb-test", "-f", str(path)], check=True
    )
    return path


def _config(directory: Path, port: int, host_key: Path, authorized: Path) -> Path:
    config = directory / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {directory / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\nUsePAM no\nPermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"StrictModes no\nSetEnv PATH={SERVER_PATH}\nLogLevel VERBOSE\n"
    )
    return config


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(800):
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with {process.returncode}: {log.read_text(errors='replace')}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.025)
    raise RuntimeError(f"sshd did not listen on {port}: {log.read_text(errors='replace')}")


@contextlib.contextmanager
def running_sshd(directory: Path) -> Iterator[SshServer]:
    """Start `sshd -D` on a free loopback port under `directory`; stop it on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    host_key = keygen(directory / "host_ed25519")
    client_key = keygen(directory / "client_ed25519")
    authorized = directory / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    port = free_port()
    log = directory / "sshd.log"
    config = _config(directory, port, host_key, authorized)
    process = subprocess.Popen([SSHD, "-D", "-f", str(config), "-E", str(log)])
    try:
        _wait_listening(port, process, log)
        server = SshServer(port, client_key, directory / "known_hosts", host_key, log)
        server.known_hosts.write_text(server.known_hosts_line())
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
