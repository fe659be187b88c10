"""`plumb bootstrap` over SSH onto a Debian container with systemd as PID 1, as an operator runs it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from contract.crypto import SigningKey
from tests.hosts.harness import HostLab, TestHost
from tests.support.sshd import keygen

pytestmark = pytest.mark.hosts
ROOT = Path(__file__).resolve().parents[2]
PLUMB = str(Path(sys.executable).parent / "plumb")
KEY = SigningKey.generate().public_b64()


def wheel() -> Path:
    wheels = sorted((ROOT / "dist").glob("plumb_gitops-*.whl"))
    if not (ROOT / "wheelhouse" / ".done").exists() or not wheels:
        pytest.skip("needs `make wheelhouse` and `make dist` (the node reaches no package index)")
    return wheels[-1]


@pytest.fixture(scope="module")
def node(host_lab: HostLab) -> Iterator[tuple[HostLab, TestHost]]:
    host = host_lab.boot("web-1")
    host.wait_running()
    yield host_lab, host


def bootstrap(lab: HostLab, host: TestHost, desired: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [PLUMB, "bootstrap", f"root@{host.address}", "--node", "web-1", "--label", "role=web"]
    argv += ["--repo", f"ssh://git@{lab.subnet.gateway}/srv/fleet.git", "--reconciler-key", KEY]
    argv += ["--identity", str(lab.client_key), "--known-hosts", str(lab.known_hosts)]
    argv += ["--wheel", str(wheel()), "--wheelhouse", str(ROOT / "wheelhouse"), "--desired", str(desired)]
    return subprocess.run([*argv, *extra], capture_output=True, text=True, timeout=600, check=False)


def test_bootstrap_installs_enrolls_starts_and_writes_the_node(
    node: tuple[HostLab, TestHost], tmp_path: Path
) -> None:
    lab, host = node
    dry = bootstrap(lab, host, tmp_path, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    planned = {line.split(": ")[0].split()[-1] for line in dry.stdout.splitlines() if line.startswith("  ")}
    assert planned == {"ok", "do"} and dry.stdout.count("would do") == 5, dry.stdout  # every step but check
    assert host.run(["test", "-e", "/opt/plumb-agent"]).returncode == 1 and not (tmp_path / "nodes").exists()

    first = bootstrap(lab, host, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert host.run(["systemctl", "is-active", "plumb-agent.service"]).stdout.strip() == "active"
    assert host.run(["systemctl", "is-enabled", "plumb-agent.service"]).stdout.strip() == "enabled"
    document = yaml.safe_load((tmp_path / "nodes/web-1.yaml").read_text())
    assert document["spec"]["address"] == host.address and document["metadata"]["labels"] == {"role": "web"}
    enrolled = host.run(["/opt/plumb-agent/bin/plumb-agent", "enroll", "--node", "web-1"], check=True).stdout
    assert f"signing: {document['spec']['keys']['signing']}" in enrolled
    assert host.run(["cat", "/etc/plumb/reconciler.pub"]).stdout.strip() == KEY
    assert "ssh-ed25519 " in first.stdout  # the deploy key to register

    again = bootstrap(lab, host, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    steps = [line for line in again.stdout.splitlines() if line.startswith("  ") and ": " in line]
    outcomes = {line.split(": ")[0].split()[-1] for line in steps}
    assert len(steps) == 7 and outcomes == {"ok", "unchanged"}, again.stdout
    assert yaml.safe_load((tmp_path / "nodes/web-1.yaml").read_text()) == document


def test_an_unknown_host_key_is_refused_in_one_line(node: tuple[HostLab, TestHost], tmp_path: Path) -> None:
    lab, host = node
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    argv = [PLUMB, "bootstrap", f"root@{host.address}", "--node", "web-1", "--repo", "ssh://x/y"]
    argv += ["--reconciler-key", KEY, "--identity", str(lab.client_key), "--known-hosts", str(empty)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1 and "unknown host key SHA256:" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_a_wrong_key_is_refused_in_one_line(node: tuple[HostLab, TestHost], tmp_path: Path) -> None:
    lab, host = node
    stranger = keygen(tmp_path / "stranger")
    argv = [PLUMB, "bootstrap", f"root@{host.address}", "--node", "web-1", "--repo", "ssh://x/y"]
    argv += ["--reconciler-key", KEY, "--identity", str(stranger), "--known-hosts", str(lab.known_hosts)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1 and "authentication failed" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_a_host_without_python_is_refused_in_one_line(node: tuple[HostLab, TestHost], tmp_path: Path) -> None:
    """The check step says what is missing and nothing is installed; the dry run changes nothing either."""
    lab, host = node
    host.run(["mv", "/usr/bin/python3", "/usr/bin/python3.hidden"], check=True)
    try:
        done = bootstrap(lab, host, tmp_path, "--dry-run")
    finally:
        host.run(["mv", "/usr/bin/python3.hidden", "/usr/bin/python3"], check=True)
    assert done.returncode == 1
    assert "step 'check' failed: " in done.stderr and "has no python3" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "nodes").exists()
