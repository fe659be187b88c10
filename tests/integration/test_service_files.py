"""The systemd units Plumb ships for itself, as printed for this installation, pass systemd-analyze."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
UNITS = [("plumb-agent", "plumb-agent.service"), ("plumb", "plumb-reconciler.service")]


@pytest.mark.parametrize(("script", "unit"), UNITS, ids=[u for _, u in UNITS])
def test_the_printed_unit_runs_this_installation_and_verifies(script: str, unit: str, tmp_path: Path) -> None:
    printed = subprocess.run(
        [str(BIN / script), "service-file"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert f"ExecStart={BIN}/{script} " in printed and "{bin}" not in printed
    assert "[Install]\nWantedBy=multi-user.target\n" in printed
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    path = tmp_path / unit
    path.write_text(printed)
    verified = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=60
    )
    problems = [line for line in verified.stderr.splitlines() if unit in line]
    assert verified.returncode == 0 and problems == [], verified.stderr


def test_the_reconciler_runs_sandboxed() -> None:
    printed = subprocess.run(
        [str(BIN / "plumb"), "service-file"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    for setting in (
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "StateDirectory=plumb-reconciler",
        "NoNewPrivileges=yes",
    ):
        assert f"\n{setting}\n" in printed
