"""The `systemd` runtime's sequence of systemctl calls, with real unit files checked by systemd-analyze.

This machine has no systemd as PID 1, so `systemctl` here is a stand-in script on PATH that keeps
unit states in files and records every call; the unit files themselves go through the real
`systemd-analyze verify`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import AgentWorld, resource

pytestmark = pytest.mark.integration

STAND_IN = """#!/bin/sh
state="$PLUMB_FAKE_SYSTEMD"
echo "$*" | sed 's/ -- / /' >> "$state/calls"
if [ -e "$state/fail-$1" ]; then rm "$state/fail-$1"; exit 1; fi
for unit; do :; done  # the last argument: the unit, after `--`
case "$1" in
  daemon-reload|reset-failed) ;;
  start|restart) echo active > "$state/$unit.active" ;;
  stop) echo inactive > "$state/$unit.active" ;;
  enable) echo enabled > "$state/$unit.enabled" ;;
  disable) echo disabled > "$state/$unit.enabled" ;;
  show)
    echo "ActiveState=$(cat "$state/$unit.active" 2>/dev/null || echo inactive)"
    echo "MainPID=0"
    echo "NRestarts=0"
    echo "UnitFileState=$(cat "$state/$unit.enabled" 2>/dev/null || echo disabled)" ;;
  *) exit 1 ;;
esac
"""


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    bin_dir, state = tmp_path / "bin", tmp_path / "systemd"
    bin_dir.mkdir()
    state.mkdir()
    script = bin_dir / "systemctl"
    script.write_text(STAND_IN)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("PLUMB_FAKE_SYSTEMD", str(state))
    yield state


def calls(state: Path) -> list[str]:
    path = state / "calls"
    lines = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    return [line for line in lines if not line.startswith("show")]


def api(
    *, content: str = "/bin/sleep 3600", state: str = "running", dropin: str | None = None
) -> list[dict[str, Any]]:
    unit = {"name": "api.service", "content": f"[Service]\nExecStart={content}\n", "state": state}
    entries = [resource("unit", unit, service="api")]
    if dropin is not None:
        spec = {
            "name": "api.service",
            "dropIn": "limits.conf",
            "content": f"[Service]\nLimitNOFILE={dropin}\n",
        }
        entries.append(resource("unit", spec, service="api"))
    return entries


def test_systemctl_sequence(systemd: Path, tmp_path: Path) -> None:
    """reload, enable and start once; nothing when converged; restart on change; stop; clean up on removal."""
    world = AgentWorld(tmp_path / "node", runtime="systemd")
    world.publish(api())
    assert world.agent().run(once=True).ok
    assert calls(systemd) == ["daemon-reload", "enable api.service", "start api.service"]
    world.agent().run(once=True)
    assert calls(systemd) == []
    world.publish(api(dropin="4096"))
    world.agent().run(once=True)
    assert calls(systemd) == ["daemon-reload", "restart api.service"]
    world.publish(api(dropin="4096", state="stopped"))
    world.agent().run(once=True)
    assert calls(systemd) == ["stop api.service"]
    world.publish([resource("file", {"path": "/etc/plumb/x", "mode": "0644", "content": "x"})])
    world.agent().run(once=True)
    assert calls(systemd) == [
        "stop api.service",
        "disable api.service",
        "daemon-reload",
        "reset-failed api.service",
    ]
    assert not world.path("/etc/systemd/system/api.service").exists()
    assert not world.path("/etc/systemd/system/api.service.d/limits.conf").exists()
    assert "systemd" in world.report()["capabilities"]


def test_unit_refused_by_systemd_analyze_is_never_loaded(systemd: Path, tmp_path: Path) -> None:
    """A unit systemd-analyze rejects is not written, and systemctl is never asked to load it."""
    world = AgentWorld(tmp_path / "node", runtime="systemd")
    world.publish(api(content="/nonexistent/server"))
    assert not world.agent().run(once=True).ok
    assert "refused by verification" in world.report()["resources"][0]["error"]
    assert not world.path("/etc/systemd/system/api.service").exists()
    assert calls(systemd) == []


def test_a_failed_restart_is_tried_again_at_the_next_apply(systemd: Path, tmp_path: Path) -> None:
    """When a restart fails, the unit is restarted at the next apply even though no file changes then."""
    world = AgentWorld(tmp_path / "node", runtime="systemd")
    world.publish(api())
    world.agent().run(once=True)
    world.publish(api(content="/bin/sleep 7200"))
    (systemd / "fail-restart").touch()
    assert not world.agent().run(once=True).ok
    calls(systemd)
    assert world.agent().run(once=True).ok
    assert calls(systemd) == ["restart api.service"]
    world.agent().run(once=True)
    assert calls(systemd) == []
