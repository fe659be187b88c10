"""The node report (`schemas/report.schema.json`) as frozen dataclasses: built by the agent, parsed once.

The agent builds a `Report` from what it applied and observed and sends `report.to_document()`
(signed); the reconciler turns a received document into a `Report` with `parse_report`, which
raises ContractError naming the field when the shape is wrong, and reads attributes from then on.
Timestamps stay the RFC 3339 text the agent wrote, so a document read and written again is the
same document. An optional member the agent always writes is written back even when it is null;
one it writes only sometimes (`unit`, a port's `protocol`) is written only when present.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from contract.defaults import API_VERSION, REPORT_KIND
from contract.errors import ContractError
from contract.vocabulary import InstanceState, Outcome

JsonObject = dict[str, Any]
T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)
_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array"}


@dataclass(frozen=True)
class Applied:
    """The plan in force on the node."""

    serial: int
    commit: str
    digest: str
    at: str
    ok: bool | None = None  # every resource converged (absent from reports of early agents)

    def to_document(self) -> JsonObject:
        found: JsonObject = {
            "serial": self.serial,
            "commit": self.commit,
            "digest": self.digest,
            "at": self.at,
        }
        return found | ({"ok": self.ok} if self.ok is not None else {})


@dataclass(frozen=True)
class Rejected:
    """The newest plan seen but not applied, and why."""

    reason: str
    serial: int | None = None
    digest: str | None = None

    def to_document(self) -> JsonObject:
        return {"serial": self.serial, "digest": self.digest, "reason": self.reason}


@dataclass(frozen=True)
class ResourceResult:
    """How converging one resource of the applied plan went."""

    id: str
    outcome: Outcome
    reason: str | None = None  # what was done, or why nothing was
    error: str | None = None

    def to_document(self) -> JsonObject:
        found: JsonObject = {"id": self.id, "outcome": self.outcome}
        return found | ({"reason": self.reason} if self.reason is not None else {}) | {"error": self.error}


@dataclass(frozen=True)
class Drift:
    """A difference found on the host (and corrected, unless its resource failed)."""

    id: str
    what: str
    corrected: bool

    def to_document(self) -> JsonObject:
        return {"id": self.id, "what": self.what, "corrected": self.corrected}


@dataclass(frozen=True)
class PortStatus:
    """One declared port of an instance, and whether its process listens on it."""

    name: str
    port: int
    protocol: str | None = None
    listening: bool | None = None

    def to_document(self) -> JsonObject:
        found: JsonObject = {"name": self.name, "port": self.port}
        if self.listening is not None:
            found["listening"] = self.listening
        return found | ({"protocol": self.protocol} if self.protocol is not None else {})


@dataclass(frozen=True)
class ProbeStatus:
    """A probe's state past its thresholds, its last message, and since when it holds."""

    ok: bool
    message: str | None = None
    since: str | None = None

    def to_document(self) -> JsonObject:
        found: JsonObject = {"ok": self.ok}
        return found | ({"message": self.message} if self.message is not None else {}) | {"since": self.since}


@dataclass(frozen=True)
class Instance:
    """One service instance as the node observes it."""

    service: str
    state: InstanceState
    ready: bool
    unit: str | None = None
    pid: int | None = None
    version: str | None = None
    ports: tuple[PortStatus, ...] = ()
    ready_since: str | None = None
    probes: Mapping[str, ProbeStatus] = field(default_factory=dict)  # by kind: startup, liveness, readiness
    restarts: int = 0

    def to_document(self) -> JsonObject:
        found: JsonObject = {
            "service": self.service,
            "state": self.state,
            "pid": self.pid,
            "version": self.version,
            "ports": [p.to_document() for p in self.ports],
            "ready": self.ready,
            "readySince": self.ready_since,
            "probes": {kind: p.to_document() for kind, p in self.probes.items()},
            "restarts": self.restarts,
        }
        return found | ({"unit": self.unit} if self.unit is not None else {})

    def probe(self, kind: str) -> ProbeStatus | None:
        return self.probes.get(kind)


@dataclass(frozen=True)
class HookResult:
    """A release hook run for a version transition."""

    service: str
    hook: str
    version: str
    ok: bool
    output: str | None = None

    def to_document(self) -> JsonObject:
        found: JsonObject = {
            "service": self.service,
            "hook": self.hook,
            "version": self.version,
            "ok": self.ok,
        }
        return found | ({"output": self.output} if self.output is not None else {})


@dataclass(frozen=True)
class Signature:
    """Who signed the report, and the Ed25519 signature over its canonical JSON."""

    key: str
    ed25519: str

    def to_document(self) -> JsonObject:
        return {"key": self.key, "ed25519": self.ed25519}


@dataclass(frozen=True)
class Report:
    """A node's report."""

    node: str
    time: str
    agent_version: str
    applied: Applied | None = None
    rejected: Rejected | None = None
    resources: tuple[ResourceResult, ...] = ()
    drift: tuple[Drift, ...] = ()
    instances: tuple[Instance, ...] = ()
    hooks: tuple[HookResult, ...] = ()
    capabilities: tuple[str, ...] = ()
    signature: Signature | None = None

    def to_document(self) -> JsonObject:
        """The report as `schemas/report.schema.json` has it (with its signature, if it has one)."""
        found: JsonObject = {
            "apiVersion": API_VERSION,
            "kind": REPORT_KIND,
            "node": self.node,
            "time": self.time,
            "agentVersion": self.agent_version,
            "applied": self.applied.to_document() if self.applied else None,
            "rejected": self.rejected.to_document() if self.rejected else None,
            "resources": [r.to_document() for r in self.resources],
            "drift": [d.to_document() for d in self.drift],
            "instances": [i.to_document() for i in self.instances],
            "hooks": [h.to_document() for h in self.hooks],
            "capabilities": list(self.capabilities),
        }
        return found | ({"signature": self.signature.to_document()} if self.signature else {})

    def instance(self, service: str) -> Instance | None:
        """The first instance of `service`, if the node reports one."""
        return next((i for i in self.instances if i.service == service), None)

    def failed(self) -> tuple[ResourceResult, ...]:
        return tuple(r for r in self.resources if r.outcome is Outcome.FAILED)


# -- parsing: one reader per object, each naming where a wrong shape is --------------------------


class _Object:
    """A JSON object at `where` in the report, read member by member with type checks."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, Mapping):
            raise ContractError(
                f"report: {where or 'the document'} must be an object, not {_json_type(value)}"
            )
        self.value, self.where = value, where

    def at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, kind: type, *, optional: bool = False) -> Any:
        """The member `key`, which must be of `kind` (None when `optional` and absent or null)."""
        value = self.value.get(key)
        if value is None and optional:
            return None
        if key not in self.value:
            raise ContractError(f"report: {self.at(key)} is missing")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ContractError(
                f"report: {self.at(key)} must be {_TYPE_NAMES[kind]}, not {_json_type(value)}"
            )
        return value

    def objects(self, key: str, read: Callable[[Any, str], T], *, required: bool = True) -> tuple[T, ...]:
        items = self.get(key, list, optional=not required) or []
        return tuple(read(item, f"{self.at(key)}[{index}]") for index, item in enumerate(items))

    def choice(self, key: str, vocabulary: type[E]) -> E:
        """The member `key`, which must be one of `vocabulary`'s values."""
        value = self.get(key, str)
        try:
            return vocabulary(value)
        except ValueError as exc:
            allowed = ", ".join(m.value for m in vocabulary)
            raise ContractError(f"report: {self.at(key)} is {value!r}, not one of {allowed}") from exc


def _json_type(value: Any) -> str:
    return "null" if value is None else _TYPE_NAMES.get(type(value), "an object")


def _applied(value: Any, where: str) -> Applied:
    raw = _Object(value, where)
    return Applied(
        serial=raw.get("serial", int),
        commit=raw.get("commit", str),
        digest=raw.get("digest", str),
        at=raw.get("at", str),
        ok=raw.get("ok", bool, optional=True),
    )


def _rejected(value: Any, where: str) -> Rejected:
    raw = _Object(value, where)
    return Rejected(
        reason=raw.get("reason", str),
        serial=raw.get("serial", int, optional=True),
        digest=raw.get("digest", str, optional=True),
    )


def _resource(value: Any, where: str) -> ResourceResult:
    raw = _Object(value, where)
    return ResourceResult(
        id=raw.get("id", str),
        outcome=raw.choice("outcome", Outcome),
        reason=raw.get("reason", str, optional=True),
        error=raw.get("error", str, optional=True),
    )


def _drift(value: Any, where: str) -> Drift:
    raw = _Object(value, where)
    return Drift(id=raw.get("id", str), what=raw.get("what", str), corrected=raw.get("corrected", bool))


def _port(value: Any, where: str) -> PortStatus:
    raw = _Object(value, where)
    return PortStatus(
        name=raw.get("name", str),
        port=raw.get("port", int),
        protocol=raw.get("protocol", str, optional=True),
        listening=raw.get("listening", bool, optional=True),
    )


def _probe(value: Any, where: str) -> ProbeStatus:
    raw = _Object(value, where)
    return ProbeStatus(
        ok=raw.get("ok", bool),
        message=raw.get("message", str, optional=True),
        since=raw.get("since", str, optional=True),
    )


def _probes(raw: _Object) -> dict[str, ProbeStatus]:
    probes = _Object(raw.value.get("probes") or {}, raw.at("probes"))
    return {str(kind): _probe(value, probes.at(str(kind))) for kind, value in probes.value.items()}


def _instance(value: Any, where: str) -> Instance:
    raw = _Object(value, where)
    return Instance(
        service=raw.get("service", str),
        state=raw.choice("state", InstanceState),
        ready=raw.get("ready", bool),
        unit=raw.get("unit", str, optional=True),
        pid=raw.get("pid", int, optional=True),
        version=raw.get("version", str, optional=True),
        ports=raw.objects("ports", _port, required=False),
        ready_since=raw.get("readySince", str, optional=True),
        probes=_probes(raw),
        restarts=raw.get("restarts", int, optional=True) or 0,
    )


def _hook(value: Any, where: str) -> HookResult:
    raw = _Object(value, where)
    return HookResult(
        service=raw.get("service", str),
        hook=raw.get("hook", str),
        version=raw.get("version", str),
        ok=raw.get("ok", bool),
        output=raw.get("output", str, optional=True),
    )


def _signature(value: Any, where: str) -> Signature:
    raw = _Object(value, where)
    return Signature(key=raw.get("key", str), ed25519=raw.get("ed25519", str))


def _optional(raw: _Object, key: str, read: Callable[[Any, str], T]) -> T | None:
    value = raw.value.get(key)
    return None if value is None else read(value, raw.at(key))


def _strings(raw: _Object, key: str) -> tuple[str, ...]:
    items: Sequence[Any] = raw.get(key, list)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise ContractError(f"report: {raw.at(key)}[{index}] must be a string, not {_json_type(item)}")
    return tuple(items)


def parse_report(document: Any) -> Report:
    """The typed report of a report document; ContractError naming the member whose shape is wrong."""
    raw = _Object(document, "")
    if raw.value.get("apiVersion") != API_VERSION or raw.value.get("kind") != REPORT_KIND:
        raise ContractError(f"report: not a {API_VERSION} {REPORT_KIND}")
    return Report(
        node=raw.get("node", str),
        time=raw.get("time", str),
        agent_version=raw.get("agentVersion", str),
        applied=_optional(raw, "applied", _applied),
        rejected=_optional(raw, "rejected", _rejected),
        resources=raw.objects("resources", _resource),
        drift=raw.objects("drift", _drift),
        instances=raw.objects("instances", _instance),
        hooks=raw.objects("hooks", _hook, required=False),
        capabilities=_strings(raw, "capabilities"),
        signature=_optional(raw, "signature", _signature),
    )
