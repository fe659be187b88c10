"""Verify a node plan before anything is applied: shape, signature, node, digests, serial and expiry.

Pure: the document, the pinned key, the last applied serial and the clock come in as values; a
verified `Plan` or a ContractError saying what is wrong comes out. Path confinement is checked
separately, per resource, when the plan is applied (`agent.host.paths`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import jsonschema

from contract.crypto import VerifyKey
from contract.documents import JsonObject, resource_digest, resources_digest, verify_document
from contract.errors import ContractError
from contract.vocabulary import ResourceKind

LOOPBACK = "127.0.0.1"  # a plan from a reconciler that does not send the node's address


@dataclass(frozen=True)
class PlanResource:
    """One entry of a plan: what one resource on the host should look like."""

    id: str
    kind: ResourceKind
    service: str
    spec: Mapping[str, Any]
    digest: str
    after: tuple[str, ...] = ()


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
        ResourceKind(entry["kind"]),
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
