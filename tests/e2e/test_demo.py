"""`plumb demo` end to end, as a user runs it, and the `Fleet` harness on a generated fleet."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from demo.command import API_HOST as HOST
from demo.command import EXAMPLE
from demo.fleet import Answer, ShopSetup, nginx_available, prepare_shop, set_tiny_message, tiny_fleet
from tests.e2e.conftest import FleetFactory
from tests.e2e.harness import kill_processes_under, processes_under

pytestmark = pytest.mark.e2e
PLUMB = str(Path(sys.executable).parent / "plumb")
DEMO_TIMEOUT = 240


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """The demo's --workdir; whatever is still running under it afterwards is killed (and fails the test)."""
    path = tmp_path / "demo"
    yield path
    leftovers = kill_processes_under(path)
    assert not leftovers, f"processes left running under {path}: {leftovers}"


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting until {what}"
        time.sleep(0.2)


class TestDemo:
    """`plumb demo` as a new user (and CI) runs it."""

    def test_runs_to_the_end_with_duration_zero(self, workdir: Path) -> None:
        """It converges, times the pushed change, reaches the API through an edge, and exits 0."""
        result = subprocess.run(
            [PLUMB, "demo", "--duration", "0", "--workdir", str(workdir)],
            capture_output=True,
            text=True,
            timeout=DEMO_TIMEOUT,
            check=False,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert output.count("converged") >= 5, output
        assert "push → applied in" in output, output
        assert "200 api 1.5.0 on 127.0.0.2" in output, output
        assert "with 3 workers" in output, output
        assert processes_under(workdir) == []

    @pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
    def test_a_signal_stops_everything_it_started(self, workdir: Path, signum: signal.Signals) -> None:
        """Ctrl-C (or SIGTERM) while the fleet runs leaves no agent, service, nginx or reconciler behind."""
        demo = subprocess.Popen(
            [PLUMB, "demo", "--workdir", str(workdir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            supervisors = workdir / "nodes"
            _wait_for(
                lambda: any(supervisors.glob("*/state/supervise/*/supervisor.pid")), 120, "a service runs"
            )
            assert len(processes_under(workdir)) > 3
            demo.send_signal(signum)
            output, _ = demo.communicate(timeout=60)
        finally:
            if demo.poll() is None:
                os.kill(demo.pid, signal.SIGKILL)
                demo.wait()
        assert demo.returncode == 130, output.decode(errors="replace")
        assert b"interrupted" in output
        assert processes_under(workdir) == []


class TestFleetHarness:
    """The harness other end-to-end tests build on, on a generated fleet of tiny services."""

    def test_a_push_reaches_every_node(self, make_fleet: FleetFactory) -> None:
        """Three agents converge, and a pushed change is applied and reported by every one of them."""
        fleet = make_fleet(prepare=lambda work: tiny_fleet(work, 3))
        fleet.start()
        fleet.wait_converged()
        before = fleet.planned()
        set_tiny_message(fleet.local.work, "changed")
        commit = fleet.push("a new message")
        changed = fleet.wait_applied(commit, before)
        assert changed == ["node-01", "node-02", "node-03"]
        root = fleet.local.nodes["node-02"].root(fleet.workdir)
        assert (root / "etc/tiny/message.txt").read_text() == "changed\n"
        assert fleet.report("node-02")["applied"]["serial"] == fleet.plan("node-02")["serial"]


class TestShopIngress:
    """The shop's ingress trait through a real nginx: upstreams follow the endpoints the agents report."""

    def test_an_edge_answers_503_when_no_endpoint_is_healthy(self, make_fleet: FleetFactory) -> None:
        """With the API stopped everywhere the edge's site answers 503; started again, the API answers."""
        if not nginx_available():
            pytest.skip("nginx is not installed")
        setups: list[ShopSetup] = []
        fleet = make_fleet(
            source=EXAMPLE, prepare=lambda work: setups.append(prepare_shop(work, work.parent / "artifacts"))
        )
        port = setups[0].edge_port
        fleet.start()
        fleet.wait_converged()
        fleet.wait_until(
            lambda: fleet.get("edge-2", port, host=HOST).status == 200, what="the API answers through edge-2"
        )
        api = (fleet.local.work / "services/api.yaml").read_text()
        fleet.push(
            "stop the API",
            files={"services/api.yaml": api.replace("spec:\n", "spec:\n  state: stopped\n", 1)},
        )
        # One predicate: during a reload an old nginx worker may still proxy (502) for a moment.
        fleet.wait_until(
            lambda: _answers_503(fleet.get("edge-2", port, host=HOST)),
            what="edge-2 answers 503 saying there is no healthy endpoint",
        )
        fleet.push("start the API again", files={"services/api.yaml": api})
        fleet.wait_until(
            lambda: fleet.get("edge-2", port, host=HOST).status == 200, what="the API answers again"
        )


def _answers_503(answer: Answer) -> bool:
    return answer.status == 503 and "no healthy endpoint of api" in answer.body
