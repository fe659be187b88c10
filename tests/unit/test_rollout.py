"""The rollout state machine: one table row per transition, time passed in, plus the invariants over every row."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.compile.desired import SourceFile, compile_desired
from reconciler.core.compile.model import Model
from reconciler.core.decide.rollout import (
    Decision,
    NodeObservation,
    OnFailure,
    Phase,
    RolloutSettings,
    RolloutState,
    Window,
    cut,
    observe,
    order,
    step,
    step_service,
)
from tests.support import report_of

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday
SATURDAY = datetime(2026, 3, 7, 10, 0, tzinfo=UTC)
NEXT_MONDAY_9 = datetime(2026, 3, 9, 9, 0, tzinfo=UTC)
FOUR = (
    "n1",
    "n2",
    "n3",
    "n4",
)  # rollout order of api 1.5.0: n4, n1, n3, n2; of 1.6.0 the same; of 1.4.0: n2, n3, n4, n1
EIGHT = tuple(f"n{i}" for i in range(1, 9))  # rollout order of api 1.5.0: n4, n1, n7, n8, n6, n3, n5, n2
ROLLBACK = RolloutSettings(
    batches=(1, "50%", "100%"),
    healthy_for=timedelta(seconds=30),
    timeout=timedelta(minutes=10),
    on_failure=OnFailure.ROLLBACK,
)
PAUSE = replace(ROLLBACK, on_failure=OnFailure.PAUSE)
OFFICE_HOURS = replace(
    ROLLBACK, window=Window(start=time(9), end=time(17), days=frozenset({"mon", "tue", "wed", "thu", "fri"}))
)
OLD = {n: "1.4.0" for n in FOUR}


def on(
    version: str | None,
    ready_for: int | None = 3600,
    *,
    at: datetime = NOW,
    online: bool = True,
    cordoned: bool = False,
    error: str | None = None,
    since_known: bool = True,
) -> NodeObservation:
    """A node reporting `version`, ready for `ready_for` seconds before `at` (None: not ready)."""
    ready = ready_for is not None
    since = at - timedelta(seconds=ready_for) if ready_for is not None and since_known else None
    return NodeObservation(online, cordoned, version, ready, since, error)


OFFLINE = NodeObservation(online=False)
DEPLOYED = RolloutState("api", None, "1.4.0", Phase.SUCCEEDED)  # 1.4.0 was the first deployment


def fleet(nodes: tuple[str, ...] = FOUR, **changed: NodeObservation) -> dict[str, NodeObservation]:
    """Every node on 1.4.0 and ready for an hour, except those given."""
    return {n: changed.get(n, on("1.4.0")) for n in nodes}


def rollout(
    phase: Phase = Phase.PROGRESSING,
    batch: int = 0,
    batches: tuple[tuple[str, ...], ...] = (("n4",),),
    started: datetime | None = NOW - timedelta(minutes=5),
    **changes: Any,
) -> RolloutState:
    """A rollout of api from 1.4.0 to 1.5.0 in the given phase and batch."""
    state = RolloutState("api", "1.4.0", "1.5.0", phase, batch, 3, batches, started)
    return replace(state, **changes)


@dataclass(frozen=True)
class Row:
    name: str
    previous: RolloutState | None
    seen: dict[str, NodeObservation]
    phase: Phase | None
    batch: int
    pins: dict[str, str]
    now: datetime = NOW
    resolved: str | None = "1.5.0"
    settings: RolloutSettings = ROLLBACK
    nodes: tuple[str, ...] = FOUR
    paused: bool = False
    releases: frozenset[str] | None = None
    batches: tuple[tuple[str, ...], ...] | None = None  # checked when given
    reason: str | None = None  # a part of the reason, checked when given
    source: str | None = None  # from_version, checked when given
    wake: datetime | str | None = "unchecked"
    extra: dict[str, Any] = field(default_factory=dict)
    blocked_by: tuple[str, ...] = ()

    def decide(self, previous: RolloutState | None = None, **changes: Any) -> Decision:
        inputs: dict[str, Any] = {
            "service": "api",
            "resolved": self.resolved,
            "settings": self.settings,
            "nodes": self.nodes,
            "observations": self.seen,
            "paused": self.paused,
            "now": self.now,
            "releases": self.releases,
            "blocked_by": self.blocked_by,
        }
        inputs.update(changes)
        return step(previous if previous is not None else self.previous, **inputs)


ROWS = [
    # -- dependencies ---------------------------------------------------------------------------
    Row(
        "a dependency with no ready instance holds the first batch; every node stays",
        None,
        fleet(),
        Phase.WAITING_DEPENDENCY,
        -1,
        {"n1": "1.4.0", "n2": "1.4.0", "n3": "1.4.0", "n4": "1.4.0"},
        blocked_by=("redis",),
        reason="waiting for redis to be healthy",
    ),
    Row(
        "a running batch runs on while a dependency is down",
        rollout(),
        fleet(n4=on("1.5.0", None)),
        Phase.PROGRESSING,
        0,
        {"n1": "1.4.0", "n2": "1.4.0", "n3": "1.4.0"},
        blocked_by=("redis",),
    ),
    Row(
        "once the dependency is back, the held rollout starts its first batch",
        rollout(Phase.WAITING_DEPENDENCY, batch=-1, batches=(), started=None),
        fleet(),
        Phase.PROGRESSING,
        0,
        {"n1": "1.4.0", "n2": "1.4.0", "n3": "1.4.0"},
        batches=(("n4",),),
    ),
    # -- starting -------------------------------------------------------------------------------
    Row("no Release: no rollout and no pins", None, fleet(), None, -1, {}, resolved=None),
    Row(
        "first deployment: nothing runs yet, every node at once",
        None,
        {n: on(None, None) for n in FOUR},
        Phase.SUCCEEDED,
        -1,
        {},
        reason="first deployment",
        wake=None,
    ),
    Row(
        "new release: batch 1 moves the first node in order, the rest stay",
        None,
        fleet(),
        Phase.PROGRESSING,
        0,
        {"n1": "1.4.0", "n2": "1.4.0", "n3": "1.4.0"},
        batches=(("n4",),),
        source="1.4.0",
        wake=NOW + timedelta(minutes=10),
    ),
    Row(
        "order does not depend on the order of the inputs",
        None,
        dict(reversed(fleet().items())),
        Phase.PROGRESSING,
        0,
        {"n1": "1.4.0", "n2": "1.4.0", "n3": "1.4.0"},
        nodes=("n3", "n1", "n4", "n2"),
        batches=(("n4",),),
    ),
    Row(
        "no state: the version most nodes report is the one rolled from",
        None,
        fleet(n1=on("1.3.0"), n2=on("1.3.0"), n3=on("1.4.0")),
        Phase.PROGRESSING,
        0,
        {"n1": "1.4.0", "n2": "1.4.0", "n3": "1.4.0"},
        source="1.4.0",
    ),
    Row(
        "no state: nodes already on the release count toward the shares",
        None,
        fleet(n4=on("1.5.0")),
        Phase.PROGRESSING,
        1,
        {"n2": "1.4.0", "n3": "1.4.0"},
        batches=((), ("n1",)),
    ),
    Row(
        "no state, old version has no Release left: every node at once",
        None,
        fleet(),
        Phase.SUCCEEDED,
        -1,
        {},
        releases=frozenset({"1.5.0"}),
        reason="no Release",
    ),
    Row(
        "every node offline: pending, all stay",
        DEPLOYED,
        {n: OFFLINE for n in FOUR},
        Phase.PENDING,
        -1,
        OLD,
        wake=None,
    ),
    Row(
        "pending: a node back online starts batch 1",
        rollout(Phase.PENDING, -1, (), None),
        fleet(n4=OFFLINE),
        Phase.PROGRESSING,
        0,
        {"n2": "1.4.0", "n3": "1.4.0", "n4": "1.4.0"},
        batches=(("n1",),),
    ),
    Row(
        "a node without a report counts as offline",
        None,
        {n: on("1.4.0") for n in ("n1", "n2", "n3")},
        Phase.PROGRESSING,
        0,
        {"n2": "1.4.0", "n3": "1.4.0", "n4": "1.4.0"},
        batches=(("n1",),),
    ),
    Row(
        "batch start skips a cordoned node",
        None,
        fleet(n4=on("1.4.0", cordoned=True)),
        Phase.PROGRESSING,
        0,
        {"n2": "1.4.0", "n3": "1.4.0", "n4": "1.4.0"},
        batches=(("n1",),),
    ),
    # -- shares -----------------------------------------------------------------------------------
    Row(
        "share 1 of 8 nodes moves one",
        None,
        fleet(EIGHT),
        Phase.PROGRESSING,
        0,
        {n: "1.4.0" for n in EIGHT if n != "n4"},
        nodes=EIGHT,
        settings=replace(ROLLBACK, batches=(1, "25%", "100%")),
        batches=(("n4",),),
    ),
    Row(
        "share 25% of 8 nodes moves two",
        None,
        fleet(EIGHT),
        Phase.PROGRESSING,
        0,
        {n: "1.4.0" for n in EIGHT if n not in ("n4", "n1")},
        nodes=EIGHT,
        settings=replace(ROLLBACK, batches=("25%", "100%")),
        batches=(("n4", "n1"),),
    ),
    Row(
        "share 25% of 3 nodes rounds up to one",
        None,
        fleet(FOUR[:3]),
        Phase.PROGRESSING,
        0,
        {"n2": "1.4.0", "n3": "1.4.0"},
        nodes=FOUR[:3],
        settings=replace(ROLLBACK, batches=("25%", "100%")),
        batches=(("n1",),),
    ),
    Row(
        "cumulative: 25% of 8 after 1 moves one more",
        rollout(batch_total=3),
        fleet(EIGHT, n4=on("1.5.0", 60)),
        Phase.PROGRESSING,
        1,
        {n: "1.4.0" for n in EIGHT if n not in ("n4", "n1")},
        nodes=EIGHT,
        settings=replace(ROLLBACK, batches=(1, "25%", "100%")),
        batches=(("n4",), ("n1",)),
    ),
    Row(
        "share 100%: every node in one batch",
        None,
        fleet(),
        Phase.PROGRESSING,
        0,
        {},
        settings=replace(ROLLBACK, batches=("100%",)),
        batches=(("n4", "n1", "n3", "n2"),),
    ),
    Row(
        "fewer nodes than batches: empty batches are passed over",
        rollout(batches=(("n1",),)),
        fleet(("n1", "n2"), n1=on("1.5.0", 60)),
        Phase.PROGRESSING,
        3,
        {},
        nodes=("n1", "n2"),
        settings=replace(ROLLBACK, batches=(1, "25%", "50%", "100%")),
        batches=(("n1",), (), (), ("n2",)),
    ),
    # -- a running batch --------------------------------------------------------------------------
    Row(
        "moved node not on the release yet: waiting",
        rollout(),
        fleet(),
        Phase.PROGRESSING,
        0,
        {"n1": "1.4.0", "n2": "1.4.0", "n3": "1.4.0"},
        reason="waiting for n4",
        wake=NOW + timedelta(minutes=5),
    ),
    Row(
        "ready for less than healthyFor: waiting until it has been",
        rollout(),
        fleet(n4=on("1.5.0", 10)),
        Phase.PROGRESSING,
        0,
        {"n1": "1.4.0", "n2": "1.4.0", "n3": "1.4.0"},
        wake=NOW + timedelta(seconds=20),
    ),
    Row(
        "ready without readySince: first seen now",
        rollout(),
        fleet(n4=on("1.5.0", 60, since_known=False)),
        Phase.PROGRESSING,
        0,
        {"n1": "1.4.0", "n2": "1.4.0", "n3": "1.4.0"},
        wake=NOW + timedelta(seconds=30),
        extra={"ready": {"n4": NOW}},
    ),
    Row(
        "ready without readySince, seen healthyFor ago: passes",
        rollout(ready={"n4": NOW - timedelta(seconds=30)}),
        fleet(n4=on("1.5.0", 60, since_known=False)),
        Phase.PROGRESSING,
        1,
        {"n2": "1.4.0", "n3": "1.4.0"},
    ),
    Row(
        "ready for healthyFor: batch passes, the next starts",
        rollout(),
        fleet(n4=on("1.5.0", 30)),
        Phase.PROGRESSING,
        1,
        {"n2": "1.4.0", "n3": "1.4.0"},
        batches=(("n4",), ("n1",)),
        wake=NOW + timedelta(minutes=10),
    ),
    Row(
        "last batch moves the rest",
        rollout(batch=1, batches=(("n4",), ("n1",))),
        fleet(n4=on("1.5.0"), n1=on("1.5.0", 60)),
        Phase.PROGRESSING,
        2,
        {},
        batches=(("n4",), ("n1",), ("n3", "n2")),
    ),
    Row(
        "last batch passes: succeeded",
        rollout(batch=2, batches=(("n4",), ("n1",), ("n3", "n2"))),
        {n: on("1.5.0", 60) for n in FOUR},
        Phase.SUCCEEDED,
        2,
        {},
        wake=None,
    ),
    Row(
        "last batch skips a cordoned node",
        rollout(batch=1, batches=(("n4",), ("n1",))),
        fleet(n4=on("1.5.0"), n1=on("1.5.0", 60), n2=on("1.4.0", cordoned=True)),
        Phase.PROGRESSING,
        2,
        {"n2": "1.4.0"},
        batches=(("n4",), ("n1",), ("n3",)),
    ),
    Row(
        "completion: a cordoned node keeps what it has",
        rollout(batch=2, batches=(("n4",), ("n1",), ("n3",))),
        fleet(n4=on("1.5.0"), n1=on("1.5.0"), n3=on("1.5.0", 60), n2=on("1.4.0", cordoned=True)),
        Phase.SUCCEEDED,
        2,
        {"n2": "1.4.0"},
        extra={"held": {"n2": "1.4.0"}},
    ),
    Row(
        "completed: an uncordoned node gets the release",
        rollout(Phase.SUCCEEDED, 2, (("n4",), ("n1",), ("n3",)), None, held={"n2": "1.4.0"}),
        fleet(n4=on("1.5.0"), n1=on("1.5.0"), n3=on("1.5.0")),
        Phase.SUCCEEDED,
        2,
        {},
        extra={"held": {}},
    ),
    Row(
        "completion: a node offline at its batch gets the release when back",
        rollout(batch=2, batches=(("n4",), ("n1",), ("n3",))),
        fleet(n4=on("1.5.0"), n1=on("1.5.0"), n3=on("1.5.0", 60), n2=OFFLINE),
        Phase.SUCCEEDED,
        2,
        {},
    ),
    Row(
        "a moved node gone offline still gates its batch, whatever its last report said",
        rollout(),
        fleet(n4=on("1.5.0", 60, online=False)),
        Phase.PROGRESSING,
        0,
        {"n1": "1.4.0", "n2": "1.4.0", "n3": "1.4.0"},
    ),
    Row(
        "a moved node cordoned since no longer gates",
        rollout(),
        fleet(n4=on("1.5.0", None, cordoned=True)),
        Phase.PROGRESSING,
        1,
        {"n2": "1.4.0", "n3": "1.4.0"},
        batches=(("n4",), ("n1",)),
    ),
    # -- failures ---------------------------------------------------------------------------------
    Row(
        "apply failed, onFailure rollback: every node back, at once rolled back as n4 never left",
        rollout(),
        fleet(n4=on("1.4.0", error="unit:api.service: exit 1")),
        Phase.ROLLED_BACK,
        0,
        OLD,
        reason="apply failed on n4: unit:api.service: exit 1; rolling back to 1.4.0",
        wake=None,
    ),
    Row(
        "timeout, onFailure rollback: every node back",
        rollout(started=NOW - timedelta(minutes=10)),
        fleet(n4=on("1.5.0", None)),
        Phase.ROLLING_BACK,
        0,
        OLD,
        reason="batch 1 not healthy within 10m: n4 (not ready)",
    ),
    Row(
        "timeout, onFailure pause: every node holds",
        rollout(started=NOW - timedelta(minutes=10)),
        fleet(n4=on("1.5.0", None)),
        Phase.FAILED,
        0,
        {"n1": "1.4.0", "n2": "1.4.0", "n3": "1.4.0"},
        settings=PAUSE,
        wake=None,
    ),
    Row(
        "apply failed, onFailure pause: every node holds",
        rollout(),
        fleet(n4=on("1.4.0", error="boom")),
        Phase.FAILED,
        0,
        {"n1": "1.4.0", "n2": "1.4.0", "n3": "1.4.0"},
        settings=PAUSE,
        reason="apply failed on n4: boom",
    ),
    Row(
        "failed stays failed though the node recovers",
        rollout(Phase.FAILED, reason="x"),
        fleet(n4=on("1.5.0")),
        Phase.FAILED,
        0,
        {"n1": "1.4.0", "n2": "1.4.0", "n3": "1.4.0"},
        settings=PAUSE,
    ),
    Row(
        "rolling back until the moved node reports the old version",
        rollout(Phase.ROLLING_BACK, started=None),
        fleet(n4=on("1.5.0")),
        Phase.ROLLING_BACK,
        0,
        OLD,
    ),
    Row(
        "rolled back once it does",
        rollout(Phase.ROLLING_BACK, started=None),
        fleet(),
        Phase.ROLLED_BACK,
        0,
        OLD,
    ),
    Row(
        "rolled back stays so while the release is still the resolved one",
        rollout(Phase.ROLLED_BACK, started=None),
        fleet(),
        Phase.ROLLED_BACK,
        0,
        OLD,
    ),
    # -- window -----------------------------------------------------------------------------------
    Row(
        "window closed: the first batch waits",
        None,
        fleet(),
        Phase.WAITING_WINDOW,
        -1,
        OLD,
        now=SATURDAY,
        settings=OFFICE_HOURS,
        reason="release window (mon,tue,wed,thu,fri 09:00-17:00 UTC)",
        wake=NEXT_MONDAY_9,
    ),
    Row(
        "window closed: a running batch runs on, the next waits",
        rollout(started=SATURDAY - timedelta(minutes=1)),
        fleet(n4=on("1.5.0", 40, at=SATURDAY)),
        Phase.WAITING_WINDOW,
        0,
        {"n1": "1.4.0", "n2": "1.4.0", "n3": "1.4.0"},
        now=SATURDAY,
        settings=OFFICE_HOURS,
        wake=NEXT_MONDAY_9,
    ),
    Row(
        "window open: the waiting batch starts",
        rollout(Phase.WAITING_WINDOW, started=None),
        fleet(n4=on("1.5.0")),
        Phase.PROGRESSING,
        1,
        {"n2": "1.4.0", "n3": "1.4.0"},
        settings=OFFICE_HOURS,
        batches=(("n4",), ("n1",)),
    ),
    Row(
        "unknown time zone: waits and says why",
        None,
        fleet(),
        Phase.WAITING_WINDOW,
        -1,
        OLD,
        settings=replace(ROLLBACK, window=Window(time(0), time(0), timezone="Mars/Olympus")),
        reason="unknown time zone",
        wake=None,
    ),
    # -- paused -----------------------------------------------------------------------------------
    Row(
        "paused: a new release waits before its first batch",
        None,
        fleet(),
        Phase.PAUSED,
        -1,
        OLD,
        paused=True,
        reason="paused by spec.paused",
        wake=None,
    ),
    Row(
        "paused: a running batch holds where it is",
        rollout(),
        fleet(n4=on("1.5.0")),
        Phase.PAUSED,
        0,
        {"n1": "1.4.0", "n2": "1.4.0", "n3": "1.4.0"},
        paused=True,
    ),
    Row(
        "resumed: the batch's timeout starts again",
        rollout(Phase.PAUSED, started=NOW - timedelta(hours=1)),
        fleet(n4=on("1.5.0", None)),
        Phase.PROGRESSING,
        0,
        {"n1": "1.4.0", "n2": "1.4.0", "n3": "1.4.0"},
        wake=NOW + timedelta(minutes=10),
    ),
    Row(
        "resumed between batches: the next starts",
        rollout(Phase.PAUSED, started=None),
        fleet(n4=on("1.5.0")),
        Phase.PROGRESSING,
        1,
        {"n2": "1.4.0", "n3": "1.4.0"},
    ),
    Row(
        "failed, then paused: paused, the failure kept in the reason",
        rollout(Phase.FAILED, reason="apply failed on n4: boom"),
        fleet(),
        Phase.PAUSED,
        0,
        {"n1": "1.4.0", "n2": "1.4.0", "n3": "1.4.0"},
        settings=PAUSE,
        paused=True,
        reason="after a failure (apply failed on n4: boom)",
    ),
    Row(
        "failed, paused, resumed: the batch is retried",
        rollout(Phase.PAUSED, started=NOW - timedelta(hours=1), reason="paused after a failure"),
        fleet(n4=on("1.5.0")),
        Phase.PROGRESSING,
        1,
        {"n2": "1.4.0", "n3": "1.4.0"},
        settings=PAUSE,
    ),
    Row(
        "paused does not stop a rollback",
        rollout(Phase.ROLLING_BACK, started=None),
        fleet(),
        Phase.ROLLED_BACK,
        0,
        OLD,
        paused=True,
    ),
    # -- the resolved version changes -------------------------------------------------------------
    Row(
        "new release mid-rollout: restarts from the version running before",
        rollout(batch=1, batches=(("n4",), ("n1",))),
        fleet(n4=on("1.5.0"), n1=on("1.5.0")),
        Phase.PROGRESSING,
        0,
        {"n1": "1.4.0", "n2": "1.4.0", "n3": "1.4.0"},
        resolved="1.6.0",
        source="1.4.0",
        batches=(("n4",),),
    ),
    Row(
        "back to the old version mid-rollout: every node at once",
        rollout(batch=1, batches=(("n4",), ("n1",))),
        fleet(n4=on("1.5.0"), n1=on("1.5.0")),
        Phase.SUCCEEDED,
        -1,
        {},
        resolved="1.4.0",
        source="1.4.0",
        reason="back to 1.4.0",
    ),
    Row(
        "back to the old version after a rollback: nothing left to do",
        rollout(Phase.ROLLED_BACK, started=None),
        fleet(),
        Phase.SUCCEEDED,
        -1,
        {},
        resolved="1.4.0",
    ),
    Row(
        "rollback commit after success: a rollout from the release to the old one",
        rollout(Phase.SUCCEEDED, 2, (("n4",), ("n1",), ("n3", "n2")), None),
        {n: on("1.5.0") for n in FOUR},
        Phase.PROGRESSING,
        0,
        {"n1": "1.5.0", "n3": "1.5.0", "n4": "1.5.0"},
        resolved="1.4.0",
        source="1.5.0",
        batches=(("n2",),),
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_transition(row: Row) -> None:
    """Each row: previous state, observations, settings and now -> phase, batch and pins."""
    decision = row.decide()
    state = decision.state
    assert (state.phase if state else None, state.batch if state else -1) == (row.phase, row.batch)
    assert dict(decision.pins) == row.pins
    if state is None:
        return
    if row.batches is not None:
        assert state.batches == row.batches
    if row.reason is not None:
        assert row.reason in (state.reason or ""), state.reason
    if row.source is not None:
        assert state.from_version == row.source
    if row.wake != "unchecked":
        assert decision.wake_at == row.wake
    for name, value in row.extra.items():
        assert getattr(state, name) == value


WITH_STATE = [r for r in ROWS if r.previous is not None]


@pytest.mark.parametrize("row", WITH_STATE, ids=[r.name for r in WITH_STATE])
def test_restart_from_stored_state_decides_the_same(row: Row) -> None:
    """A reconciler restarted from status/releases/<service>.json takes the same decision."""
    assert row.previous is not None
    stored = RolloutState.from_json(row.previous.to_json())
    assert stored == row.previous
    assert row.decide(stored) == row.decide()


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_state_round_trips_through_json(row: Row) -> None:
    """What is written to the state branch reads back as the same state."""
    state = row.decide().state
    if state is not None:
        assert RolloutState.from_json(state.to_json()) == state


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_same_inputs_again_change_nothing(row: Row) -> None:
    """A second pass with the same reports and time writes nothing: heartbeats alone never churn."""
    first = row.decide()
    if first.state is None:
        return
    assert row.decide(first.state) == first


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_input_order_does_not_matter(row: Row) -> None:
    """Two reconcilers listing nodes and reports in different orders agree."""
    shuffled = dict(reversed(list(row.seen.items())))
    assert row.decide(nodes=tuple(reversed(row.nodes)), observations=shuffled) == row.decide()


@pytest.mark.parametrize(
    ("share", "population", "expected"),
    [
        (1, 4, 1),
        (3, 2, 2),
        ("25%", 4, 1),
        ("25%", 3, 1),
        ("25%", 8, 2),
        ("50%", 5, 3),
        ("100%", 7, 7),
        ("1%", 0, 0),
    ],
)
def test_cut(share: int | str, population: int, expected: int) -> None:
    """A cumulative share is a count (at most the population) or a percentage rounded up."""
    assert cut(share, population) == expected


def test_order_is_a_stable_permutation() -> None:
    """The order is the same for any input order and differs between releases."""
    assert (
        order("api", "1.5.0", ["n2", "n1", "n4", "n3"])
        == order("api", "1.5.0", FOUR)
        == ["n4", "n1", "n3", "n2"]
    )
    assert order("api", "1.4.0", FOUR) == ["n2", "n3", "n4", "n1"]


WEEKDAYS = Window(start=time(9), end=time(17), days=frozenset({"mon", "tue", "wed", "thu", "fri"}))
PARIS = replace(WEEKDAYS, timezone="Europe/Paris")
NIGHT = Window(start=time(22), end=time(2), days=frozenset({"fri"}))


@pytest.mark.parametrize(
    ("name", "window", "now", "admits"),
    [
        ("inside", WEEKDAYS, NOW, True),
        ("before start", WEEKDAYS, NOW.replace(hour=8, minute=59), False),
        ("end is exclusive", WEEKDAYS, NOW.replace(hour=17), False),
        ("day not listed", WEEKDAYS, SATURDAY, False),
        ("time zone: 08:30 UTC is 09:30 in Paris", PARIS, NOW.replace(hour=8, minute=30), True),
        ("time zone: 07:30 UTC is 08:30 in Paris", PARIS, NOW.replace(hour=7, minute=30), False),
        ("spanning midnight, evening of a listed day", NIGHT, datetime(2026, 3, 6, 23, tzinfo=UTC), True),
        ("spanning midnight, the morning after", NIGHT, datetime(2026, 3, 7, 1, tzinfo=UTC), True),
        ("spanning midnight, after its end", NIGHT, datetime(2026, 3, 7, 2, tzinfo=UTC), False),
        ("spanning midnight, morning of the listed day", NIGHT, datetime(2026, 3, 6, 1, tzinfo=UTC), False),
        ("start equal to end: the whole day", Window(time(0), time(0), frozenset({"mon"})), NOW, True),
        ("unknown time zone never admits", replace(WEEKDAYS, timezone="Nowhere/Else"), NOW, False),
    ],
)
def test_window_admits(name: str, window: Window, now: datetime, admits: bool) -> None:
    """A window admits local times from start (inclusive) to end (exclusive) on its days."""
    assert window.admits(now) is admits


@pytest.mark.parametrize(
    ("window", "now", "opening"),
    [
        (WEEKDAYS, SATURDAY, NEXT_MONDAY_9),
        (WEEKDAYS, NOW.replace(hour=8), NOW.replace(hour=9)),
        (WEEKDAYS, NOW, datetime(2026, 3, 3, 9, tzinfo=UTC)),
        (PARIS, NOW.replace(hour=7), NOW.replace(hour=8)),
        (NIGHT, NOW, datetime(2026, 3, 6, 22, tzinfo=UTC)),
    ],
)
def test_window_next_opening(window: Window, now: datetime, opening: datetime) -> None:
    """The next start of a window, in UTC: when a waiting rollout should be looked at again."""
    assert window.next_opening(now) == opening


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, RolloutSettings()),
        ({}, RolloutSettings(("100%",), timedelta(0), timedelta(minutes=10), OnFailure.PAUSE, None)),
        (
            {"batches": [1, "25%", "100%"], "healthyFor": "30s", "timeout": "5m", "onFailure": "rollback"},
            RolloutSettings(
                (1, "25%", "100%"), timedelta(seconds=30), timedelta(minutes=5), OnFailure.ROLLBACK
            ),
        ),
        (
            {"window": {"start": "22:00", "end": "02:00", "days": ["fri"], "timezone": "Europe/Paris"}},
            RolloutSettings(window=Window(time(22), time(2), frozenset({"fri"}), "Europe/Paris")),
        ),
        ({"window": {"start": "09:00", "end": "17:00"}}, RolloutSettings(window=Window(time(9), time(17)))),
    ],
)
def test_settings_from_release(raw: dict[str, Any] | None, expected: RolloutSettings) -> None:
    """A Release's spec.rollout with its defaults: one batch, no wait, 10m timeout, pause on failure."""
    assert RolloutSettings.from_spec(raw) == expected


def report(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "applied": {"serial": 7, "commit": "c" * 40, "digest": "sha256:x", "at": "2026-03-02T09:00:00Z"},
        "rejected": None,
        "resources": [],
        "instances": [
            {
                "service": "api",
                "state": "running",
                "version": "1.5.0",
                "ready": True,
                "readySince": "2026-03-02T09:59:00Z",
            }
        ],
    }
    return base | fields


FAILED_UNIT = [{"id": "unit:api.service", "outcome": "failed", "error": "exit 1"}]


@pytest.mark.parametrize(
    ("name", "document", "serial", "expected"),
    [
        ("no report", None, 7, NodeObservation(online=True)),
        ("ready instance", report(), 7, on("1.5.0", 60)),
        (
            "no instance of the service",
            report(instances=[{"service": "db", "state": "running", "ready": True}]),
            7,
            NodeObservation(online=True),
        ),
        (
            "unparsable readySince",
            report(
                instances=[
                    {
                        "service": "api",
                        "state": "running",
                        "version": "1.5.0",
                        "ready": True,
                        "readySince": "soon",
                    }
                ]
            ),
            7,
            on("1.5.0", 60, since_known=False),
        ),
        (
            "failed resource of the service on the current plan",
            report(resources=FAILED_UNIT),
            7,
            on("1.5.0", 60, error="unit:api.service: exit 1"),
        ),
        (
            "failed resource on an older plan is not counted",
            report(resources=FAILED_UNIT),
            8,
            on("1.5.0", 60),
        ),
        (
            "failed resource of another service is not counted",
            report(resources=[{"id": "unit:db.service", "outcome": "failed"}]),
            7,
            on("1.5.0", 60),
        ),
        (
            "current plan rejected",
            report(rejected={"serial": 8, "reason": "expired"}),
            8,
            on("1.5.0", 60, error="plan 8 rejected: expired"),
        ),
        ("no plan yet", report(resources=FAILED_UNIT), None, on("1.5.0", 60)),
    ],
)
def test_observe(
    name: str, document: dict[str, Any] | None, serial: int | None, expected: NodeObservation
) -> None:
    """A report becomes an observation; only failures of the current plan count against a batch."""
    found = observe(
        report_of(document) if document is not None else None,
        service="api",
        resource_ids={"unit:api.service", "service:api"},
        plan_serial=serial,
        online=True,
        cordoned=False,
    )
    assert found == expected


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"service": "api"},
        rollout().to_json() | {"batch": 3},
        rollout().to_json() | {"phase": "exploded"},
        rollout().to_json() | {"ready": []},
    ],
)
def test_from_json_refuses_what_it_did_not_write(document: dict[str, Any]) -> None:
    """A damaged stored state is a ValueError, so the reconciler can fall back to reports."""
    with pytest.raises(ValueError):
        RolloutState.from_json(document)


def test_stored_document() -> None:
    """The shape of status/releases/<service>.json, as `plumb status --service` reads it."""
    state = rollout(batch=1, batches=(("n4",), ("n1",)), ready={"n1": NOW}, held={"n2": "1.4.0"}, reason="r")
    assert state.to_json() == {
        "service": "api",
        "from": "1.4.0",
        "to": "1.5.0",
        "phase": "progressing",
        "batch": 1,
        "batchTotal": 3,
        "batches": [["n4"], ["n1"]],
        "batchStarted": "2026-03-02T09:55:00Z",
        "ready": {"n1": "2026-03-02T10:00:00Z"},
        "already": [],
        "held": {"n2": "1.4.0"},
        "nodesDone": 1,
        "reason": "r",
    }


SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"


def shop_model() -> Model:
    files = [SourceFile(p.relative_to(SHOP).as_posix(), p.read_bytes()) for p in sorted(SHOP.rglob("*.yaml"))]
    model = compile_desired(files).model
    assert model is not None
    return model


@pytest.mark.parametrize("stored", [None, {"not": "a rollout"}], ids=["nothing stored", "damaged document"])
def test_step_service_pins_render_the_old_release(stored: dict[str, Any] | None) -> None:
    """The shop's api (^1.4 -> 1.5.0) on app-1 and app-3, both running 1.4.0: app-3 moves first, and
    compile_desired(pins=...) renders app-1 with Release 1.4.0 (its settings: batches 1, 50%, 100%)."""
    model = shop_model()
    seen = {"app-1": on("1.4.0"), "app-3": on("1.4.0")}
    decision = step_service(model, "api", stored=stored, observations=seen, now=NOW)
    assert decision.state is not None and decision.state.batches == (("app-3",),)
    assert decision.pins == {"app-1": "1.4.0"}
    files = [SourceFile(p.relative_to(SHOP).as_posix(), p.read_bytes()) for p in sorted(SHOP.rglob("*.yaml"))]
    nodes = compile_desired(files, pins={"api": decision.pins}).nodes
    versions = {
        n: next(r.spec["version"] for r in nodes[n] if r.id == "service:api") for n in ("app-1", "app-3")
    }
    assert versions == {"app-1": "1.4.0", "app-3": "1.5.0"}


def test_step_service_without_release_has_no_rollout() -> None:
    """redis has no Release: no state to store, nothing pinned."""
    assert step_service(shop_model(), "redis", stored=None, observations={}, now=NOW) == Decision(None, {})
