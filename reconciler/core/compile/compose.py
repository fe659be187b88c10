"""Turn one service into the concrete resources it puts on a node: render, then normalise per kind.

A service contributes resources in groups. The template group (the template's resources, its
ports and health, the traits without a placement of their own) goes to the service's nodes; each
trait with its own placement (an ingress on the edge nodes) is a group of its own. A group whose
strings never read `node` is rendered once and shared by every node it lands on.
"""

from __future__ import annotations

import copy
import itertools
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator

from contract.vocabulary import DesiredState, ResourceKind, resource_kind
from reconciler.core.compile.load import Document, PathKey
from reconciler.core.compile.model import Model, Node, Release, Service, Trait, seconds
from reconciler.core.compile.render import Calls, Lookups, functions, reads_node, render_value
from reconciler.core.compile.schemas import definition_validator, dotted, is_valid
from reconciler.core.findings import Finding

_SERIALS = itertools.count(1)
SECRET_FILE_MODE = "0600"  # default mode of a file whose content reads a secret; others get 0644
# apply order of kinds within a service: where things go, then what they hold, then what runs them
KIND_RANK = {
    ResourceKind.DIRECTORY: 0,
    ResourceKind.FILE: 1,
    ResourceKind.CERTIFICATE: 2,
    ResourceKind.ARTIFACT: 3,
    ResourceKind.UNIT: 4,
    ResourceKind.NGINX: 5,
    ResourceKind.SERVICE: 6,
}
UNIT_DIR = "/etc/systemd/system"
NGINX_DIR = "/etc/nginx/conf.d"
CERT_DIR = "/etc/plumb/certs"


@dataclass(frozen=True)
class Piece:
    """One rendered, normalised resource of one service, before it is ordered on a node."""

    id: str
    kind: ResourceKind
    service: str
    spec: Mapping[str, Any]
    source: str
    paths: tuple[str, ...]  # host paths it writes
    doc: Document = field(compare=False)
    at: PathKey = ()
    uses_secret: bool = False
    rank: int = 0


@dataclass(frozen=True)
class GroupRender:
    """The outcome of rendering one group of a service for one node (or for every node)."""

    pieces: tuple[Piece, ...]
    ports: tuple[Mapping[str, Any], ...]
    findings: tuple[Finding, ...]
    calls: Calls
    serial: int = field(default_factory=lambda: next(_SERIALS))  # identity that outlives id()


@dataclass(frozen=True)
class Group:
    """A service's resources that share a placement: the template group (trait None) or one trait."""

    service: str
    trait_index: int | None  # index into service.traits for a trait with its own placement


def apply_defaults(parameter_schema: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """Fill in `default`s of an object schema's properties, recursively into given objects."""
    result = copy.deepcopy(dict(params))
    properties = parameter_schema.get("properties")
    if not isinstance(properties, Mapping):
        return result
    for name, sub in properties.items():
        if not isinstance(sub, Mapping):
            continue
        if name not in result and "default" in sub:
            result[name] = copy.deepcopy(sub["default"])
        elif isinstance(result.get(name), Mapping):
            result[name] = apply_defaults(sub, result[name])
    return result


def release_context(release: Release | None) -> dict[str, Any] | None:
    if release is None:
        return None
    return {"name": release.name, "version": release.version, "artifact": dict(release.artifact)}


def base_context(
    model: Model, service: Service, node: Node | None, release: Release | None
) -> dict[str, Any]:
    template = model.templates[service.template]
    params = apply_defaults(template.parameters, service.params)
    context: dict[str, Any] = {
        "service": {
            "name": service.name,
            "labels": dict(service.labels),
            "version": release.version if release else service.version,
            "params": params,
        },
        "params": params,
        "release": release_context(release),
    }
    if node is not None:
        context["node"] = {"name": node.name, "labels": dict(node.labels), "address": node.address}
    return context


def group_reads_node(model: Model, group: Group) -> bool:
    service = model.services[group.service]
    if group.trait_index is not None:
        return reads_node(model.traits[service.traits[group.trait_index].type].resources)
    template = model.templates[service.template]
    own_traits = [
        model.traits[use.type] for use in service.traits if model.traits[use.type].placement is None
    ]
    parts: list[Any] = [template.resources, template.ports, template.health]
    return reads_node(parts) or any(reads_node(trait.resources) for trait in own_traits)


@dataclass(frozen=True)
class Variant:
    """What may differ for one service between nodes besides the node itself."""

    release: Release | None  # the release this node runs (a rollout may hold some on the old one)
    waiting_for: tuple[str, ...] = ()  # dependencies with no healthy endpoint anywhere yet


def render_group(
    model: Model, group: Group, node: Node | None, lookups: Lookups, variant: Variant
) -> GroupRender:
    """Render one group; with `node` None the group must not read `node` (see group_reads_node)."""
    service = model.services[group.service]
    calls = Calls()
    context = base_context(model, service, node, variant.release) | functions(lookups, calls)
    builder = _GroupBuilder(model, service, context, calls, variant)
    if group.trait_index is not None:
        builder.trait(service.traits[group.trait_index].index)
    else:
        builder.template()
        for use in service.traits:
            if model.traits[use.type].placement is None:
                builder.trait(use.index)
        builder.finish_own()
    return GroupRender(tuple(builder.pieces), tuple(builder.ports), tuple(builder.findings), calls)


class _GroupBuilder:
    """Accumulates the pieces, ports and findings of one group render."""

    def __init__(
        self, model: Model, service: Service, context: dict[str, Any], calls: Calls, variant: Variant
    ) -> None:
        self.model, self.service, self.context, self.calls = model, service, context, calls
        self.release, self.waiting_for = variant.release, variant.waiting_for
        self.pieces: list[Piece] = []
        self.ports: list[Mapping[str, Any]] = []
        self.findings: list[Finding] = []
        self.health: dict[str, Any] = {}

    def template(self) -> None:
        template = self.model.templates[self.service.template]
        self._resources(template.resources, template.doc, self.context)
        ports, findings = render_value(list(template.ports), self.context, template.doc, ("spec", "ports"))
        self.findings += findings
        self.ports = [p for p in ports if isinstance(p, dict)]
        self._check_ports(template.doc)
        health, findings = render_value(dict(template.health), self.context, template.doc, ("spec", "health"))
        self.findings += findings
        self.health = health

    def trait(self, index: int) -> None:
        use = self.service.traits[index]
        trait: Trait = self.model.traits[use.type]
        context = self.context | {"params": apply_defaults(trait.parameters, use.params)}
        self._resources(trait.resources, trait.doc, context)

    def _resources(
        self, resources: Sequence[Mapping[str, Any]], doc: Document, context: Mapping[str, Any]
    ) -> None:
        for index, raw in enumerate(resources):
            kind = resource_kind(next(iter(raw)))  # the template schema allows only these keys
            at: PathKey = ("spec", "resources", index, kind.value)
            secrets_before = self.calls.secret_reads
            spec, findings = render_value(raw[kind], context, doc, at)
            self.findings += findings
            if not findings:
                self._add(kind, spec, doc, at, self.calls.secret_reads > secrets_before)

    def _add(
        self, kind: ResourceKind, spec: dict[str, Any], doc: Document, at: PathKey, uses_secret: bool
    ) -> None:
        path = spec.get("path")
        if (
            kind in (ResourceKind.FILE, ResourceKind.DIRECTORY, ResourceKind.ARTIFACT)
            and isinstance(path, str)
            and not path.startswith("/")
        ):
            self._finding(doc, (*at, "path"), f"{path!r} is not an absolute path", "path-not-allowed")
            return
        if kind is ResourceKind.FILE and uses_secret and "mode" not in spec:
            spec["mode"] = SECRET_FILE_MODE  # a file that holds a secret is nobody else's to read
        try:
            spec = NORMALISE[kind](self, spec)
        except _Invalid as invalid:
            self._finding(doc, (*at, *invalid.path), invalid.message, "render")
            return
        for error in () if is_valid("plan", spec, kind) else _spec_validator(kind).iter_errors(spec):
            path = (*at, *error.absolute_path)
            self._finding(doc, path, f"renders to an invalid {kind}: {error.message}", "render")
            return
        rid, paths = identity(kind, spec)
        line = doc.where(at)[0]
        self.pieces.append(
            Piece(
                rid,
                kind,
                self.service.name,
                spec,
                f"{doc.path}:{line}",
                paths,
                doc,
                at,
                uses_secret,
                KIND_RANK[kind],
            )
        )

    def finish_own(self) -> None:
        """Defaults that need the whole group (restartOn), then the service entry itself."""
        watched = tuple(
            p
            for piece in self.pieces
            if piece.kind in (ResourceKind.FILE, ResourceKind.CERTIFICATE)
            for p in piece.paths
        )
        # an artifact's own path is what the agent reports changed when it switches to a new version
        watched += tuple(piece.spec["path"] for piece in self.pieces if piece.kind == ResourceKind.ARTIFACT)
        self.pieces = [_with_restart_on(piece, watched) for piece in self.pieces]
        template = self.model.templates[self.service.template]
        spec = self._service_spec(template.doc)  # ports and probes come from the template
        self._add(
            ResourceKind.SERVICE, spec, self.service.doc, ("metadata", "name"), False
        )  # the rest: the service

    def _service_spec(self, doc: Document) -> dict[str, Any]:
        units = [
            p.spec["name"] for p in self.pieces if p.kind == ResourceKind.UNIT and "dropIn" not in p.spec
        ]
        spec: dict[str, Any] = {
            "name": self.service.name,
            "state": self.service.state,
            "ports": self.ports,
            "dependsOn": list(self.service.depends_on),
        }
        if units:
            spec["unit"] = units[0]
        if self.waiting_for:
            spec["waitingFor"] = list(self.waiting_for)
        version = self.context["service"]["version"]
        if version is not None:
            spec["version"] = str(version)
        health = self._health(doc)
        if health:
            spec["health"] = health
        if self.release and self.release.hooks:
            spec["hooks"] = {name: list(commands) for name, commands in self.release.hooks.items()}
        return spec

    def _health(self, doc: Document) -> dict[str, Any]:
        by_name = {p.get("name"): p.get("port") for p in self.ports}
        health: dict[str, Any] = {}
        for phase, probe in self.health.items():
            converted: dict[str, Any] = {}
            for key, value in probe.items():
                if key in ("period", "timeout", "initialDelay"):
                    converted[key] = seconds(value, 0) if isinstance(value, str) else value
                elif isinstance(value, dict) and isinstance(value.get("port"), str):
                    port = by_name.get(value["port"])
                    if port is None:
                        where = ("spec", "health", phase, key, "port")
                        self._finding(
                            doc, where, f"names no port of the template: {value['port']!r}", "render"
                        )
                        continue
                    converted[key] = value | {"port": port}
                else:
                    converted[key] = value
            health[phase] = converted
        return health

    def _check_ports(self, doc: Document) -> None:
        for index, port in enumerate(self.ports):
            value = port.get("port")
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
                where = ("spec", "ports", index, "port")
                self._finding(doc, where, f"renders to {value!r}, not a port number (1-65535)", "render")
        self.ports = [
            p for p in self.ports if isinstance(p.get("port"), int) and not isinstance(p.get("port"), bool)
        ]

    def _finding(self, doc: Document, path: PathKey, message: str, code: str) -> None:
        line, column = doc.where(path)
        self.findings.append(Finding(doc.path, line, column, dotted(path), message, code))


class _Invalid(Exception):
    def __init__(self, path: PathKey, message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


def _text(spec: dict[str, Any], key: str) -> None:
    """Content fields are text even when a lone expression rendered to a number."""
    if key in spec and not isinstance(spec[key], str):
        spec[key] = "" if spec[key] is None else str(spec[key])


def _mode(spec: dict[str, Any], default: str) -> None:
    mode = spec.get("mode", default)
    text = format(mode, "o") if isinstance(mode, int) else str(mode)
    spec["mode"] = text.zfill(4)


def _file(builder: _GroupBuilder, spec: dict[str, Any]) -> dict[str, Any]:
    _text(spec, "content")
    _mode(spec, "0644")
    return spec


def _directory(builder: _GroupBuilder, spec: dict[str, Any]) -> dict[str, Any]:
    _mode(spec, "0755")
    return spec


def _unit(builder: _GroupBuilder, spec: dict[str, Any]) -> dict[str, Any]:
    _text(spec, "content")
    if "dropIn" in spec:
        for key in ("enabled", "state"):
            if key in spec:
                raise _Invalid((key,), f"a drop-in has no {key} of its own; set it on {spec['name']}")
        return spec
    spec.setdefault("state", builder.service.state)
    spec.setdefault("enabled", spec["state"] == DesiredState.RUNNING)
    if isinstance(spec["enabled"], str):
        spec["enabled"] = spec["enabled"].strip().lower() in ("true", "yes", "1", "on")
    return spec


def _nginx(builder: _GroupBuilder, spec: dict[str, Any]) -> dict[str, Any]:
    _text(spec, "content")
    return spec


def _artifact(builder: _GroupBuilder, spec: dict[str, Any]) -> dict[str, Any]:
    release = builder.release
    if release is not None:
        for key in ("url", "sha256", "unpack"):
            if key not in spec and key in release.artifact:
                spec[key] = release.artifact[key]
        spec.setdefault("version", release.version)
    if "url" not in spec or "sha256" not in spec:
        raise _Invalid((), "an artifact needs a url and sha256, here or from a Release of the service")
    spec.setdefault("version", str(spec["sha256"])[:12])
    spec.setdefault("unpack", "tar.gz")
    return spec


def _certificate(builder: _GroupBuilder, spec: dict[str, Any]) -> dict[str, Any]:
    if spec.get("name") not in builder.model.certificates:
        raise _Invalid(("name",), f"names no Certificate: {spec.get('name')!r}")
    # The agent installs certificates, but the reconciler does not obtain them from ACME yet:
    # refuse the resource plainly rather than plan a key that cannot be opened.
    raise _Invalid((), "certificate resources are not supported yet: this reconciler does not run ACME")


def _service(builder: _GroupBuilder, spec: dict[str, Any]) -> dict[str, Any]:
    return spec


NORMALISE = {
    ResourceKind.FILE: _file,
    ResourceKind.DIRECTORY: _directory,
    ResourceKind.UNIT: _unit,
    ResourceKind.NGINX: _nginx,
    ResourceKind.ARTIFACT: _artifact,
    ResourceKind.CERTIFICATE: _certificate,
    ResourceKind.SERVICE: _service,
}


def _with_restart_on(piece: Piece, watched: tuple[str, ...]) -> Piece:
    if piece.kind != ResourceKind.UNIT or "dropIn" in piece.spec or "restartOn" in piece.spec or not watched:
        return piece
    return Piece(
        piece.id,
        piece.kind,
        piece.service,
        dict(piece.spec) | {"restartOn": list(watched)},
        piece.source,
        piece.paths,
        piece.doc,
        piece.at,
        piece.uses_secret,
        piece.rank,
    )


def identity(kind: str, spec: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    """A resource's id and the host paths it writes."""
    if kind in (ResourceKind.FILE, ResourceKind.DIRECTORY, ResourceKind.ARTIFACT):
        return f"{kind}:{spec['path']}", (spec["path"],)
    if kind == ResourceKind.UNIT:
        if "dropIn" in spec:
            path = f"{UNIT_DIR}/{spec['name']}.d/{spec['dropIn']}"
            return f"{kind}:{spec['name']}/{spec['dropIn']}", (path,)
        return f"{kind}:{spec['name']}", (f"{UNIT_DIR}/{spec['name']}",)
    if kind == ResourceKind.NGINX:
        return f"{kind}:{spec['site']}", (f"{NGINX_DIR}/{spec['site']}.conf",)
    if kind == ResourceKind.CERTIFICATE:
        return f"{kind}:{spec['name']}", (spec["certPath"], spec["keyPath"])
    return f"{ResourceKind.SERVICE}:{spec['name']}", ()


def certificate_paths(name: str) -> dict[str, str]:
    """Where certificate(name) says a certificate lives on a node, when a template does not say."""
    return {
        "name": name,
        "certPath": f"{CERT_DIR}/{name}/fullchain.pem",
        "keyPath": f"{CERT_DIR}/{name}/privkey.pem",
    }


def _spec_validator(kind: str) -> Draft202012Validator:
    return definition_validator("plan", kind)


def path_problem(path: str, allowed: Sequence[str]) -> tuple[str, str] | None:
    """(code, message) when a host path escapes, else None."""
    if not path.startswith("/"):
        return "path-not-allowed", f"{path!r} is not an absolute path"
    if ".." in path.split("/"):
        return "path-traversal", f"{path!r} contains '..'"
    if posixpath.normpath(path) != path and path != "/":
        return "path-traversal", f"{path!r} is not a normalised path"
    if not any(path == root or path.startswith(root.rstrip("/") + "/") for root in allowed):
        return "path-not-allowed", f"{path} is outside allowedPaths ({', '.join(allowed)})"
    return None
