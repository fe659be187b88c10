"""A service's rollout as a pure state machine: previous state, observations and `now` in; state and pins out.

How a rollout moves, in one place (DESIGN.md sections 3 and 9):

- A rollout starts when the version a service resolves to differs from the last one rolled out
  (`to_version` of the previous state). It runs from `from_version`: the version the fleet ran,
  i.e. the previous state's `to_version` if that rollout succeeded, else its `from_version` (a
  new release in the middle of a rollout restarts from the version that was running before it;
  nodes the interrupted rollout had moved go back to that version until their batch comes). With
  no previous state (a reconciler that never wrote `status/releases/<service>.json`), it is the
  version most of the service's nodes report (ties: the highest); with none reported, this is a
  first deployment and every node gets the resolved version at once.
- Node order is the SHA-256 of `service, to_version, node`: the same for every reconciler and
  whatever order the inputs come in, stable for the whole rollout, and a different canary for
  each release so no node is always first. Batch `i` moves the next online, uncordoned nodes in
  that order until `batches[i]` (cumulative: a count, or a percentage rounded up) of the nodes is
  reached; the last batch reaches 100%. Cuts are taken when a batch starts, so nodes that come
  back online are picked up by a later batch. A batch with nothing to move is skipped.
- Offline and cordoned nodes are skipped: not moved, not waited for. Until the rollout ends they
  stay on `from_version`. When it succeeds an offline node gets the new version (it applies it
  when it is back); a cordoned node keeps what it has (`held`) until it is uncordoned.
- A batch passes when every moved node in it that is not cordoned reports `to_version` ready
  for `healthyFor` (`now - readySince`; a node that went offline after being moved still gates).
  It fails on an apply error of its nodes, or when `timeout` has passed since it started. Then
  `onFailure: rollback` pins every node to `from_version` (rolling-back, then rolled-back once
  the moved nodes report it), and `pause` (the default) holds every node where it is (failed).
  Both stay until the service resolves to another version (`plumb rollback` writes that commit);
  pausing and resuming a failed rollout retries its batch.
- A new batch starts only inside `window`; a running batch runs on. `spec.paused` holds a rollout
  where it is; on resume a running batch's timeout starts again.
- A new batch starts only while every service in `dependsOn` has a ready instance somewhere
  (`blocked_by` lists those that have none); a running batch runs on.

Progress lives only in `RolloutState`, which the reconciler stores as `status/releases/<service>.json`
on the state branch and reads back on the next pass, so a restarted reconciler continues where
the last one stopped, and two reconcilers given the same Git inputs and `now` decide the same.
No reason text depends on the time, so heartbeats alone never change the state.
"""

from __future__ import annotations

import enum
import hashlib
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from contract.report import Report
from contract.vocabulary import Phase
from reconciler.core.compile.model import Model, seconds
from reconciler.core.compile.versions import RangeError, Version

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_TIMEOUT = 600
JsonObject = dict[str, Any]


ACTIVE = frozenset(
    {
        Phase.PENDING,
        Phase.PROGRESSING,
        Phase.PAUSED,
        Phase.WAITING_WINDOW,
        Phase.WAITING_DEPENDENCY,
        Phase.FAILED,
    }
)


class OnFailure(enum.StrEnum):
    ROLLBACK = "rollback"
    PAUSE = "pause"


@dataclass(frozen=True)
class Window:
    """When batches may start: `start` to `end` local time on `days` (an end before start spans midnight)."""

    start: time
    end: time
    days: frozenset[str] = frozenset(DAYS)
    timezone: str = "UTC"

    @classmethod
    def from_spec(cls, raw: Mapping[str, Any]) -> Window:
        return cls(
            start=time.fromisoformat(raw["start"]),
            end=time.fromisoformat(raw["end"]),
            days=frozenset(raw.get("days") or DAYS),
            timezone=str(raw.get("timezone") or "UTC"),
        )

    def zone(self) -> ZoneInfo | None:
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            return None

    def admits(self, now: datetime) -> bool:
        """Whether `now` is inside the window; never with an unknown time zone."""
        zone = self.zone()
        if zone is None:
            return False
        local = now.astimezone(zone)
        moment, today = local.time().replace(tzinfo=None), local.date()
        if self.start < self.end:
            return self._day(today) and self.start <= moment < self.end
        if self.start == self.end:  # start equal to end: the whole day
            return self._day(today)
        return (moment >= self.start and self._day(today)) or (
            moment < self.end and self._day(today - timedelta(days=1))
        )

    def next_opening(self, now: datetime) -> datetime | None:
        """The first start of the window after `now` (None with an unknown time zone)."""
        zone = self.zone()
        if zone is None:
            return None
        today = now.astimezone(zone).date()
        for offset in range(8):
            day = today + timedelta(days=offset)
            opening = datetime.combine(day, self.start, tzinfo=zone)
            if self._day(day) and opening > now:
                return opening.astimezone(UTC)
        return None

    def _day(self, day: date) -> bool:
        return DAYS[day.weekday()] in self.days

    def __str__(self) -> str:
        days = ",".join(d for d in DAYS if d in self.days)
        return f"{days} {self.start:%H:%M}-{self.end:%H:%M} {self.timezone}"


@dataclass(frozen=True)
class RolloutSettings:
    """A Release's `spec.rollout`; without one, all nodes in one batch and a failure holds (pause)."""

    batches: tuple[int | str, ...] = ("100%",)
    healthy_for: timedelta = timedelta(0)
    timeout: timedelta = timedelta(seconds=DEFAULT_TIMEOUT)
    on_failure: OnFailure = OnFailure.PAUSE
    window: Window | None = None

    @classmethod
    def from_spec(cls, raw: Mapping[str, Any] | None) -> RolloutSettings:
        """From a schema-valid `spec.rollout` mapping (Release.rollout)."""
        raw = raw or {}
        window = raw.get("window")
        return cls(
            batches=tuple(raw.get("batches") or ("100%",)),
            healthy_for=timedelta(seconds=seconds(raw.get("healthyFor"), 0)),
            timeout=timedelta(seconds=seconds(raw.get("timeout"), DEFAULT_TIMEOUT)),
            on_failure=OnFailure(raw.get("onFailure", OnFailure.PAUSE)),
            window=Window.from_spec(window) if window else None,
        )


@dataclass(frozen=True)
class NodeObservation:
    """What the latest report of one node says about one service (see `observe`)."""

    online: bool = False
    cordoned: bool = False
    version: str | None = None
    ready: bool = False
    ready_since: datetime | None = None
    apply_error: str | None = None  # this service failed to apply on the node's current plan

    @property
    def eligible(self) -> bool:
        """Only online, uncordoned nodes are moved by a batch."""
        return self.online and not self.cordoned


UNSEEN = NodeObservation()


@dataclass(frozen=True)
class RolloutState:
    """A service's rollout as stored in `status/releases/<service>.json`."""

    service: str
    from_version: str | None
    to_version: str
    phase: Phase
    batch: int = -1  # index of the current (running, or last started) batch in the release's batches
    batch_total: int = 0
    batches: tuple[tuple[str, ...], ...] = ()  # the nodes each started batch moved
    batch_started: datetime | None = None  # None: no batch running
    ready: Mapping[str, datetime] = field(default_factory=dict)  # current batch: node -> ready since
    already: tuple[str, ...] = ()  # nodes already on to_version when the rollout began
    held: Mapping[str, str] = field(default_factory=dict)  # cordoned, never moved: node -> version kept
    reason: str | None = None

    @property
    def moved(self) -> frozenset[str]:
        return frozenset(self.already).union(*self.batches)

    @property
    def nodes_done(self) -> int:
        """Nodes on to_version in batches that passed."""
        passed = self.batches if self.phase is Phase.SUCCEEDED else self.batches[: self._passed_batches()]
        return len(self.already) + sum(len(b) for b in passed)

    def _passed_batches(self) -> int:
        running = self.batch_started is not None or self.phase not in ACTIVE
        return self.batch if running else self.batch + 1

    def to_json(self) -> JsonObject:
        return {
            "service": self.service,
            "from": self.from_version,
            "to": self.to_version,
            "phase": self.phase.value,
            "batch": self.batch,
            "batchTotal": self.batch_total,
            "batches": [list(b) for b in self.batches],
            "batchStarted": _format(self.batch_started),
            "ready": {node: _format(since) for node, since in sorted(self.ready.items())},
            "already": list(self.already),
            "held": dict(sorted(self.held.items())),
            "nodesDone": self.nodes_done,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RolloutState:
        """The inverse of `to_json`; ValueError on a document it did not write."""
        try:
            state = cls(
                service=str(raw["service"]),
                from_version=_optional(raw["from"]),
                to_version=str(raw["to"]),
                phase=Phase(raw["phase"]),
                batch=int(raw["batch"]),
                batch_total=int(raw["batchTotal"]),
                batches=tuple(tuple(str(n) for n in b) for b in raw["batches"]),
                batch_started=_parse(raw["batchStarted"]),
                ready={str(n): _parse_required(t) for n, t in raw["ready"].items()},
                already=tuple(str(n) for n in raw["already"]),
                held={str(n): str(v) for n, v in raw["held"].items()},
                reason=_optional(raw["reason"]),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a rollout state: {exc}") from exc
        if len(state.batches) != state.batch + 1:
            raise ValueError(f"not a rollout state: batch {state.batch} with {len(state.batches)} batches")
        return state


@dataclass(frozen=True)
class Decision:
    """One step's outcome: the state to store, the pins for `compile_desired(pins={service: pins})`,
    and when the same inputs could decide differently (a batch healthy long enough, a timeout, a
    window opening), for the reconciler's next pass."""

    state: RolloutState | None
    pins: Mapping[str, str]
    wake_at: datetime | None = None


@dataclass(frozen=True)
class _Step:
    """The inputs of one step other than the previous state."""

    settings: RolloutSettings
    nodes: tuple[str, ...]
    observations: Mapping[str, NodeObservation]
    paused: bool
    now: datetime
    blocked_by: tuple[str, ...] = ()

    def seen(self, node: str) -> NodeObservation:
        return self.observations.get(node, UNSEEN)


def step(
    previous: RolloutState | None,
    *,
    service: str,
    resolved: str | None,
    settings: RolloutSettings,
    nodes: Sequence[str],
    observations: Mapping[str, NodeObservation],
    paused: bool,
    now: datetime,
    releases: Collection[str] | None = None,
    blocked_by: Sequence[str] = (),
) -> Decision:
    """The next state of a service's rollout and the per-node versions it asks for.

    `resolved` is the version the service resolves to now (None: no Release, so no rollout),
    `settings` the rollout of that Release, `nodes` the service's placement, `observations` by
    node (a node without one is offline), `releases` the versions that have a Release (None: any),
    `blocked_by` the dependencies with no ready instance anywhere (no new batch starts meanwhile).
    """
    if resolved is None:
        return Decision(None, {})
    context = _Step(settings, tuple(nodes), observations, paused, now, tuple(sorted(blocked_by)))
    state = _carry(previous, service, resolved, context, releases)
    state = _advance(state, context)
    state = replace(state, held=_held(state, context))
    return Decision(state, _pins(state, context.nodes), _wake_at(state, context))


def step_service(
    model: Model,
    service: str,
    *,
    stored: Mapping[str, Any] | None,
    observations: Mapping[str, NodeObservation],
    now: datetime,
    blocked_by: Sequence[str] = (),
) -> Decision:
    """`step` for one service of a compiled model, from its stored `status/releases/<service>.json`.

    A stored document that cannot be read counts as none: the rollout is then re-derived from the
    versions the nodes report.
    """
    release = model.versions.get(service)
    try:
        previous = RolloutState.from_json(stored) if stored is not None else None
    except ValueError:
        previous = None
    return step(
        previous,
        service=service,
        resolved=release.version if release is not None else None,
        settings=RolloutSettings.from_spec(release.rollout if release is not None else None),
        nodes=model.placement.get(service, ()),
        observations=observations,
        paused=model.services[service].paused,
        now=now,
        releases={r.version for r in model.releases.values() if r.service == service},
        blocked_by=blocked_by,
    )


def _carry(
    previous: RolloutState | None,
    service: str,
    resolved: str,
    context: _Step,
    releases: Collection[str] | None,
) -> RolloutState:
    """The previous state while it rolls out `resolved`, else a new rollout to it."""
    if previous is not None and previous.to_version == resolved:
        return previous
    source = _running_version(previous, resolved, context)
    held = previous.held if previous is not None else {}
    base = RolloutState(service, source, resolved, Phase.SUCCEEDED, held=held)
    if source is None:
        return replace(base, reason="first deployment: every node gets the release at once")
    if source == resolved:
        return replace(base, reason=f"back to {resolved}, which the fleet ran: every node at once")
    if releases is not None and source not in releases:
        return replace(base, reason=f"{source} has no Release any more: every node gets {resolved} at once")
    already = tuple(n for n in sorted(context.nodes) if context.seen(n).version == resolved)
    return replace(base, phase=Phase.PENDING, batch_total=len(context.settings.batches), already=already)


def _running_version(previous: RolloutState | None, resolved: str, context: _Step) -> str | None:
    """What the fleet runs before a rollout to `resolved` (see the module docstring)."""
    if previous is not None:
        if previous.phase is Phase.SUCCEEDED or previous.from_version is None:
            return previous.to_version
        return previous.from_version
    reported = Counter(
        v for n in context.nodes if (v := context.seen(n).version) is not None and v != resolved
    )
    if not reported:
        return None
    return max(reported, key=lambda v: (reported[v], _version_key(v)))


def _version_key(text: str) -> tuple[bool, Version]:
    try:
        return True, Version.parse(text)
    except RangeError:
        return False, Version(0, 0, 0)


def _advance(state: RolloutState, context: _Step) -> RolloutState:
    if state.phase in (Phase.SUCCEEDED, Phase.ROLLED_BACK):
        return state
    if state.phase is Phase.ROLLING_BACK:
        return _rolling_back(state, context)
    if context.paused:
        return (
            state
            if state.phase is Phase.PAUSED
            else replace(state, phase=Phase.PAUSED, reason=_paused(state))
        )
    if state.phase is Phase.FAILED:
        return state
    if state.phase is Phase.PAUSED and state.batch_started is not None:
        state = replace(state, batch_started=context.now)  # the timeout starts again on resume
    if state.batch_started is not None:
        return _evaluate(replace(state, phase=Phase.PROGRESSING), context)
    if context.blocked_by:
        waiting = ", ".join(context.blocked_by)
        return replace(state, phase=Phase.WAITING_DEPENDENCY, reason=f"waiting for {waiting} to be healthy")
    return _start_next(state, context)


def _paused(state: RolloutState) -> str:
    failed = (
        f" after a failure ({state.reason}); resuming retries the batch"
        if state.phase is Phase.FAILED
        else ""
    )
    return f"paused by spec.paused{failed}"


def _evaluate(state: RolloutState, context: _Step) -> RolloutState:
    """A running batch: failed on an apply error or timeout, passed once healthy long enough."""
    members = [n for n in state.batches[state.batch] if n in context.nodes]
    failed = [(n, error) for n in members if (error := context.seen(n).apply_error)]
    if failed:
        return _fail(state, context, "apply failed on " + "; ".join(f"{n}: {e}" for n, e in failed))
    gating = [n for n in members if not context.seen(n).cordoned]
    ready = _ready_since(state, gating, context)
    waiting = [n for n in gating if n not in ready or context.now - ready[n] < context.settings.healthy_for]
    if not waiting:
        done = replace(state, batch_started=None, ready={})
        return _start_next(done, context)
    assert state.batch_started is not None
    if context.now - state.batch_started >= context.settings.timeout:
        late = ", ".join(f"{n} ({_why_not(state, n, context)})" for n in waiting)
        return _fail(state, context, f"batch {state.batch + 1} not healthy within {_span(context)}: {late}")
    return replace(state, ready=ready, reason=_waiting(state, waiting, context))


def _waiting(state: RolloutState, nodes: Sequence[str], context: _Step) -> str:
    who, version, span = ", ".join(nodes), state.to_version, _healthy(context)
    return f"batch {state.batch + 1}: waiting for {who} to be ready on {version} for {span}"


def _ready_since(state: RolloutState, nodes: Sequence[str], context: _Step) -> dict[str, datetime]:
    """Since when each node is ready on the new version: its report's readySince, else when first seen."""
    ready: dict[str, datetime] = {}
    for node in nodes:
        seen = context.seen(node)
        if (
            seen.online and seen.version == state.to_version and seen.ready
        ):  # an offline node's report is stale
            ready[node] = seen.ready_since or state.ready.get(node) or context.now
    return ready


def _why_not(state: RolloutState, node: str, context: _Step) -> str:
    seen = context.seen(node)
    if not seen.online:
        return "offline"
    if seen.version != state.to_version:
        return f"reports {seen.version or 'no version'}"
    return "not ready" if not seen.ready else f"not ready for {_healthy(context)}"


def _fail(state: RolloutState, context: _Step, reason: str) -> RolloutState:
    if context.settings.on_failure is OnFailure.ROLLBACK:
        reason = f"{reason}; rolling back to {state.from_version}"
        back = replace(state, phase=Phase.ROLLING_BACK, batch_started=None, ready={}, reason=reason)
        return _rolling_back(back, context)
    return replace(state, phase=Phase.FAILED, reason=reason)


def _start_next(state: RolloutState, context: _Step) -> RolloutState:
    """Start the next batch that moves any node, or finish; empty batches are passed over."""
    total = len(context.settings.batches)
    state = replace(state, batch_total=total)
    while state.batch + 1 < total:
        index = state.batch + 1
        picked = _pick(state, index, context)
        if picked:
            return _start(state, index, picked, context)
        if not state.moved:
            reason = "no online, uncordoned node to start on"
            return replace(state, phase=Phase.PENDING, reason=reason) if context.nodes else _succeeded(state)
        state = replace(state, batch=index, batches=(*state.batches, ()))
    return _succeeded(state)


def _start(state: RolloutState, index: int, picked: tuple[str, ...], context: _Step) -> RolloutState:
    window = context.settings.window
    if window is not None and not window.admits(context.now):
        reason = f"batch {index + 1} waits for the release window ({window})"
        if window.zone() is None:
            reason = f"batch {index + 1} waits: unknown time zone {window.timezone!r} in the release window"
        return replace(state, phase=Phase.WAITING_WINDOW, reason=reason)
    started = replace(
        state,
        phase=Phase.PROGRESSING,
        batch=index,
        batches=(*state.batches, picked),
        batch_started=context.now,
    )
    return replace(started, ready={}, reason=_waiting(started, picked, context))


def _succeeded(state: RolloutState) -> RolloutState:
    reason = f"every batch passed: {state.to_version} is rolled out"
    return replace(state, phase=Phase.SUCCEEDED, batch_started=None, ready={}, reason=reason)


def _pick(state: RolloutState, index: int, context: _Step) -> tuple[str, ...]:
    """The nodes batch `index` moves: the next eligible ones in rollout order up to its cumulative share."""
    moved = state.moved.intersection(context.nodes)
    candidates = [n for n in order(state.service, state.to_version, context.nodes) if n not in moved]
    eligible = [n for n in candidates if context.seen(n).eligible]
    population = len(moved) + len(eligible)
    last = index == len(context.settings.batches) - 1
    target = population if last else cut(context.settings.batches[index], population)
    return tuple(eligible[: max(0, target - len(moved))])


def order(service: str, version: str, nodes: Collection[str]) -> list[str]:
    """The rollout order of `nodes`: by SHA-256 of (service, version, node), whatever order they come in."""
    return sorted(
        set(nodes), key=lambda n: (hashlib.sha256(f"{service}\0{version}\0{n}".encode()).digest(), n)
    )


def cut(share: int | str, population: int) -> int:
    """How many of `population` nodes a cumulative share covers: a count, or a percentage rounded up."""
    if isinstance(share, int):
        return min(share, population)
    percent = int(share.rstrip("%"))
    return min(population, -(-percent * population // 100))


def _rolling_back(state: RolloutState, context: _Step) -> RolloutState:
    """Rolled back once every moved node that can report reports from_version again."""
    moved = [n for n in sorted(state.moved) if n in context.nodes and context.seen(n).eligible]
    if any(context.seen(n).version != state.from_version for n in moved):
        return state
    return replace(state, phase=Phase.ROLLED_BACK)


def _held(state: RolloutState, context: _Step) -> dict[str, str]:
    """Cordoned nodes a rollout never moved keep the version they had, across rollouts."""
    held: dict[str, str] = {}
    moved = state.moved
    for node in context.nodes:
        version = state.held.get(node) or state.from_version
        if context.seen(node).cordoned and node not in moved and version is not None:
            held[node] = version
    return held


def _pins(state: RolloutState, nodes: Sequence[str]) -> dict[str, str]:
    """Per-node versions other than `to_version`: not yet moved, rolled back, or held."""
    pins: dict[str, str] = {}
    back = state.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK)
    for node in sorted(nodes):
        if node in state.held:
            pins[node] = state.held[node]
        elif state.from_version is not None and (back or (state.phase in ACTIVE and node not in state.moved)):
            pins[node] = state.from_version
    return {node: version for node, version in pins.items() if version != state.to_version}


def _wake_at(state: RolloutState, context: _Step) -> datetime | None:
    """When the same inputs could decide differently: a batch healthy long enough, its timeout, a window."""
    window = context.settings.window
    if state.phase is Phase.WAITING_WINDOW and window is not None:
        return window.next_opening(context.now)
    if state.phase is not Phase.PROGRESSING or state.batch_started is None:
        return None
    times = [state.batch_started + context.settings.timeout]
    times += [since + context.settings.healthy_for for since in state.ready.values()]
    future = [t for t in times if t > context.now]
    return min(future) if future else None


def observe(
    report: Report | None,
    *,
    service: str,
    resource_ids: Collection[str],
    plan_serial: int | None,
    online: bool,
    cordoned: bool,
) -> NodeObservation:
    """A node's observation for one service from its latest report.

    An apply error counts only when it is about the node's current plan (`plan_serial`): a failed
    resource of the service in a report that applied it, or the plan rejected by the agent.
    """
    if report is None:
        return NodeObservation(online=online, cordoned=cordoned)
    instance = report.instance(service)
    return NodeObservation(
        online=online,
        cordoned=cordoned,
        version=instance.version if instance else None,
        ready=instance.ready if instance else False,
        ready_since=_parse_lenient(instance.ready_since) if instance else None,
        apply_error=_apply_error(report, resource_ids, plan_serial),
    )


def _apply_error(report: Report, resource_ids: Collection[str], plan_serial: int | None) -> str | None:
    if plan_serial is None:
        return None
    rejected = report.rejected
    if rejected is not None and rejected.serial == plan_serial:
        return f"plan {plan_serial} rejected: {rejected.reason}"
    if report.applied is None or report.applied.serial != plan_serial:
        return None
    failed = [f"{r.id}: {r.error or r.reason or 'failed'}" for r in report.failed() if r.id in resource_ids]
    return "; ".join(failed) or None


def _healthy(context: _Step) -> str:
    return _duration(context.settings.healthy_for)


def _span(context: _Step) -> str:
    return _duration(context.settings.timeout)


def _duration(span: timedelta) -> str:
    total = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if total and total % size == 0:
            return f"{total // size}{unit}"
    return f"{total}s"


def _format(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse(text: Any) -> datetime | None:
    return None if text is None else _parse_required(text)


def _parse_required(text: Any) -> datetime:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).astimezone(UTC)


def _parse_lenient(text: Any) -> datetime | None:
    """A report's time, or None when absent or not a time (reports are untrusted input)."""
    try:
        return _parse(text)
    except ValueError:
        return None


def _optional(value: Any) -> str | None:
    return None if value is None else str(value)
