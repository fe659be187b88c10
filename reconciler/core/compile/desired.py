"""The one entry point of the pure core: source files in, validated model and per-node resources out.

`compile_desired(files, endpoints=..., cache=...)` parses every file (cached by blob id), builds
the model, validates it, and renders each node's resources in apply order. The planner, `plumb
validate`, `plumb render` and `plumb plan` all go through it, so they always agree.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

from contract.vocabulary import ResourceKind
from reconciler.core.compile.compose import (
    Group,
    GroupRender,
    Piece,
    Variant,
    certificate_paths,
    group_reads_node,
    path_problem,
    render_group,
)
from reconciler.core.compile.load import Document, ParsedFile, parse_file
from reconciler.core.compile.model import Model, Node
from reconciler.core.compile.render import Lookups, healthy_endpoints
from reconciler.core.compile.schemas import document_findings, dotted
from reconciler.core.compile.validate import BuildMemo, build_model, unenrolled
from reconciler.core.compile.values import Endpoint, RenderedResource, SourceFile
from reconciler.core.findings import Finding, has_errors

__all__ = ["CompileCache", "Desired", "Endpoint", "RenderedResource", "SourceFile", "compile_desired"]


@dataclass(frozen=True)
class Desired:
    """The outcome of compiling one desired state."""

    findings: tuple[Finding, ...]
    model: Model | None = None
    nodes: Mapping[str, tuple[RenderedResource, ...]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.model is not None and not has_errors(self.findings)


# Findings after which a file's documents are unknown, so no name may be called undefined.
UNREADABLE = frozenset(
    {
        "yaml",
        "encoding",
        "too-large",
        "too-deep",
        "too-many-values",
        "recursive-alias",
        "duplicate-key",
        "not-a-mapping",
        "unknown-kind",
    }
)


class _ServiceKey(NamedTuple):
    """Everything one service's renders read besides endpoints, compared by value."""

    group: tuple[Any, ...]  # the render key of the service's own group
    groups: tuple[tuple[Group, Sequence[str]], ...]  # each group and the nodes it is placed on
    pins: tuple[tuple[str, str], ...]
    waiting: tuple[str, ...]
    node_origins: tuple[str, ...]
    release_origins: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _ServiceRenders:
    """One service's renders, by service name: made from `key`, they land as `landed`; those in
    `with_endpoints` read endpoints and are reused only while those endpoints are unchanged."""

    key: _ServiceKey
    landed: list[Landing]
    with_endpoints: tuple[GroupRender, ...]


class _LayoutKey(NamedTuple):
    """What a node's layout depends on: the renders landing on it, in order, and the repository's rules."""

    renders: tuple[int, ...]  # GroupRender serials
    rules: tuple[Any, ...]  # allowedPaths and trusted


@dataclass(frozen=True, slots=True)
class _NodeLayout:
    """One node's resources in apply order, by node name, and the findings laying them out gave."""

    key: _LayoutKey
    resources: tuple[RenderedResource, ...]
    findings: tuple[Finding, ...]


class CompileCache:
    """What one compile can hand the next: parsed files by blob id, schema findings by document,
    and group renders by the identity of everything they read."""

    def __init__(self) -> None:
        self.parsed: dict[str, ParsedFile] = {}
        self.schema: dict[str, list[Finding]] = {}
        self.renders: dict[tuple[Any, ...], GroupRender] = {}
        self.build = BuildMemo()  # model objects and service checks, see validate.build_model
        self.layouts: dict[str, _NodeLayout] = {}  # by node name
        self.services: dict[str, _ServiceRenders] = {}  # by service name
        self.hits = 0
        self.misses = 0

    def parse(self, source: SourceFile) -> ParsedFile:
        blob = source.blob_id or git_blob_id(source.data)
        key = f"{source.path}\0{blob}"
        parsed = self.parsed.get(key)
        if parsed is None:
            parsed = self.parsed[key] = parse_file(source.path, source.data, blob_id=blob)
        return parsed

    def schema_findings(self, doc: Document) -> list[Finding]:
        found = self.schema.get(doc.origin)
        if found is None:
            found = self.schema[doc.origin] = document_findings(doc)
        return found

    def still_valid(self, render: GroupRender, lookups: Lookups) -> bool:
        """Whether every endpoint list `render` read is still what it was."""
        return all(
            healthy_endpoints(lookups.endpoints.get(service, ()), port) == seen
            for (service, port), seen in render.calls.endpoints.items()
        )

    def render(self, key: tuple[Any, ...], lookups: Lookups, make: Callable[[], GroupRender]) -> GroupRender:
        """A cached render, reused only while every endpoint list it read is unchanged."""
        cached = self.renders.get(key)
        if cached is not None and self.still_valid(cached, lookups):
            self.hits += 1
            return cached
        self.misses += 1
        fresh = self.renders[key] = make()
        return fresh

    def prune(self, live: set[str]) -> None:
        """Forget files no longer in the repository, so a long-running reconciler stays small."""
        self.parsed = {k: v for k, v in self.parsed.items() if k in live}
        origins = {doc.origin for parsed in self.parsed.values() for doc in parsed.documents}
        self.build.objects = {k: v for k, v in self.build.objects.items() if k in origins}


def git_blob_id(data: bytes) -> str:
    """The id Git gives a blob with these bytes, so working trees and commits share cache entries."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def is_plumb_file(path: str) -> bool:
    """`.yaml`/`.yml` files outside dot-directories are Plumb documents."""
    parts = path.split("/")
    return path.endswith((".yaml", ".yml")) and not any(p.startswith(".") for p in parts[:-1])


def compile_desired(
    files: Sequence[SourceFile],
    *,
    endpoints: Mapping[str, Sequence[Endpoint]] | None = None,
    cache: CompileCache | None = None,
    pins: Mapping[str, Mapping[str, str]] | None = None,
    waiting: Mapping[str, Sequence[str]] | None = None,
) -> Desired:
    """Parse, validate and render a desired state; never raises on bad input.

    `endpoints` are the instances nodes reported, by service (for `endpoints()` in templates).
    `pins` holds a rollout's per-node versions, `{service: {node: version}}`: a listed node
    renders with that Release instead of the resolved one. `waiting` lists, per service, the
    dependencies with no healthy endpoint anywhere; its plan entry says so and the agent waits.
    """
    cache = cache or CompileCache()
    files = _selected(files, cache)
    live = {f"{f.path}\0{f.blob_id or git_blob_id(f.data)}" for f in files}
    findings: list[Finding] = []
    valid: list[Document] = []
    invalid: dict[str, set[str]] = {}
    for source in files:
        parsed = cache.parse(source)
        findings.extend(parsed.findings)
        for doc in parsed.documents:
            found = cache.schema_findings(doc)
            findings.extend(found)
            if not found:
                valid.append(doc)
            elif doc.kind and doc.name:
                invalid.setdefault(doc.kind, set()).add(doc.name)
    unreadable = any(f.code in UNREADABLE for f in findings)
    model, semantic = build_model(valid, invalid, unreadable=unreadable, memo=cache.build)
    findings.extend(semantic)
    lookups = Lookups(endpoints or {}, {s.name: s.data for s in model.secrets.values()}, _certificates(model))
    nodes, rendered = _Assembly(model, lookups, cache, pins or {}, waiting or {}).run()
    findings.extend(rendered)
    findings.extend(unenrolled(model, (name for name, resources in nodes.items() if resources)))
    cache.prune(live)
    return Desired(tuple(sorted(set(findings))), model, nodes)


def _selected(files: Sequence[SourceFile], cache: CompileCache) -> list[SourceFile]:
    """Plumb files, less those plumb.yaml's `spec.ignore` lists."""
    ignore: list[str] = []
    for source in files:
        if source.path in ("plumb.yaml", "plumb.yml"):
            for doc in cache.parse(source).documents:
                patterns = (doc.body.get("spec") or {}).get("ignore") if doc.kind == "Repository" else None
                if isinstance(patterns, list):
                    ignore.extend(str(p) for p in patterns)
    return sorted(
        (
            f
            for f in files
            if is_plumb_file(f.path) and not any(fnmatch.fnmatchcase(f.path, p) for p in ignore)
        ),
        key=lambda f: f.path,
    )


def _certificates(model: Model) -> dict[str, dict[str, str]]:
    return {name: certificate_paths(name) | {"fullchain": ""} for name in model.certificates}


Landing = tuple[str, GroupRender, bool]  # (node, render, whether it is the service's own group)


class _Assembly:
    """Render every group of every service and lay the pieces out per node, in apply order."""

    def __init__(
        self,
        model: Model,
        lookups: Lookups,
        cache: CompileCache,
        pins: Mapping[str, Mapping[str, str]],
        waiting: Mapping[str, Sequence[str]],
    ) -> None:
        self.model, self.lookups, self.cache, self.pins, self.waiting = model, lookups, cache, pins, waiting
        self.releases = {(r.service, r.version): r for r in model.releases.values()}
        self.origins = {name: node.doc.origin for name, node in model.nodes.items()}
        by_service: dict[str, list[str]] = {}
        for release in model.releases.values():
            by_service.setdefault(release.service, []).append(release.doc.origin)
        self.release_origins = {service: tuple(origins) for service, origins in by_service.items()}
        self.landed: dict[str, list[tuple[GroupRender, bool]]] = {name: [] for name in model.nodes}
        self.findings: list[Finding] = []
        self.service_order = {service: index for index, service in enumerate(model.order)}
        self.renders_on: dict[str, list[int]] = {name: [] for name in model.nodes}
        self.path_problems: dict[int, tuple[str, str] | None] = {}  # by id() of pieces alive meanwhile
        self.shared_key = (
            tuple(sorted(model.certificates)),
            tuple(sorted((s.name, s.doc.origin) for s in model.secrets.values())),
        )
        self.layout_key = (model.repository.allowed_paths, model.repository.trusted)

    def run(self) -> tuple[dict[str, tuple[RenderedResource, ...]], list[Finding]]:
        for name in self.model.order:
            for node_name, done, own in self._service(name):
                self._land(node_name, done, own)
        laid_out = {name: self._layout(name) for name in sorted(self.model.nodes)}
        return laid_out, self.findings

    def _service(self, name: str) -> list[Landing]:
        """Every render of one service with the node it lands on, reused whole while nothing it
        read changed: the service's documents, its nodes, its pins, its waiting list, endpoints."""
        service = self.model.services[name]
        groups = [(Group(name, None), self.model.placement.get(name, ()))]
        for use in service.traits:
            trait = self.model.traits[use.type]
            if trait.placement is not None:
                groups.append(
                    (
                        Group(name, use.index),
                        self.model.node_index.place(f"{name}/{use.type}", trait.placement),
                    )
                )
        nodes = {node for _, placed in groups for node in placed}
        key = _ServiceKey(
            group=self._key(Group(name, None), None, Variant(None)),
            groups=tuple(groups),
            pins=tuple(sorted(self.pins.get(name, {}).items())),
            waiting=tuple(self.waiting.get(name, ())),
            node_origins=tuple(self.origins[node] for node in sorted(nodes)),
            release_origins=self.release_origins.get(name, ()),
        )
        cached = self.cache.services.get(name)
        if (
            cached is not None
            and cached.key == key
            and all(self.cache.still_valid(done, self.lookups) for done in cached.with_endpoints)
        ):
            return cached.landed
        landed = [landing for group, placed in groups for landing in self._group(group, placed)]
        distinct = tuple({id(d): d for _, d, _ in landed if d.calls.endpoints}.values())
        self.cache.services[name] = _ServiceRenders(key, landed, distinct)
        return landed

    def _land(self, node_name: str, done: GroupRender, own: bool) -> None:
        if done.findings:
            self.findings.extend(done.findings)
        self.renders_on[node_name].append(done.serial)
        self.landed[node_name].append((done, own))

    def _layout(self, name: str) -> tuple[RenderedResource, ...]:
        """One node's resources, reused from the last compile when the same renders land on it."""
        key = _LayoutKey(tuple(self.renders_on[name]), self.layout_key)
        cached = self.cache.layouts.get(name)
        if cached is not None and cached.key == key:
            self.findings.extend(cached.findings)
            return cached.resources
        before = len(self.findings)
        resources = self._node(name)
        self.cache.layouts[name] = _NodeLayout(key, resources, tuple(self.findings[before:]))
        return resources

    def _group(self, group: Group, nodes: Sequence[str]) -> list[Landing]:
        if not nodes:
            return []
        per_node = group_reads_node(self.model, group)
        landed: list[Landing] = []
        for node_name in nodes:
            node = self.model.nodes[node_name] if per_node else None
            variant = self._variant(group, node_name)
            key = self._key(group, node, variant)
            done = self.cache.render(
                key, self.lookups, partial(render_group, self.model, group, node, self.lookups, variant)
            )
            landed.append((node_name, done, group.trait_index is None))
        return landed

    def _variant(self, group: Group, node: str) -> Variant:
        service = group.service
        pinned = self.pins.get(service, {}).get(node)
        release = self.releases.get((service, pinned)) if pinned else None
        release = release or self.model.versions.get(service)
        waiting = tuple(self.waiting.get(service, ())) if group.trait_index is None else ()
        return Variant(release, waiting)

    def _key(self, group: Group, node: Node | None, variant: Variant) -> tuple[Any, ...]:
        service = self.model.services[group.service]
        template = self.model.templates[service.template]
        traits = tuple(self.model.traits[u.type].doc.origin for u in service.traits)
        release = variant.release
        return (
            group,
            service.doc.origin,
            template.doc.origin,
            traits,
            release.doc.origin if release else None,
            variant.waiting_for,
            node.doc.origin if node else None,
            self.shared_key,
        )

    def _node(self, name: str) -> tuple[RenderedResource, ...]:
        order = self.service_order
        landed = [piece for done, _ in self.landed[name] for piece in done.pieces]
        pieces = sorted(landed, key=lambda p: (order[p.service], p.rank))
        pieces = self._without_conflicts(name, pieces)
        self._check_ports(name)
        present = {p.id for p in pieces if p.kind == ResourceKind.SERVICE}
        ids_by_service: dict[str, list[Piece]] = {}
        resources = []
        for piece in pieces:
            earlier = ids_by_service.setdefault(piece.service, [])
            after = [p.id for p in earlier if p.rank < piece.rank]
            if piece.kind in (ResourceKind.UNIT, ResourceKind.SERVICE):
                deps = self.model.services[piece.service].depends_on
                after += [f"service:{dep}" for dep in deps if f"service:{dep}" in present]
            earlier.append(piece)
            resources.append(
                RenderedResource(
                    piece.id,
                    piece.kind,
                    piece.service,
                    piece.spec,
                    tuple(after),
                    piece.source,
                    piece.uses_secret,
                )
            )
        return tuple(resources)

    def _without_conflicts(self, node: str, pieces: list[Piece]) -> list[Piece]:
        """Drop and report a second resource that writes the same id or path on one node."""
        allowed = self.model.repository.allowed_paths
        seen: dict[str, Piece] = {}
        kept: list[Piece] = []
        for piece in pieces:
            clash = next((seen[k] for k in (piece.id, *piece.paths) if k in seen), None)
            if clash is not None:
                message = (
                    f"{piece.id} on node {node} is also written by service {clash.service!r} ({clash.source})"
                )
                self._finding(piece, message, "resource-conflict")
                continue
            problem = self._path_problem(piece, allowed)
            if problem is not None:
                self._finding(piece, problem[1], problem[0])
                continue
            seen.update(dict.fromkeys((piece.id, *piece.paths), piece))
            kept.append(piece)
        return kept

    def _path_problem(self, piece: Piece, allowed: tuple[str, ...]) -> tuple[str, str] | None:
        """The first path of `piece` that escapes, checked once per piece whatever its node count."""
        key = id(piece)
        if key not in self.path_problems:
            problem = next((p for p in (path_problem(x, allowed) for x in piece.paths) if p), None)
            if problem is not None and problem[0] == "path-not-allowed" and not self.model.repository.trusted:
                problem = None  # plumb.yaml is invalid: its allowedPaths are unknown, not the defaults
            self.path_problems[key] = problem
        return self.path_problems[key]

    def _ports(self, node: str) -> list[tuple[Mapping[str, Any], Piece]]:
        """The ports each service's own group binds on `node`, with the service's entry."""
        bound: list[tuple[Mapping[str, Any], Piece]] = []
        for done, own in self.landed[node]:
            entry = next((p for p in done.pieces if p.kind == ResourceKind.SERVICE), None) if own else None
            if entry is not None:
                bound.extend((port, entry) for port in done.ports)
        return bound

    def _check_ports(self, node: str) -> None:
        bound: dict[tuple[int, str], Piece] = {}
        for port, piece in self._ports(node):
            key = (int(port["port"]), "udp" if port.get("protocol") == "udp" else "tcp")
            first = bound.setdefault(key, piece)
            if first.service != piece.service:
                message = f"port {key[0]} on node {node} is also bound by service {first.service!r}"
                doc = self.model.services[piece.service].doc
                line, column = doc.where(("spec", "params"))
                self.findings.append(Finding(doc.path, line, column, "spec.params", message, "port-conflict"))

    def _finding(self, piece: Piece, message: str, code: str) -> None:
        line, column = piece.doc.where(piece.at)
        self.findings.append(Finding(piece.doc.path, line, column, dotted(piece.at), message, code))
