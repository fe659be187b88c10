"""The agent loop: recover an interrupted apply, fetch, verify, converge, observe, report; repeat.

Cycles run every `interval` seconds; with a remote on this machine (file://), the agent also looks
at the state branch between cycles (a stat) and starts the next cycle as soon as it moves.

One cycle:
    1. fetch the state branch; on failure keep converging the last verified plan, report later
    2. verify the node's plan (`contract.plan`); a rejected plan is never applied, the report says why
    3. journal, apply (`agent.apply.converge`), record applied serial, ledger and hooks, drop the journal;
       re-applying the plan already applied, with nothing new to create, needs no journal: the
       next start applies it again anyway, and a killed write's temp file goes with the next write
    4. observe instances and probes, build and sign the report, push it when its substance (what the
       reconciler acts on: applied serial, outcomes, instance state, readiness, ports, version) differs
       from the last pushed, when the last push failed, or when `heartbeat` has passed
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from agent.apply.converge import ApplyResult, apply_plan, identity
from agent.apply.resources.base import Host
from agent.apply.runtimes.base import Runtime
from agent.apply.runtimes.process import ProcessRuntime
from agent.apply.runtimes.systemd import SystemdRuntime
from agent.host import fsops
from agent.host.nginxctl import Nginx
from agent.host.paths import Confinement
from agent.loop.instances import InstanceObserver
from agent.loop.report import applied_record, build_report, substance
from agent.loop.state import StateDir
from agent.loop.sync import StateSync, clear_stale_locks, open_repo
from contract.crypto import SealingKey, SigningKey, VerifyKey
from contract.defaults import MAX_PLAN_BYTES, REPORTS_PREFIX, STATE_BRANCH
from contract.documents import JsonObject, parse_json_document, sign_document
from contract.errors import ContractError, PathError, PermanentError, PlumbError, TemporaryError
from contract.plan import Plan, format_time, verify_plan
from contract.report import Rejected, Report
from contract.transport.gitremote import HostKeyError, Remote
from contract.vocabulary import Outcome

DEFAULT_HEARTBEAT = 30
LOCAL_POLL = 0.02  # how often the state branch of a remote on this machine is looked at (a stat)
log = structlog.get_logger("plumb.agent")


@dataclass(frozen=True)
class AgentOptions:
    """What `plumb-agent run` was told."""

    node: str
    repo_url: str
    reconciler_key: VerifyKey
    root: Path = Path("/")
    state_dir: Path = Path("/var/lib/plumb-agent")
    runtime: str = "systemd"
    state_branch: str = STATE_BRANCH
    reports_prefix: str = REPORTS_PREFIX
    ssh_key: Path | None = None
    known_hosts: Path | None = None
    interval: float = 15.0
    nginx: Nginx | None = None
    local_artifacts: Path | None = None


@dataclass(frozen=True)
class CycleOutcome:
    """What one cycle did."""

    fetched: bool  # the state branch was reached
    applied: bool  # a freshly fetched plan passed verification and was applied
    ok: bool  # no plan rejected and every resource converged
    rejected: str | None  # why the fetched plan was not applied
    pushed: bool  # the report reached the remote
    result: ApplyResult | None  # None when there is no plan at all
    report: JsonObject  # the signed report (also kept in the state directory)


@dataclass
class _Memory:
    """What the loop remembers between cycles about pushing reports."""

    last_push: datetime | None = None
    push_failed: bool = True
    heartbeat: float = DEFAULT_HEARTBEAT
    pushed: JsonObject | None = None  # substance of the last report pushed
    saved: JsonObject | None = None  # substance of the report last kept in the state directory


@dataclass
class Agent:
    """One node's agent."""

    options: AgentOptions
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    observer: InstanceObserver = field(default_factory=InstanceObserver)
    memory: _Memory = field(default_factory=_Memory)

    def __post_init__(self) -> None:
        self.state = StateDir(self.options.state_dir)
        if not self.state.signing_key.exists():
            enroll = f"plumb-agent enroll --node {self.options.node}"
            raise PermanentError(f"{self.state.signing_key}: no node key; run `{enroll}` first")
        self.signing_key = SigningKey.load(self.state.signing_key)
        self.sealing_key = (
            SealingKey.load(self.state.sealing_key) if self.state.sealing_key.exists() else None
        )
        self.sync = StateSync(
            Remote(self.options.repo_url, ssh_key=self.options.ssh_key, known_hosts=self.options.known_hosts),
            open_repo(self.state.repo),
            node=self.options.node,
            state_branch=self.options.state_branch,
            reports_prefix=self.options.reports_prefix,
        )

    # -- hosts and plans ---------------------------------------------------------------------

    def host_for(self, plan: Plan) -> Host:
        confinement = Confinement.create(root=self.options.root, allowed=plan.allowed_paths)
        return Host(
            node=self.options.node,
            confinement=confinement,
            state_dir=self.options.state_dir,
            runtime=self._runtime(confinement),
            nginx=self.options.nginx,
            sealing_key=self.sealing_key,
            local_artifacts=self.options.local_artifacts,
        )

    def _runtime(self, confinement: Confinement) -> Runtime:
        if self.options.runtime == "process":
            return ProcessRuntime(confinement=confinement, state_dir=self.options.state_dir)
        return SystemdRuntime(unit_dir=self.options.root / "etc/systemd/system")

    def serial_floor(self) -> int | None:
        """The lowest serial a new plan may have: the applied one, or the stored plan's if higher
        (that plan was verified against the applied serial), so the floor survives a damaged
        applied.json and an older signed plan is still refused."""
        serials = [(self.state.load(name) or {}).get("serial") for name in ("applied", "plan")]
        known = [serial for serial in serials if isinstance(serial, int)]
        return max(known, default=None)

    def _verify(self, document: JsonObject, *, check_expiry: bool = True, known: bool = False) -> Plan:
        now = self.clock() if check_expiry else datetime.min.replace(tzinfo=UTC)
        known = known or document == self.state.load("plan")
        plan = verify_plan(
            document,
            key=self.options.reconciler_key,
            node=self.options.node,
            last_serial=self.serial_floor(),
            now=now,
            shape_checked=known,
        )
        _check_paths(plan, self.options.root)
        return plan

    def stored_plan(self) -> Plan | None:
        """The last verified plan, kept in the state directory."""
        document = self.state.load("plan")
        if document is None:
            return None
        try:
            return self._verify(document, check_expiry=False, known=True)
        except PlumbError:
            return None

    def _kept_plan(self) -> Plan | None:
        """The last verified plan, when no newer one can be applied; expiry only warns here."""
        plan = self.stored_plan()
        if plan is not None and plan.expires <= self.clock():
            log.warning(
                "the applied plan has expired; keeping it until a fresh one arrives", serial=plan.serial
            )
        return plan

    # -- apply -------------------------------------------------------------------------------

    def recover(self) -> ApplyResult | None:
        """Finish an apply a crash interrupted (before anything else), from the plan it was applying."""
        journal = self.state.load("journal")
        if journal is None:
            return None
        plan = self.stored_plan()
        if plan is None or plan.digest != journal.get("digest"):
            self.state.drop("journal")
            return None
        log.warning("finishing an interrupted apply", node=self.options.node, serial=plan.serial)
        host = self.host_for(plan)
        for resource in plan.resources:
            for path in _paths(resource.kind, resource.spec):
                with contextlib.suppress(PlumbError, OSError):
                    fsops.discard_temp(host.root, host.confinement.parts(path))
        return self.apply(plan, fresh=journal.get("fresh", {}))

    def apply(self, plan: Plan, *, fresh: dict[str, list[str]] | None = None) -> ApplyResult:
        """Journal, converge, record; the journal is dropped only once everything is recorded."""
        host = self.host_for(plan)
        ledger = self.state.load("ledger") or {}
        if fresh is None:
            fresh = _fresh_paths(plan, host, ledger)
            if self.state.load("plan") != plan.document:  # new, or renewed (same resources, new expiry)
                self.state.save("plan", plan.document)
            if fresh or not self._applied(plan):
                self.state.save("journal", {"serial": plan.serial, "digest": plan.digest, "fresh": fresh})
        hooks_state = self.state.load("hooks") or {}
        result = apply_plan(plan, host, ledger=_with_fresh(ledger, fresh), hooks_state=hooks_state)
        at = format_time(self.clock())
        applied = {
            "serial": plan.serial,
            "commit": plan.commit,
            "digest": plan.digest,
            "at": at,
            "ok": result.ok,
        }
        if result.ledger != ledger:
            self.state.save("ledger", result.ledger)
        if hooks_state != (self.state.load("hooks") or {}):
            self.state.save("hooks", hooks_state)
        self._record_applied(applied, result)
        self.state.drop("journal")
        _log_result(self.options.node, plan, result)
        return result

    def _applied(self, plan: Plan) -> bool:
        """Whether `plan` is the one last applied, and it converged."""
        applied = self.state.load("applied") or {}
        return (
            applied.get("digest") == plan.digest
            and applied.get("serial") == plan.serial
            and applied.get("ok") is True
        )

    def _record_applied(self, applied: JsonObject, result: ApplyResult) -> None:
        before = self.state.load("applied") or {}
        same = {k: before.get(k) for k in ("serial", "digest", "ok")} == {
            k: applied[k] for k in ("serial", "digest", "ok")
        }
        if not same or result.changed:
            self.state.save("applied", applied)

    # -- one cycle ---------------------------------------------------------------------------

    def fetch(self) -> tuple[bool, JsonObject | None, str | None]:
        """(fetched, plan document, why it cannot be read); a fetch failure leaves everything as is."""
        try:
            data, _commit = self.sync.fetch_plan()
        except TemporaryError as exc:
            log.warning("fetch failed; keeping the applied plan", node=self.options.node, reason=str(exc))
            return False, None, str(exc)
        except ContractError as exc:
            return True, None, str(exc)
        if data is None:
            return True, None, None
        try:
            return True, parse_json_document(data, what="plan", limit=MAX_PLAN_BYTES), None
        except ContractError as exc:
            return True, None, str(exc)

    def cycle(self, *, force_report: bool = False) -> CycleOutcome:
        """Fetch, verify, converge, observe and report once."""
        fetched, document, problem = self.fetch()
        rejected = _rejection(document, problem) if fetched and problem else None
        plan = None
        if document is not None:
            try:
                plan = self._verify(document)
            except PermanentError as exc:
                rejected = _rejection(document, str(exc))
                log.warning("plan rejected", node=self.options.node, serial=rejected.serial, reason=str(exc))
        fresh_plan = plan is not None
        plan = plan or self._kept_plan()
        result = self.apply(plan) if plan is not None else None
        report, signed = self._report(plan, result, rejected)
        pushed = self._maybe_push(report, signed, plan, result, force=force_report)
        self._keep(report, signed, pushed=pushed)
        ok = result.ok if result is not None else True
        reason = rejected.reason if rejected is not None else None
        return CycleOutcome(fetched, fresh_plan, ok and rejected is None, reason, pushed, result, signed)

    def _report(
        self, plan: Plan | None, result: ApplyResult | None, rejected: Rejected | None
    ) -> tuple[Report, JsonObject]:
        """The report, and its signed document."""
        now = self.clock()
        failing = result.failing if result is not None else {}
        instances = (
            self.observer.observe(plan, self.host_for(plan), now, failing=failing) if plan is not None else []
        )
        report = build_report(
            node=self.options.node,
            now=now,
            applied=applied_record(self.state.load("applied")),
            rejected=rejected,
            result=result,
            instances=instances,
            capabilities=self.capabilities(),
        )
        return report, sign_document(report.to_document(), self.signing_key)

    def _keep(self, report: Report, signed: JsonObject, *, pushed: bool) -> None:
        """Keep the report in the state directory when it was pushed or says something new."""
        found = substance(report)
        if pushed or found != self.memory.saved:
            self.state.save("report", signed, durable=False)
            self.memory.saved = found

    def _maybe_push(
        self,
        report: Report,
        signed: JsonObject,
        plan: Plan | None,
        result: ApplyResult | None,
        *,
        force: bool,
    ) -> bool:
        heartbeat = plan.heartbeat if plan is not None else DEFAULT_HEARTBEAT
        self.memory.heartbeat = heartbeat
        found = substance(report)
        due = (
            force
            or self.memory.push_failed
            or (result is not None and result.changed)
            or found != self.memory.pushed
            or self.memory.last_push is None
            or self.clock() - self.memory.last_push >= timedelta(seconds=heartbeat)
        )
        if not due:
            return False
        try:
            self.sync.push_report(signed)
        except PlumbError as exc:
            log.warning("report push failed; will retry", node=self.options.node, reason=str(exc))
            self.memory.push_failed = True
            return False
        self.memory.push_failed = False
        self.memory.last_push = self.clock()
        self.memory.pushed = found
        return True

    def capabilities(self) -> list[str]:
        found = [self.options.runtime]
        if self.options.nginx is not None and self.options.nginx.available():
            found.append("nginx")
        if self.options.runtime == "systemd":
            found.append("systemd")
        return sorted(set(found))

    def run(self, *, once: bool = False, stop: Callable[[], bool] = lambda: False) -> CycleOutcome:
        """Recover, then cycle every `interval` seconds (once with `once`), holding the agent lock."""
        with self.state.exclusive():
            for lock in clear_stale_locks(self.state.repo):
                log.warning(
                    "removed a stale Git lock left by a killed agent", node=self.options.node, lock=lock
                )
            outcome = self._first_cycle(once=once)
            while not once and not stop():
                self.pause(min(self.options.interval, self.memory.heartbeat))
                outcome = self._cycle_saying(once=once) or outcome
        if outcome is None:
            raise TemporaryError("stopped before any cycle could finish")
        return outcome

    def _first_cycle(self, *, once: bool) -> CycleOutcome | None:
        """Recover an interrupted apply, then cycle, forcing a report; None if the host failed it."""
        try:
            self.recover()
        except TemporaryError as exc:
            if once:
                raise
            log.error("cycle failed; will retry", node=self.options.node, reason=str(exc))
            return None
        return self._cycle_saying(once=once, force_report=True)

    def _cycle_saying(self, *, once: bool, force_report: bool = False) -> CycleOutcome | None:
        """One cycle; a full or read-only disk, or a Git host key not (yet) in known_hosts, is one line
        per cycle, and the next one tries again (a one-shot run fails with it)."""
        try:
            return self.cycle(force_report=force_report)
        except (TemporaryError, HostKeyError) as exc:
            if once:
                raise
            log.error("cycle failed; will retry", node=self.options.node, reason=str(exc))
            return None

    def pause(self, seconds: float) -> None:
        """Sleep between cycles; a remote on this machine ends the sleep as soon as its state branch moves."""
        marker = self.sync.state_marker()
        deadline = time.monotonic() + seconds
        while marker is not None and time.monotonic() < deadline - LOCAL_POLL:
            time.sleep(LOCAL_POLL)
            if self.sync.state_marker() != marker:
                return
        time.sleep(max(0.0, deadline - time.monotonic()))


def _log_result(node: str, plan: Plan, result: ApplyResult) -> None:
    """One line per apply that did something, one per failed resource (errors never hold secrets)."""
    changed = [r.id for r in result.resources if r.change.outcome is Outcome.CHANGED]
    failed = [r for r in result.resources if r.change.outcome is Outcome.FAILED]
    for entry in failed:
        log.error(
            "resource failed", node=node, serial=plan.serial, resource=entry.id, error=entry.change.error
        )
    if changed or failed or result.pruned:
        log.info(
            "applied",
            node=node,
            serial=plan.serial,
            commit=plan.commit,
            changed=len(changed),
            failed=len(failed),
            pruned=len(result.pruned),
        )


def _rejection(document: JsonObject | None, reason: str | None) -> Rejected:
    serial = document.get("serial") if document else None
    digest = document.get("digest") if document else None
    return Rejected(
        reason=reason or "unknown",
        serial=serial if isinstance(serial, int) else None,
        digest=digest if isinstance(digest, str) else None,
    )


def _paths(kind: str, spec: Any) -> list[str]:
    found = identity(kind, spec)
    return [p for p in (found.get("path"), found.get("keyPath")) if isinstance(p, str)]


def _check_paths(plan: Plan, root: Path) -> None:
    """Refuse the whole plan if any entry points outside allowedPaths or uses `..` (nothing is applied)."""
    confinement = Confinement.create(root=root, allowed=plan.allowed_paths)
    for resource in plan.resources:
        for path in _paths(resource.kind, resource.spec) + list(resource.spec.get("restartOn", [])):
            try:
                confinement.check(path)
            except PathError as exc:
                raise PathError(f"resource {resource.id}: {exc}") from exc


def _fresh_paths(plan: Plan, host: Host, ledger: dict[str, Any]) -> dict[str, list[str]]:
    """Paths of resources new to the ledger that do not exist yet: the agent will have created them."""
    fresh: dict[str, list[str]] = {}
    for resource in plan.resources:
        if resource.id in ledger:
            continue
        missing = []
        for path in _paths(resource.kind, resource.spec):
            with contextlib.suppress(PlumbError, OSError):
                if not fsops.observe(host.root, host.confinement.parts(path), read=False).exists:
                    missing.append(path)
        if missing:
            fresh[resource.id] = missing
    return fresh


def _with_fresh(ledger: dict[str, Any], fresh: dict[str, list[str]]) -> dict[str, Any]:
    merged = dict(ledger)
    for resource_id, paths in fresh.items():
        entry = dict(merged.get(resource_id, {}))
        entry["created"] = sorted(set(entry.get("created", [])) | set(paths))
        entry.setdefault("digest", None)
        merged[resource_id] = entry
    return merged
