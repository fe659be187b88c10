"""`HostLab`: Debian containers with systemd as PID 1 on a private bridge, for tests on real hosts.

Each node is `systemd-nspawn --boot` over an overlay of the cached base (`tests.hosts.base`, built by
`make hosts-base`): the base is the read-only lower layer and the node's changes land in an upper
directory of its own, which `restart()` keeps, so a restarted node is a rebooted machine.

    lab = HostLab(directory)                     # claims 10.231.N.0/24 and its bridge (the host is .1)
    node = lab.boot("web-1")                     # its own netns, address, machine-id, SSH host key
    node.wait_running()                          # "running", or "degraded" (see node.failed_units())
    node.run(["systemctl", "is-active", "nginx"])   # inside the node, through nsenter
    ssh -i lab.client_key -o UserKnownHostsFile=lab.known_hosts root@node.address
    node.restart()                               # power off and boot again on the same upper layer
    lab.close()                                  # nspawn, mounts, netns, veths, bridge, cgroups: all gone

How it is put together, and why (measured on a 2-core Debian 12 machine with no systemd on the host):

- The overlay mount takes milliseconds where `--ephemeral` copies the whole tree (~6 s).
- `--register=no --keep-unit`: there is no machined to register with. nspawn then puts the container
  under `payload/` of the cgroup it was started in, so each node's nspawn is started in a cgroup of its
  own (a shell writes its pid into the node's `cgroup.procs`, then execs nspawn); two nodes in one
  cgroup would share `payload/`. The node's cgroup also gives `stop()` a way to kill what is left.
- `machinectl`, `systemctl -M` and `systemd-run --machine` need systemd on the host, so commands run
  through `nsenter -t <container PID 1> -a` (PID 1 is the child of nspawn in another pid namespace),
  or over SSH.
- The network is the lab's: a bridge with the host's address, and per node a network namespace whose
  veth is on the bridge, with one connected route. No default route and no NAT, so a node reaches the
  host's bridge address, the other nodes and its loopback, and nothing else. A free /24 is claimed by
  creating its bridge (`plumb-hlN` for 10.231.N.0/24), so two labs on one machine do not collide.
- Identity is written into the upper layer at the first boot: machine-id, hostname, `/etc/hosts`, an
  ed25519 SSH host key (the base has none), and root's `authorized_keys` with the lab's client key.

Figures on that machine (`make hosts-base`, `make hosts-bench`): building the base 60-105 s once (373 MB
in the cache), finding it cached 0.1 ms; boot to `running` 0.4-1.1 s per node, restart to `running`
0.6-1.6 s, closing a lab of three 0.8-1.4 s; an idle node (systemd, journald, dbus, logind, sshd, nginx,
getty) 19-20 MiB of PSS.

Commands run through `run()` are in the node's namespaces but not in its cgroup: use `systemd-run`
inside the node for anything that must be accounted to it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.hosts.base import cached_base, recipe_key
from tests.support.sshd import keygen

TOOLS = ("systemd-nspawn", "nsenter", "ip", "mount", "umount", "ssh-keygen")
CGROUP = Path("/sys/fs/cgroup")
NSPAWN_RUN = Path("/run/systemd/nspawn")
NETWORK = "10.231"
SUBNETS = range(7, 39)  # third octets the harness may claim, one per lab
NAME = re.compile(r"[a-z][a-z0-9-]{0,19}")
NODE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
}
# A node has booted when systemd says so; these are the answers of a finished boot.
BOOTED = ("running", "degraded")


class HostLabError(RuntimeError):
    """A node could not be booted, reached or torn down; the message names the node and the step."""


def unavailable_reason() -> str | None:
    """Why containers cannot run here (for a test to skip with), or None when they can."""
    if os.geteuid() != 0:
        return "needs root (mounts, network namespaces, systemd-nspawn)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install systemd-container iproute2 openssh-client)"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlay file system"
    if not _hierarchies():
        return "no cgroup v2 hierarchy (neither unified nor hybrid) under /sys/fs/cgroup"
    if cached_base() is None:
        return f"no base image for recipe {recipe_key()}: run `make hosts-base` (needs a Debian mirror)"
    return None


# cgroups


@dataclass(frozen=True)
class _Hierarchy:
    """A mounted cgroup hierarchy nspawn cares about, and how /proc/self/cgroup names it."""

    mount: Path
    controllers: str  # the middle field of /proc/<pid>/cgroup: "" for v2, "name=systemd" for v1's


def _hierarchies() -> list[_Hierarchy]:
    if (CGROUP / "cgroup.controllers").exists():
        return [_Hierarchy(CGROUP, "")]
    hybrid = [_Hierarchy(CGROUP / "systemd", "name=systemd"), _Hierarchy(CGROUP / "unified", "")]
    return hybrid if all((h.mount / "cgroup.procs").exists() for h in hybrid) else []


def _own_cgroups() -> list[Path]:
    """The cgroup this process is in, in each hierarchy: the lab's cgroups are made below them."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    paths = {controllers: path for _, controllers, path in (line.split(":", 2) for line in lines)}
    return [h.mount / paths[h.controllers].lstrip("/") for h in _hierarchies()]


def _unified(cgroups: Sequence[Path]) -> Path:
    """The cgroup v2 one of a node's cgroups (the last: see `_hierarchies`)."""
    return cgroups[-1]


def _remove_cgroup(top: Path, *, timeout: float = 5.0) -> None:
    # A cgroup is removable once its processes are reaped, which the kernel reports a moment later.
    deadline = time.monotonic() + timeout
    while top.exists():
        try:
            for directory, _, _ in os.walk(top, topdown=False):
                os.rmdir(directory)
        except OSError as exc:
            if time.monotonic() > deadline:
                raise HostLabError(f"cannot remove cgroup {top}: {exc}") from exc
            time.sleep(0.05)


def _pids(cgroup: Path) -> list[int]:
    """Every process in `cgroup` and below it."""
    pids = []
    for procs in cgroup.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            pids += [int(pid) for pid in procs.read_text().split()]
    return pids


# network


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise HostLabError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def _netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


@dataclass(frozen=True)
class Subnet:
    """One lab's /24: its bridge holds .1 for the host, nodes get .2 upwards in boot order."""

    index: int

    @property
    def bridge(self) -> str:
        return f"plumb-hl{self.index}"

    @property
    def gateway(self) -> str:
        return f"{NETWORK}.{self.index}.1"

    @property
    def cidr(self) -> str:
        return f"{NETWORK}.{self.index}.0/24"

    def address(self, slot: int) -> str:
        return f"{NETWORK}.{self.index}.{slot + 2}"

    def veth(self, slot: int) -> str:
        return f"plumb{self.index}v{slot}"  # interface names have at most 15 characters

    def netns(self, node: str) -> str:
        return f"{self.bridge}-{node}"


def _claim_subnet() -> Subnet:
    """The first /24 no route uses and no other lab holds, claimed by creating its bridge."""
    for index in SUBNETS:
        subnet = Subnet(index)
        if _ip("-4", "route", "show", "root", subnet.cidr).strip():
            continue
        created = subprocess.run(
            ["ip", "link", "add", "name", subnet.bridge, "type", "bridge"], capture_output=True
        )
        if created.returncode != 0:
            continue  # another lab holds it
        try:
            _ip("addr", "add", f"{subnet.gateway}/24", "dev", subnet.bridge)
            _ip("link", "set", subnet.bridge, "up")
        except HostLabError:
            _ip("link", "del", subnet.bridge)
            raise
        return subnet
    raise HostLabError(f"no free subnet among {NETWORK}.{SUBNETS.start}-{SUBNETS.stop - 1}.0/24")


# nodes


class TestHost:
    """One node of a `HostLab`: a booted container with systemd as PID 1, reached by nsenter or SSH."""

    __test__ = False  # a harness class, not a pytest test class

    ssh_port = 22

    def __init__(self, lab: HostLab, name: str, slot: int) -> None:
        self.name = name
        self.address = lab.subnet.address(slot)
        self.directory = lab.directory / "nodes" / name
        self.netns = lab.subnet.netns(name)
        self.veth = lab.subnet.veth(slot)
        self.cgroups = [cgroup / name for cgroup in lab.cgroups]
        self._lab = lab
        self._nspawn: subprocess.Popen[bytes] | None = None
        self._init_pid: int | None = None

    def __repr__(self) -> str:
        return f"TestHost({self.name!r}, {self.address}, {'running' if self.running else 'stopped'})"

    # where things are

    @property
    def root(self) -> Path:
        """The node's root file system as mounted on the host while it runs."""
        return self.directory / "root"

    @property
    def upper(self) -> Path:
        """What the node changed over the base; it survives `restart()`."""
        return self.directory / "upper"

    @property
    def console(self) -> Path:
        """The node's console output over all its boots."""
        return self.directory / "console.log"

    @property
    def host_key(self) -> str:
        """The node's SSH host public key ("ssh-ed25519 AAAA...")."""
        return (self.upper / "etc/ssh/ssh_host_ed25519_key.pub").read_text().strip()

    @property
    def running(self) -> bool:
        return self._nspawn is not None and self._nspawn.poll() is None

    @property
    def init_pid(self) -> int:
        """The host's pid of the node's PID 1."""
        if self._init_pid is None or not self.running:
            raise HostLabError(f"{self.name}: not running")
        return self._init_pid

    # commands

    def run(
        self, argv: Sequence[str], *, check: bool = False, timeout: float = 60.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside the node (all its namespaces, a clean environment); output as text."""
        done = subprocess.run(
            ["nsenter", "-t", str(self.init_pid), "-a", "--", *argv],
            capture_output=True,
            text=True,
            env=NODE_ENV,
            timeout=timeout,
            input=input,
        )
        if check and done.returncode != 0:
            raise HostLabError(
                f"{self.name}: {shlex.join(argv)} exited with {done.returncode}: {done.stderr}"
            )
        return done

    def wait_running(self, timeout: float = 60.0) -> str:
        """Wait for the boot to finish: "running", or "degraded" when units failed (`failed_units()`)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                state = self.run(["systemctl", "is-system-running", "--wait"], timeout=max(left, 0.1))
            except subprocess.TimeoutExpired:
                state = None
            answer = state.stdout.strip() if state else "no answer"
            if answer in BOOTED:
                return answer
            if time.monotonic() > deadline:
                raise HostLabError(
                    f"{self.name}: not booted after {timeout} s ({answer})\n{self.console_tail()}"
                )
            time.sleep(0.05)  # systemd's bus is not up yet

    def failed_units(self) -> list[str]:
        """The units systemd holds as failed."""
        listed = self.run(["systemctl", "list-units", "--failed", "--no-legend", "--plain"], check=True)
        return [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]

    def memory(self) -> int:
        """Bytes of memory the node's processes use (the sum of their PSS, so shared pages count once)."""
        return sum(_pss(pid) for pid in _pids(_unified(self.cgroups)))

    def console_tail(self, lines: int = 30) -> str:
        text = self.console.read_text(errors="replace") if self.console.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    # life cycle

    def restart(self, timeout: float = 30.0) -> None:
        """Power off and boot again on the same upper layer (state persists); then `wait_running()`."""
        self.stop(timeout)
        self._mount()
        self._launch()

    def stop(self, timeout: float = 30.0) -> None:
        """Power the node off, killing what has not stopped after `timeout`; its upper layer stays."""
        if self._nspawn is not None:
            self._halt(self._nspawn, timeout)
        self._nspawn = self._init_pid = None
        self._forget_nspawn_files()
        for cgroup in self.cgroups:
            _remove_cgroup(cgroup)
        self._unmount()

    def _halt(self, nspawn: subprocess.Popen[bytes], timeout: float) -> None:
        # nspawn --boot turns SIGTERM into an orderly poweroff of the container.
        if nspawn.poll() is None:
            nspawn.terminate()
        try:
            nspawn.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill()
            nspawn.kill()
            nspawn.wait(10)

    def _kill(self) -> None:
        # Killing PID 1 of a pid namespace kills all of it; cgroup.kill catches anything else of the node.
        if self._init_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._init_pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            (_unified(self.cgroups) / "cgroup.kill").write_text("1")

    def _forget_nspawn_files(self) -> None:
        # nspawn removes these when it exits by itself, not when it was killed.
        shutil.rmtree(NSPAWN_RUN / "propagate" / self.netns, ignore_errors=True)
        if _mounted(self.root):
            image = self.root.stat()
            (NSPAWN_RUN / "locks" / f"inode-{image.st_dev}:{image.st_ino}").unlink(missing_ok=True)

    # first boot, called by HostLab.boot

    def _create(self) -> None:
        for directory in (self.upper, self.directory / "work", self.root):
            directory.mkdir(parents=True)
        self._plug()

    def _plug(self) -> None:
        """The node's network namespace, its veth on the lab's bridge, its address and loopback."""
        _ip("netns", "add", self.netns)
        _ip("link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.netns)
        _ip("link", "set", self.veth, "master", self._lab.subnet.bridge, "up")
        _ip("-n", self.netns, "addr", "add", f"{self.address}/24", "dev", "eth0")
        _ip("-n", self.netns, "link", "set", "eth0", "up")
        _ip("-n", self.netns, "link", "set", "lo", "up")

    def _unplug(self) -> None:
        # The veth first: deleting one end deletes its peer at once, where a deleted netns releases
        # its interfaces later, in the background.
        if _link_exists(self.veth):
            _ip("link", "del", self.veth)
        if _netns_exists(self.netns):
            _ip("netns", "del", self.netns)

    def _write_identity(self) -> None:
        etc = self.root / "etc"
        (etc / "machine-id").write_text(uuid.uuid4().hex + "\n")
        (etc / "hostname").write_text(self.name + "\n")
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {self.name}\n::1 localhost\n")
        keygen(etc / "ssh/ssh_host_ed25519_key")
        ssh = self.root / "root/.ssh"
        ssh.mkdir(mode=0o700, exist_ok=True)
        (ssh / "authorized_keys").write_text(self._lab.client_key.with_suffix(".pub").read_text())
        (ssh / "authorized_keys").chmod(0o600)

    # every boot

    def _mount(self) -> None:
        layers = f"lowerdir={self._lab.base},upperdir={self.upper},workdir={self.directory / 'work'}"
        done = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", layers, str(self.root)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise HostLabError(f"{self.name}: cannot mount its overlay: {done.stderr.strip()}")

    def _unmount(self) -> None:
        if _mounted(self.root):
            done = subprocess.run(["umount", str(self.root)], capture_output=True, text=True)
            if done.returncode != 0:
                raise HostLabError(f"{self.name}: cannot unmount {self.root}: {done.stderr.strip()}")

    def _launch(self) -> None:
        for cgroup in self.cgroups:
            cgroup.mkdir(parents=True, exist_ok=True)
        # The shell moves itself into the node's cgroups, then becomes nspawn (same pid).
        procs = " ".join(shlex.quote(str(cgroup / "cgroup.procs")) for cgroup in self.cgroups)
        enter = f'for procs in {procs}; do echo $$ > "$procs" || exit 125; done; exec "$@"'
        with self.console.open("ab") as console:
            self._nspawn = subprocess.Popen(
                ["sh", "-c", enter, "plumb-node", *self._nspawn_argv()],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a ^C to the tests does not reach the node; close() stops it
            )
        self._init_pid = self._await_init(self._nspawn)

    def _nspawn_argv(self) -> list[str]:
        return [
            "systemd-nspawn",
            "--quiet",
            "--boot",
            "--register=no",
            "--keep-unit",
            f"--directory={self.root}",
            f"--machine={self.netns}",  # unique on the machine: it names nspawn's files under /run
            f"--hostname={self.name}",
            f"--network-namespace-path=/run/netns/{self.netns}",
            "--resolv-conf=off",
            "--timezone=off",
            "--link-journal=no",
            "--console=read-only",
        ]

    def _await_init(self, nspawn: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
        """The pid of the container's systemd: nspawn's child in another pid namespace."""
        ours = os.readlink("/proc/self/ns/pid")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if nspawn.poll() is not None:
                raise HostLabError(
                    f"{self.name}: systemd-nspawn exited with {nspawn.returncode}\n{self.console_tail()}"
                )
            for pid in _children(nspawn.pid):
                with contextlib.suppress(OSError):
                    elsewhere = os.readlink(f"/proc/{pid}/ns/pid") != ours
                    if elsewhere and Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                        return pid
            time.sleep(0.01)
        raise HostLabError(
            f"{self.name}: no systemd in the container after {timeout} s\n{self.console_tail()}"
        )


def _children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            children += [int(child) for child in (task / "children").read_text().split()]
    return children


def _pss(pid: int) -> int:
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0  # gone meanwhile, or a kernel thread
    found = re.search(r"^Pss:\s+(\d+) kB", rollup, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else 0


def _mounted(path: Path) -> bool:
    return any(line.split()[1] == str(path) for line in Path("/proc/mounts").read_text().splitlines())


# the lab


class HostLab:
    """Test hosts on one private bridge; `close()` (or leaving the `with` block) removes all of it."""

    def __init__(self, directory: Path, *, base: Path | None = None) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise HostLabError(reason)
        self.directory = directory
        self.base = base or _required(cached_base())
        self.hosts: dict[str, TestHost] = {}
        self.known_hosts = directory / "known_hosts"
        self.client_key = directory / "client_ed25519"
        self.subnet = _claim_subnet()
        self.cgroups = [own / self.subnet.bridge for own in _own_cgroups()]
        self._closed = False
        try:
            directory.mkdir(parents=True, exist_ok=True)
            keygen(self.client_key)
            self.known_hosts.write_text("")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> HostLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def boot(self, name: str) -> TestHost:
        """Create and boot a node; it has PID 1 when this returns: `wait_running()` for the rest."""
        if not NAME.fullmatch(name) or name in self.hosts:
            raise HostLabError(f"node name {name!r} is taken or not [a-z][a-z0-9-]{{0,19}}")
        if self._closed:
            raise HostLabError("the lab is closed")
        host = TestHost(self, name, slot=len(self.hosts))
        self.hosts[name] = host  # registered first, so close() also clears a half-made node
        host._create()
        host._mount()
        host._write_identity()
        with self.known_hosts.open("a") as known:
            known.write(f"{host.address} {host.host_key}\n")
        host._launch()
        return host

    def close(self) -> None:
        """Stop every node and remove what the lab made; every step is tried, and what failed is raised."""
        errors: list[BaseException] = []
        for host in self.hosts.values():
            _attempt(errors, host.stop)
            _attempt(errors, host._unplug)
        for cgroup in self.cgroups:
            _attempt(errors, functools.partial(_remove_cgroup, cgroup))
        if _link_exists(self.subnet.bridge):
            _attempt(errors, lambda: _ip("link", "del", self.subnet.bridge))
        self._closed = True
        if errors:
            raise HostLabError(f"closing the lab: {'; '.join(map(str, errors))}") from errors[0]


def _required(base: Path | None) -> Path:
    if base is None:
        raise HostLabError(f"no base image for recipe {recipe_key()}: run `make hosts-base`")
    return base


def _attempt(errors: list[BaseException], step: Callable[[], object]) -> None:
    try:
        step()
    except Exception as exc:  # teardown goes on; the errors are raised together
        errors.append(exc)
