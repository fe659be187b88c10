"""A plan's `service` entries, typed once when the plan is verified."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contract.crypto import SigningKey
from contract.plan import PortSpec, ProbeSpec, ServiceSpec, parse_probe, parse_service, verify_plan
from contract.vocabulary import DesiredState
from tests.support import make_plan, resource

PROBES: list[tuple[str, dict[str, Any], ProbeSpec]] = [
    ("process by default", {}, ProbeSpec("process")),
    (
        "http on a named port, host left to the node address",
        {"http": {"port": "http", "path": "/healthz"}, "period": 5, "timeout": 1, "failureThreshold": 2},
        ProbeSpec("http", port="http", path="/healthz", timeout=1, period=5, failure_threshold=2),
    ),
    (
        "tcp with an explicit host",
        {"tcp": {"port": 5432, "host": "10.0.0.9"}, "successThreshold": 2, "initialDelay": 3},
        ProbeSpec("tcp", port=5432, host="10.0.0.9", success_threshold=2, initial_delay=3),
    ),
    ("exec", {"exec": {"command": ["pg_isready"]}}, ProbeSpec("exec", command=("pg_isready",))),
]


@pytest.mark.parametrize(("name", "raw", "expected"), PROBES, ids=[p[0] for p in PROBES])
def test_parse_probe(name: str, raw: dict[str, Any], expected: ProbeSpec) -> None:
    """Each check with its thresholds, and Kubernetes' defaults where the plan says nothing."""
    assert parse_probe(raw) == expected


SERVICES: list[tuple[str, dict[str, Any], ServiceSpec]] = [
    ("name and state only", {"name": "web", "state": "stopped"}, ServiceSpec("web", DesiredState.STOPPED)),
    (
        "everything",
        {
            "name": "api",
            "state": "running",
            "unit": "api.service",
            "version": "1.5.0",
            "ports": [{"name": "http", "port": 8080, "protocol": "http"}, {"name": "metrics", "port": 9100}],
            "health": {"readiness": {"http": {"port": "http"}}},
            "hooks": {"preStart": ["migrate"], "postStart": []},
            "dependsOn": ["db"],
            "waitingFor": ["db"],
        },
        ServiceSpec(
            "api",
            DesiredState.RUNNING,
            unit="api.service",
            version="1.5.0",
            ports=(PortSpec("http", 8080, "http"), PortSpec("metrics", 9100)),
            health={"readiness": ProbeSpec("http", port="http")},
            hooks={"preStart": ("migrate",), "postStart": ()},
            depends_on=("db",),
            waiting_for=("db",),
        ),
    ),
]


@pytest.mark.parametrize(("name", "spec", "expected"), SERVICES, ids=[s[0] for s in SERVICES])
def test_parse_service(name: str, spec: dict[str, Any], expected: ServiceSpec) -> None:
    """A service entry's spec as the agent reads it."""
    assert parse_service(spec) == expected


def test_verified_plan_types_its_service_entries() -> None:
    """verify_plan parses each service entry once; other kinds carry none."""
    key, now = SigningKey.generate(), datetime(2026, 11, 22, tzinfo=UTC)
    entries = [
        resource("file", {"path": "/etc/a", "mode": "0644", "content": "a"}),
        resource("service", {"name": "app", "state": "running", "version": "2.0.0"}),
    ]
    document = make_plan("web-1", entries, serial=1, key=key, expires=now + timedelta(days=1))
    plan = verify_plan(document, key=key.verify_key(), node="web-1", last_serial=None, now=now)
    assert plan.resources[0].service_spec is None
    assert plan.resources[1].typed_service == ServiceSpec("app", DesiredState.RUNNING, version="2.0.0")
