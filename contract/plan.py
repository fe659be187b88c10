"""Verify a node plan before anything is applied: shape, signature, node, digests, serial and expiry.

Pure: the document, the pinned key, the last applied serial and the clock come in as values; a
verified `Plan` or a ContractError saying what is wrong comes out. Path confinement is checked
separately, per resource, when the plan is applied (`agent.host.paths`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import jsonschema

from contract.crypto import VerifyKey
from contract.documents import JsonObject, resource_digest, resources_digest, verify_document
from contract.errors import ContractError
from contract.vocabulary import DesiredState, ResourceKind, resource_kind

LOOPBACK = "127.0.0.1"  # a plan from a reconciler that does not send the node's address
DEFAULT_PROBE_TIMEOUT = 2  # seconds


@dataclass(frozen=True)
class PortSpec:
    """A port the service declares."""

    name: str
    port: int
    protocol: str | None = None  # http, tcp or udp


@dataclass(frozen=True)
class ProbeSpec:
    """One health probe: one check (http, tcp, exec or process) and its thresholds, as in Kubernetes."""

    check: str
    port: int | str | None = None  # a number, or the name of one of the service's ports
    host: str | None = None  # None: the node's address, where its endpoints are published
    path: str = "/"
    command: tuple[str, ...] = ()
    timeout: int = DEFAULT_PROBE_TIMEOUT
    period: int | None = None
    failure_threshold: int = 3
    success_threshold: int = 1
    initial_delay: int = 0


@dataclass(frozen=True)
class ServiceSpec:
    """A plan's `service` entry: what the agent observes and reports about one service instance."""

    name: str
    state: DesiredState = DesiredState.RUNNING
    unit: str | None = None
    version: str | None = None
    ports: tuple[PortSpec, ...] = ()
    health: Mapping[str, ProbeSpec] = field(default_factory=dict)  # startup, liveness, readiness
    hooks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # preStart, postStart, rollback
    depends_on: tuple[str, ...] = ()
    waiting_for: tuple[str, ...] = ()  # dependencies with no healthy endpoint anywhere: do not start yet


def parse_probe(raw: Mapping[str, Any]) -> ProbeSpec:
    """A probe of a verified plan (its shape was checked against the schema)."""
    check = next((c for c in ("http", "tcp", "exec") if c in raw), "process")
    target: Mapping[str, Any] = raw.get(check) or {}
    return ProbeSpec(
        check=check,
        port=target.get("port"),
        host=target.get("host"),
        path=target.get("path", "/"),
        command=tuple(target.get("command", ())),
        timeout=int(raw.get("timeout", DEFAULT_PROBE_TIMEOUT)),
        period=raw.get("period"),
        failure_threshold=int(raw.get("failureThreshold", 3)),
        success_threshold=int(raw.get("successThreshold", 1)),
        initial_delay=int(raw.get("initialDelay", 0)),
    )


def parse_service(spec: Mapping[str, Any]) -> ServiceSpec:
    """A `service` entry's spec of a verified plan (its shape was checked against the schema)."""
    return ServiceSpec(
        name=spec["name"],
        state=DesiredState(spec.get("state", DesiredState.RUNNING)),
        unit=spec.get("unit") or None,
        version=spec.get("version"),
        ports=tuple(PortSpec(p["name"], int(p["port"]), p.get("protocol")) for p in spec.get("ports", ())),
        health={kind: parse_probe(probe) for kind, probe in (spec.get("health") or {}).items()},
        hooks={hook: tuple(commands) for hook, commands in (spec.get("hooks") or {}).items()},
        depends_on=tuple(spec.get("dependsOn", ())),
        waiting_for=tuple(spec.get("waitingFor", ())),
    )


@dataclass(frozen=True)
class PlanResource:
    """One entry of a plan: what one resource on the host should look like."""

    id: str
    kind: ResourceKind
    service: str
    spec: Mapping[str, Any]
    digest: str
    after: tuple[str, ...] = ()
    service_spec: ServiceSpec | None = field(default=None, compare=False)  # a `service` entry's, typed

    def __post_init__(self) -> None:
        if self.kind == ResourceKind.SERVICE and self.service_spec is None:
            object.__setattr__(self, "service_spec", parse_service(self.spec))

    @property
    def typed_service(self) -> ServiceSpec:
        """The typed spec of a `service` entry (ContractError for another kind)."""
        if self.service_spec is None:
            raise ContractError(f"resource {self.id} is a {self.kind}, not a service")
        return self.service_spec


@dataclass(frozen=True)
class Plan:
    """A verified plan."""

    node: str
    serial: int
    commit: str
    expires: datetime
    allowed_paths: tuple[str, ...]
    heartbeat: int
    resources: tuple[PlanResource, ...]
    digest: str
    document: JsonObject
    address: str = LOOPBACK  # where the node's endpoints are published: probes without a host knock here


@functools.cache
def _validator() -> Any:
    schema = json.loads(resources.files("plumb_schemas").joinpath("plan.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 UTC timestamp (`...Z`)."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ContractError(f"{text!r} is not an RFC 3339 timestamp") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def format_time(value: datetime) -> str:
    """Format a timestamp as RFC 3339 UTC with a Z suffix."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_shape(document: Mapping[str, Any]) -> None:
    error = jsonschema.exceptions.best_match(_validator().iter_errors(document))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(plan)"
        raise ContractError(f"plan does not match the schema at {where}: {error.message}")


def _resource(entry: Mapping[str, Any]) -> PlanResource:
    expected = resource_digest(entry["kind"], entry["spec"])
    if entry["digest"] != expected:
        raise ContractError(f"resource {entry['id']}: digest {entry['digest']} does not match its spec")
    return PlanResource(
        entry["id"],
        resource_kind(entry["kind"]),
        entry["service"],
        entry["spec"],
        entry["digest"],
        tuple(entry["after"]),
    )


def verify_plan(
    document: Mapping[str, Any],
    *,
    key: VerifyKey,
    node: str,
    last_serial: int | None,
    now: datetime,
    shape_checked: bool = False,
) -> Plan:
    """Return the verified plan, or raise ContractError saying why it must not be applied.

    `shape_checked` skips the (slow) schema validation for a document already validated before,
    byte for byte the same signed content; every other check still runs.
    """
    verify_document(document, key, what="plan")
    if not shape_checked:
        _check_shape(document)
    if document["node"] != node:
        raise ContractError(f"plan is for node {document['node']!r}, not {node!r}")
    if document["digest"] != resources_digest(document["resources"]):
        raise ContractError("plan digest does not match its resources")
    if last_serial is not None and document["serial"] < last_serial:
        raise ContractError(f"plan serial {document['serial']} is lower than the applied {last_serial}")
    expires = parse_time(document["expires"])
    if expires <= now:
        raise ContractError(f"plan expired at {document['expires']}")
    return Plan(
        node=node,
        serial=document["serial"],
        commit=document["source"]["commit"],
        expires=expires,
        allowed_paths=tuple(document["allowedPaths"]),
        heartbeat=document["heartbeat"],
        resources=tuple(_resource(entry) for entry in document["resources"]),
        digest=document["digest"],
        document=dict(document),
        address=document.get("address", LOOPBACK),
    )
