"""Status documents: liveness, pending actions against the applied plan, endpoints from reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.desired import RenderedResource
from reconciler.planner import PlanSettings, format_time, plan_entry, plan_node
from reconciler.status import (
    NodeFacts,
    ReceivedReport,
    ServiceFacts,
    endpoints_from_reports,
    node_status,
    service_status,
)

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
    return ReceivedReport(node="web-1", document=document, verified=True)


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
