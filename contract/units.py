"""The systemd units Plumb ships for itself, filled in with where this installation's scripts are."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path


def service_file(package: str, name: str) -> str:
    """`<package>/units/<name>` with `{bin}` replaced by this installation's script directory (the
    virtualenv's bin, where both `plumb` and `plumb-agent` are installed)."""
    text = resources.files(package).joinpath("units", name).read_text()
    return text.replace("{bin}", str(Path(sys.executable).parent))
