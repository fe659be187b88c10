"""`plumb init` as a new user runs it: a repository that validates, a key, and nothing overwritten."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pygit2
import pytest

from contract import __version__
from contract.crypto import SigningKey
from tests.support import node_keys_yaml

pytestmark = pytest.mark.integration
PLUMB = str(Path(sys.executable).parent / "plumb")


def plumb(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config")}
    return subprocess.run([PLUMB, *args], capture_output=True, text=True, timeout=60, env=env, check=False)


def test_a_new_repository_validates_and_gets_a_key(tmp_path: Path) -> None:
    done = plumb("init", str(tmp_path / "fleet"), home=tmp_path)
    assert done.returncode == 0, done.stderr
    fleet = tmp_path / "fleet"
    key = tmp_path / "config" / "plumb" / "reconciler.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert SigningKey.load(key).public_b64() in done.stdout
    assert pygit2.Repository(str(fleet)).head_is_unborn
    assert (fleet / ".git" / "HEAD").read_text().strip() == "ref: refs/heads/main"
    assert "name: fleet" in (fleet / "plumb.yaml").read_text()
    assert f'plumb-gitops=={__version__}"' in (fleet / ".github/workflows/plumb-plan.yml").read_text()
    checked = plumb("validate", str(fleet), home=tmp_path)
    said = checked.stdout + checked.stderr
    assert checked.returncode == 0, said
    assert "[empty-selector]" in said and "0 error(s), 1 warning(s)" in said


def test_the_example_node_once_enrolled_makes_a_clean_fleet(tmp_path: Path) -> None:
    assert plumb("init", str(tmp_path / "fleet"), home=tmp_path).returncode == 0
    nodes = tmp_path / "fleet" / "nodes"
    example = (nodes / "node-1.yaml.example").read_text()
    keys_at = example.index("  keys:")
    (nodes / "node-1.yaml").write_text(example[:keys_at] + "  " + node_keys_yaml("node-1") + "\n")
    checked = plumb("validate", str(tmp_path / "fleet"), home=tmp_path)
    said = checked.stdout + checked.stderr
    assert checked.returncode == 0 and "0 error(s), 0 warning(s)" in said, said
    rendered = plumb("render", str(tmp_path / "fleet"), "--node", "node-1", home=tmp_path)
    assert rendered.returncode == 0 and "hello.service" in rendered.stdout


def test_nothing_is_overwritten(tmp_path: Path) -> None:
    """A directory with files in it is refused; an existing key is kept."""
    assert plumb("init", str(tmp_path / "fleet"), home=tmp_path).returncode == 0
    key = (tmp_path / "config" / "plumb" / "reconciler.key").read_bytes()
    (tmp_path / "fleet" / "plumb.yaml").write_text("mine\n")
    again = plumb("init", str(tmp_path / "fleet"), home=tmp_path)
    assert again.returncode == 1 and "is not empty" in again.stderr
    assert (tmp_path / "fleet" / "plumb.yaml").read_text() == "mine\n"
    other = plumb("init", str(tmp_path / "other"), home=tmp_path)
    assert other.returncode == 0 and "reconciler key found" in other.stdout
    assert (tmp_path / "config" / "plumb" / "reconciler.key").read_bytes() == key
