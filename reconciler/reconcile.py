"""One reconcile pass: desired commit + reports + previous state branch -> at most one new state commit."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pygit2
import structlog

from contract.crypto import SigningKey, VerifyKey
from contract.defaults import MAX_PLAN_BYTES, REPORTS_PREFIX, STATE_BRANCH
from contract.documents import verify_document
from contract.errors import ContractError, PushRejected, RewindRefused, TemporaryError, UsageError
from contract.vocabulary import NodeState
from reconciler.core.compile.desired import CompileCache, Desired, Endpoint, SourceFile, compile_desired
from reconciler.core.decide.discovery import waiting_for
from reconciler.core.decide.planner import (
    FleetPlan,
    NodePlan,
    PlanCache,
    PlanSettings,
    parse_time,
    plan_fleet,
    plan_payload,
)
from reconciler.core.decide.rollout import Decision, NodeObservation, RolloutState, observe, step_service
from reconciler.core.decide.status import (
    APPS_PREFIX,
    NODES_PREFIX,
    SERVICES_PREFIX,
    NodeFacts,
    ReceivedReport,
    ServiceFacts,
    app_documents,
    endpoints_from_reports,
    is_reachable,
    liveness,
    node_states,
    node_status,
    placed_ports,
    service_status,
    source_status,
)
from reconciler.core.decide.trust import (
    ALERTS_PATH,
    MANIFEST_PATH,
    Alert,
    Manifest,
    merge_alerts,
    next_serials,
    unvouched,
    verified_manifest,
)
from reconciler.core.findings import Finding
from reconciler.drivers.desired_source import SourceCache, read_commit_files
from reconciler.drivers.keys import Sealer, SecretValues, secrets_key
from reconciler.drivers.reports import ReportCache, read_reports, report_tips
from reconciler.drivers.statestore import Location, StateSnapshot, StateStore, current_target, state_json

if TYPE_CHECKING:
    from reconciler.core.compile.model import Model

log = structlog.get_logger("plumb.reconcile")
MAX_ATTEMPTS = 20
HISTORY_LIMIT = 1000  # state commits searched back for the last plan of a node this reconciler signed
SOURCE_PATH = "status/source.json"
RELEASES_PREFIX = "status/releases/"
STATE_BRANCH_NAME = "the state branch"
JsonObject = dict[str, Any]


@dataclass(frozen=True)
class PassResult:
    """What one pass did: the desired commit seen, the state commit written (if any), nodes re-planned."""

    desired: str | None
    written: str | None = None
    changed_nodes: tuple[str, ...] = ()
    ok: bool = True
    findings: tuple[Finding, ...] = ()
    skipped: bool = False
    wake_at: datetime | None = None  # when a pass with the same inputs could decide differently


class _PassKey(NamedTuple):
    """Everything a pass reads from Git: two passes with equal keys decide alike (until `_Memo.until`)."""

    state_tip: str | None
    desired: str
    report_tips: tuple[tuple[str, str], ...]
    state_branch: str


@dataclass(frozen=True)
class _Memo:
    """The last pass that wrote nothing (or the state it wrote), by what it read; one reading the
    same before `until` would decide the same, so it is skipped."""

    key: _PassKey
    until: datetime

    def covers(self, key: _PassKey, now: datetime) -> bool:
        return self.key == key and now < self.until


@dataclass(frozen=True)
class _Trust:
    """What the state branch's tip holds that this reconciler vouches for.

    `manifest` is the tip's verified manifest, else the newest verified one in the branch's history
    (its serials still hold; its files vouch for nothing at the tip), else an empty one; `ever_signed`
    says whether any was found (a branch written before manifests existed is rewritten quietly).
    """

    manifest: Manifest
    at_tip: bool
    ever_signed: bool
    unvouched: tuple[str, ...]

    def vouches(self, snapshot: StateSnapshot, path: str) -> bool:
        return self.at_tip and self.manifest.vouches(path, snapshot.files.get(path))


@dataclass
class _Inputs:
    """Everything a pass reads before computing, gathered in one place."""

    snapshot: StateSnapshot
    desired: str
    tips: dict[str, str]
    source: Mapping[str, Any] | None = None  # both set by `_verify_inputs` once a pass will run
    trust: _Trust = field(default_factory=lambda: _Trust(Manifest(), False, False, ()))

    def key(self, state_branch: str, *, written: str | None = None) -> _PassKey:
        """What was read, as a memo key; after a write, the state branch is at `written`."""
        tips = tuple(sorted(self.tips.items()))
        return _PassKey(written or self.snapshot.tip, self.desired, tips, state_branch)


@dataclass(frozen=True)
class _Discovered:
    """What the latest reports decide before rendering: endpoints, dependencies nothing serves, rollouts."""

    endpoints: dict[str, list[Endpoint]] = field(default_factory=dict)
    waiting: dict[str, list[str]] = field(default_factory=dict)
    decisions: dict[str, Decision] = field(default_factory=dict)

    @property
    def pins(self) -> dict[str, dict[str, str]]:
        return {name: dict(d.pins) for name, d in self.decisions.items() if d.pins}

    @property
    def render_key(self) -> tuple[Any, ...]:
        """Everything besides the files that the rendered resources depend on."""
        return (self.endpoints, self.waiting, self.pins)

    def release_docs(self) -> dict[str, JsonObject | None]:
        """status/releases/<service>.json of every service (None: no rollout, no document)."""
        return {
            f"{RELEASES_PREFIX}{name}.json": d.state.to_json() if d.state is not None else None
            for name, d in self.decisions.items()
        }

    @property
    def wake_at(self) -> datetime | None:
        times = [d.wake_at for d in self.decisions.values() if d.wake_at is not None]
        return min(times) if times else None


@dataclass
class _Pass:
    """One attempt at a pass, by name: what it read, its clock, the plans already on the state
    branch, and what the latest reports say (`reports`, then `discovered`, both set by `_compile`
    before anything is planned). The steps of an attempt read it; nothing of it outlives the attempt."""

    inputs: _Inputs
    now: datetime
    previous: Mapping[str, NodePlan]
    unverified: frozenset[str] = frozenset()  # nodes whose plan on the branch this reconciler did not sign
    alerts: list[Alert] = field(default_factory=list)
    reports: Mapping[str, ReceivedReport] = field(default_factory=dict)
    discovered: _Discovered = field(default_factory=_Discovered)


@dataclass(frozen=True)
class _Observed:
    """What one pass's rollout steps observe: the model, latest reports, previous plans, online nodes."""

    model: Model
    reports: Mapping[str, ReceivedReport]
    previous: Mapping[str, NodePlan]
    online: frozenset[str]


@dataclass(frozen=True)
class _Compiled:
    """The last desired commit compiled, by its commit id: its files, and what compiling them gave
    with the endpoints, waiting lists and pins of `rendered_with` (a pass that discovers the same
    reuses it; a new commit is first rendered with them too)."""

    commit: str
    files: list[SourceFile]
    desired: Desired
    rendered_with: _Discovered


@dataclass(frozen=True, slots=True)
class _PlanRead:
    """A plan document on the state branch (read or just written) and the NodePlan it holds.

    Kept by `id(document)`: the state store hands back the same document object for the same blob,
    and holding the document here keeps its id from being reused by another object."""

    document: Mapping[str, Any]
    plan: NodePlan


@dataclass(frozen=True, slots=True)
class _PlanServiceIds:
    """The resource ids of each service in one plan object, and the port names each declares there."""

    plan: NodePlan
    by_service: dict[str, frozenset[str]]
    placed: dict[str, frozenset[str]]


class _ServiceIds:
    """The resource ids of each service in a node's plan, by node, kept while the plan object is the same."""

    def __init__(self) -> None:
        self.entries: dict[str, _PlanServiceIds] = {}

    def of(self, node: str, plan: NodePlan | None, service: str) -> frozenset[str]:
        return (
            self._entry(node, plan).by_service.get(service, frozenset()) if plan is not None else frozenset()
        )

    def placed(self, node: str, plan: NodePlan | None) -> Mapping[str, frozenset[str]]:
        """The services the node's plan places on it, with their declared port names."""
        return self._entry(node, plan).placed if plan is not None else {}

    def _entry(self, node: str, plan: NodePlan) -> _PlanServiceIds:
        hit = self.entries.get(node)
        if hit is None or hit.plan is not plan:
            grouped: dict[str, set[str]] = {}
            for entry in plan.resources:
                grouped.setdefault(str(entry.get("service")), set()).add(str(entry.get("id")))
            by_service = {k: frozenset(v) for k, v in grouped.items()}
            hit = _PlanServiceIds(plan, by_service, placed_ports(plan.resources))
            self.entries[node] = hit
        return hit


class _NodeStatusKey(NamedTuple):
    """What a node's status document depends on, compared by value, besides its report."""

    facts: NodeFacts
    state: Any  # its liveness and the resources withheld from its plan
    plan_serial: int
    plan_digest: str
    plan_commit: str
    applied: str  # "never applied" or "in sync"


@dataclass(frozen=True, slots=True)
class _NodeStatusEntry:
    """A node's status document, made from `key` and the report object `report` (by identity)."""

    key: _NodeStatusKey
    report: ReceivedReport | None
    document: JsonObject


class _NodeStatusMemo:
    """Node status documents by node name, so an unchanged node is not diffed again.

    Only nodes that never applied a plan or are in sync are memoised: for a node that is behind,
    the document also depends on the plan it last applied, which is cheap enough to recompute.
    """

    def __init__(self) -> None:
        self.entries: dict[str, _NodeStatusEntry] = {}

    @staticmethod
    def key(
        facts: NodeFacts, state: Any, plan: NodePlan, report: ReceivedReport | None
    ) -> _NodeStatusKey | None:
        applied = report.applied if report is not None else None
        if applied is None:
            base = "never applied"
        elif (applied.serial, applied.digest) == (plan.serial, plan.digest):
            base = "in sync"
        else:
            return None
        return _NodeStatusKey(facts, state, plan.serial, plan.digest, plan.commit, base)

    def get(self, name: str, key: _NodeStatusKey | None, report: ReceivedReport | None) -> JsonObject | None:
        hit = self.entries.get(name)
        if key is None or hit is None or hit.key != key or hit.report is not report:
            return None
        return hit.document

    def put(
        self, name: str, key: _NodeStatusKey | None, report: ReceivedReport | None, doc: JsonObject
    ) -> JsonObject:
        if key is not None:
            self.entries[name] = _NodeStatusEntry(key, report, doc)
        return doc


class _ServiceStatusKey(NamedTuple):
    """What a service's status document depends on, compared by value, besides its nodes' reports."""

    facts: ServiceFacts
    endpoints: tuple[Endpoint, ...]
    liveness: tuple[NodeState | None, ...]  # of its nodes, in `facts.nodes` order
    rollout: JsonObject | None


@dataclass(frozen=True, slots=True)
class _ServiceStatusEntry:
    """A service's status document, made from `key` and its nodes' report objects (by identity)."""

    key: _ServiceStatusKey
    reports: tuple[ReceivedReport | None, ...]
    document: JsonObject


class _ServiceStatusMemo:
    """status/services/<name>.json by service name, reused while nothing it reads has changed."""

    def __init__(self) -> None:
        self.entries: dict[str, _ServiceStatusEntry] = {}

    def keep(self, services: Collection[str]) -> None:
        """Forget services that left the desired state."""
        self.entries = {name: hit for name, hit in self.entries.items() if name in services}

    def get(
        self, name: str, key: _ServiceStatusKey, reports: tuple[ReceivedReport | None, ...]
    ) -> JsonObject | None:
        hit = self.entries.get(name)
        if (
            hit is None
            or hit.key != key
            or not all(a is b for a, b in zip(hit.reports, reports, strict=True))
        ):
            return None
        return hit.document

    def put(
        self, name: str, key: _ServiceStatusKey, reports: tuple[ReceivedReport | None, ...], doc: JsonObject
    ) -> JsonObject:
        self.entries[name] = _ServiceStatusEntry(key, reports, doc)
        return doc


@dataclass
class Reconciler:
    """Reconciles one repository; caches make repeated passes cheap, but every pass is decided from Git.

    A pass reads the state branch first and the desired branch second (so a desired tip is never
    older than what another reconciler already reconciled), refuses a rewound desired branch,
    compiles the desired commit, learns from the latest reports the endpoints, the dependencies
    nothing serves yet and each service's next rollout step, renders with them, plans every node,
    derives the status documents (rollouts in `status/releases/`), and writes one commit with only
    the files that changed. A lost compare-and-swap race re-reads everything and tries again.

    What one attempt reads and learns lives in a `_Pass`; what lives here is configuration, the
    state stores, and the caches that make the next pass fast, each with a named entry type.
    Process-wide settings (garbage-collector tuning) belong to the process running the passes.
    """

    location: Location
    key: SigningKey
    branch: str = "main"
    allow_rewind: bool = False
    compile_cache: CompileCache = field(default_factory=CompileCache)
    plan_cache: PlanCache = field(default_factory=PlanCache)
    report_cache: ReportCache = field(default_factory=ReportCache)
    source_cache: SourceCache = field(default_factory=SourceCache)
    state_branch: str = STATE_BRANCH
    reports_prefix: str = REPORTS_PREFIX
    _stores: dict[str, StateStore] = field(default_factory=dict, init=False)
    _memo: _Memo | None = field(default=None, init=False)
    _compiled: _Compiled | None = field(default=None, init=False)
    _plans_read: dict[int, _PlanRead] = field(default_factory=dict, init=False)
    _service_ids: _ServiceIds = field(default_factory=lambda: _ServiceIds(), init=False)
    _node_status: _NodeStatusMemo = field(default_factory=lambda: _NodeStatusMemo(), init=False)
    _service_status: _ServiceStatusMemo = field(default_factory=lambda: _ServiceStatusMemo(), init=False)
    _sealer_cache: dict[str, Sealer] = field(default_factory=dict, init=False)
    _secrets: SecretValues | None = field(default=None, init=False)
    _manifests: dict[str, Manifest | None] = field(default_factory=dict, init=False)

    def reconcile(self, *, now: datetime | None = None) -> PassResult:
        """One pass, retried on lost races; `now` defaults to the clock (the core never reads it)."""
        refetched = False
        for attempt in range(MAX_ATTEMPTS):
            try:
                return self._attempt(now or datetime.now(UTC))
            except PushRejected as exc:
                log.info("state branch moved; re-reading", attempt=attempt + 1, reason=str(exc))
                time.sleep(random.uniform(0.0, 0.05 * (attempt + 1)))
                self.location.refresh()
            except RewindRefused:
                # a fetch may list main before another reconciler's newer state: look once more
                if self.location.is_local or refetched:
                    raise
                refetched = True
                self.location.refresh()
        raise TemporaryError(f"gave up after {MAX_ATTEMPTS} lost races on {self.state_branch}")

    def _store(self) -> StateStore:
        ref = "refs/heads/" + self.state_branch
        if ref not in self._stores:
            self._stores[ref] = StateStore(self.location.repo, ref)
        return self._stores[ref]

    def _read_inputs(self) -> _Inputs:
        snapshot = self._store().read()
        desired = current_target(Path(self.location.repo.path), "refs/heads/" + self.branch)
        if desired is None:
            raise UsageError(f"the desired branch {self.branch!r} does not exist")
        tips = report_tips(self.location.repo, self.reports_prefix)
        return _Inputs(snapshot=snapshot, desired=desired, tips=tips)

    def _verify_inputs(self, inputs: _Inputs) -> None:
        """What of the state branch this reconciler vouches for, and the source status if it does."""
        snapshot = inputs.snapshot
        inputs.trust = self._trust(snapshot)
        if inputs.trust.vouches(snapshot, SOURCE_PATH):
            inputs.source = self._store().try_load(snapshot, SOURCE_PATH)

    def _trust(self, snapshot: StateSnapshot) -> _Trust:
        """Verify the tip's manifest; failing that, find the newest verified one for its serials."""
        store, verify_key = self._store(), self.key.verify_key()
        blob = snapshot.files.get(MANIFEST_PATH)
        manifest = self._manifest(blob, verify_key)
        if manifest is not None:
            return _Trust(manifest, True, True, tuple(unvouched(manifest, snapshot.files)))
        for old in store.history_blobs(snapshot, MANIFEST_PATH, limit=HISTORY_LIMIT):
            found = self._manifest(old, verify_key) if old != blob else None
            if found is not None:
                return _Trust(found, False, True, tuple(unvouched(None, snapshot.files)))
        return _Trust(Manifest(), False, False, tuple(unvouched(None, snapshot.files)))

    def _manifest(self, blob: str | None, verify_key: VerifyKey) -> Manifest | None:
        """The verified manifest in `blob` (cached by blob id: the check is the same each pass)."""
        if blob is None:
            return None
        if blob not in self._manifests:
            try:
                document = self._store().load_json(blob, what=MANIFEST_PATH)
            except ContractError:
                document = None
            if len(self._manifests) > 8:
                self._manifests.clear()
            self._manifests[blob] = verified_manifest(document, verify_key)
        return self._manifests[blob]

    def _trusted(self, run: _Pass, path: str) -> JsonObject | None:
        """A status document of the state branch, if the verified manifest vouches for it."""
        snapshot = run.inputs.snapshot
        return self._store().try_load(snapshot, path) if run.inputs.trust.vouches(snapshot, path) else None

    def _attempt(self, now: datetime) -> PassResult:
        inputs = self._read_inputs()
        if self._memo is not None and self._memo.covers(inputs.key(self.state_branch), now):
            return PassResult(desired=inputs.desired, skipped=True)
        self._verify_inputs(inputs)
        self._check_forward(inputs)
        run = _Pass(inputs=inputs, now=now, previous={})
        run.previous, run.unverified = self._previous_plans(run)
        desired = self._compile(run)
        if not desired.ok or desired.model is None:
            return self._write_invalid(run, desired)
        repository = desired.model.repository
        if (repository.state_branch, repository.reports_prefix) != (self.state_branch, self.reports_prefix):
            self.state_branch, self.reports_prefix = repository.state_branch, repository.reports_prefix
            return self._attempt(now)
        return self._write_valid(run, desired)

    def _check_forward(self, inputs: _Inputs) -> None:
        last = inputs.source.get("commit") if inputs.source else None
        if not isinstance(last, str) or last == inputs.desired or self.allow_rewind:
            return
        repo = self.location.repo
        try:
            forward = repo.descendant_of(pygit2.Oid(hex=inputs.desired), pygit2.Oid(hex=last))
        except (pygit2.GitError, KeyError, ValueError):
            forward = False
        if not forward:
            raise RewindRefused(
                f"{self.branch} at {inputs.desired[:12]} does not descend from the last reconciled commit "
                f"{last[:12]}; refusing to rewind (use --allow-rewind)"
            )

    def _compile(self, run: _Pass) -> Desired:
        """Compile the desired commit with what the reports decide (endpoints, waiting, rollout pins).

        A new commit is first rendered with what the last one was; a commit already compiled with
        the same endpoints, waiting lists and pins (a pass woken by heartbeats) is not compiled
        again. An invalid commit reads no report and runs no rollout step.
        """
        commit, compiled = run.inputs.desired, self._compiled
        if compiled is None or compiled.commit != commit:
            _, files = read_commit_files(self.location.repo, commit, cache=self.source_cache)
            guess = compiled.rendered_with if compiled is not None else _Discovered()
            compiled = self._compiled = self._render(commit, files, guess)
        model = compiled.desired.model
        if not compiled.desired.ok or model is None:
            return compiled.desired
        run.reports = self._reports(model, run.inputs)
        run.discovered = self._discover(run, model)
        if run.discovered.render_key != compiled.rendered_with.render_key:
            compiled = self._compiled = self._render(commit, compiled.files, run.discovered)
        return compiled.desired

    def _render(self, commit: str, files: list[SourceFile], found: _Discovered) -> _Compiled:
        desired = compile_desired(
            files, endpoints=found.endpoints, waiting=found.waiting, pins=found.pins, cache=self.compile_cache
        )
        return _Compiled(commit=commit, files=files, desired=desired, rendered_with=found)

    def _reports(self, model: Model, inputs: _Inputs) -> dict[str, ReceivedReport]:
        keys = {name: node.signing_key for name, node in model.nodes.items()}
        return read_reports(self.location.repo, tips=inputs.tips, keys=keys, cache=self.report_cache)

    def _discover(self, run: _Pass, model: Model) -> _Discovered:
        """Endpoints, waiting lists and each service's next rollout step, from the pass's reports."""
        reports, now, offline_after = run.reports, run.now, model.repository.offline_after
        states = {
            n: liveness(reports.get(n), cordoned=node.cordoned, now=now, offline_after=offline_after)[0]
            for n, node in model.nodes.items()
        }
        reachable = [n for n, state in states.items() if is_reachable(state)]
        addresses = {n: node.address for n, node in model.nodes.items()}
        # online for a rollout: reporting lately, cordoned or not (a cordoned node still gates its batch)
        online = frozenset(n for n in reachable if _reports_lately(reports.get(n), model, now))
        facts = _Observed(model, reports, run.previous, online)
        waiting = waiting_for(model, reports, reachable=reachable)
        placed = {n: self._service_ids.placed(n, run.previous.get(n)) for n in reports}
        return _Discovered(
            endpoints=endpoints_from_reports(
                reports, addresses=addresses, reachable=reachable, placed=placed
            ),
            waiting=waiting,
            decisions={
                name: self._rollout(run, facts, name, waiting.get(name, ()))
                for name in sorted(model.services)
            },
        )

    def _rollout(self, run: _Pass, facts: _Observed, service: str, blocked_by: Sequence[str]) -> Decision:
        """The service's next rollout step, from its stored state and what its nodes report."""
        if facts.model.versions.get(service) is None:
            return Decision(None, {})  # no Release: nothing to roll out (and no document)
        stored = self._trusted(run, f"{RELEASES_PREFIX}{service}.json")
        started = _batch_started(stored)
        observations = {
            node: _not_before(self._observe(facts, service, node), started)
            for node in facts.model.placement.get(service, ())
        }
        return step_service(
            facts.model, service, stored=stored, observations=observations, now=run.now, blocked_by=blocked_by
        )

    def _observe(self, facts: _Observed, service: str, node: str) -> NodeObservation:
        """What `node`'s latest report says about `service`, against the plan it was last given."""
        report, plan = facts.reports.get(node), facts.previous.get(node)
        return observe(
            report.report if report is not None else None,
            service=service,
            resource_ids=self._service_ids.of(node, plan, service),
            plan_serial=plan.serial if plan is not None else None,
            online=node in facts.online,
            cordoned=facts.model.nodes[node].cordoned,
        )

    def _write_invalid(self, run: _Pass, desired: Desired) -> PassResult:
        inputs = run.inputs
        last_good = inputs.source.get("lastGood") if inputs.source else None
        document = source_status(
            commit=inputs.desired,
            branch=self.branch,
            findings=desired.findings,
            ok=False,
            last_good=last_good,
        )
        changes = self._diff_docs(inputs.snapshot, {SOURCE_PATH: document})
        # a plan on the branch that is not ours goes back to the last one we signed, even now
        changes.update(
            {
                f"plans/{n}.json": self._signed_file(run.previous[n])
                for n in run.unverified
                if n in run.previous
            }
        )
        keep = {SOURCE_PATH, *(f"plans/{n}.json" for n in run.previous)}
        changes = self._finish(run, changes, plans=run.previous, keep=keep)
        message = f"Record invalid desired commit {inputs.desired[:12]}\n\nDesired-Commit: {inputs.desired}\n"
        written = self._commit(run, changes, message) if changes else None
        self._remember(inputs, written, until=run.now + timedelta(days=1))
        log.warning("desired commit is invalid", commit=inputs.desired, findings=len(desired.findings))
        return PassResult(desired=inputs.desired, written=written, ok=False, findings=desired.findings)

    def _write_valid(self, run: _Pass, desired: Desired) -> PassResult:
        assert desired.model is not None
        model, inputs = desired.model, run.inputs
        fleet = plan_fleet(
            nodes=desired.nodes,
            previous=run.previous,
            settings=_settings(model),
            commit=inputs.desired,
            now=run.now,
            cache=self.plan_cache,
            sealers=self._sealers(model),
            secrets=self._secret_values(model),
            addresses={name: node.address for name, node in model.nodes.items()},
            floors=inputs.trust.manifest.serials,
        )
        # a plan on the branch that is not ours is replaced by ours, derived from the last plan we signed
        plan_files = {n: self._signed_file(fleet.plans[n]) for n in fleet.changed}
        fleet, refused = _refuse_oversized(model, fleet, plan_files, run.previous)
        resign = {n for n in fleet.plans if n not in fleet.changed and n in run.unverified}
        plan_files.update({n: self._signed_file(fleet.plans[n]) for n in resign})
        docs: dict[str, JsonObject | None] = {f"plans/{n}.json": None for n in fleet.removed}
        docs.update(self._status_docs(run, model, fleet, warnings=desired.findings + refused))
        changes = self._diff_docs(inputs.snapshot, docs)
        changes.update(
            {f"plans/{n}.json": data for n, data in plan_files.items() if n in fleet.changed | resign}
        )
        keep = {*docs, *(f"plans/{n}.json" for n in fleet.plans)}
        changes = self._finish(run, changes, plans=fleet.plans, keep=keep)
        changed_nodes = tuple(sorted(fleet.changed | fleet.removed | resign))
        written = None
        if changes:
            written = self._commit(run, changes, _message(inputs.desired, changed_nodes))
            log.info("state written", commit=written, desired=inputs.desired, nodes=len(changed_nodes))
        deadline = _next_deadline(model, fleet.plans, run.reports, run.now)
        wake_at = min(deadline, run.discovered.wake_at or deadline)
        self._remember(inputs, written, until=wake_at)
        return PassResult(
            desired=inputs.desired, written=written, changed_nodes=changed_nodes, wake_at=wake_at
        )

    def _secret_values(self, model: Model) -> SecretValues:
        """The desired state's sealed Secret values, opened only while sealing them to a node."""
        sealed = tuple(
            (secret.name, field_name, text)
            for secret in sorted(model.secrets.values(), key=lambda s: s.name)
            for field_name, text in sorted(secret.data.items())
        )
        if self._secrets is None or self._secrets.sealed != sealed:
            self._secrets = SecretValues(secrets_key(self.key), sealed)
        return self._secrets

    def _sealers(self, model: Model) -> dict[str, Sealer]:
        """A sealer per node that has a sealing key; the same key gives the same (cached) sealer."""
        sealers: dict[str, Sealer] = {}
        for name, node in model.nodes.items():
            if node.sealing_key:
                if node.sealing_key not in self._sealer_cache:
                    self._sealer_cache[node.sealing_key] = Sealer.for_node(self.key, node.sealing_key)
                sealers[name] = self._sealer_cache[node.sealing_key]
        return sealers

    def _signed_file(self, plan: NodePlan) -> bytes:
        """The plan signed and laid out as a file; its document is cached for the next pass."""
        payload, texts = plan_payload(plan, self.plan_cache)
        document = plan.document()
        document["signature"] = {"key": self.key.public_b64(), "ed25519": self.key.sign_b64(payload)}
        data = state_json(document, encoded={"resources": texts})
        self._store().remember(str(pygit2.hash(data)), document)
        self._plans_read[id(document)] = _PlanRead(document, plan)  # the next pass gets back this NodePlan
        return data

    def _previous_plans(self, run: _Pass) -> tuple[dict[str, NodePlan], frozenset[str]]:
        """The plans on the state branch this reconciler verifiably signed, and the nodes whose plan there
        is not one: for those, the newest plan of theirs in the branch's history that is (serials go on
        from what we signed, never from a forged value). Documents are cached by blob id, so verified
        NodePlans by identity here. Each plan that does not verify is an alert of `run`."""
        snapshot = run.inputs.snapshot
        plans: dict[str, NodePlan] = {}
        unverified: set[str] = set()
        known, self._plans_read = self._plans_read, {}
        for path, blob in snapshot.files.items():
            if not (path.startswith("plans/") and path.endswith(".json")):
                continue
            node = path[len("plans/") : -len(".json")]
            document = self._store().try_load(snapshot, path)
            hit = known.get(id(document)) if document is not None else None
            plan = (
                hit.plan if hit is not None and hit.document is document else self._verified(node, document)
            )
            if plan is not None and document is not None:
                self._plans_read[id(document)] = _PlanRead(document, plan)
            else:
                unverified.add(node)
                plan = self._last_verified(snapshot, path, node, blob)
                log.warning(
                    "state branch holds a plan this reconciler did not sign", path=path, state=snapshot.tip
                )
                run.alerts.append(_forged_plan_alert(run, path, plan))
            if plan is not None:
                plans[node] = plan
        return plans, frozenset(unverified)

    def _verified(self, node: str, document: Mapping[str, Any] | None) -> NodePlan | None:
        """The NodePlan of `document` if it is this reconciler's signed plan for `node`, else None."""
        if document is None or document.get("node") != node:
            return None
        try:
            verify_document(document, self.key.verify_key(), what=f"plan of {node}")
            return NodePlan.from_document(document)
        except ContractError:
            return None

    def _last_verified(self, snapshot: StateSnapshot, path: str, node: str, bad: str) -> NodePlan | None:
        """The newest plan for `node` in the state branch's history that verifies (None if there is none)."""
        store, seen = self._store(), {bad}
        for blob in store.history_blobs(snapshot, path, limit=HISTORY_LIMIT):
            if blob in seen:
                continue
            seen.add(blob)
            with contextlib.suppress(ContractError):
                plan = self._verified(node, store.load_json(blob, what=path))
                if plan is not None:
                    return plan
        return None

    def _status_docs(
        self, run: _Pass, model: Model, fleet: FleetPlan, *, warnings: tuple[Finding, ...]
    ) -> dict[str, JsonObject | None]:
        """Every status document of this pass; those of nodes and services that left are deleted."""
        docs: dict[str, JsonObject | None] = {
            f"status/nodes/{name}.json": self._node_doc(run, model, fleet, name)
            for name in model.nodes
            if name in fleet.plans  # not a node whose first plan was too big to write
        }
        releases = run.discovered.release_docs()
        states = node_states(docs)
        self._service_status.keep(model.services)
        for name in model.services:
            docs[f"{SERVICES_PREFIX}{name}.json"] = self._service_doc(
                run, _service_facts(model, name), states, releases.get(f"{RELEASES_PREFIX}{name}.json")
            )
        docs.update(releases)
        docs.update(app_documents(docs[f"{SERVICES_PREFIX}{name}.json"] or {} for name in model.services))
        docs[SOURCE_PATH] = source_status(
            commit=run.inputs.desired,
            branch=self.branch,
            findings=warnings,
            ok=True,
            last_good=run.inputs.desired,
        )
        for path in run.inputs.snapshot.files:
            if (
                path.startswith((NODES_PREFIX, SERVICES_PREFIX, APPS_PREFIX, RELEASES_PREFIX))
                and path not in docs
            ):
                docs[path] = None
        return docs

    def _service_doc(
        self, run: _Pass, facts: ServiceFacts, states: Mapping[str, NodeState], rollout: JsonObject | None
    ) -> JsonObject:
        """status/services/<name>.json, reused while nothing it reads has changed."""
        endpoints = tuple(run.discovered.endpoints.get(facts.name, ()))
        key = _ServiceStatusKey(facts, endpoints, tuple(states.get(n) for n in facts.nodes), rollout)
        seen = tuple(run.reports.get(n) for n in facts.nodes)
        cached = self._service_status.get(facts.name, key, seen)
        if cached is not None:
            return cached
        doc = service_status(
            service=facts, endpoints=endpoints, reports=run.reports, nodes=states, rollout=rollout
        )
        return self._service_status.put(facts.name, key, seen, doc)

    def _node_doc(self, run: _Pass, model: Model, fleet: FleetPlan, name: str) -> JsonObject:
        """One node's status, from the memo when nothing it depends on changed."""
        node, offline_after = model.nodes[name], model.repository.offline_after
        facts = NodeFacts(name=name, address=node.address, cordoned=node.cordoned)
        plan, report, withheld = fleet.plans[name], run.reports.get(name), fleet.withheld.get(name, ())
        state = liveness(report, cordoned=node.cordoned, now=run.now, offline_after=offline_after)
        key = _NodeStatusMemo.key(facts, (state, withheld), plan, report)
        cached = self._node_status.get(name, key, report)
        if cached is not None:
            return cached
        document = node_status(
            node=facts,
            plan=plan,
            previous_plan=run.previous.get(name),
            previous_status=self._trusted(run, f"status/nodes/{name}.json"),
            report=report,
            now=run.now,
            offline_after=offline_after,
            withheld=withheld,
        )
        return self._node_status.put(name, key, report, document)

    def _diff_docs(
        self, snapshot: StateSnapshot, docs: Mapping[str, JsonObject | None]
    ) -> dict[str, bytes | None]:
        """Only the files whose content changes; a document equal to the stored one is not serialised."""
        changes: dict[str, bytes | None] = {}
        store = self._store()
        for path, document in docs.items():
            if document is None:
                if path in snapshot.files:
                    changes[path] = None
                continue
            if store.try_load(snapshot, path) == document:
                continue
            data = state_json(document)
            if snapshot.files.get(path) != str(pygit2.hash(data)):
                changes[path] = data
                store.remember(str(pygit2.hash(data)), document)
        return changes

    def _finish(
        self,
        run: _Pass,
        changes: dict[str, bytes | None],
        *,
        plans: Mapping[str, NodePlan],
        keep: Collection[str],
    ) -> dict[str, bytes | None]:
        """The pass's changes completed: what the manifest does not vouch for and the pass did not
        write again is deleted, what was found is recorded in `status/alerts.json`, and the manifest
        is signed over the resulting files (unchanged when they are)."""
        snapshot, trust = run.inputs.snapshot, run.inputs.trust
        for path in trust.unvouched:
            if path in snapshot.files and path not in changes and path not in keep:
                changes[path] = None
        run.alerts.extend(_branch_alerts(run))
        run.alerts.extend(_report_alerts(run, self.reports_prefix))
        stored = self._trusted(run, ALERTS_PATH)
        alerts = merge_alerts(stored, run.alerts)
        if alerts is not None and alerts != stored:
            changes[ALERTS_PATH] = state_json(alerts)
        if not changes and trust.at_tip and not trust.unvouched:
            return changes  # the same files and serials: the manifest at the tip still holds
        files = {p: b for p, b in snapshot.files.items() if p != MANIFEST_PATH}
        for path, data in changes.items():
            if data is None:
                files.pop(path, None)
            else:
                files[path] = str(pygit2.hash(data))
        serials = next_serials(trust.manifest, {n: plan.serial for n, plan in plans.items()})
        manifest = Manifest(files=files, serials=serials)
        data = state_json(manifest.signed(self.key))
        blob = str(pygit2.hash(data))
        if snapshot.files.get(MANIFEST_PATH) != blob:
            changes[MANIFEST_PATH] = data
            self._manifests = {blob: manifest}  # the next pass reads back what it signed: no check
        return changes

    def _commit(self, run: _Pass, changes: Mapping[str, bytes | None], message: str) -> str:
        store, base = self._store(), run.inputs.snapshot
        commit = store.commit(base=base, changes=changes, message=message, when=run.now)
        self.location.update_ref(store.ref, old=base.tip, new=commit)
        return commit

    def _remember(self, inputs: _Inputs, written: str | None, *, until: datetime) -> None:
        self._memo = _Memo(key=inputs.key(self.state_branch, written=written), until=until)


def _refuse_oversized(
    model: Model, fleet: FleetPlan, files: Mapping[str, bytes], previous: Mapping[str, NodePlan]
) -> tuple[FleetPlan, tuple[Finding, ...]]:
    """Plans larger than agents accept are not written: the node keeps its previous plan (a node
    without one gets none) and the source status carries an error naming it and the size."""
    big = {n: len(data) for n, data in files.items() if len(data) > MAX_PLAN_BYTES}
    if not big:
        return fleet, ()
    plans = {n: p for n, p in fleet.plans.items() if n not in big}
    plans.update({n: previous[n] for n in big if n in previous})
    findings = tuple(
        Finding(
            model.nodes[n].doc.path,
            1,
            1,
            "",
            f"the plan of {n} would be {size:,} bytes, more than the {MAX_PLAN_BYTES:,} agents accept; "
            "it keeps its last plan until its resources shrink",
            "plan-too-big",
        )
        for n, size in sorted(big.items())
    )
    changed = frozenset(fleet.changed - big.keys())
    return replace(fleet, plans=plans, changed=changed), findings


def _branch_alerts(run: _Pass) -> list[Alert]:
    """Alerts for what the state branch's tip holds that the reconciler does not vouch for."""
    snapshot, trust = run.inputs.snapshot, run.inputs.trust
    tip, at = snapshot.tip or "", run.now.isoformat()
    if not trust.ever_signed:
        return []  # a branch from before manifests: rewritten, nothing to accuse
    if not trust.at_tip:
        what = "is missing" if MANIFEST_PATH not in snapshot.files else "is not signed by this reconciler"
        message = f"{what}: every status document treated as absent and written again"
        return [Alert(at, MANIFEST_PATH, tip, message)]
    alerted = {a.path for a in run.alerts}
    found = [p for p in trust.unvouched if p not in alerted]
    alerts = [Alert(at, p, tip, _unvouched_message(p, snapshot, trust)) for p in found[:10]]
    if len(found) > 10:
        alerts.append(
            Alert(at, "status/", tip, f"{len(found) - 10} more files not written by this reconciler")
        )
    return alerts


def _report_alerts(run: _Pass, prefix: str) -> list[Alert]:
    """A report commit that holds more than a report, or sits on another branch too: that node's
    credentials wrote outside its own report branch (or someone wrote on it)."""
    inputs, at = run.inputs, run.now.isoformat()
    elsewhere: dict[str, list[str]] = {}
    for node, tip in inputs.tips.items():
        elsewhere.setdefault(tip, []).append(f"{prefix}{node}")
    branches: list[tuple[str, str | None]] = [
        (STATE_BRANCH_NAME, inputs.snapshot.tip),
        ("the desired branch", inputs.desired),
    ]
    for name, other in branches:
        if other is not None:
            elsewhere.setdefault(other, []).append(name)
    alerts = []
    for node, tip in sorted(inputs.tips.items()):
        path = f"{prefix}{node}"
        others = [b for b in elsewhere.get(tip, []) if b != path]
        if others:
            alerts.append(Alert(at, path, tip, f"this report commit is also the tip of {', '.join(others)}"))
        report = run.reports.get(node)
        if report is not None and report.warning:
            alerts.append(Alert(at, path, tip, report.warning))
    return alerts


def _forged_plan_alert(run: _Pass, path: str, replacement: NodePlan | None) -> Alert:
    instead = (
        f"the last plan it signed (serial {replacement.serial}) is written again"
        if replacement is not None
        else "no plan it signed was found in the branch's history"
    )
    message = f"plan not signed by this reconciler for this node: ignored; {instead}"
    return Alert(run.now.isoformat(), path, run.inputs.snapshot.tip or "", message)


def _unvouched_message(path: str, snapshot: StateSnapshot, trust: _Trust) -> str:
    if path not in snapshot.files:
        return "deleted by someone other than this reconciler: written again"
    if path in trust.manifest.files:
        return "changed by someone other than this reconciler: ignored and written again"
    return "added by someone other than this reconciler: ignored and removed"


def _settings(model: Model) -> PlanSettings:
    repository = model.repository
    return PlanSettings(
        allowed_paths=tuple(repository.allowed_paths),
        heartbeat=repository.heartbeat,
        plan_expiry=repository.plan_expiry,
    )


def _service_facts(model: Model, name: str) -> ServiceFacts:
    service = model.services[name]
    release = model.versions.get(name)
    return ServiceFacts(
        name=name,
        state=service.state,
        paused=service.paused,
        version=release.version if release is not None else service.version,
        nodes=tuple(model.placement.get(name, ())),
        app=service.labels.get("app"),
    )


def _next_deadline(
    model: Model, plans: Mapping[str, NodePlan], reports: Mapping[str, ReceivedReport], now: datetime
) -> datetime:
    """When a pass with the same inputs could decide differently: a node going offline, a plan to renew."""
    deadlines = [now + timedelta(days=1)]
    for report in reports.values():
        if report.time is not None:
            deadlines.append(report.time + timedelta(seconds=model.repository.offline_after, milliseconds=1))
    half = timedelta(seconds=model.repository.plan_expiry / 2)
    for plan in plans.values():
        with contextlib.suppress(ContractError):
            deadlines.append(parse_time(plan.expires) - half)
    future = [d for d in deadlines if d > now]
    return min(future) if future else now


def _reports_lately(report: ReceivedReport | None, model: Model, now: datetime) -> bool:
    """Whether a node (cordoned or not) has a usable report younger than `offlineAfter`."""
    offline_after = model.repository.offline_after
    return liveness(report, cordoned=False, now=now, offline_after=offline_after)[0] is NodeState.ONLINE


def _batch_started(stored: Mapping[str, Any] | None) -> datetime | None:
    """When the stored rollout's running batch started (None: none running, or no readable state)."""
    try:
        return RolloutState.from_json(stored).batch_started if stored is not None else None
    except ValueError:
        return None


def _not_before(seen: NodeObservation, started: datetime | None) -> NodeObservation:
    """Readiness on a new version cannot have begun before its batch did: an older `readySince` is
    the agent's probe history from before the restart, and counting it would skip the health gate."""
    if started is None or seen.ready_since is None or seen.ready_since >= started:
        return seen
    return replace(seen, ready_since=started)


def _message(desired: str, nodes: tuple[str, ...]) -> str:
    """The state commit's message names the desired commit and the nodes whose plans changed."""
    shown = ", ".join(nodes[:20]) + (f" and {len(nodes) - 20} more" if len(nodes) > 20 else "")
    title = f"Reconcile {desired[:12]}: " + (f"plans of {shown}" if nodes else "status only")
    return f"{title}\n\nDesired-Commit: {desired}\nNodes-Changed: {len(nodes)}\n"
