"""The planner: each node's rendered resources and its previous plan in, the node's next plan out.

A plan changes only when the node's work changes (its resources, `allowedPaths`, `heartbeat` or the
node's `address`, which probes knock on):
then `serial` rises by one and `source.commit` becomes the desired commit being reconciled.
Otherwise the previous plan is kept as it is, except that `expires` is renewed once less than half
of `planExpiry` is left. Nothing here signs, reads Git or looks at the clock: `now` is an argument.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from contract.defaults import API_VERSION, PLAN_KIND
from contract.documents import resources_digest
from contract.errors import ContractError, PlumbError
from contract.vocabulary import ResourceKind
from reconciler.core.compile.desired import RenderedResource

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
Sealer = Callable[..., str]  # (plaintext: bytes, *, context: str) -> sealed text; equal sealers seal alike


class SecretValues(Protocol):
    """Opens the secret placeholders of rendered content (reconciler.drivers.keys.SecretValues)."""

    def fill(self, content: bytes) -> bytes: ...

    def stamp(self, content: bytes) -> bytes: ...


JsonObject = dict[str, Any]


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z suffix, to the second."""
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 UTC time written by `format_time` (fractions of a second allowed)."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError as exc:
        raise ContractError(f"{text!r} is not an RFC 3339 time") from exc


@dataclass(frozen=True)
class PlanSettings:
    """What every plan carries from the Repository document (times in seconds)."""

    allowed_paths: tuple[str, ...]
    heartbeat: int
    plan_expiry: int


@dataclass(frozen=True)
class NodePlan:
    """One node's plan, unsigned: resources in apply order with their digests."""

    node: str
    serial: int
    commit: str
    expires: str
    allowed_paths: tuple[str, ...]
    heartbeat: int
    resources: tuple[Mapping[str, Any], ...]
    digest: str
    address: str | None = None  # the node's `spec.address`: where its endpoints are published

    def document(self) -> JsonObject:
        """The plan as `schemas/plan.schema.json` has it, without a signature."""
        document: JsonObject = {
            "apiVersion": API_VERSION,
            "kind": PLAN_KIND,
            "node": self.node,
            "serial": self.serial,
            "source": {"commit": self.commit},
            "expires": self.expires,
            "allowedPaths": list(self.allowed_paths),
            "heartbeat": self.heartbeat,
            "resources": [dict(entry) for entry in self.resources],
            "digest": self.digest,
        }
        return document | ({"address": self.address} if self.address is not None else {})

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> NodePlan:
        """Read a plan back from the state branch; ContractError if it is malformed."""
        try:
            return cls(
                node=str(document["node"]),
                serial=int(document["serial"]),
                commit=str(document["source"]["commit"]),
                expires=str(document["expires"]),
                allowed_paths=tuple(document["allowedPaths"]),
                heartbeat=int(document["heartbeat"]),
                resources=tuple(document["resources"]),
                digest=str(document["digest"]),
                address=str(document["address"]) if "address" in document else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ContractError(f"plan is malformed: {exc!r}") from exc

    def same_work(self, other: NodePlan) -> bool:
        """True when both plans ask the node for the same thing."""
        return (self.digest, self.allowed_paths, self.heartbeat, self.address) == (
            other.digest,
            other.allowed_paths,
            other.heartbeat,
            other.address,
        )


_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def encode_entry(
    resource: RenderedResource, *, spec: Mapping[str, Any] | None = None
) -> tuple[JsonObject, str]:
    """A resource's plan entry with its digest, and the entry's canonical JSON, encoding the spec once.

    The result is byte for byte `contract.documents.canonical_json(entry)`, and the digest is
    `contract.documents.resource_digest(kind, spec)`; both are spliced from one encoding of the spec.
    `spec` replaces the rendered spec (a sealed file's).
    """
    entry: JsonObject = resource.plan_entry()
    if spec is not None:
        entry["spec"] = dict(spec)
    spec_json = _CANONICAL(entry["spec"])
    kind_json = _CANONICAL(entry["kind"])
    hashed = hashlib.sha256(('{"kind":' + kind_json + ',"spec":' + spec_json + "}").encode())
    entry["digest"] = "sha256:" + hashed.hexdigest()
    members = [
        _CANONICAL(k) + ":" + (spec_json if k == "spec" else _CANONICAL(entry[k])) for k in sorted(entry)
    ]
    return entry, "{" + ",".join(members) + "}"


def plan_entry(resource: RenderedResource) -> JsonObject:
    """A resource as it appears in a plan: its plan entry plus the digest of its kind and spec."""
    return encode_entry(resource)[0]


def needs_sealing(resource: RenderedResource) -> bool:
    return resource.uses_secret


def sealed_spec(
    resource: RenderedResource, *, node: str, sealer: Sealer, secrets: SecretValues | None = None
) -> JsonObject:
    """A secret-bearing file's spec with its content sealed to the node and bound to the resource id.

    Rendering leaves `<sealed:NAME/FIELD>` placeholders; `secrets` opens them here, just before
    sealing to the node. `contentDigest` covers the rendered text and the sealed texts of the
    secrets it uses — it changes when either does, and cannot be used to guess a value.
    """
    rendered = str(resource.spec["content"]).encode()
    plaintext = secrets.fill(rendered) if secrets is not None else rendered
    spec = {k: v for k, v in resource.spec.items() if k != "content"}
    spec["sealed"] = sealer(plaintext, context=f"{node}|{resource.id}")
    stamp = secrets.stamp(rendered) if secrets is not None else b""
    spec["contentDigest"] = "sha256:" + hashlib.sha256(rendered + b"\0" + stamp).hexdigest()
    return spec


@dataclass
class PlanCache:
    """Plan entries of rendered resources, kept by identity so unchanged resources are not encoded again."""

    entries: dict[int, tuple[RenderedResource, JsonObject, str]] = field(default_factory=dict)
    texts: dict[int, str] = field(default_factory=dict)
    sealed: dict[tuple[int, str], tuple[RenderedResource, object, JsonObject]] = field(default_factory=dict)
    digests: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)
    nodes: dict[str, tuple[Sequence[RenderedResource], object, list[JsonObject], tuple[str, ...]]] = field(
        default_factory=dict
    )

    def sealed_entry(
        self,
        resource: RenderedResource,
        *,
        node: str,
        sealer: Sealer | None,
        secrets: SecretValues | None = None,
    ) -> JsonObject | None:
        """The entry of a secret-bearing resource for one node, or None when it cannot be sealed."""
        if sealer is None or resource.kind != ResourceKind.FILE or "content" not in resource.spec:
            return None
        hit = self.sealed.get((id(resource), node))
        if hit is not None and hit[0] is resource and hit[1] == (sealer, secrets):
            return hit[2]
        try:
            spec = sealed_spec(resource, node=node, sealer=sealer, secrets=secrets)
        except PlumbError:
            return None  # a secret that cannot be opened: withheld, as when there is no sealing key
        entry, text = encode_entry(resource, spec=spec)
        self.sealed[(id(resource), node)] = (resource, (sealer, secrets), entry)
        self.texts[id(entry)] = text
        return entry

    def entry(self, resource: RenderedResource) -> JsonObject:
        hit = self.entries.get(id(resource))
        if hit is not None and hit[0] is resource:
            return hit[1]
        entry, text = encode_entry(resource)
        self.entries[id(resource)] = (resource, entry, text)
        self.texts[id(entry)] = text
        return entry

    def text(self, entry: Mapping[str, Any]) -> str:
        """The canonical JSON of an entry, from the cache when this process encoded it."""
        cached = self.texts.get(id(entry))
        return cached if cached is not None else _CANONICAL(entry)

    def digest(self, node: str, entries: Sequence[JsonObject]) -> str:
        """The digest over a node's entries, recomputed only when one of them is a new object."""
        key = tuple(id(entry) for entry in entries)
        hit = self.digests.get(node)
        if hit is not None and hit[0] == key:
            return hit[1]
        joined = "[" + ",".join(self.text(e) for e in entries) + "]"
        digest = "sha256:" + hashlib.sha256(joined.encode()).hexdigest()
        self.digests[node] = (key, digest)
        return digest

    def node_entries(
        self,
        node: str,
        resources: Sequence[RenderedResource],
        sealer: Sealer | None,
        secrets: SecretValues | None,
    ) -> tuple[list[JsonObject], tuple[str, ...]]:
        """A node's entries, reused whole when it gets the very same resources (compile keeps the
        tuple of a node whose layout did not change) with the same sealing."""
        hit = self.nodes.get(node)
        if hit is not None and hit[0] is resources and hit[1] == (sealer, secrets):
            return hit[2], hit[3]
        entries, held = _node_entries(node, resources, self, sealer, secrets)
        self.nodes[node] = (resources, (sealer, secrets), entries, held)
        return entries, held

    def keep_only(self, live: Sequence[Sequence[RenderedResource]]) -> None:
        """Forget resources no node uses any more."""
        kept = {id(resources) for resources in live}
        self.nodes = {n: hit for n, hit in self.nodes.items() if id(hit[0]) in kept}
        alive = {id(r) for resources in live for r in resources}
        for key in [k for k in self.entries if k not in alive]:
            del self.texts[id(self.entries[key][1])]
            del self.entries[key]
        for sealed_key in [k for k in self.sealed if k[0] not in alive]:
            del self.texts[id(self.sealed[sealed_key][2])]
            del self.sealed[sealed_key]
        # digests are keyed by entry identity, which is only stable while the entries are kept
        for node in [n for n, (key, _) in self.digests.items() if not self.texts.keys() >= set(key)]:
            del self.digests[node]


def plan_payload(plan: NodePlan, cache: PlanCache) -> tuple[bytes, list[str]]:
    """What the signature covers (`contract.documents.signed_payload` of the plan), and each entry's JSON."""
    texts = [cache.text(entry) for entry in plan.resources]
    head = plan.document()
    head["resources"] = []
    marker = '"resources":[]'
    encoded = _CANONICAL(head)
    if encoded.count(marker) != 1:
        raise ContractError("plan header cannot be encoded unambiguously")
    return encoded.replace(marker, '"resources":[' + ",".join(texts) + "]").encode(), texts


@dataclass(frozen=True)
class FleetPlan:
    """The outcome of planning every node: plans, and which of them differ from the previous ones."""

    plans: Mapping[str, NodePlan]
    changed: frozenset[str]
    removed: frozenset[str]
    withheld: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def plan_node(
    *,
    node: str,
    entries: Sequence[Mapping[str, Any]],
    previous: NodePlan | None,
    settings: PlanSettings,
    commit: str,
    now: datetime,
    digest: str | None = None,
    address: str | None = None,
    floor: int = 0,
) -> NodePlan:
    """The node's next plan: the previous one if its work is unchanged (renewed if near expiry).

    `floor` is the highest serial ever signed for the node: a new plan's serial is above it, and a
    previous plan below it (an older plan put back on the branch) is replaced, never reused."""
    candidate = NodePlan(
        node=node,
        serial=max(previous.serial if previous else 0, floor) + 1,
        commit=commit,
        expires=format_time(now + timedelta(seconds=settings.plan_expiry)),
        allowed_paths=settings.allowed_paths,
        heartbeat=settings.heartbeat,
        resources=tuple(entries),
        digest=digest if digest is not None else resources_digest(entries),
        address=address,
    )
    if previous is None or previous.serial < floor or not previous.same_work(candidate):
        return candidate
    if needs_renewal(previous, now=now, plan_expiry=settings.plan_expiry):
        return _replace_expires(previous, candidate.expires)
    return previous


def needs_renewal(plan: NodePlan, *, now: datetime, plan_expiry: int) -> bool:
    """True once less than half of `planExpiry` is left, or more than all of it (the setting shrank)."""
    try:
        left = parse_time(plan.expires) - now
    except ContractError:
        return True
    return not timedelta(seconds=plan_expiry / 2) <= left <= timedelta(seconds=plan_expiry)


def _replace_expires(plan: NodePlan, expires: str) -> NodePlan:
    return NodePlan(
        node=plan.node,
        serial=plan.serial,
        commit=plan.commit,
        expires=expires,
        allowed_paths=plan.allowed_paths,
        heartbeat=plan.heartbeat,
        resources=plan.resources,
        digest=plan.digest,
        address=plan.address,
    )


def plan_fleet(
    *,
    nodes: Mapping[str, Sequence[RenderedResource]],
    previous: Mapping[str, NodePlan],
    settings: PlanSettings,
    commit: str,
    now: datetime,
    cache: PlanCache | None = None,
    sealers: Mapping[str, Sealer] | None = None,
    secrets: SecretValues | None = None,
    addresses: Mapping[str, str] | None = None,
    floors: Mapping[str, int] | None = None,
) -> FleetPlan:
    """Plan every node of the desired state; nodes that left it are `removed`.

    `addresses` gives each node's `spec.address`, which its plan carries for probes without a host;
    `floors` the highest serial the reconciler ever signed for each node (see `plan_node`).

    Secret-bearing resources are sealed with the node's sealer; one that cannot be sealed (no
    sealing key, or a kind without a sealed form) is withheld from the plan, never sent in clear.
    """
    cache = cache if cache is not None else PlanCache()
    sealers = sealers or {}
    plans: dict[str, NodePlan] = {}
    withheld: dict[str, tuple[str, ...]] = {}
    for node in sorted(nodes):
        entries, held = cache.node_entries(node, nodes[node], sealers.get(node), secrets)
        if held:
            withheld[node] = held
        plans[node] = plan_node(
            node=node,
            entries=entries,
            previous=previous.get(node),
            settings=settings,
            commit=commit,
            now=now,
            digest=cache.digest(node, entries),
            address=(addresses or {}).get(node),
            floor=(floors or {}).get(node, 0),
        )
    cache.keep_only(list(nodes.values()))
    changed = frozenset(n for n, plan in plans.items() if previous.get(n) is not plan)
    removed = frozenset(previous) - frozenset(plans)
    return FleetPlan(plans=plans, changed=changed, removed=removed, withheld=withheld)


def _node_entries(
    node: str,
    resources: Sequence[RenderedResource],
    cache: PlanCache,
    sealer: Sealer | None,
    secrets: SecretValues | None,
) -> tuple[list[JsonObject], tuple[str, ...]]:
    entries: list[JsonObject] = []
    held: list[str] = []
    for resource in resources:
        if not needs_sealing(resource):
            entries.append(cache.entry(resource))
            continue
        entry = cache.sealed_entry(resource, node=node, sealer=sealer, secrets=secrets)
        if entry is None:
            held.append(resource.id)
        else:
            entries.append(entry)
    return entries, tuple(held)
