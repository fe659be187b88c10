"""`plumb keys` and `plumb reconcile --once` as a user runs them: files, modes, output, exit codes."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pygit2
import pytest
from click.testing import CliRunner

from contract.crypto import SigningKey, VerifyKey
from contract.documents import verify_document
from reconciler.cli.main import cli
from tests.integration.test_reconcile_pass import INVALID_SERVICE, fleet_files, plans
from tests.support.gitrepo import bare_repo, commit_files

pytestmark = pytest.mark.integration

PLUMB = str(Path(sys.executable).with_name("plumb"))


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=env)
    return result.exit_code, result.output


class TestKeys:
    """The reconciler key: made once, private, outside any repository, printed for agents to pin."""

    def test_init_writes_a_private_key_and_prints_its_public_half(self, tmp_path: Path) -> None:
        """The file is mode 0600 and the printed line is the key agents pin."""
        path = tmp_path / "cfg" / "reconciler.key"
        code, output = invoke("keys", "init", "--key-file", str(path))
        assert code == 0
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        printed = output.strip().splitlines()[-1]
        assert VerifyKey.from_b64(printed).public_b64() == SigningKey.load(path).public_b64()
        assert invoke("keys", "show", "--key-file", str(path)) == (0, printed + "\n")

    def test_init_in_a_shared_directory_writes_into_no_planted_file(self, tmp_path: Path) -> None:
        """Files another user planted where a temporary file could go, and holds open, get nothing."""
        shared = tmp_path / "shared"
        shared.mkdir(mode=0o1777)
        path = shared / "reconciler.key"
        planted = [shared / name for name in ("reconciler.key.tmp", ".reconciler.key.tmp")]
        handles = []
        for name in planted:
            name.touch(mode=0o666)
            handles.append(name.open("rb"))
        assert invoke("keys", "init", "--key-file", str(path))[0] == 0
        seen = [handle.read() for handle in handles]
        for handle in handles:
            handle.close()
        assert seen == [b"", b""]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.stat().st_nlink == 1
        assert sorted(p.name for p in shared.iterdir()) == sorted(
            ["reconciler.key", *(p.name for p in planted)]
        )

    def test_init_refuses_to_overwrite(self, tmp_path: Path) -> None:
        """A second init keeps the first key unless --force."""
        path = tmp_path / "reconciler.key"
        invoke("keys", "init", "--key-file", str(path))
        before = path.read_text()
        code, output = invoke("keys", "init", "--key-file", str(path))
        assert code == 1 and "already exists" in output and path.read_text() == before
        assert invoke("keys", "init", "--key-file", str(path), "--force")[0] == 0
        assert path.read_text() != before

    def test_init_refuses_a_path_inside_a_repository(self, tmp_path: Path) -> None:
        """The private key never goes into a Git working tree."""
        pygit2.init_repository(str(tmp_path / "work"))
        code, output = invoke("keys", "init", "--key-file", str(tmp_path / "work" / "k.key"))
        assert code == 1 and "inside a Git repository" in output

    def test_default_path_follows_plumb_key_file(self, tmp_path: Path) -> None:
        """$PLUMB_KEY_FILE names the key when --key-file is not given."""
        path = tmp_path / "env.key"
        assert invoke("keys", "init", env={"PLUMB_KEY_FILE": str(path)})[0] == 0
        assert path.exists()


class TestReconcileOnce:
    """`plumb reconcile --once`: one pass, a one-line summary, exit 0 or 1."""

    def test_once_writes_plans_then_nothing(self, tmp_path: Path) -> None:
        """The first run writes signed plans; the second says nothing changed."""
        key_file = tmp_path / "k.key"
        invoke("keys", "init", "--key-file", str(key_file))
        repo = bare_repo(tmp_path / "fleet.git")
        commit_files(repo, "main", fleet_files())
        code, output = invoke("reconcile", "--repo", repo.path, "--once", "--key-file", str(key_file))
        assert code == 0 and "plans of 4 node(s) changed" in output
        for plan in plans(repo).values():
            verify_document(plan, SigningKey.load(key_file).verify_key(), what="plan")
        code, output = invoke(
            "reconcile", "--repo", f"file://{repo.path}", "--once", "--key-file", str(key_file)
        )
        assert code == 0 and "nothing changed" in output

    def test_invalid_commit_exits_1(self, tmp_path: Path) -> None:
        """An invalid desired commit is recorded and the command exits 1."""
        key_file = tmp_path / "k.key"
        invoke("keys", "init", "--key-file", str(key_file))
        repo = bare_repo(tmp_path / "fleet.git")
        commit_files(repo, "main", {**fleet_files(), "services/svc-2.yaml": INVALID_SERVICE})
        code, output = invoke("reconcile", "--repo", repo.path, "--once", "--key-file", str(key_file))
        assert code == 1 and "invalid" in output

    def test_invalid_commit_prints_every_finding_as_validate_does(self, tmp_path: Path) -> None:
        """The installed command prints each finding as `path:line:col: field: message [code]`,
        the very lines `plumb validate --rev` prints for the same commit."""
        key_file = tmp_path / "k.key"
        SigningKey.generate().save(key_file)
        repo = bare_repo(tmp_path / "fleet.git")
        commit_files(repo, "main", {**fleet_files(), "services/svc-2.yaml": INVALID_SERVICE})
        validate = subprocess.run(
            [PLUMB, "validate", repo.path, "--rev", "main"], capture_output=True, text=True, check=False
        )
        expected = validate.stdout.splitlines()
        assert validate.returncode == 1 and expected
        assert all(line.startswith("services/svc-2.yaml:") and line.endswith("]") for line in expected)
        reconcile = subprocess.run(
            [PLUMB, "reconcile", "--repo", repo.path, "--once", "--key-file", str(key_file)],
            capture_output=True,
            text=True,
            check=False,
        )
        lines = reconcile.stdout.splitlines()
        assert reconcile.returncode == 1
        assert f"invalid, {len(expected)} finding(s)" in lines[0]
        assert lines[1:] == expected

    def test_missing_key_and_missing_branch_are_errors(self, tmp_path: Path) -> None:
        """No key, or no desired branch: one clear line and exit 1."""
        repo = bare_repo(tmp_path / "fleet.git")
        code, output = invoke(
            "reconcile", "--repo", repo.path, "--once", "--key-file", str(tmp_path / "none")
        )
        assert code == 1 and "plumb keys init" in output
        key_file = tmp_path / "k.key"
        invoke("keys", "init", "--key-file", str(key_file))
        code, output = invoke("reconcile", "--repo", repo.path, "--once", "--key-file", str(key_file))
        assert code == 1 and "'main' does not exist" in output
