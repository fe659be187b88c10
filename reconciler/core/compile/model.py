"""The typed desired state: frozen dataclasses built from schema-valid documents."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from contract.defaults import REPORTS_PREFIX, STATE_BRANCH
from contract.vocabulary import DesiredState
from reconciler.core.compile.load import Document

DEFAULT_ALLOWED_PATHS = (
    "/etc/plumb",
    "/etc/nginx/conf.d",
    "/etc/systemd/system",
    "/opt",
    "/srv",
    "/var/lib/plumb",
)
_DURATION = re.compile(r"^([0-9]+)(ms|s|m|h|d)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(text: str | int | None, default: int) -> int:
    """`"30s"` -> 30, `"7d"` -> 604800; schema-valid input only (ms rounds up to a second)."""
    if text is None:
        return default
    if isinstance(text, int):
        return text
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration")
    value = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return max(1, round(value)) if value else 0


@dataclass(frozen=True)
class Issuer:
    name: str
    directory: str
    email: str | None
    ca_bundle: str | None = None


@dataclass(frozen=True)
class Repository:
    """Fleet-wide settings from `plumb.yaml` (defaults when there is none)."""

    name: str = "fleet"
    state_branch: str = STATE_BRANCH
    reports_prefix: str = REPORTS_PREFIX
    allowed_paths: tuple[str, ...] = DEFAULT_ALLOWED_PATHS
    heartbeat: int = 30
    offline_after: int = 120
    plan_expiry: int = 7 * 86400
    allowed_signers: str | None = None
    issuers: Mapping[str, Issuer] = field(default_factory=dict)
    ignore: tuple[str, ...] = ()
    trusted: bool = True  # False when plumb.yaml exists but is invalid: defaults stand in, unchecked
    doc: Document | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Placement:
    selector: Mapping[str, str] | None = None
    nodes: tuple[str, ...] | None = None
    replicas: int | None = None


@dataclass(frozen=True)
class Node:
    name: str
    labels: Mapping[str, str]
    address: str
    cordoned: bool
    signing_key: str | None
    sealing_key: str | None
    doc: Document = field(compare=False, repr=False)


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    parameters: Mapping[str, Any]
    ports: tuple[Mapping[str, Any], ...]
    health: Mapping[str, Any]
    resources: tuple[Mapping[str, Any], ...]
    doc: Document = field(compare=False, repr=False)


@dataclass(frozen=True)
class Trait:
    name: str
    applies_to: tuple[str, ...]
    conflicts_with: tuple[str, ...]
    parameters: Mapping[str, Any]
    placement: Placement | None
    resources: tuple[Mapping[str, Any], ...]
    doc: Document = field(compare=False, repr=False)


@dataclass(frozen=True)
class TraitUse:
    type: str
    params: Mapping[str, Any]
    index: int


@dataclass(frozen=True)
class Service:
    name: str
    labels: Mapping[str, str]
    template: str
    version: str | None
    params: Mapping[str, Any]
    placement: Placement
    depends_on: tuple[str, ...]
    state: str
    paused: bool
    traits: tuple[TraitUse, ...]
    doc: Document = field(compare=False, repr=False)


@dataclass(frozen=True)
class Release:
    name: str
    service: str
    version: str
    artifact: Mapping[str, Any]
    rollout: Mapping[str, Any]
    hooks: Mapping[str, tuple[str, ...]]
    doc: Document = field(compare=False, repr=False)


@dataclass(frozen=True)
class Certificate:
    name: str
    issuer: str
    domains: tuple[str, ...]
    challenge: str
    renew_before: int
    doc: Document = field(compare=False, repr=False)


@dataclass(frozen=True)
class Secret:
    name: str
    data: Mapping[str, str]
    doc: Document = field(compare=False, repr=False)


@dataclass(frozen=True)
class Model:
    """The whole desired state of a fleet, with placement and versions resolved."""

    repository: Repository
    nodes: Mapping[str, Node]
    templates: Mapping[str, Template]
    traits: Mapping[str, Trait]
    services: Mapping[str, Service]
    releases: Mapping[str, Release]
    certificates: Mapping[str, Certificate]
    secrets: Mapping[str, Secret]
    placement: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    order: tuple[str, ...] = ()  # services, dependencies first
    versions: Mapping[str, Release | None] = field(default_factory=dict)  # service -> resolved release
    node_index: Any = field(default=None, compare=False, repr=False)  # placement.NodeIndex of `nodes`


def _labels(body: Mapping[str, Any]) -> dict[str, str]:
    labels = body.get("metadata", {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()}


def _placement(raw: Mapping[str, Any] | None) -> Placement:
    raw = raw or {}
    nodes = raw.get("nodes")
    return Placement(raw.get("selector"), tuple(nodes) if nodes is not None else None, raw.get("replicas"))


def repository_from(doc: Document) -> Repository:
    spec = doc.body.get("spec") or {}
    issuers = {
        name: Issuer(name, raw["directory"], raw.get("email"), raw.get("caBundle"))
        for name, raw in (spec.get("issuers") or {}).items()
    }
    return Repository(
        name=doc.name or "fleet",
        state_branch=spec.get("stateBranch", STATE_BRANCH),
        reports_prefix=spec.get("reportsPrefix", REPORTS_PREFIX),
        allowed_paths=tuple(spec.get("allowedPaths", DEFAULT_ALLOWED_PATHS)),
        heartbeat=seconds(spec.get("heartbeat"), 30),
        offline_after=seconds(spec.get("offlineAfter"), 120),
        plan_expiry=seconds(spec.get("planExpiry"), 7 * 86400),
        allowed_signers=(spec.get("verifyCommits") or {}).get("allowedSigners"),
        issuers=issuers,
        ignore=tuple(spec.get("ignore", ())),
        doc=doc,
    )


def node_from(doc: Document) -> Node:
    spec = doc.body["spec"]
    keys = spec.get("keys") or {}
    return Node(
        doc.name or "",
        _labels(doc.body),
        spec["address"],
        bool(spec.get("cordoned", False)),
        keys.get("signing"),
        keys.get("sealing"),
        doc,
    )


def template_from(doc: Document) -> Template:
    spec = doc.body["spec"]
    return Template(
        doc.name or "",
        spec.get("description", ""),
        spec.get("parameters") or {"type": "object"},
        tuple(spec.get("ports") or ()),
        spec.get("health") or {},
        tuple(spec.get("resources") or ()),
        doc,
    )


def trait_from(doc: Document) -> Trait:
    spec = doc.body["spec"]
    placement = _placement(spec["placement"]) if spec.get("placement") else None
    return Trait(
        doc.name or "",
        tuple(spec.get("appliesTo", ("*",))),
        tuple(spec.get("conflictsWith", ())),
        spec.get("parameters") or {"type": "object"},
        placement,
        tuple(spec.get("resources") or ()),
        doc,
    )


def service_from(doc: Document) -> Service:
    spec = doc.body["spec"]
    traits = tuple(
        TraitUse(raw["type"], raw.get("params") or {}, index)
        for index, raw in enumerate(spec.get("traits") or ())
    )
    version = spec.get("version")
    return Service(
        doc.name or "",
        _labels(doc.body),
        spec["template"],
        str(version) if version is not None else None,
        spec.get("params") or {},
        _placement(spec.get("placement")),
        tuple(spec.get("dependsOn") or ()),
        spec.get("state", DesiredState.RUNNING),
        bool(spec.get("paused", False)),
        traits,
        doc,
    )


def release_from(doc: Document) -> Release:
    spec = doc.body["spec"]
    hooks = {name: tuple(commands) for name, commands in (spec.get("hooks") or {}).items()}
    return Release(
        doc.name or "",
        spec["service"],
        str(spec["version"]),
        spec.get("artifact") or {},
        spec.get("rollout") or {},
        hooks,
        doc,
    )


def certificate_from(doc: Document) -> Certificate:
    spec = doc.body["spec"]
    return Certificate(
        doc.name or "",
        spec["issuer"],
        tuple(spec["domains"]),
        spec.get("challenge", "http-01"),
        seconds(spec.get("renewBefore"), 30 * 86400),
        doc,
    )


def secret_from(doc: Document) -> Secret:
    return Secret(doc.name or "", dict(doc.body["spec"]["data"]), doc)
