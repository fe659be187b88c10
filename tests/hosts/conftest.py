"""Fixtures for tests on real hosts: `host_lab`, one lab of Debian containers per test module.

Booting a node takes about a second, so a module boots its nodes once (module-scoped fixtures) and its
tests share them. Where containers cannot run (not root, no systemd-nspawn, no cgroup v2, no base image
from `make hosts-base`) every test here is skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hosts.harness import HostLab, unavailable_reason


@pytest.fixture(scope="module")
def host_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostLab]:
    """A lab for the whole module; closed at its end, whether its tests passed or not."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"test hosts unavailable: {reason}")
    lab = HostLab(tmp_path_factory.mktemp("hosts"))
    try:
        yield lab
    finally:
        lab.close()
