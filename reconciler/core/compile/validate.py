"""Semantic validation: build the model from schema-valid documents and check every reference.

Schema findings come first (`reconciler.core.compile.schemas`); this module adds what a schema cannot see:
duplicate names, unknown templates / traits / services / nodes / issuers, parameters against a
template's or trait's own schema, dependency cycles, traits that do not apply or conflict,
selectors that match nothing, and version ranges no Release satisfies. Findings about rendered
output (paths, conflicts, ports) come from `reconciler.core.compile.desired`.
"""

from __future__ import annotations

import difflib
import zoneinfo
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from reconciler.core.compile import graph, placement
from reconciler.core.compile.load import Document, PathKey
from reconciler.core.compile.model import (
    Certificate,
    Model,
    Node,
    Placement,
    Release,
    Repository,
    Service,
    Template,
    Trait,
    certificate_from,
    node_from,
    release_from,
    repository_from,
    secret_from,
    service_from,
    template_from,
    trait_from,
)
from reconciler.core.compile.schemas import dotted, instance_findings, parameter_schema_findings
from reconciler.core.compile.versions import Range, RangeError, Version, is_exact
from reconciler.core.findings import Finding, Severity

_BUILDERS: dict[str, Callable[[Document], Any]] = {
    "Node": node_from,
    "Template": template_from,
    "Trait": trait_from,
    "Service": service_from,
    "Release": release_from,
    "Certificate": certificate_from,
    "Secret": secret_from,
}


@dataclass
class _Checks:
    """Findings collected while the model is built and checked."""

    findings: list[Finding] = field(default_factory=list)

    def add(
        self,
        doc: Document,
        path: PathKey,
        message: str,
        code: str,
        *,
        warning: bool = False,
        key: bool = False,
    ) -> None:
        line, column = doc.where(path, key=key)
        severity = Severity.WARNING if warning else Severity.ERROR
        self.findings.append(Finding(doc.path, line, column, dotted(path), message, code, severity))


def unenrolled(model: Model, serving: Iterable[str]) -> list[Finding]:
    """An error for each node that gets resources but has no enrolled signing key: no report of it
    could be believed, so nothing it runs would ever be seen, discovered or rolled out."""
    checks = _Checks()
    for name in sorted(serving):
        node = model.nodes.get(name)
        if node is not None and not node.signing_key:
            message = (
                f"{name} runs services but has no enrolled keys, so none of its reports can be believed; "
                f"run `plumb-agent enroll --node {name}` on it and add the printed keys block here"
            )
            checks.add(node.doc, ("spec",), message, "unenrolled-node", key=True)
    return checks.findings


def build_model(
    valid: Sequence[Document],
    invalid_names: Mapping[str, set[str]],
    *,
    unreadable: bool = False,
    memo: BuildMemo | None = None,
) -> tuple[Model, list[Finding]]:
    """Build the model from schema-valid documents and run every reference check on it.

    `invalid_names` holds, per kind, names of documents that failed the schema: references to
    them are not reported again (the schema finding already says what is wrong). With
    `unreadable`, some file could not be parsed at all, so no name can be called unknown.
    Services whose own findings make their rendering meaningless (bad parameters, conflicting
    traits) are left out of the model's rendering, so one mistake gives one finding.

    `memo` (kept by the caller between calls) remembers model objects by document origin and each
    service's checks by the identity of everything they read, so an unchanged service is neither
    built nor checked again.
    """
    checks = _Checks()
    repository, by_kind = _collect(valid, checks, memo.objects if memo else {})
    model = Model(
        repository=repository,
        nodes=by_kind["Node"],
        templates=by_kind["Template"],
        traits=by_kind["Trait"],
        services=by_kind["Service"],
        releases=by_kind["Release"],
        certificates=by_kind["Certificate"],
        secrets=by_kind["Secret"],
    )
    model = replace(model, node_index=placement.NodeIndex(model.nodes))
    if invalid_names.get("Repository") or unreadable:
        model = replace(model, repository=replace(model.repository, trusted=False))
    references = _References(model, checks, invalid_names, unreadable, memo.checks if memo else None)
    references.run()
    services = {
        name: s for name, s in model.services.items() if _usable(model, s) and name not in references.broken
    }
    depends = {name: [d for d in s.depends_on if d in services] for name, s in services.items()}
    releases: dict[str, list[Release]] = {}
    for release in model.releases.values():
        releases.setdefault(release.service, []).append(release)
    model = replace(
        model,
        services=services,
        placement={name: model.node_index.place(name, s.placement) for name, s in services.items()},
        order=graph.order(depends),
        versions={name: resolve_version(s, releases.get(name, ())) for name, s in services.items()},
    )
    return model, checks.findings


def _usable(model: Model, service: Service) -> bool:
    """A service can be rendered only when its template and traits exist."""
    return service.template in model.templates and all(use.type in model.traits for use in service.traits)


@dataclass
class BuildMemo:
    """What build_model keeps between calls: model objects by document origin, service checks."""

    objects: dict[str, Any] = field(default_factory=dict)
    checks: dict[Any, Any] = field(default_factory=dict)


def _built(kind: str, doc: Document, objects: dict[str, Any]) -> Any:
    """The model object of a document; the same origin (blob and index) gives the same object."""
    found = objects.get(doc.origin)
    if found is None or found.doc.path != doc.path:
        found = objects[doc.origin] = _BUILDERS[kind](doc)
    return found


def _collect(
    valid: Sequence[Document], checks: _Checks, objects: dict[str, Any]
) -> tuple[Repository, dict[str, dict[str, Any]]]:
    repository: Repository | None = None
    by_kind: dict[str, dict[str, Any]] = {kind: {} for kind in _BUILDERS}
    for doc in valid:
        kind = doc.kind or ""
        if kind == "Repository":
            if repository is not None and repository.doc is not None:
                first = repository.doc
                message = f"a second Repository document; the first is at {first.path}:{first.start[0]}"
                checks.add(doc, ("kind",), message, "duplicate-repository")
                continue
            repository = repository_from(doc)
            continue
        name = doc.name or ""
        existing = by_kind[kind].get(name)
        if existing is not None:
            where = f"{existing.doc.path}:{existing.doc.where(('metadata', 'name'))[0]}"
            checks.add(
                doc, ("metadata", "name"), f"{kind} {name!r} is already defined at {where}", "duplicate-name"
            )
            continue
        by_kind[kind][name] = _built(kind, doc, objects)
    return repository or Repository(), by_kind


def resolve_version(service: Service, releases: Iterable[Release]) -> Release | None:
    """The highest Release of the service that its `version` allows (the highest of all without one)."""
    own = {Version.parse(r.version): r for r in releases if r.service == service.name}
    if not own:
        return None
    if service.version is None:
        return own[max(own)]
    try:
        best = Range.parse(service.version).best(own)
    except RangeError:
        return None
    return own[best] if best is not None else None


class _References:
    """Every check that needs more than one document."""

    def __init__(
        self,
        model: Model,
        checks: _Checks,
        invalid: Mapping[str, set[str]],
        unreadable: bool,
        memo: dict[Any, Any] | None,
    ) -> None:
        self.model, self.checks, self.invalid, self.unreadable = model, checks, invalid, unreadable
        self.memo = memo
        self.broken: set[str] = set()  # services not worth rendering: their findings say why
        self.bad_schemas: set[str] = set()  # "Template/x", "Trait/y": their parameters cannot be checked

    def run(self) -> None:
        for template in self.model.templates.values():
            self._parameter_schema(template)
        for trait in self.model.traits.values():
            self._parameter_schema(trait)
            if trait.placement is not None:
                self._placement(
                    trait.doc, ("spec", "placement"), trait.placement.nodes, trait.placement.selector
                )
        world = self._world()
        used: dict[Any, Any] = {}
        for service in self.model.services.values():
            key = (service.doc.origin, world)
            hit = self.memo.get(key) if self.memo is not None else None
            if hit is None:
                before = len(self.checks.findings)
                self._service(service)
                hit = (tuple(self.checks.findings[before:]), service.name in self.broken)
            else:
                self.checks.findings.extend(hit[0])
                if hit[1]:
                    self.broken.add(service.name)
            used[key] = hit
        if self.memo is not None:
            self.memo.clear()
            self.memo.update(used)
        for release in self.model.releases.values():
            self._release(release)
        for certificate in self.model.certificates.values():
            self._certificate(certificate)
        self._cycles()

    def _world(self) -> int:
        """A fingerprint of everything a service's checks read besides the service itself."""
        m = self.model
        return hash(
            (
                tuple(n.doc.origin for n in m.nodes.values()),
                tuple(t.doc.origin for t in m.templates.values()),
                tuple(t.doc.origin for t in m.traits.values()),
                tuple(r.doc.origin for r in m.releases.values()),
                tuple(m.services),
                tuple(sorted((k, tuple(sorted(v))) for k, v in self.invalid.items())),
                self.unreadable,
                tuple(sorted(self.bad_schemas)),
            )
        )

    def _known(self, kind: str, name: str, table: Mapping[str, Any]) -> bool:
        return (
            self.unreadable
            or name in table
            or (bool(self.invalid.get(kind)) and (kind == "Repository" or name in self.invalid[kind]))
        )

    def _parameter_schema(self, item: Template | Trait) -> None:
        findings = parameter_schema_findings(item.doc, ("spec", "parameters"), dict(item.parameters))
        if findings:
            self.bad_schemas.add(f"{item.doc.kind}/{item.name}")
        self.checks.findings.extend(findings)

    def _service(self, service: Service) -> None:
        doc = service.doc
        template = self.model.templates.get(service.template)
        if template is None:
            if not self._known("Template", service.template, self.model.templates):
                message = (
                    f"unknown template {service.template!r}{_hint(service.template, self.model.templates)}"
                )
                self.checks.add(doc, ("spec", "template"), message, "unknown-template")
        else:
            self._params(doc, ("spec", "params"), service.params, template)
        self._traits(service, template)
        for index, dep in enumerate(service.depends_on):
            if not self._known("Service", dep, self.model.services):
                message = f"depends on {dep!r}, which is not defined{_hint(dep, self.model.services)}"
                self.checks.add(doc, ("spec", "dependsOn", index), message, "missing-dependency")
        p = service.placement
        self._placement(doc, ("spec", "placement"), p.nodes, p.selector, p.replicas)
        self._version(service)

    def _params(self, doc: Document, at: PathKey, params: Mapping[str, Any], owner: Template | Trait) -> None:
        if f"{owner.doc.kind}/{owner.name}" in self.bad_schemas:
            self.broken.add(doc.name or "")
            return  # already reported as bad-parameter-schema
        strict = dict(owner.parameters)
        if strict.get("type", "object") == "object":
            strict.setdefault("additionalProperties", False)  # unknown parameters are errors
        label = f"{'template' if isinstance(owner, Template) else 'trait'} {owner.name!r}"
        for finding in instance_findings(doc, at, dict(params), strict, "params"):
            self.broken.add(doc.name or "")
            self.checks.findings.append(
                Finding(
                    finding.path,
                    finding.line,
                    finding.column,
                    finding.field,
                    f"{finding.message} (parameters of {label})",
                    finding.code,
                )
            )

    def _traits(self, service: Service, template: Template | None) -> None:
        doc, used = service.doc, [u.type for u in service.traits]
        for use in service.traits:
            at: PathKey = ("spec", "traits", use.index)
            trait = self.model.traits.get(use.type)
            if trait is None:
                if not self._known("Trait", use.type, self.model.traits):
                    message = f"unknown trait {use.type!r}{_hint(use.type, self.model.traits)}"
                    self.checks.add(doc, (*at, "type"), message, "unknown-trait")
                continue
            if used.count(use.type) > 1 and used.index(use.type) < use.index:
                self.checks.add(doc, (*at, "type"), f"trait {use.type!r} is used twice", "trait-conflict")
                self.broken.add(service.name)
            if template is not None and "*" not in trait.applies_to and template.name not in trait.applies_to:
                allowed = ", ".join(trait.applies_to) or "nothing"
                message = (
                    f"trait {use.type!r} does not apply to template {template.name!r} (appliesTo: {allowed})"
                )
                self.checks.add(doc, (*at, "type"), message, "trait-not-applicable")
                self.broken.add(service.name)
            for other in used:
                other_trait = self.model.traits.get(other)
                clash = other in trait.conflicts_with or (
                    other_trait and use.type in other_trait.conflicts_with
                )
                if other != use.type and clash and used.index(other) < use.index:
                    self.checks.add(
                        doc, (*at, "type"), f"trait {use.type!r} conflicts with {other!r}", "trait-conflict"
                    )
                    self.broken.add(service.name)
            self._params(doc, (*at, "params"), use.params, trait)

    def _placement(
        self,
        doc: Document,
        at: PathKey,
        nodes: tuple[str, ...] | None,
        selector: Mapping[str, str] | None,
        replicas: int | None = None,
    ) -> None:
        all_nodes: Mapping[str, Node] = self.model.nodes
        for index, name in enumerate(nodes or ()):
            if not self._known("Node", name, all_nodes):
                message = f"unknown node {name!r}{_hint(name, all_nodes)}"
                self.checks.add(doc, (*at, "nodes", index), message, "unknown-node")
        pool = self.model.node_index.candidates(Placement(selector, nodes))
        if selector is not None and nodes is None and not pool:
            shown = ", ".join(f"{k}={v}" for k, v in selector.items())
            self.checks.add(
                doc, (*at, "selector"), f"selector {shown} matches no node", "empty-selector", warning=True
            )
        elif replicas is not None and pool and replicas > len(pool):
            message = f"asks for {replicas} replicas but only {len(pool)} node(s) match"
            self.checks.add(doc, (*at, "replicas"), message, "too-few-nodes", warning=True)

    def _version(self, service: Service) -> None:
        if service.version is None:
            return
        doc, at = service.doc, ("spec", "version")
        try:
            wanted = Range.parse(service.version)
        except RangeError as exc:
            self.checks.add(doc, at, f"not a version or range: {exc}", "bad-version")
            return
        own = [r for r in self.model.releases.values() if r.service == service.name]
        if wanted.best(Version.parse(r.version) for r in own) is None:
            have = ", ".join(sorted((r.version for r in own), key=Version.parse)) or "none"
            what = "version" if is_exact(service.version) else "range"
            message = (
                f"no Release of {service.name!r} satisfies {what} {service.version!r} (releases: {have})"
            )
            self.checks.add(doc, at, message, "unsatisfied-version")

    def _release(self, release: Release) -> None:
        if not self._known("Service", release.service, self.model.services):
            message = (
                f"release of unknown service {release.service!r}{_hint(release.service, self.model.services)}"
            )
            self.checks.add(release.doc, ("spec", "service"), message, "unknown-service")
        twins = [
            r
            for r in self.model.releases.values()
            if r.service == release.service and r.version == release.version and r.name < release.name
        ]
        if twins:
            message = (
                f"version {release.version} of {release.service!r} is also released by {twins[0].name!r}"
            )
            self.checks.add(release.doc, ("spec", "version"), message, "duplicate-release")
        zone = (release.rollout.get("window") or {}).get("timezone")
        if isinstance(zone, str) and not _known_zone(zone):
            at = ("spec", "rollout", "window", "timezone")
            self.checks.add(
                release.doc, at, f"unknown time zone {zone!r} (an IANA name such as Europe/Paris)", "schema"
            )

    def _certificate(self, certificate: Certificate) -> None:
        issuers = self.model.repository.issuers
        if certificate.issuer not in issuers and not self._known("Repository", "", {}):
            known = ", ".join(sorted(issuers)) or "none in plumb.yaml"
            message = f"unknown issuer {certificate.issuer!r} (issuers: {known})"
            self.checks.add(certificate.doc, ("spec", "issuer"), message, "unknown-issuer")

    def _cycles(self) -> None:
        depends = {name: list(s.depends_on) for name, s in self.model.services.items()}
        for cycle in graph.cycles(depends):
            first = self.model.services[cycle[0]]
            index = first.depends_on.index(cycle[1] if len(cycle) > 1 else cycle[0])
            path = " -> ".join((*cycle, cycle[0]))
            self.checks.add(
                first.doc, ("spec", "dependsOn", index), f"dependency cycle: {path}", "dependency-cycle"
            )


def _known_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _hint(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
