"""The test-host harness itself: real systemd as PID 1, identities of their own, a private network, reboots
that keep state, and a teardown that leaves nothing behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

import paramiko
import pytest

from tests.hosts.harness import HostLab, TestHost, unavailable_reason

pytestmark = pytest.mark.hosts

Nodes = tuple[TestHost, TestHost]


@pytest.fixture(scope="module")
def nodes(host_lab: HostLab) -> Nodes:
    """Two booted nodes, shared by the module's tests."""
    a, b = host_lab.boot("node-a"), host_lab.boot("node-b")
    for node in (a, b):
        state = node.wait_running()
        assert state == "running", f"{node.name} is {state}: failed units {node.failed_units()}"
    return a, b


def _ssh(lab: HostLab, node: TestHost, command: str) -> str:
    client = paramiko.SSHClient()
    client.load_host_keys(str(lab.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        node.address,
        port=node.ssh_port,
        username="root",
        key_filename=str(lab.client_key),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    try:
        _, stdout, _ = client.exec_command(command, timeout=10)
        return str(stdout.read().decode())
    finally:
        client.close()


class TestBoot:
    """Each node is a booted Debian with systemd as PID 1 and an identity of its own."""

    def test_systemd_is_pid_1_and_the_boot_finished(self, nodes: Nodes) -> None:
        """/proc/1/comm inside is systemd, and systemd says the system is running."""
        for node in nodes:
            assert node.run(["cat", "/proc/1/comm"], check=True).stdout == "systemd\n"
            assert node.run(["systemctl", "is-system-running"]).stdout.strip() == "running", (
                node.failed_units()
            )

    def test_each_node_has_its_own_machine_id_host_key_and_name(self, nodes: Nodes) -> None:
        """Nothing that names a machine is shared between nodes or with the host."""
        ids = [node.run(["cat", "/etc/machine-id"], check=True).stdout.strip() for node in nodes]
        keys = [node.host_key for node in nodes]
        names = [node.run(["hostname"], check=True).stdout.strip() for node in nodes]
        host_id = Path("/etc/machine-id").read_text().strip() if Path("/etc/machine-id").exists() else ""
        assert len(set(ids)) == 2 and all(len(id_) == 32 for id_ in ids) and host_id not in ids
        assert len(set(keys)) == 2 and all(key.startswith("ssh-ed25519 ") for key in keys)
        assert names == ["node-a", "node-b"]


class TestNetwork:
    """The host reaches each node, nodes reach each other, and nothing outside the lab is reachable."""

    def test_the_host_logs_in_over_ssh_with_the_lab_key(self, host_lab: HostLab, nodes: Nodes) -> None:
        """sshd on each node's address accepts the lab's client key; the host key is the one known."""
        for node in nodes:
            assert _ssh(host_lab, node, "cat /proc/1/comm; hostname") == f"systemd\n{node.name}\n"

    def test_a_node_reaches_another_nodes_sshd(self, nodes: Nodes) -> None:
        """node-a opens a TCP connection to node-b's address and reads sshd's banner."""
        a, b = nodes
        probe = (
            f"import socket; print(socket.create_connection(('{b.address}', 22), timeout=5).recv(7).decode())"
        )
        assert a.run(["python3", "-c", probe], check=True).stdout == "SSH-2.0\n"

    def test_a_node_has_no_route_out_of_the_lab(self, host_lab: HostLab, nodes: Nodes) -> None:
        """The only route is the lab's /24: an address elsewhere is unreachable."""
        a, _ = nodes
        routes = a.run(["ip", "-4", "route", "show"], check=True).stdout.splitlines()
        assert [route.split()[0] for route in routes] == [host_lab.subnet.cidr]
        probe = "import socket; socket.create_connection(('192.0.2.1', 22), timeout=5)"
        assert "Network is unreachable" in a.run(["python3", "-c", probe]).stderr


class TestRestart:
    """A restarted node is a rebooted machine: a new boot on the same disk."""

    def test_a_file_survives_a_restart_and_the_identity_stays(self, nodes: Nodes) -> None:
        """A file written before the restart is there after it; machine-id and host key are unchanged."""
        a, _ = nodes
        before = a.run(
            ["sh", "-c", "echo kept > /root/kept; cat /etc/machine-id /proc/sys/kernel/random/boot_id"]
        )
        key = a.host_key
        a.restart()
        assert a.wait_running() == "running", a.failed_units()
        after = a.run(
            ["sh", "-c", "cat /root/kept /etc/machine-id /proc/sys/kernel/random/boot_id"], check=True
        )
        machine_id, boot_id = before.stdout.split()
        kept, machine_id_after, boot_id_after = after.stdout.split()
        assert (kept, machine_id_after) == ("kept", machine_id) and boot_id_after != boot_id
        assert a.host_key == key


class TestClose:
    """`close()` leaves no process, mount, link, namespace or cgroup behind."""

    def test_nothing_is_left_after_close(self, tmp_path: Path) -> None:
        """A lab whose node was once killed and booted again, closed while running: every trace is gone."""
        reason = unavailable_reason()
        if reason is not None:
            pytest.skip(f"test hosts unavailable: {reason}")
        lab = HostLab(tmp_path / "lab")
        try:
            node = lab.boot("only")
            node.wait_running()
            killed = node.init_pid
            node.stop(timeout=0)  # no time to power off: the node is killed
            assert not _alive(killed) and not node.running
            node.restart()
            assert node.wait_running() == "running", node.failed_units()
            init = node.init_pid
        finally:
            lab.close()
        lab.close()
        assert not _alive(init)
        assert not [line for line in _processes() if str(tmp_path) in line]
        assert str(tmp_path) not in Path("/proc/mounts").read_text()
        links = subprocess.run(
            ["ip", "-o", "link", "show"], capture_output=True, text=True, check=True
        ).stdout
        assert lab.subnet.bridge not in links and node.veth not in links
        namespaces = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=True
        ).stdout
        assert node.netns not in namespaces.split()
        assert not any(cgroup.exists() for cgroup in lab.cgroups)
        assert not Path("/run/systemd/nspawn/propagate", node.netns).exists()


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its parent does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _processes() -> list[str]:
    """The command line of every process on the host."""
    lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            lines.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return lines
