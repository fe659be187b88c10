"""One reconcile pass: desired commit + reports + previous state branch -> at most one new state commit."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pygit2
import structlog

from contract.crypto import SigningKey
from contract.errors import ContractError, PushRejected, RewindRefused, TemporaryError, UsageError
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
    NodeState,
    ReceivedReport,
    ServiceFacts,
    app_documents,
    endpoints_from_reports,
    is_reachable,
    liveness,
    node_states,
    node_status,
    service_status,
    source_status,
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
SOURCE_PATH = "status/source.json"
RELEASES_PREFIX = "status/releases/"
DEFAULT_STATE_BRANCH = "plumb/state"
DEFAULT_REPORTS_PREFIX = "plumb/reports/"
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


@dataclass(frozen=True)
class _Memo:
    """The inputs of the last pass that wrote nothing (or the state it wrote), to skip identical passes."""

    key: tuple[Any, ...]
    until: datetime


@dataclass
class _Inputs:
    """Everything a pass reads before computing, gathered in one place."""

    snapshot: StateSnapshot
    desired: str
    tips: dict[str, str]
    source: Mapping[str, Any] | None


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


@dataclass(frozen=True)
class _Observed:
    """What one pass's rollout steps observe: the model, latest reports, previous plans, online nodes."""

    model: Model
    reports: Mapping[str, ReceivedReport]
    previous: Mapping[str, NodePlan]
    online: frozenset[str]


class _ServiceIds:
    """The resource ids of each service in a node's plan, kept while the plan object is the same."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[NodePlan, dict[str, frozenset[str]]]] = {}

    def of(self, node: str, plan: NodePlan | None, service: str) -> frozenset[str]:
        if plan is None:
            return frozenset()
        hit = self.entries.get(node)
        if hit is None or hit[0] is not plan:
            grouped: dict[str, set[str]] = {}
            for entry in plan.resources:
                grouped.setdefault(str(entry.get("service")), set()).add(str(entry.get("id")))
            hit = self.entries[node] = (plan, {k: frozenset(v) for k, v in grouped.items()})
        return hit[1].get(service, frozenset())


class _StatusMemo:
    """Node status documents by what they depend on, so an unchanged node is not diffed again.

    Only nodes that never applied a plan or are in sync are memoised: for a node that is behind,
    the document also depends on the plan it last applied, which is cheap enough to recompute.
    """

    def __init__(self) -> None:
        self.entries: dict[str, tuple[tuple[Any, ...], ReceivedReport | None, JsonObject]] = {}

    @staticmethod
    def key(
        facts: NodeFacts, state: Any, plan: NodePlan, report: ReceivedReport | None
    ) -> tuple[Any, ...] | None:
        applied = report.applied if report is not None else None
        if applied is None:
            base = "never applied"
        elif (applied.get("serial"), applied.get("digest")) == (plan.serial, plan.digest):
            base = "in sync"
        else:
            return None
        return (facts, state, plan.serial, plan.digest, plan.commit, base)

    def get(self, name: str, key: tuple[Any, ...] | None, report: ReceivedReport | None) -> JsonObject | None:
        hit = self.entries.get(name)
        if key is None or hit is None or hit[0] != key or hit[1] is not report:
            return None
        return hit[2]

    def put(
        self, name: str, key: tuple[Any, ...] | None, report: ReceivedReport | None, doc: JsonObject
    ) -> JsonObject:
        if key is not None:
            self.entries[name] = (key, report, doc)
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
    """

    location: Location
    key: SigningKey
    branch: str = "main"
    allow_rewind: bool = False
    compile_cache: CompileCache = field(default_factory=CompileCache)
    plan_cache: PlanCache = field(default_factory=PlanCache)
    report_cache: ReportCache = field(default_factory=ReportCache)
    source_cache: SourceCache = field(default_factory=SourceCache)
    state_branch: str = DEFAULT_STATE_BRANCH
    reports_prefix: str = DEFAULT_REPORTS_PREFIX
    _stores: dict[str, StateStore] = field(default_factory=dict, init=False)
    _memo: _Memo | None = field(default=None, init=False)
    _found: _Discovered = field(default_factory=_Discovered, init=False)
    _node_memo: _StatusMemo = field(default_factory=lambda: _StatusMemo(), init=False)
    _sealer_cache: dict[str, Sealer] = field(default_factory=dict, init=False)
    _secrets: SecretValues | None = field(default=None, init=False)
    _service_docs: dict[str, tuple[Any, tuple[ReceivedReport | None, ...], JsonObject]] = field(
        default_factory=dict, init=False
    )
    _compiled: tuple[str, list[SourceFile], Desired, tuple[Any, ...]] | None = field(default=None, init=False)
    _plans_read: dict[int, tuple[Mapping[str, Any], NodePlan]] = field(default_factory=dict, init=False)
    _service_ids: _ServiceIds = field(default_factory=lambda: _ServiceIds(), init=False)

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
        source = self._store().try_load(snapshot, SOURCE_PATH)
        return _Inputs(snapshot=snapshot, desired=desired, tips=tips, source=source)

    def _attempt(self, now: datetime) -> PassResult:
        inputs = self._read_inputs()
        key = (inputs.snapshot.tip, inputs.desired, tuple(sorted(inputs.tips.items())), self.state_branch)
        if self._memo is not None and self._memo.key == key and now < self._memo.until:
            return PassResult(desired=inputs.desired, skipped=True)
        self._check_forward(inputs)
        previous = self._previous_plans(inputs.snapshot)
        desired = self._compile(inputs, previous, now)
        if not desired.ok or desired.model is None:
            return self._write_invalid(inputs, desired, now)
        repository = desired.model.repository
        if (repository.state_branch, repository.reports_prefix) != (self.state_branch, self.reports_prefix):
            self.state_branch, self.reports_prefix = repository.state_branch, repository.reports_prefix
            return self._attempt(now)
        return self._write_valid(inputs, desired, previous, now)

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

    def _compile(self, inputs: _Inputs, previous: Mapping[str, NodePlan], now: datetime) -> Desired:
        """Compile the desired commit with what the reports decide (endpoints, waiting, rollout pins).

        A commit already compiled with the same endpoints, waiting lists and pins (a pass woken by
        heartbeats) is not compiled again. An invalid commit runs no rollout step.
        """
        if self._compiled is None or self._compiled[0] != inputs.desired:
            _, files = read_commit_files(self.location.repo, inputs.desired, cache=self.source_cache)
            self._compiled = (inputs.desired, files, *self._render(files, self._found))
        _, files, desired, used = self._compiled
        if not desired.ok or desired.model is None:
            return desired
        self._found = self._discover(desired.model, inputs, previous, now)
        if self._found.render_key != used:
            self._compiled = (inputs.desired, files, *self._render(files, self._found))
        return self._compiled[2]

    def _render(self, files: list[SourceFile], found: _Discovered) -> tuple[Desired, tuple[Any, ...]]:
        desired = compile_desired(
            files, endpoints=found.endpoints, waiting=found.waiting, pins=found.pins, cache=self.compile_cache
        )
        return desired, found.render_key

    def _reports(self, model: Model, inputs: _Inputs) -> dict[str, ReceivedReport]:
        keys = {name: node.signing_key for name, node in model.nodes.items()}
        return read_reports(self.location.repo, tips=inputs.tips, keys=keys, cache=self.report_cache)

    def _discover(
        self, model: Model, inputs: _Inputs, previous: Mapping[str, NodePlan], now: datetime
    ) -> _Discovered:
        reports = self._reports(model, inputs)
        offline_after = model.repository.offline_after
        states = {
            n: liveness(reports.get(n), cordoned=node.cordoned, now=now, offline_after=offline_after)[0]
            for n, node in model.nodes.items()
        }
        reachable = [n for n, state in states.items() if is_reachable(state)]
        addresses = {n: node.address for n, node in model.nodes.items()}
        # online for a rollout: reporting lately, cordoned or not (a cordoned node still gates its batch)
        online = frozenset(n for n in reachable if _reports_lately(reports.get(n), model, now))
        facts = _Observed(model, reports, previous, online)
        waiting = waiting_for(model, reports, reachable=reachable)
        return _Discovered(
            endpoints=endpoints_from_reports(reports, addresses=addresses, reachable=reachable),
            waiting=waiting,
            decisions={
                name: self._rollout(name, inputs, facts, now, waiting.get(name, ()))
                for name in sorted(model.services)
            },
        )

    def _rollout(
        self, service: str, inputs: _Inputs, facts: _Observed, now: datetime, blocked_by: Sequence[str]
    ) -> Decision:
        """The service's next rollout step, from its stored state and what its nodes report."""
        if facts.model.versions.get(service) is None:
            return Decision(None, {})  # no Release: nothing to roll out (and no document)
        stored = self._store().try_load(inputs.snapshot, f"{RELEASES_PREFIX}{service}.json")
        started = _batch_started(stored)
        observations = {
            node: _not_before(self._observe(facts, service, node), started)
            for node in facts.model.placement.get(service, ())
        }
        return step_service(
            facts.model, service, stored=stored, observations=observations, now=now, blocked_by=blocked_by
        )

    def _observe(self, facts: _Observed, service: str, node: str) -> NodeObservation:
        """What `node`'s latest report says about `service`, against the plan it was last given."""
        report, plan = facts.reports.get(node), facts.previous.get(node)
        return observe(
            report.document if report is not None else None,
            service=service,
            resource_ids=self._service_ids.of(node, plan, service),
            plan_serial=plan.serial if plan is not None else None,
            online=node in facts.online,
            cordoned=facts.model.nodes[node].cordoned,
        )

    def _write_invalid(self, inputs: _Inputs, desired: Desired, now: datetime) -> PassResult:
        last_good = inputs.source.get("lastGood") if inputs.source else None
        document = source_status(
            commit=inputs.desired,
            branch=self.branch,
            findings=desired.findings,
            ok=False,
            last_good=last_good,
        )
        changes = self._diff_docs(inputs.snapshot, {SOURCE_PATH: document})
        message = f"Record invalid desired commit {inputs.desired[:12]}\n\nDesired-Commit: {inputs.desired}\n"
        written = self._commit(inputs, changes, message, now) if changes else None
        self._remember(inputs, written, until=now + timedelta(days=1))
        log.warning("desired commit is invalid", commit=inputs.desired, findings=len(desired.findings))
        return PassResult(desired=inputs.desired, written=written, ok=False, findings=desired.findings)

    def _write_valid(
        self, inputs: _Inputs, desired: Desired, previous: Mapping[str, NodePlan], now: datetime
    ) -> PassResult:
        assert desired.model is not None
        model = desired.model
        fleet = plan_fleet(
            nodes=desired.nodes,
            previous=previous,
            settings=_settings(model),
            commit=inputs.desired,
            now=now,
            cache=self.plan_cache,
            sealers=self._sealers(model),
            secrets=self._secret_values(model),
        )
        resign = {
            n for n, p in fleet.plans.items() if n not in fleet.changed and not self._signed_by_us(inputs, n)
        }
        plan_files = {f"plans/{n}.json": self._signed_file(fleet.plans[n]) for n in fleet.changed | resign}
        docs: dict[str, JsonObject | None] = {f"plans/{n}.json": None for n in fleet.removed}
        reports = self._reports(model, inputs)
        docs.update(
            self._status_docs(inputs, model, fleet, previous, reports, now, warnings=desired.findings)
        )
        changes = self._diff_docs(inputs.snapshot, docs)
        changes.update(plan_files)
        changed_nodes = tuple(sorted(fleet.changed | fleet.removed | resign))
        written = None
        if changes:
            written = self._commit(inputs, changes, _message(inputs.desired, changed_nodes), now)
            log.info("state written", commit=written, desired=inputs.desired, nodes=len(changed_nodes))
        deadline = _next_deadline(model, fleet.plans, reports, now)
        wake_at = min(deadline, self._found.wake_at or deadline)
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
        self._plans_read[id(document)] = (document, plan)  # the next pass gets back this very NodePlan
        return data

    def _signed_by_us(self, inputs: _Inputs, node: str) -> bool:
        document = self._store().try_load(inputs.snapshot, f"plans/{node}.json")
        signature = (document or {}).get("signature") or {}
        return bool(signature.get("key") == self.key.public_b64())

    def _previous_plans(self, snapshot: StateSnapshot) -> dict[str, NodePlan]:
        """The plans on the state branch; documents are cached by blob id, so NodePlans by identity here."""
        plans: dict[str, NodePlan] = {}
        known, self._plans_read = self._plans_read, {}
        for path in snapshot.files:
            document = self._store().try_load(snapshot, path) if path.startswith("plans/") else None
            if document is None:
                continue
            hit = known.get(id(document))
            plan = hit[1] if hit is not None and hit[0] is document else None
            with contextlib.suppress(ContractError):
                plan = plan or NodePlan.from_document(document)
            if plan is not None:
                plans[path[len("plans/") : -len(".json")]] = plan
                self._plans_read[id(document)] = (document, plan)
        return plans

    def _status_docs(
        self,
        inputs: _Inputs,
        model: Model,
        fleet: FleetPlan,
        previous: Mapping[str, NodePlan],
        reports: Mapping[str, ReceivedReport],
        now: datetime,
        *,
        warnings: tuple[Finding, ...],
    ) -> dict[str, JsonObject | None]:
        """Every status document of this pass; those of nodes and services that left are deleted."""
        docs: dict[str, JsonObject | None] = {
            f"status/nodes/{name}.json": self._node_doc(inputs, model, name, fleet, previous, reports, now)
            for name in model.nodes
        }
        releases = self._found.release_docs()
        liveness = node_states(docs)
        self._service_docs = {n: hit for n, hit in self._service_docs.items() if n in model.services}
        for name in model.services:
            docs[f"{SERVICES_PREFIX}{name}.json"] = self._service_doc(
                _service_facts(model, name), reports, liveness, releases.get(f"{RELEASES_PREFIX}{name}.json")
            )
        docs.update(releases)
        docs.update(app_documents(docs[f"{SERVICES_PREFIX}{name}.json"] or {} for name in model.services))
        docs[SOURCE_PATH] = source_status(
            commit=inputs.desired, branch=self.branch, findings=warnings, ok=True, last_good=inputs.desired
        )
        for path in inputs.snapshot.files:
            if (
                path.startswith((NODES_PREFIX, SERVICES_PREFIX, APPS_PREFIX, RELEASES_PREFIX))
                and path not in docs
            ):
                docs[path] = None
        return docs

    def _service_doc(
        self,
        facts: ServiceFacts,
        reports: Mapping[str, ReceivedReport],
        liveness: Mapping[str, NodeState],
        rollout: JsonObject | None,
    ) -> JsonObject:
        """status/services/<name>.json, reused while nothing it reads has changed."""
        endpoints = tuple(self._found.endpoints.get(facts.name, ()))
        seen = tuple(reports.get(n) for n in facts.nodes)
        alive = tuple(liveness.get(n) for n in facts.nodes)
        hit = self._service_docs.get(facts.name)
        if (
            hit is not None
            and hit[0] == (facts, endpoints, alive, rollout)
            and all(a is b for a, b in zip(hit[1], seen, strict=True))
        ):
            return hit[2]
        doc = service_status(
            service=facts, endpoints=endpoints, reports=reports, nodes=liveness, rollout=rollout
        )
        self._service_docs[facts.name] = ((facts, endpoints, alive, rollout), seen, doc)
        return doc

    def _node_doc(
        self,
        inputs: _Inputs,
        model: Model,
        name: str,
        fleet: FleetPlan,
        previous: Mapping[str, NodePlan],
        reports: Mapping[str, ReceivedReport],
        now: datetime,
    ) -> JsonObject:
        """One node's status, from the memo when nothing it depends on changed."""
        node, offline_after = model.nodes[name], model.repository.offline_after
        facts = NodeFacts(name=name, address=node.address, cordoned=node.cordoned)
        plan, report, withheld = fleet.plans[name], reports.get(name), fleet.withheld.get(name, ())
        state = liveness(report, cordoned=node.cordoned, now=now, offline_after=offline_after)
        key = self._node_memo.key(facts, (state, withheld), plan, report)
        cached = self._node_memo.get(name, key, report)
        if cached is not None:
            return cached
        document = node_status(
            node=facts,
            plan=plan,
            previous_plan=previous.get(name),
            previous_status=self._store().try_load(inputs.snapshot, f"status/nodes/{name}.json"),
            report=report,
            now=now,
            offline_after=offline_after,
            withheld=withheld,
        )
        return self._node_memo.put(name, key, report, document)

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

    def _commit(
        self, inputs: _Inputs, changes: Mapping[str, bytes | None], message: str, now: datetime
    ) -> str:
        store = self._store()
        commit = store.commit(base=inputs.snapshot, changes=changes, message=message, when=now)
        self.location.update_ref(store.ref, old=inputs.snapshot.tip, new=commit)
        return commit

    def _remember(self, inputs: _Inputs, written: str | None, *, until: datetime) -> None:
        tip = written or inputs.snapshot.tip
        key = (tip, inputs.desired, tuple(sorted(inputs.tips.items())), self.state_branch)
        self._memo = _Memo(key=key, until=until)


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
