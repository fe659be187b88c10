"""The wheel and sdist built from this tree carry every module, schema and data file the tree has."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("reconciler", "agent", "contract", "demo")

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, sdist) built from the tree with the locked backend, as `make dist` builds them."""
    out = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "build", "--no-isolation", "--wheel", "--sdist", "--outdir", str(out)]
    subprocess.run([*command, str(ROOT)], check=True, capture_output=True)
    return next(out.glob("*.whl")), next(out.glob("*.tar.gz"))


def _tree_files(*roots: str, pattern: str = "*.py") -> set[str]:
    return {
        str(path.relative_to(ROOT))
        for root in roots
        for path in (ROOT / root).rglob(pattern)
        if "__pycache__" not in path.parts
    }


class TestWheel:
    """What `pip install plumb_gitops-*.whl` puts on a machine."""

    def test_every_module_of_the_tree_is_in_the_wheel(self, built: tuple[Path, Path]) -> None:
        """A new subpackage cannot be forgotten: every .py file under the code folders is there."""
        names = set(zipfile.ZipFile(built[0]).namelist())
        missing = _tree_files(*PACKAGES) - names
        assert not missing, f"not in the wheel: {sorted(missing)}"

    def test_schemas_are_package_data(self, built: tuple[Path, Path]) -> None:
        """Every JSON Schema is installed as `plumb_schemas`, where the code loads them from."""
        names = set(zipfile.ZipFile(built[0]).namelist())
        schemas = {f"plumb_schemas/{p.name}" for p in (ROOT / "schemas").glob("*.schema.json")}
        assert schemas and schemas <= names

    def test_demo_carries_its_programs_and_the_shop(self, built: tuple[Path, Path]) -> None:
        """`plumb demo` from the wheel needs the shop and the programs it writes into the fleet."""
        names = set(zipfile.ZipFile(built[0]).namelist())
        assert {"demo/shop/plumb.yaml", "demo/programs/api_server.py"} <= names

    def test_console_scripts_and_the_demo_plugin(self, built: tuple[Path, Path]) -> None:
        """Both scripts, and the demo registered as a `plumb.commands` plug-in."""
        archive = zipfile.ZipFile(built[0])
        entry_points = next(n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt"))
        text = archive.read(entry_points).decode()
        for line in (
            "plumb = reconciler.cli.main:main",
            "plumb-agent = agent.cli:main",
            "demo = demo.command:demo",
        ):
            assert line in text


class TestSdist:
    """What a packager rebuilds from: the code, the schemas, the examples, the tests and the locks."""

    def test_sdist_rebuilds_the_same_tree(self, built: tuple[Path, Path]) -> None:
        with tarfile.open(built[1]) as archive:
            names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
        expected = _tree_files(*PACKAGES, "tests") | {
            "pyproject.toml",
            "requirements.lock",
            "requirements-dev.lock",
        }
        missing = expected - names
        assert not missing, f"not in the sdist: {sorted(missing)}"
