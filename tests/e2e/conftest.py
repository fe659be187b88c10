"""Fixtures for end-to-end tests: `make_fleet` builds local fleets and stops every one of them afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.e2e.harness import Fleet, stopped_afterwards

FleetFactory = Callable[..., Fleet]


@pytest.fixture
def make_fleet(tmp_path: Path) -> Iterator[FleetFactory]:
    """`make_fleet(source=..., files=..., prepare=..., agent_interval=...)` -> a created (not yet started) Fleet.

    Every fleet is stopped at teardown, and anything still running under its directory is killed,
    whether the test passed or not.
    """
    fleets: list[Fleet] = []
    with contextlib.ExitStack() as stack:

        def make(
            *,
            source: Path | None = None,
            files: Mapping[str, str] | None = None,
            prepare: Callable[[Path], object] | None = None,
            agent_interval: str = "0.5s",
            name: str = "fleet",
        ) -> Fleet:
            # release artifacts are built under tmp_path (tmp_path/artifacts, or next to the fleet's
            # working tree with demo.fleet.prepare_shop), and file:// URLs point there
            workdir = tmp_path / f"{name}-{len(fleets)}"
            fleet = Fleet(workdir, agent_interval=agent_interval, local_artifacts=tmp_path)
            fleets.append(stack.enter_context(stopped_afterwards(fleet)))
            fleet.create(source=source, files=files, prepare=prepare)
            return fleet

        yield make


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """End-to-end tests run real fleets on a shared 2-core machine: one rerun each, reported as such.

    A rerun is not a pass in disguise: the rerun must pass on its own, and pytest's summary lists
    every rerun (`R`), so a test that is really broken still fails and a flaky one stays visible.
    """
    for item in items:
        if item.get_closest_marker("e2e") is not None or "/e2e/" in str(item.path):
            item.add_marker(pytest.mark.flaky(reruns=1, reruns_delay=1))
