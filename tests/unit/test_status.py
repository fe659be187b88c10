"""Status documents: liveness, pending actions against the applied plan, endpoints from reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.core.compile.desired import RenderedResource
from reconciler.core.decide.planner import PlanSettings, format_time, plan_entry, plan_node
from reconciler.core.decide.status import (
    NodeFacts,
    NodeState,
    ReceivedReport,
    Seen,
    ServiceFacts,
    app_documents,
    app_state,
    classify,
    endpoints_from_reports,
    node_states,
    node_status,
    placed_ports,
    service_state,
    service_status,
)
from tests.support import report_of

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
SETTINGS = PlanSettings(("/etc",), 30, 86400)
NODE = NodeFacts(name="web-1", address="10.0.0.1")


def res(ident: str, spec: dict[str, Any]) -> RenderedResource:
    return RenderedResource(ident, ident.split(":")[0], "api", spec, (), "t.yaml:1")


CONF_A = res("file:/etc/c", {"path": "/etc/c", "mode": "0644", "content": "a"})
CONF_B = res("file:/etc/c", {"path": "/etc/c", "mode": "0644", "content": "b"})
UNIT = res("unit:api.service", {"name": "api.service", "content": "x", "restartOn": ["/etc/c"]})
SERVICE = res("service:api", {"name": "api", "state": "running", "unit": "api.service"})
V1 = plan_node(
    node="web-1",
    entries=[plan_entry(r) for r in (CONF_A, UNIT, SERVICE)],
    previous=None,
    settings=SETTINGS,
    commit="1" * 40,
    now=NOW,
)
V2 = plan_node(
    node="web-1",
    entries=[plan_entry(r) for r in (CONF_B, UNIT, SERVICE)],
    previous=V1,
    settings=SETTINGS,
    commit="2" * 40,
    now=NOW,
)


def report(
    *, age: int = 5, applied: Any = V2, state: str = "running", ready: bool = True, **extra: Any
) -> ReceivedReport:
    document = {
        "node": "web-1",
        "time": format_time(NOW - timedelta(seconds=age)),
        "applied": {"serial": applied.serial, "digest": applied.digest, "commit": applied.commit, "at": "x"}
        if applied
        else None,
        "resources": extra.pop("resources", []),
        "drift": extra.pop("drift", []),
        "instances": [
            {"service": "api", "state": state, "ready": ready, "ports": [{"name": "http", "port": 8080}]}
        ],
    }
    return ReceivedReport(node="web-1", report=report_of(document), verified=True)


# name, node, report, previous plan, expected state, inSync, pending actions
CASES = [
    ("in sync and reporting", NODE, report(), V1, "online", True, []),
    (
        "no report yet: everything to create",
        NODE,
        None,
        None,
        "offline",
        False,
        [
            "create file:/etc/c",
            "create unit:api.service",
            "create service:api",
            "start api",
            "start api.service",
        ],
    ),
    ("stale report is offline", NODE, report(age=600), V1, "offline", True, []),
    (
        "cordoned wins over online",
        NodeFacts("web-1", "10.0.0.1", cordoned=True),
        report(),
        V1,
        "cordoned",
        True,
        [],
    ),
    (
        "behind by one plan: update and restart",
        NODE,
        report(applied=V1),
        V1,
        "online",
        False,
        ["update file:/etc/c", "restart api.service"],
    ),
    (
        "failed resource is pending",
        NODE,
        report(resources=[{"id": "unit:api.service", "outcome": "failed", "error": "boom"}]),
        V1,
        "online",
        True,
        ["update unit:api.service"],
    ),
    ("stopped instance must start", NODE, report(state="failed"), V1, "online", True, ["start api"]),
    (
        "rejected unsigned report",
        NODE,
        ReceivedReport("web-1", None, problem="report of web-1 has an invalid signature"),
        V1,
        "offline",
        False,
        [
            "create file:/etc/c",
            "create unit:api.service",
            "create service:api",
            "start api",
            "start api.service",
        ],
    ),
]


@pytest.mark.parametrize(
    ("name", "node", "rep", "previous", "state", "in_sync", "pending"), CASES, ids=[c[0] for c in CASES]
)
def test_node_status(
    name: str, node: NodeFacts, rep: Any, previous: Any, state: str, in_sync: bool, pending: list[str]
) -> None:
    """Liveness, sync and the pending actions (kind and target) of one node."""
    document = node_status(
        node=node,
        plan=V2,
        previous_plan=previous,
        previous_status=None,
        report=rep,
        now=NOW,
        offline_after=120,
    )
    assert (document["state"], document["inSync"]) == (state, in_sync)
    assert [f"{a['action']} {a['target']}" for a in document["pending"]] == pending


def test_baseline_survives_a_second_plan_change() -> None:
    """A node two plans behind still gets its pending actions from what it last applied."""
    first = node_status(
        node=NODE,
        plan=V2,
        previous_plan=V1,
        previous_status=None,
        report=report(applied=V1),
        now=NOW,
        offline_after=120,
    )
    v3 = plan_node(
        node="web-1",
        entries=[plan_entry(r) for r in (CONF_B, SERVICE)],
        previous=V2,
        settings=SETTINGS,
        commit="3" * 40,
        now=NOW,
    )
    second = node_status(
        node=NODE,
        plan=v3,
        previous_plan=V2,
        previous_status=first,
        report=report(applied=V1),
        now=NOW,
        offline_after=120,
    )
    assert [f"{a['action']} {a['target']}" for a in second["pending"]] == [
        "update file:/etc/c",
        "delete unit:api.service",
        "stop api.service",
    ]
    assert first["pending"][0]["reason"] == "content changed"  # diffed against the applied plan itself
    assert second["pending"][0]["reason"] == "spec changed"  # only its digests were kept


def test_status_documents_do_not_change_with_heartbeats() -> None:
    """Two reports that differ only in time give the same status documents."""
    a = node_status(
        node=NODE,
        plan=V2,
        previous_plan=V1,
        previous_status=None,
        report=report(age=5),
        now=NOW,
        offline_after=120,
    )
    b = node_status(
        node=NODE,
        plan=V2,
        previous_plan=V1,
        previous_status=None,
        report=report(age=35),
        now=NOW,
        offline_after=120,
    )
    assert a == b


# name, reachable nodes, ready, expected endpoints (address, port, healthy)
ENDPOINTS = [
    ("ready instance on a reachable node", ["web-1"], True, [("10.0.0.1", 8080, True)]),
    ("unready instance", ["web-1"], False, [("10.0.0.1", 8080, False)]),
    ("offline node is unhealthy", [], True, [("10.0.0.1", 8080, False)]),
]


@pytest.mark.parametrize(("name", "reachable", "ready", "expected"), ENDPOINTS, ids=[e[0] for e in ENDPOINTS])
def test_endpoints_from_reports(name: str, reachable: list[str], ready: bool, expected: list[Any]) -> None:
    """Endpoints come from reported ports and the node's address; health needs a reachable node."""
    found = endpoints_from_reports(
        {"web-1": report(ready=ready)}, addresses={"web-1": "10.0.0.1"}, reachable=reachable
    )
    assert [(e.address, e.port, e.healthy) for e in found["api"]] == expected


PLACED: list[tuple[str, dict[str, Any], list[Any]]] = [
    ("placed with its port", {"web-1": {"api": frozenset({"http"})}}, [("10.0.0.1", 8080, True)]),
    ("another service's claim", {"web-1": {"misc": frozenset({"http"})}}, []),
    ("a port the service does not declare", {"web-1": {"api": frozenset({"admin"})}}, []),
    ("a node with no plan", {}, []),
]


@pytest.mark.parametrize(("name", "placed", "expected"), PLACED, ids=[p[0] for p in PLACED])
def test_a_report_speaks_only_of_what_its_plan_placed(
    name: str, placed: dict[str, Any], expected: list[Any]
) -> None:
    """An instance of a service its node's plan does not place there, or on an undeclared port, is no endpoint."""
    found = endpoints_from_reports(
        {"web-1": report()}, addresses={"web-1": "10.0.0.1"}, reachable=["web-1"], placed=placed
    )
    assert [(e.address, e.port, e.healthy) for e in found.get("api", [])] == expected


def test_placed_ports_reads_the_plan_s_service_entries() -> None:
    """Which services a plan places on its node, with their port names; other resources say nothing."""
    resources = [
        {
            "id": "service:api",
            "kind": "service",
            "spec": {"name": "api", "ports": [{"name": "http", "port": 8080}]},
        },
        {"id": "service:worker", "kind": "service", "spec": {"name": "worker", "ports": []}},
        {"id": "file:/etc/x", "kind": "file", "service": "misc", "spec": {"path": "/etc/x"}},
    ]
    assert placed_ports(resources) == {"api": frozenset({"http"}), "worker": frozenset()}


def test_service_status_lists_instances_per_placed_node() -> None:
    """A service's status has its endpoints and one instance per placed node, unknown when unreported."""
    facts = ServiceFacts(name="api", state="running", paused=False, version="1.0.0", nodes=("web-1", "web-2"))
    endpoints = endpoints_from_reports(
        {"web-1": report()}, addresses={"web-1": "10.0.0.1"}, reachable=["web-1"]
    )["api"]
    document = service_status(service=facts, endpoints=endpoints, reports={"web-1": report()})
    assert [(i["node"], i["state"], i["ready"]) for i in document["instances"]] == [
        ("web-1", "running", True),
        ("web-2", "unknown", False),
    ]
    assert document["endpoints"] == [
        {"node": "web-1", "address": "10.0.0.1", "name": "http", "port": 8080, "healthy": True}
    ]


API = ServiceFacts(name="api", state="running", paused=False, version="1.5.0", nodes=("a", "b"), app="shop")
STOPPED_API = ServiceFacts(name="api", state="stopped", paused=False, version=None, nodes=("a",))


def on_node(node: str, *, ready: bool = True) -> ReceivedReport:
    """`report()` as node `node` sent it."""
    document = report(ready=ready).report.to_document()
    return ReceivedReport(node, report_of(document | {"node": node}), verified=True)


def instance(
    state: str = "running", *, ready: bool = True, version: str | None = "1.5.0", was: bool = True
) -> Any:
    return {"node": "a", "state": state, "ready": ready, "version": version, "wasReady": was}


# name, instance, desired service, node liveness, expected
CLASSIFY = [
    ("ready on the desired version", instance(), API, NodeState.ONLINE, Seen.READY),
    ("cordoned nodes count as usual", instance(), API, NodeState.CORDONED, Seen.READY),
    ("offline node", instance(), API, NodeState.OFFLINE, Seen.OFFLINE),
    ("nothing reported", instance("unknown", ready=False, version=None), API, None, Seen.MISSING),
    (
        "never reported, on an offline node",
        instance("unknown", ready=False, version=None),
        API,
        NodeState.OFFLINE,
        Seen.MISSING,
    ),
    ("older version is still deploying", instance(version="1.4.0"), API, None, Seen.STARTING),
    ("not ready since it started", instance(ready=False, was=False), API, None, Seen.STARTING),
    ("first start", instance("starting", ready=False, was=False), API, None, Seen.STARTING),
    ("waiting for a dependency", instance("waiting", ready=False, was=False), API, None, Seen.STARTING),
    ("restarting after a crash", instance("starting", ready=False), API, None, Seen.UNHEALTHY),
    ("was ready, is not any more", instance(ready=False), API, None, Seen.UNHEALTHY),
    ("unit failed", instance("failed", ready=False), API, None, Seen.FAILED),
    ("stopped although desired running", instance("stopped", ready=False), API, None, Seen.STOPPED),
    ("desired stopped and stopped", instance("stopped", ready=False), STOPPED_API, None, Seen.STOPPED),
    ("desired stopped, still running", instance(), STOPPED_API, None, Seen.STARTING),
]


@pytest.mark.parametrize(
    ("name", "inst", "facts", "node", "expected"), CLASSIFY, ids=[c[0] for c in CLASSIFY]
)
def test_classify(name: str, inst: Any, facts: ServiceFacts, node: NodeState | None, expected: Seen) -> None:
    """What one placed instance counts as."""
    assert classify(inst, desired=facts, node=node) is expected


R, S, U, F, M, OFF = Seen.READY, Seen.STARTING, Seen.UNHEALTHY, Seen.FAILED, Seen.MISSING, Seen.OFFLINE
# name, desired service, seen per node, rollout phase, expected state, expected reason
STATES = [
    ("all ready", API, {"a": R, "b": R}, None, "running", "2/2 ready"),
    ("placed nowhere", API, {}, None, "pending", "placed on no node"),
    ("nothing reported yet", API, {"a": M, "b": M}, None, "pending", "no instance reported yet"),
    ("one still starting", API, {"a": R, "b": S}, None, "deploying", "1/2 ready; waiting for b"),
    ("one unhealthy", API, {"a": R, "b": U}, None, "degraded", "1/2 ready; b unhealthy"),
    ("one on an offline node", API, {"a": OFF, "b": R}, None, "degraded", "1/2 ready; a offline"),
    ("none ready", API, {"a": U, "b": F}, None, "failed", "no instance is ready: a unhealthy, b failed"),
    ("all offline", API, {"a": OFF, "b": OFF}, None, "failed", "no instance is ready: a offline, b offline"),
    (
        "rollout under way",
        API,
        {"a": R, "b": R},
        "progressing",
        "deploying",
        "rollout progressing; 2/2 ready",
    ),
    ("rollout succeeded", API, {"a": R, "b": R}, "succeeded", "running", "2/2 ready"),
    ("rollout failed", API, {"a": R, "b": R}, "failed", "failed", "the rollout failed"),
    ("stopped as desired", STOPPED_API, {"a": Seen.STOPPED}, None, "stopped", "stopped as desired"),
    ("stopping", STOPPED_API, {"a": S}, None, "deploying", "stopping on a"),
]


@pytest.mark.parametrize(
    ("name", "facts", "seen", "phase", "state", "reason"), STATES, ids=[c[0] for c in STATES]
)
def test_service_state(
    name: str, facts: ServiceFacts, seen: dict[str, Seen], phase: str | None, state: str, reason: str
) -> None:
    """A service's state and reason from its instances and its rollout's phase."""
    found = service_state(service=facts, seen=seen, rollout_phase=phase)
    assert (found[0].value, found[1]) == (state, reason)


# name, service states, expected application state
APPS = [
    ("every service running", ["running", "running"], "running"),
    ("stopped services do not count", ["running", "stopped"], "running"),
    ("one degraded", ["running", "degraded"], "partially-degraded"),
    ("one failed", ["running", "failed"], "partially-degraded"),
    ("all failed", ["failed", "failed"], "failed"),
    ("one deploying", ["running", "deploying"], "deploying"),
    ("all pending", ["pending"], "pending"),
]


@pytest.mark.parametrize(("name", "states", "expected"), APPS, ids=[a[0] for a in APPS])
def test_app_state(name: str, states: list[str], expected: str) -> None:
    """Services sharing an `app` label roll up into one application state."""
    assert app_state(states).value == expected


def test_app_documents_group_services_by_app_label() -> None:
    """One document per app, naming the services that are not running; unlabelled services have none."""
    docs = app_documents(
        [
            {"service": "api", "app": "shop", "state": "running"},
            {"service": "redis", "app": "shop", "state": "degraded"},
            {"service": "lone", "app": None, "state": "failed"},
        ]
    )
    assert docs == {
        "status/apps/shop.json": {
            "app": "shop",
            "state": "partially-degraded",
            "reason": "redis degraded",
            "services": {"api": "running", "redis": "degraded"},
        }
    }


# name, reports (node -> ready or None), node liveness given, expected state
ROLLUPS = [
    ("both ready", {"a": True, "b": True}, None, "running"),
    ("second node never reported", {"a": True}, None, "deploying"),
    ("offline node inferred from unhealthy endpoints", {"a": True, "b": True}, {"a"}, "degraded"),
]


@pytest.mark.parametrize(("name", "ready", "reachable", "expected"), ROLLUPS, ids=[r[0] for r in ROLLUPS])
def test_service_status_state(name: str, ready: dict[str, bool], reachable: Any, expected: str) -> None:
    """The service document's state from reports and endpoints alone (no liveness passed)."""
    reports = {n: on_node(n, ready=r) for n, r in ready.items()}
    addresses = {"a": "10.0.0.1", "b": "10.0.0.2"}
    endpoints = endpoints_from_reports(reports, addresses=addresses, reachable=reachable or ready)
    document = service_status(service=API, endpoints=endpoints["api"], reports=reports)
    assert (document["state"], document["app"]) == (expected, "shop")


def test_service_status_uses_given_liveness() -> None:
    """With node liveness passed, an offline node's instance counts as offline whatever it reported."""
    reports = {n: on_node(n) for n in ("a", "b")}
    document = service_status(
        service=API, endpoints=[], reports=reports, nodes={"a": NodeState.ONLINE, "b": NodeState.OFFLINE}
    )
    assert (document["state"], document["reason"]) == ("degraded", "1/2 ready; b offline")
    assert [i["seen"] for i in document["instances"]] == ["ready", "offline"]


def test_node_states_from_status_documents() -> None:
    """Liveness per node from the node documents of a pass; other documents and deletions are skipped."""
    docs = {
        "status/nodes/a.json": {"state": "online"},
        "status/nodes/b.json": {"state": "offline"},
        "status/nodes/c.json": None,
        "status/services/api.json": {"state": "running"},
    }
    assert node_states(docs) == {"a": NodeState.ONLINE, "b": NodeState.OFFLINE}


# name, rollout document, instance versions on a and b, expected state
VERSIONED = [
    ("no rollout: both on the resolved version", None, ("1.5.0", "1.5.0"), "running"),
    ("no rollout: one behind", None, ("1.5.0", "1.4.0"), "deploying"),
    (
        "rolled back: the old version is what should run",
        {"phase": "rolled-back", "from": "1.4.0"},
        ("1.4.0", "1.4.0"),
        "running",
    ),
    (
        "succeeded with a cordoned node held back",
        {"phase": "succeeded", "held": {"b": "1.4.0"}},
        ("1.5.0", "1.4.0"),
        "running",
    ),
]


@pytest.mark.parametrize(
    ("name", "rollout", "versions", "expected"), VERSIONED, ids=[v[0] for v in VERSIONED]
)
def test_versions_expected_per_node(
    name: str, rollout: Any, versions: tuple[str, str], expected: str
) -> None:
    """An instance is compared with the version its node should run, which a rollout may hold back."""
    reports = {}
    for node, version in zip(("a", "b"), versions, strict=True):
        document = report().report.to_document()
        document["instances"] = [dict(document["instances"][0], version=version)]
        reports[node] = ReceivedReport(node, report_of(document | {"node": node}))
    document = service_status(service=API, endpoints=[], reports=reports, rollout=rollout)
    assert document["state"] == expected, document["reason"]


def test_a_process_restarted_after_a_crash_is_unhealthy_not_starting() -> None:
    """The agent gives a new process no readiness history, but its supervisor's restart count says it
    was up before: the instance is unhealthy (its service degraded), not merely on its way up."""
    crashed = report(ready=False)
    document = crashed.report.to_document()
    document["instances"] = [dict(document["instances"][0], restarts=1)]
    facts = ServiceFacts(name="api", state="running", paused=False, version=None, nodes=("web-1",))
    status = service_status(
        service=facts, endpoints=[], reports={"web-1": ReceivedReport("web-1", report_of(document))}
    )
    assert status["instances"][0]["seen"] == "unhealthy"
    fresh = service_status(service=facts, endpoints=[], reports={"web-1": crashed})
    assert fresh["instances"][0]["seen"] == "starting"
