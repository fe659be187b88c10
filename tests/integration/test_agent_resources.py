"""Artifacts, certificates, heartbeats, unit drift and liveness against a real filesystem and processes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import stat
import tarfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources as package_files
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from contract.crypto import seal
from tests.support import AgentWorld, resource

pytestmark = pytest.mark.integration


@pytest.fixture
def world(tmp_path: Path) -> Iterator[AgentWorld]:
    node = AgentWorld(tmp_path / "node", local_artifacts=tmp_path)
    try:
        yield node
    finally:
        node.stop_units()


def tarball(path: Path, members: dict[str, bytes]) -> str:
    """Write a tar.gz with `members`; return its sha256."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def artifact(
    tmp_path: Path, version: str, *, sha256: str | None = None, members: dict[str, bytes] | None = None
) -> Any:
    archive = tmp_path / f"api-{version}.tar.gz"
    digest = tarball(archive, members or {"bin/server": f"server {version}\n".encode()})
    spec = {
        "url": f"file://{archive}",
        "sha256": sha256 or digest,
        "unpack": "tar.gz",
        "path": "/opt/api",
        "version": version,
    }
    return resource("artifact", spec, service="api")


def test_artifact_versions_switch_atomically_and_two_previous_are_kept(
    world: AgentWorld, tmp_path: Path
) -> None:
    """Each version unpacks into its own directory, `current` follows, and only the two before it stay."""
    for version in ("1.0", "1.1", "1.2", "1.3"):
        world.publish([artifact(tmp_path, version)])
        assert world.agent().run(once=True).ok
        assert world.path("/opt/api/current/bin/server").read_text() == f"server {version}\n"
    assert os.readlink(world.path("/opt/api/current")) == "1.3"
    assert sorted(p.name for p in world.path("/opt/api").iterdir()) == ["1.1", "1.2", "1.3", "current"]
    world.agent().run(once=True)
    assert world.report()["resources"][0]["outcome"] == "unchanged"


@pytest.mark.parametrize(
    ("name", "build", "error"),
    [
        ("wrong sha256", lambda tmp: artifact(tmp, "2.0", sha256="0" * 64), "the plan expects"),
        ("escaping member", lambda tmp: artifact(tmp, "2.0", members={"../evil": b"x"}), "cannot unpack"),
    ],
)
def test_bad_artifact_is_never_used(
    world: AgentWorld, tmp_path: Path, name: str, build: Any, error: str
) -> None:
    """A download that does not match, or an archive that escapes, leaves `current` where it was."""
    world.publish([artifact(tmp_path, "1.0")])
    world.agent().run(once=True)
    world.publish([build(tmp_path)])
    assert not world.agent().run(once=True).ok
    entry = world.report()["resources"][0]
    assert entry["outcome"] == "failed" and error in entry["error"]
    assert os.readlink(world.path("/opt/api/current")) == "1.0"
    assert not world.path("/opt/api/2.0").exists() and not world.path("/opt/evil").exists()


def test_certificate_key_is_unsealed_and_private(world: AgentWorld) -> None:
    """The chain is 0644, the key is opened from its seal and written 0600; neither value is reported."""
    sealed = seal(
        b"-----BEGIN PRIVATE KEY-----\nsecret\n", world.node_sealing, context=f"{world.node}|certificate:api"
    )
    spec = {
        "name": "api",
        "certPath": "/etc/plumb/tls/api.crt",
        "keyPath": "/etc/plumb/tls/api.key",
        "fullchain": "-----BEGIN CERTIFICATE-----\nchain\n",
        "sealedKey": sealed,
    }
    world.publish([resource("certificate", spec, service="api")])
    assert world.agent().run(once=True).ok
    key = world.path("/etc/plumb/tls/api.key")
    assert key.read_bytes().endswith(b"secret\n") and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(world.path("/etc/plumb/tls/api.crt").stat().st_mode) == 0o644
    assert "secret" not in json.dumps(world.report())


def test_key_sealed_for_another_resource_is_refused(world: AgentWorld) -> None:
    """A sealed value moved to another resource id cannot be opened."""
    sealed = seal(b"secret", world.node_sealing, context=f"{world.node}|file:/etc/plumb/other")
    world.publish([resource("file", {"path": "/etc/plumb/mine", "mode": "0600", "sealed": sealed})])
    world.agent().run(once=True)
    assert "cannot be opened" in world.report()["resources"][0]["error"]
    assert not world.path("/etc/plumb/mine").exists()


def test_report_matches_the_schema_and_heartbeats_without_change(world: AgentWorld) -> None:
    """Reports validate against report.schema.json; with nothing new, one is pushed once heartbeat passes."""
    unit = {"name": "idle.service", "content": "[Service]\nExecStart=/bin/sleep 3600\n"}
    service = {
        "name": "idle",
        "unit": "idle.service",
        "state": "running",
        "ports": [{"name": "x", "port": 1}],
    }
    world.publish(
        [resource("unit", unit, service="idle"), resource("service", service, service="idle")], heartbeat=1
    )
    now = [datetime.now(UTC)]
    agent = world.agent()
    agent.clock = lambda: now[0]
    assert agent.run(once=True).pushed
    schema = json.loads(package_files.files("plumb_schemas").joinpath("report.schema.json").read_text())
    jsonschema.validate(world.report(), schema)
    assert not agent.cycle().pushed
    now[0] += timedelta(seconds=1)
    assert agent.cycle().pushed


def test_unit_stopped_behind_the_agents_back_is_restarted_as_drift(world: AgentWorld) -> None:
    """A supervised unit killed outside the agent is started again and reported as drift."""
    unit = {"name": "idle.service", "content": "[Service]\nExecStart=/bin/sleep 3600\n"}
    world.publish([resource("unit", unit, service="idle")])
    world.agent().run(once=True)
    supervisor = int((world.state_dir / "supervise/idle.service/supervisor.pid").read_text())
    os.kill(supervisor, signal.SIGTERM)
    while (
        Path(f"/proc/{supervisor}").exists()
        and "Z" not in Path(f"/proc/{supervisor}/stat").read_text().split()[2]
    ):
        time.sleep(0.01)
    world.agent().run(once=True)
    report = world.report()
    assert report["drift"] == [{"id": "unit:idle.service", "what": "was stopped", "corrected": True}]


def test_failing_liveness_probe_restarts_the_unit(world: AgentWorld, tmp_path: Path) -> None:
    """Past its failure threshold a liveness probe restarts the unit (a new pid)."""
    flag = tmp_path / "alive"
    unit = {"name": "live.service", "content": "[Service]\nExecStart=/bin/sleep 3600\n"}
    liveness = {"exec": {"command": ["test", "-e", str(flag)]}, "failureThreshold": 1}
    service = {"name": "live", "unit": "live.service", "state": "running", "health": {"liveness": liveness}}
    flag.touch()
    world.publish([resource("unit", unit, service="live"), resource("service", service, service="live")])
    agent = world.agent()
    agent.run(once=True)
    first = world.report()["instances"][0]["pid"]
    flag.unlink()
    agent.cycle(force_report=True)
    assert agent.observer.restarted == ["live.service"]
    assert world.report()["instances"][0]["pid"] != first


def test_running_agent_picks_up_a_new_plan(world: AgentWorld) -> None:
    """In its loop the agent applies whatever plan appears next on the state branch."""
    world.publish([resource("file", {"path": "/etc/plumb/a", "mode": "0644", "content": "one\n"})])
    calls = []

    def stop() -> bool:
        calls.append(1)
        if len(calls) == 1:
            world.publish([resource("file", {"path": "/etc/plumb/a", "mode": "0644", "content": "two\n"})])
        return len(calls) > 1

    outcome = world.agent(interval=0.01).run(stop=stop)
    assert outcome.applied and world.path("/etc/plumb/a").read_text() == "two\n"
    assert world.report()["applied"]["serial"] == world.serial


def test_two_agents_never_apply_at_once(world: AgentWorld) -> None:
    """While one agent runs, a second one on the same state directory refuses to start."""
    from contract.errors import TemporaryError

    world.publish([resource("file", {"path": "/etc/plumb/a", "mode": "0644", "content": "a"})])
    errors: list[str] = []

    def stop() -> bool:
        try:
            world.agent().run(once=True)
        except TemporaryError as exc:
            errors.append(str(exc))
        return True

    world.agent().run(stop=stop)
    assert errors and "another plumb-agent is running" in errors[0]
    assert world.agent().run(once=True).ok
