"""The status documents of the state branch, computed from plans, reports and the previous status.

Nothing here is time-stamped: a document changes only when what it says changes (a node going
offline, an instance turning unhealthy, pending actions done), so heartbeats alone write nothing.
Report ages are shown live by `plumb status`; here they only decide online or offline.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from contract.errors import ContractError
from contract.report import Applied, Instance, Report
from contract.vocabulary import (
    AppState,
    DesiredState,
    InstanceState,
    NodeState,
    Phase,
    ResourceKind,
    ServiceState,
)
from reconciler.core.compile.desired import Endpoint
from reconciler.core.decide.planner import JsonObject, NodePlan, format_time, parse_time
from reconciler.core.decide.review import Action, ActionKind, Entry, diff_entries
from reconciler.core.findings import Finding

NODES_PREFIX = "status/nodes/"
SERVICES_PREFIX = "status/services/"
APPS_PREFIX = "status/apps/"


@dataclass(frozen=True)
class ReceivedReport:
    """A node's latest report as read from its branch: the typed report if usable, and what was wrong."""

    node: str
    report: Report | None
    verified: bool = False
    problem: str | None = None
    warning: str | None = None  # what the report commit holds besides the report (still believed)

    @property
    def time(self) -> datetime | None:
        if self.report is None:
            return None
        try:
            return parse_time(self.report.time)
        except ContractError:
            return None

    @property
    def applied(self) -> Applied | None:
        return self.report.applied if self.report else None

    @property
    def instances(self) -> tuple[Instance, ...]:
        return self.report.instances if self.report else ()


@dataclass(frozen=True)
class NodeFacts:
    """What the desired state says about a node that status needs."""

    name: str
    address: str
    cordoned: bool = False


@dataclass(frozen=True)
class ServiceFacts:
    """What the desired state says about a service that status needs."""

    name: str
    state: str
    paused: bool
    version: str | None
    nodes: tuple[str, ...]
    app: str | None = None  # the service's `app` label: services sharing it roll up into one application


def liveness(
    report: ReceivedReport | None, *, cordoned: bool, now: datetime, offline_after: int
) -> tuple[NodeState, str]:
    """Online when the latest usable report is younger than `offlineAfter`; cordoned wins."""
    if cordoned:
        return NodeState.CORDONED, "cordoned in the desired state"
    if report is None or report.report is None:
        return NodeState.OFFLINE, report.problem if report and report.problem else "no report yet"
    when = report.time
    if when is None or now - when > timedelta(seconds=offline_after):
        return NodeState.OFFLINE, f"no report for more than {offline_after}s"
    return NodeState.ONLINE, "reporting"


def is_reachable(state: NodeState) -> bool:
    """Cordoned nodes keep running and reporting; only offline ones lose their endpoints."""
    return state is not NodeState.OFFLINE


def placed_ports(resources: Iterable[Entry]) -> dict[str, frozenset[str]]:
    """Each service a plan places on its node, with the names of the ports it declares there."""
    return {
        str(entry["spec"].get("name")): frozenset(str(p.get("name")) for p in entry["spec"].get("ports", ()))
        for entry in resources
        if entry.get("kind") == ResourceKind.SERVICE
    }


def endpoints_from_reports(
    reports: Mapping[str, ReceivedReport],
    *,
    addresses: Mapping[str, str],
    reachable: Iterable[str],
    placed: Mapping[str, Mapping[str, frozenset[str]]] | None = None,
) -> dict[str, list[Endpoint]]:
    """Endpoints per service from reported instances: actual ports, ready only on reachable nodes.

    With `placed` (node -> service -> declared port names, from each node's plan), a report speaks
    only of what its node's plan placed there: an instance of another service or a port name the
    service does not declare is ignored, so one node cannot join another service's upstream.
    """
    up = set(reachable)
    found: dict[str, list[Endpoint]] = {}
    for node in sorted(reports):
        if node not in addresses:
            continue
        allowed = placed.get(node, {}) if placed is not None else None
        for instance in reports[node].instances:
            names = allowed.get(instance.service) if allowed is not None else None
            if allowed is not None and names is None:
                continue
            for port in instance.ports:
                if names is not None and port.name not in names:
                    continue
                endpoint = Endpoint(
                    service=instance.service,
                    node=node,
                    address=addresses[node],
                    port_name=port.name,
                    port=port.port,
                    healthy=instance.ready and node in up,
                )
                found.setdefault(endpoint.service, []).append(endpoint)
    return {
        service: sorted(endpoints, key=lambda e: (e.address, e.port, e.node))
        for service, endpoints in found.items()
    }


def ignored_claims(report: ReceivedReport | None, placed: Mapping[str, frozenset[str]]) -> list[str]:
    """What a report says that its node's plan gives it no say in (see `endpoints_from_reports`)."""
    claims: list[str] = []
    for instance in report.instances if report is not None else ():
        names = placed.get(instance.service)
        if names is None:
            claims.append(f"an instance of {instance.service}, which its plan does not place on this node")
            continue
        claims.extend(
            f"port {port.name!r} of {instance.service}, which the service does not declare"
            for port in instance.ports
            if port.name not in names
        )
    return claims


def compact(entries: Sequence[Entry]) -> dict[str, dict[str, Any]]:
    """A plan's resources reduced to what pending actions need: digest, and state where it has one."""
    out: dict[str, dict[str, Any]] = {}
    for entry in entries:
        item: dict[str, Any] = {"digest": entry["digest"]}
        if "state" in entry["spec"]:
            item["state"] = entry["spec"]["state"]
        out[entry["id"]] = item
    return out


def expand(baseline: Mapping[str, Mapping[str, Any]]) -> list[Entry]:
    """The inverse of `compact`, rebuilding from each id the spec fields handlers look at."""
    entries: list[Entry] = []
    for ident, item in baseline.items():
        kind, _, identity = ident.partition(":")
        spec: dict[str, Any] = {"name": identity.split("/")[0]}
        if kind == ResourceKind.UNIT and "/" in identity:
            spec["dropIn"] = identity.split("/", 1)[1]
        if "state" in item:
            spec["state"] = item["state"]
        entries.append({"id": ident, "kind": kind, "digest": item["digest"], "spec": spec, "partial": True})
    return entries


def node_status(
    *,
    node: NodeFacts,
    plan: NodePlan,
    previous_plan: NodePlan | None,
    previous_status: Mapping[str, Any] | None,
    report: ReceivedReport | None,
    now: datetime,
    offline_after: int,
    withheld: Sequence[str] = (),
) -> JsonObject:
    """status/nodes/<node>.json: liveness, plan and applied serials, pending actions and drift.

    `withheld` names secret-bearing resources left out of the plan because they cannot be sealed.
    """
    state, reason = liveness(report, cordoned=node.cordoned, now=now, offline_after=offline_after)
    applied = report.applied if report else None
    in_sync = applied is not None and (applied.serial, applied.digest) == (plan.serial, plan.digest)
    baseline = {} if in_sync else _baseline(plan, previous_plan, previous_status, applied)
    pending = (
        []
        if in_sync
        else list(diff_entries(_applied_entries(previous_plan, applied, baseline), plan.resources))
    )
    pending += _failed(report) + _instance_actions(plan, report)
    document: JsonObject = {
        "node": node.name,
        "address": node.address,
        "state": state.value,
        "reason": reason,
        "plan": {"serial": plan.serial, "digest": plan.digest, "commit": plan.commit},
        "applied": _applied_summary(applied),
        "inSync": in_sync,
        "pending": [a.as_json() for a in _unique(pending)],
        "drift": _drift(report),
        "rejected": _rejected(report),
        "report": _report_summary(report),
    }
    claims = ignored_claims(report, placed_ports((previous_plan or plan).resources))
    if claims:
        document["ignoredClaims"] = claims
    if withheld:
        reason = "uses a secret but cannot be sealed to this node (no sealing key, or a kind without sealing)"
        document["withheld"] = [{"id": ident, "reason": reason} for ident in withheld]
    if not in_sync:
        document["baseline"] = {"serial": applied.serial if applied else None, "resources": baseline}
    return document


def _report_summary(report: ReceivedReport | None) -> JsonObject | None:
    if report is None:
        return None
    summary: JsonObject = {"verified": report.verified, "problem": report.problem}
    if report.warning:
        summary["warning"] = report.warning
    return summary


def _applied_entries(
    previous_plan: NodePlan | None,
    applied: Applied | None,
    baseline: Mapping[str, Mapping[str, Any]],
) -> list[Entry]:
    """The entries the node applied: the previous plan itself when it is the one, else the stored digests."""
    if previous_plan is not None and applied is not None and previous_plan.serial == applied.serial:
        return list(previous_plan.resources)
    return expand(baseline)


def _applied_summary(applied: Applied | None) -> JsonObject | None:
    if applied is None:
        return None
    return {
        "serial": applied.serial,
        "digest": applied.digest,
        "ok": True if applied.ok is None else applied.ok,
    }


def _rejected(report: ReceivedReport | None) -> JsonObject | None:
    rejected = report.report.rejected if report and report.report else None
    return rejected.to_document() if rejected else None


def _baseline(
    plan: NodePlan,
    previous_plan: NodePlan | None,
    previous_status: Mapping[str, Any] | None,
    applied: Applied | None,
) -> dict[str, dict[str, Any]]:
    """What a node that is behind runs now, as far as we know: the plan whose serial it last applied."""
    if applied is None:
        return {}
    serial = applied.serial
    if previous_plan is not None and previous_plan.serial == serial:
        return compact(previous_plan.resources)
    old = (previous_status or {}).get("baseline") or {}
    if old.get("serial") == serial and isinstance(old.get("resources"), Mapping):
        return dict(old["resources"])
    if previous_status and previous_status.get("inSync") and previous_plan is not None:
        return compact(previous_plan.resources)
    return dict(old.get("resources") or {})


def _failed(report: ReceivedReport | None) -> list[Action]:
    if report is None or report.report is None:
        return []
    return [Action(ActionKind.UPDATE, r.id, f"failed: {r.error or r.reason}") for r in report.report.failed()]


def _instance_actions(plan: NodePlan, report: ReceivedReport | None) -> list[Action]:
    """Start or stop services whose reported instance is not in the state the plan asks."""
    if report is None or report.report is None:
        return []
    reported = {i.service: i.state for i in report.instances}
    actions = []
    for entry in plan.resources:
        if entry["kind"] != ResourceKind.SERVICE or entry["spec"]["name"] not in reported:
            continue
        name, want = entry["spec"]["name"], entry["spec"].get("state", DesiredState.RUNNING)
        have = reported[name]
        if want == DesiredState.RUNNING and have in (InstanceState.STOPPED, InstanceState.FAILED):
            actions.append(Action(ActionKind.START, name, f"instance is {have}, desired running"))
        if want == DesiredState.STOPPED and have in (InstanceState.RUNNING, InstanceState.STARTING):
            actions.append(Action(ActionKind.STOP, name, f"instance is {have}, desired stopped"))
    return actions


def _unique(actions: Sequence[Action]) -> list[Action]:
    seen: set[tuple[ActionKind, str]] = set()
    out = []
    for action in actions:
        if (action.kind, action.target) not in seen:
            seen.add((action.kind, action.target))
            out.append(action)
    return out


def _drift(report: ReceivedReport | None) -> list[JsonObject]:
    if report is None or report.report is None:
        return []
    return [d.to_document() for d in report.report.drift]


class Seen(enum.StrEnum):
    """One placed instance of a service, as its node's latest report shows it."""

    READY = "ready"
    STARTING = "starting"  # waiting, not ready yet since it (re)started, or an older version
    UNHEALTHY = "unhealthy"  # was ready, and is no longer (not ready, or restarting after a crash)
    FAILED = "failed"
    STOPPED = "stopped"
    MISSING = "missing"  # no report, or the report has no such instance yet
    OFFLINE = "offline"


# Rollout phases during which the service is still being deployed.
DEPLOYING_PHASES = frozenset(
    {Phase.PENDING, Phase.PROGRESSING, Phase.PAUSED, Phase.WAITING_WINDOW, Phase.ROLLING_BACK}
)


def service_status(
    *,
    service: ServiceFacts,
    endpoints: Sequence[Endpoint],
    reports: Mapping[str, ReceivedReport],
    nodes: Mapping[str, NodeState] | None = None,
    rollout: Mapping[str, Any] | None = None,
) -> JsonObject:
    """status/services/<name>.json: observed state and why, endpoints with health, instances per node.

    `nodes` gives each node's liveness; without it a node is taken as offline when it reports the
    instance ready but none of its endpoints is healthy (which only an unreachable node makes so).
    `rollout` is the service's status/releases/<name>.json, if a rollout was ever recorded.
    """
    instances = [_instance(service.name, node, reports.get(node)) for node in service.nodes]
    liveness_of = nodes if nodes is not None else _inferred_liveness(instances, endpoints)
    seen = {
        i["node"]: classify(
            i, desired=_expected(service, rollout, i["node"]), node=liveness_of.get(i["node"])
        )
        for i in instances
    }
    state, reason = service_state(service=service, seen=seen, rollout_phase=_phase(rollout))
    return {
        "service": service.name,
        "app": service.app,
        "state": state.value,
        "reason": reason,
        "desired": service.state,
        "paused": service.paused,
        "version": service.version,
        "nodes": list(service.nodes),
        "endpoints": [
            {"node": e.node, "address": e.address, "name": e.port_name, "port": e.port, "healthy": e.healthy}
            for e in endpoints
        ],
        "instances": [i | {"seen": seen[i["node"]].value} for i in instances],
    }


def node_states(documents: Mapping[str, Mapping[str, Any] | None]) -> dict[str, NodeState]:
    """Each node's liveness from the status/nodes/<node>.json documents among `documents` (by path)."""
    found: dict[str, NodeState] = {}
    for path, document in documents.items():
        if path.startswith(NODES_PREFIX) and document is not None:
            with contextlib.suppress(ValueError):
                found[path[len(NODES_PREFIX) : -len(".json")]] = NodeState(str(document.get("state")))
    return found


def _expected(service: ServiceFacts, rollout: Mapping[str, Any] | None, node: str) -> ServiceFacts:
    """The service as `node` should run it: a cordoned node held by a rollout, or a rolled-back
    rollout, keeps an older version than the one the service resolves to."""
    held = (rollout or {}).get("held") or {}
    if node in held:
        return replace(service, version=str(held[node]))
    if rollout and rollout.get("phase") == Phase.ROLLED_BACK and rollout.get("from"):
        return replace(service, version=str(rollout["from"]))
    return service


def _phase(rollout: Mapping[str, Any] | None) -> str | None:
    phase = rollout.get("phase") if rollout else None
    return str(phase) if phase else None


def _inferred_liveness(
    instances: Sequence[Mapping[str, Any]], endpoints: Sequence[Endpoint]
) -> dict[str, NodeState]:
    """Offline where a ready instance has endpoints and none is healthy; online otherwise."""
    healthy: dict[str, bool] = {}
    for endpoint in endpoints:
        healthy[endpoint.node] = healthy.get(endpoint.node, False) or endpoint.healthy
    return {
        str(i["node"]): NodeState.OFFLINE
        if i["ready"] and healthy.get(str(i["node"])) is False
        else NodeState.ONLINE
        for i in instances
    }


def classify(instance: Mapping[str, Any], *, desired: ServiceFacts, node: NodeState | None) -> Seen:
    """What one placed instance counts as for its service's state."""
    state = instance.get("state")
    if state == InstanceState.UNKNOWN and not instance.get("ready"):
        return Seen.MISSING  # on a node that never reported it, online or not
    if node is NodeState.OFFLINE:
        return Seen.OFFLINE
    if desired.state == DesiredState.STOPPED:
        return Seen.STOPPED if state in (InstanceState.STOPPED, InstanceState.FAILED) else Seen.STARTING
    if state == InstanceState.FAILED:
        return Seen.FAILED
    if desired.version is not None and instance.get("version") not in (None, desired.version):
        return Seen.STARTING
    if instance.get("ready"):
        return Seen.READY
    if state == InstanceState.WAITING or not instance.get("wasReady"):
        return Seen.STARTING  # never ready since it (re)started: on its way up
    if state == InstanceState.STARTING:
        return Seen.UNHEALTHY  # was ready, now being restarted: it crashed
    return Seen.STOPPED if state == InstanceState.STOPPED else Seen.UNHEALTHY


def service_state(
    *, service: ServiceFacts, seen: Mapping[str, Seen], rollout_phase: str | None = None
) -> tuple[ServiceState, str]:
    """A service's state from its placed instances, and a reason that holds no time."""
    if not seen:
        return ServiceState.PENDING, "placed on no node"
    if service.state == DesiredState.STOPPED:
        moving = _nodes_in(seen, Seen.STARTING, Seen.READY)
        return (
            (ServiceState.DEPLOYING, f"stopping on {_names(moving)}")
            if moving
            else (ServiceState.STOPPED, "stopped as desired")
        )
    if rollout_phase == Phase.FAILED:
        return ServiceState.FAILED, "the rollout failed"
    return _running_state(seen, rollout_phase)


def _running_state(seen: Mapping[str, Seen], rollout_phase: str | None) -> tuple[ServiceState, str]:
    ready, total = len(_nodes_in(seen, Seen.READY)), len(seen)
    waiting = _nodes_in(seen, Seen.STARTING, Seen.MISSING)
    bad = _nodes_in(seen, Seen.UNHEALTHY, Seen.FAILED, Seen.STOPPED, Seen.OFFLINE)
    if len(_nodes_in(seen, Seen.MISSING)) == total:
        return ServiceState.PENDING, "no instance reported yet"
    if ready == 0 and not waiting:
        return ServiceState.FAILED, f"no instance is ready: {_described(seen, bad)}"
    if rollout_phase in DEPLOYING_PHASES:
        return ServiceState.DEPLOYING, f"rollout {rollout_phase}; {ready}/{total} ready"
    if waiting:
        return ServiceState.DEPLOYING, f"{ready}/{total} ready; waiting for {_names(waiting)}"
    if bad:
        return ServiceState.DEGRADED, f"{ready}/{total} ready; {_described(seen, bad)}"
    return ServiceState.RUNNING, f"{ready}/{total} ready"


def _nodes_in(seen: Mapping[str, Seen], *kinds: Seen) -> list[str]:
    return sorted(node for node, what in seen.items() if what in kinds)


def _names(nodes: Sequence[str], shown: int = 5) -> str:
    more = f" and {len(nodes) - shown} more" if len(nodes) > shown else ""
    return ", ".join(nodes[:shown]) + more


def _described(seen: Mapping[str, Seen], nodes: Sequence[str]) -> str:
    return _names([f"{node} {seen[node].value}" for node in nodes])


def _instance(service: str, node: str, report: ReceivedReport | None) -> JsonObject:
    instance = report.report.instance(service) if report and report.report else None
    if instance is None:
        return {"node": node, "state": InstanceState.UNKNOWN, "ready": False, "version": None}
    readiness = instance.probe("readiness")
    return {
        "node": node,
        "state": instance.state,
        "ready": instance.ready,
        "version": instance.version,
        # a readiness probe that flipped has a `since`; one that never passed since (re)start has none;
        # a process its supervisor had to start again after a crash was up before, not on its way up
        "wasReady": instance.ready
        or (readiness is not None and readiness.since is not None)
        or instance.restarts > 0,
    }


def app_status(app: str, services: Sequence[Mapping[str, Any]]) -> JsonObject:
    """status/apps/<app>.json: the services labelled `app: <app>` rolled up into one state."""
    states = {str(s["service"]): str(s.get("state")) for s in services}
    state = app_state(states.values())
    troubled = sorted(name for name, s in states.items() if s != ServiceState.RUNNING)
    reason = ", ".join(f"{name} {states[name]}" for name in troubled) or "every service running"
    return {
        "app": app,
        "state": state.value,
        "reason": reason,
        "services": dict(sorted(states.items())),
    }


def app_state(states: Iterable[str]) -> AppState:
    """Running when every service runs (or is stopped as desired), failed when all failed."""
    live = [s for s in states if s != ServiceState.STOPPED]
    if all(s == ServiceState.RUNNING for s in live):
        return AppState.RUNNING
    if all(s == ServiceState.FAILED for s in live):
        return AppState.FAILED
    if any(s in (ServiceState.FAILED, ServiceState.DEGRADED) for s in live):
        return AppState.PARTIALLY_DEGRADED
    if all(s == ServiceState.PENDING for s in live):
        return AppState.PENDING
    return AppState.DEPLOYING


def app_documents(services: Iterable[Mapping[str, Any]]) -> dict[str, JsonObject]:
    """status/apps/<app>.json for every `app` label among the service documents, by path."""
    by_app: dict[str, list[Mapping[str, Any]]] = {}
    for document in services:
        if document.get("app"):
            by_app.setdefault(str(document["app"]), []).append(document)
    return {f"{APPS_PREFIX}{app}.json": app_status(app, docs) for app, docs in sorted(by_app.items())}


def source_status(
    *, commit: str, branch: str, findings: Sequence[Finding], ok: bool, last_good: str | None
) -> JsonObject:
    """status/source.json: the desired commit reconciled last, whether it was valid, and why not."""
    return {
        "commit": commit,
        "branch": branch,
        "ok": ok,
        "lastGood": last_good,
        "findings": [f.as_json() for f in findings],
    }


# -- what `plumb status` shows: the stored documents with live report ages ------------------------


def age_seconds(when: datetime | None, now: datetime) -> int | None:
    """Whole seconds from `when` to `now` (never negative), None when there is no `when`."""
    return None if when is None else max(0, int((now - when).total_seconds()))


def live_node(
    document: Mapping[str, Any], report: ReceivedReport | None, *, now: datetime, offline_after: int
) -> JsonObject:
    """A node's status document with its latest report's age and applied serial, read now.

    A node the document calls online whose report is older than `offlineAfter` is shown offline:
    the reconciler would record it so on its next pass (if it runs).
    """
    when = report.time if report is not None else None
    age = age_seconds(when, now)
    state, reason = str(document.get("state")), str(document.get("reason") or "")
    if state == NodeState.ONLINE and (age is None or age > offline_after):
        state, reason = (
            NodeState.OFFLINE.value,
            f"no report for more than {offline_after}s (not yet recorded)",
        )
    applied = (
        _applied_summary(report.applied if report is not None else None) or document.get("applied") or {}
    )
    plan = document.get("plan") or {}
    return {
        "node": document.get("node"),
        "address": document.get("address"),
        "state": state,
        "reason": reason,
        "lastReport": None if when is None else format_time(when),
        "reportAge": age,
        "planSerial": plan.get("serial"),
        "appliedSerial": applied.get("serial"),
        "inSync": applied.get("serial") == plan.get("serial") and applied.get("digest") == plan.get("digest"),
        "pending": list(document.get("pending") or []),
        "drift": list(document.get("drift") or []),
        "rejected": document.get("rejected"),
        "ignoredClaims": list(document.get("ignoredClaims") or []),
        "reportWarning": (document.get("report") or {}).get("warning"),
    }


def service_summary(document: Mapping[str, Any]) -> JsonObject:
    """A service's status document with its endpoint counts and reported versions added."""
    endpoints = list(document.get("endpoints") or [])
    versions: dict[str, int] = {}
    for instance in document.get("instances") or []:
        if instance.get("version") and instance.get("state") != InstanceState.UNKNOWN:
            versions[str(instance["version"])] = versions.get(str(instance["version"]), 0) + 1
    return {
        **document,
        "healthyEndpoints": sum(1 for e in endpoints if e.get("healthy")),
        "versions": dict(sorted(versions.items())),
    }
