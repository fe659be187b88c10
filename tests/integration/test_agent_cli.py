"""`plumb-agent` as a real command: enroll, run over file:// and a real sshd, status."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import AgentWorld, resource
from tests.support.sshd import SshServer, running_sshd

pytestmark = pytest.mark.integration


def plumb_agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def test_enroll_creates_private_keys_and_prints_the_keys_block(tmp_path: Path) -> None:
    """Keys are 0600, the block is ready for nodes/NAME.yaml, and a second enroll keeps the keys."""
    first = plumb_agent("enroll", "--node", "web-1", "--state-dir", str(tmp_path / "state"))
    assert first.returncode == 0, first.stderr
    assert "spec:\n  keys:\n    signing: " in first.stdout and "\n    sealing: " in first.stdout
    for name in ("signing.key", "sealing.key"):
        assert stat.S_IMODE((tmp_path / "state" / name).stat().st_mode) == 0o600
    again = plumb_agent("enroll", "--node", "web-1", "--state-dir", str(tmp_path / "state"))
    assert again.stdout == first.stdout


def test_enroll_refuses_a_bad_node_name(tmp_path: Path) -> None:
    """A node name that is not a DNS label is an error, exit code 2 from the option parser."""
    result = plumb_agent("enroll", "--node", "Web_1", "--state-dir", str(tmp_path))
    assert result.returncode == 2 and "not a valid node name" in result.stderr


def test_run_once_then_status(tmp_path: Path) -> None:
    """run --once applies and exits 0; status shows the applied serial and each resource."""
    world = AgentWorld(tmp_path)
    world.publish([resource("file", {"path": "/etc/plumb/a", "mode": "0644", "content": "a\n"})])
    result = plumb_agent(*world.cli_args(), "--once")
    assert result.returncode == 0, result.stderr
    assert "applied serial 1" in result.stdout and "changed   file:/etc/plumb/a" in result.stdout
    status = plumb_agent("status", "--state-dir", str(world.state_dir))
    assert "applied serial 1" in status.stdout and "file:/etc/plumb/a" in status.stdout


def test_run_once_with_a_rejected_plan_exits_2(tmp_path: Path) -> None:
    """A plan signed by another key is reported and the command exits 2."""
    from contract.crypto import SigningKey

    world = AgentWorld(tmp_path)
    world.publish(
        [resource("file", {"path": "/etc/plumb/a", "mode": "0644", "content": "a\n"})],
        key=SigningKey.generate(),
    )
    result = plumb_agent(*world.cli_args(), "--once")
    assert result.returncode == 2
    assert "rejected plan: plan is signed by" in result.stdout
    logged = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(e["event"], e["level"], e["node"]) for e in logged] == [("plan rejected", "warning", "web-1")]
    assert not world.path("/etc/plumb/a").exists()


def test_run_over_ssh_with_pinned_host_key(tmp_path: Path, sshd: SshServer) -> None:
    """Over ssh:// the plan is fetched and the report pushed, with the host key checked."""
    world = AgentWorld(tmp_path)
    world.publish([resource("file", {"path": "/etc/plumb/a", "mode": "0644", "content": "over ssh\n"})])
    args = [
        *world.cli_args(),
        "--once",
        "--ssh-key",
        str(sshd.client_key),
        "--known-hosts",
        str(sshd.known_hosts),
    ]
    args[args.index("--repo") + 1] = sshd.url(world.origin_path)
    result = plumb_agent(*args)
    assert result.returncode == 0, result.stderr
    assert world.path("/etc/plumb/a").read_text() == "over ssh\n"
    assert world.report()["applied"]["serial"] == 1


def test_run_over_ssh_refuses_an_unknown_host_key(tmp_path: Path, sshd: SshServer) -> None:
    """With a known_hosts that does not pin the server, nothing is fetched and the error names host and file."""
    world = AgentWorld(tmp_path)
    world.publish([resource("file", {"path": "/etc/plumb/a", "mode": "0644", "content": "x\n"})])
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    args = [*world.cli_args(), "--once", "--ssh-key", str(sshd.client_key), "--known-hosts", str(empty)]
    args[args.index("--repo") + 1] = sshd.url(world.origin_path)
    result = plumb_agent(*args)
    assert result.returncode == 1
    assert f"127.0.0.1 port {sshd.port}" in result.stderr and str(empty) in result.stderr
    assert not world.path("/etc/plumb/a").exists()


def test_a_running_agent_waits_for_the_host_key_to_be_pinned(tmp_path: Path, sshd: SshServer) -> None:
    """As a service, an unpinned Git host key is one line per cycle, not an exit (which systemd would
    turn into a restart loop); once known_hosts pins it, the agent converges without a restart."""
    import time

    world = AgentWorld(tmp_path)
    world.publish([resource("file", {"path": "/etc/plumb/a", "mode": "0644", "content": "x\n"})])
    known = tmp_path / "known_hosts"
    known.write_text("")
    args = [
        *world.cli_args(),
        "--interval",
        "0.3s",
        "--ssh-key",
        str(sshd.client_key),
        "--known-hosts",
        str(known),
    ]
    args[args.index("--repo") + 1] = sshd.url(world.origin_path)
    log = tmp_path / "agent.log"
    with open(log, "w") as out:
        agent = subprocess.Popen([sys.executable, "-m", "agent", *args], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "cycle failed; will retry" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert agent.poll() is None and str(known) in log.read_text()
        known.write_text(sshd.known_hosts.read_text())
        while not world.path("/etc/plumb/a").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert world.path("/etc/plumb/a").read_text() == "x\n" and agent.poll() is None
    finally:
        agent.terminate()
        agent.wait(timeout=30)


def test_run_before_enroll_says_what_to_do(tmp_path: Path) -> None:
    """Without node keys the agent refuses to run and names the enroll command."""
    world = AgentWorld(tmp_path)
    (world.state_dir / "signing.key").unlink()
    result = plumb_agent(*world.cli_args(), "--once")
    assert result.returncode == 1 and "plumb-agent enroll --node web-1" in result.stderr


def test_root_never_drives_this_machines_systemd(tmp_path: Path) -> None:
    """--root with the systemd runtime is refused before anything runs: one line, exit 2."""
    world = AgentWorld(tmp_path, runtime="systemd")
    world.publish([resource("file", {"path": "/etc/plumb/a", "mode": "0644", "content": "a\n"})])
    result = plumb_agent(*world.cli_args(), "--once")
    assert result.returncode == 2
    assert "the systemd runtime would drive this machine's own systemd" in result.stderr
    assert not world.path("/etc/plumb/a").exists()


def test_root_without_a_private_nginx_never_runs_this_machines_nginx(tmp_path: Path) -> None:
    """A site under --root is not tested or reloaded by the machine's nginx: the resource fails with
    the reason, and the nginx binary is never started."""
    calls = tmp_path / "nginx-calls"
    fake = tmp_path / "nginx"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    world = AgentWorld(tmp_path / "node")
    site = {"site": "shop", "content": "server { listen 127.0.0.1:1; }\n"}
    world.publish([resource("nginx", site)])
    result = plumb_agent(*world.cli_args(), "--once", "--nginx-binary", str(fake), "--format", "json")
    assert result.returncode == 2, result.stderr
    [entry] = json.loads(result.stdout)["resources"]
    assert entry["outcome"] == "failed" and "--root without --nginx-config" in entry["error"]
    assert not calls.exists()
