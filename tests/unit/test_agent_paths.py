"""Path confinement: absolute, normal, no `..`, inside allowedPaths (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.host.paths import Confinement
from contract.errors import PathError

ALLOWED = ["/etc/plumb", "/etc/nginx/conf.d", "/opt/"]

CASES = [
    # (path, error message fragment or None when allowed)
    ("/etc/plumb", None),
    ("/etc/plumb/api/config.yaml", None),
    ("/etc/nginx/conf.d/shop.conf", None),
    ("/opt/api/current", None),
    ("/etc/plumbing/x", "outside allowedPaths"),
    ("/etc/passwd", "outside allowedPaths"),
    ("/etc/plumb/../shadow", "uses '..'"),
    ("/etc/plumb/..", "uses '..'"),
    ("etc/plumb/x", "not absolute"),
    ("/etc/plumb//x", "normal form"),
    ("/etc/plumb/./x", "normal form"),
    ("/etc/plumb/x/", "normal form"),
    ("/etc/plumb/x\x00y", "NUL"),
]


@pytest.mark.parametrize(("path", "error"), CASES)
def test_check(path: str, error: str | None) -> None:
    """Allowed paths pass unchanged; anything else is a PathError that says why."""
    confinement = Confinement.create(root=Path("/tmp/root"), allowed=ALLOWED)
    if error is None:
        assert confinement.check(path) == path
    else:
        with pytest.raises(PathError, match=error):
            confinement.check(path)


def test_root_mapping() -> None:
    """--root maps every absolute path under it."""
    confinement = Confinement.create(root=Path("/tmp/root"), allowed=ALLOWED)
    assert confinement.host("/etc/plumb/a") == Path("/tmp/root/etc/plumb/a")
    assert confinement.parts("/etc/plumb/a") == ("etc", "plumb", "a")


def test_no_allowed_paths_allows_nothing() -> None:
    """An empty allowedPaths list confines everything out."""
    with pytest.raises(PathError, match="none"):
        Confinement.create(root=Path("/"), allowed=[]).check("/etc/plumb/a")
