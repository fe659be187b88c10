"""Benchmark the whole loop: `git push` to applied on every node, 20 agents on this machine (`make bench`)."""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from demo.fleet import LocalFleet, set_tiny_message, tiny_fleet

AGENTS, PUSHES = 20, 10
AGENT_INTERVAL = "1s"
TIMEOUT = 60.0
POLL = 0.02


@dataclass(frozen=True)
class Timing:
    """One push, in seconds after it: plans signed, first and last node applied, last report pushed."""

    planned: float
    first_applied: float
    last_applied: float
    reported: float


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-int(share * 100) * len(ordered) // 100))
    return ordered[rank - 1]


def converge(fleet: LocalFleet) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not all(p.converged for p in fleet.progress()):
        fleet.check_children()
        if time.monotonic() > deadline:
            stuck = [f"{p.node}: {p.describe()}" for p in fleet.progress() if not p.converged]
            raise RuntimeError("the fleet did not converge: " + "; ".join(stuck))
        time.sleep(0.05)


def push_once(fleet: LocalFleet, message: str) -> Timing:
    """Push a change for every node (a file, and so a unit restart) and wait until every node reported it.

    The time runs from just before `git push` until the last node's report of the new serial is on
    its branch; where it went is read back from the processes' own JSON logs (the reconciler's
    "state written", each agent's "applied")."""
    before = fleet.planned()
    set_tiny_message(fleet.work, message)
    commit, pushed_at = fleet.publish(f"message {message}")
    wall = time.time() - (time.monotonic() - pushed_at)  # the instant of the push, on the logs' clock
    deadline = pushed_at + TIMEOUT
    while time.monotonic() < deadline:
        progress = fleet.progress()
        if all(p.applied is not None and p.applied > (before[p.node] or 0) for p in progress):
            reported = time.monotonic() - pushed_at
            return _from_logs(fleet, commit, wall, reported)
        fleet.check_children()
        time.sleep(POLL)
    raise RuntimeError(f"push {commit[:12]} was not applied everywhere within {TIMEOUT:.0f} s")


def _events(log: Path, event: str, after: float) -> list[tuple[float, dict[str, object]]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        at = datetime.fromisoformat(str(entry.get("timestamp", "")).replace("Z", "+00:00")).timestamp()
        if entry.get("event") == event and at >= after:
            found.append((at - after, entry))
    return found


def _from_logs(fleet: LocalFleet, commit: str, wall: float, reported: float) -> Timing:
    logs = fleet.workdir / "logs"
    written = [
        t for t, e in _events(logs / "reconciler.log", "state written", wall) if e.get("desired") == commit
    ]
    applied = [
        min(t for t, _ in found)
        for log in logs.glob("agent-*.log")
        if (found := _events(log, "applied", wall))
    ]
    return Timing(
        planned=written[0] if written else float("nan"),
        first_applied=min(applied, default=float("nan")),
        last_applied=max(applied, default=float("nan")),
        reported=reported,
    )


def run(agents: int = AGENTS, pushes: int = PUSHES) -> list[Timing]:
    with tempfile.TemporaryDirectory(prefix="plumb-bench-loop-") as directory:
        fleet = LocalFleet(Path(directory), agent_interval=AGENT_INTERVAL)
        fleet.create()
        tiny_fleet(fleet.work, agents)
        fleet.enroll()
        fleet.publish("tiny fleet")
        try:
            fleet.start()
            converge(fleet)
            timings = []
            for number in range(1, pushes + 1):
                time.sleep(random.uniform(0.5, 1.5))  # land pushes at any point of the agents' cycles
                timings.append(push_once(fleet, f"change {number}"))
                converge(fleet)
            return timings
        finally:
            fleet.stop()


def main() -> None:
    timings = run()
    total = [t.reported for t in timings]
    print(
        f"loop: push->applied on {AGENTS} agents  median {statistics.median(total):.2f} s  "
        f"p95 {percentile(total, 0.95):.2f} s ({len(timings)} pushes; agents poll every {AGENT_INTERVAL}; "
        f"{os.cpu_count()} CPUs)"
    )

    def median(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} s"

    print(
        f"loop:   medians after the push: plans signed {median([t.planned for t in timings])}, "
        f"first node applied {median([t.first_applied for t in timings])}, "
        f"last node applied {median([t.last_applied for t in timings])}, "
        f"last report on its branch {median(total)}"
    )


if __name__ == "__main__":
    main()
