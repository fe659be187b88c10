"""The per-kind JSON Schemas: they are valid draft 2020-12, accept good documents, refuse bad ones,
and accept every document of the bundled examples and of the benchmark generator."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
EXAMPLES = ROOT / "examples"
KINDS = ["Repository", "Node", "Template", "Trait", "Service", "Release", "Certificate", "Secret"]


def _validator(kind: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{kind.lower()}.schema.json").read_text())
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


VALIDATORS = {kind: _validator(kind) for kind in KINDS}


def errors_of(document: Any) -> list[str]:
    """Schema errors of one document, chosen by its kind (an unknown kind is itself an error)."""
    kind = document.get("kind") if isinstance(document, dict) else None
    if kind not in VALIDATORS:
        return [f"unknown kind {kind!r}"]
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATORS[kind].iter_errors(document)
    ]


def doc(kind: str, spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {"apiVersion": "plumb/v1", "kind": kind, "metadata": {"name": "x", **metadata}, "spec": spec}


def put(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `document` with the dotted `path` set to `value` (digits index lists)."""
    out = copy.deepcopy(document)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    target: Any = out
    for part in parents:
        target = target[part]
    target[last] = value
    return out


def drop(document: dict[str, Any], path: str) -> dict[str, Any]:
    """A copy of `document` without the dotted `path`."""
    out = copy.deepcopy(document)
    *parents, last = path.split(".")
    target: Any = out
    for part in parents:
        target = target[int(part) if part.isdigit() else part]
    del target[int(last) if last.isdigit() else last]
    return out


REPOSITORY = doc(
    "Repository",
    {
        "stateBranch": "plumb/state",
        "reportsPrefix": "plumb/reports/",
        "allowedPaths": ["/etc/plumb", "/opt"],
        "heartbeat": "30s",
        "offlineAfter": "120s",
        "planExpiry": "7d",
        "verifyCommits": {"allowedSigners": ".plumb/allowed_signers"},
        "issuers": {"letsencrypt": {"directory": "https://acme.example/dir", "email": "ops@example.com"}},
        "ignore": ["ci/**"],
    },
)
NODE = doc(
    "Node",
    {"address": "10.0.0.11", "keys": {"signing": "q83vEjRWeJA=", "sealing": "AAAA"}, "cordoned": False},
    labels={"role": "app", "topology.example.com/zone": "a"},
)
TEMPLATE = doc(
    "Template",
    {
        "description": "A Python web service",
        "parameters": {"type": "object", "required": ["port"], "properties": {"port": {"type": "integer"}}},
        "ports": [{"name": "http", "port": "{{ params.port }}", "protocol": "http"}],
        "health": {
            "readiness": {"http": {"port": "http", "path": "/healthz"}, "period": "5s", "failureThreshold": 3}
        },
        "resources": [
            {"file": {"path": "/etc/{{ service.name }}/config.yaml", "mode": "0640", "content": "port: 1\n"}},
            {"directory": {"path": "/srv/x"}},
            {"unit": {"name": "{{ service.name }}.service", "content": "[Service]\n", "state": "running"}},
            {"nginx": {"site": "x", "content": "server {}"}},
            {"artifact": {"path": "/opt/x"}},
            {"certificate": {"name": "x", "certPath": "/etc/plumb/x.pem", "keyPath": "/etc/plumb/x.key"}},
        ],
    },
)
TRAIT = doc(
    "Trait",
    {
        "appliesTo": ["*"],
        "conflictsWith": [],
        "parameters": {"type": "object", "properties": {"host": {"type": "string"}}},
        "placement": {"selector": {"role": "edge"}},
        "resources": [{"nginx": {"site": "{{ service.name }}", "content": "upstream x {}"}}],
    },
)
SERVICE = doc(
    "Service",
    {
        "template": "python-web",
        "version": "^1.4",
        "params": {"port": 8080},
        "placement": {"selector": {"role": "app"}, "replicas": 2},
        "dependsOn": ["redis"],
        "state": "running",
        "paused": False,
        "traits": [{"type": "ingress", "params": {"host": "api.example.com"}}],
    },
    labels={"app": "shop"},
)
RELEASE = doc(
    "Release",
    {
        "service": "api",
        "version": "1.5.0",
        "artifact": {"url": "https://a.example/api.tar.gz", "sha256": "ab" * 32, "unpack": "tar.gz"},
        "rollout": {
            "batches": [1, "25%", "100%"],
            "healthyFor": "30s",
            "timeout": "10m",
            "onFailure": "rollback",
            "window": {"days": ["mon", "fri"], "start": "09:00", "end": "17:00", "timezone": "UTC"},
        },
        "hooks": {"preStart": ["true"], "postStart": [], "rollback": ["echo back"]},
    },
)
CERTIFICATE = doc(
    "Certificate",
    {"issuer": "letsencrypt", "domains": ["api.example.com"], "challenge": "http-01", "renewBefore": "30d"},
)
SECRET = doc("Secret", {"data": {"password": "plumb:sealed:v1:abc", "API_KEY.v2": "plumb:sealed:v1:def"}})

CASES = [
    # Common envelope
    pytest.param(REPOSITORY, True, id="repository-full"),
    pytest.param(doc("Repository", {}), True, id="repository-empty-spec"),
    pytest.param(drop(REPOSITORY, "spec"), False, id="spec-missing"),
    pytest.param(put(REPOSITORY, "apiVersion", "plumb/v2"), False, id="wrong-api-version"),
    pytest.param(put(REPOSITORY, "extra", 1), False, id="unknown-top-level-field"),
    pytest.param(put(REPOSITORY, "metadata.name", "Fleet"), False, id="name-upper-case"),
    pytest.param(put(REPOSITORY, "metadata.name", "-fleet"), False, id="name-leading-dash"),
    pytest.param(put(REPOSITORY, "metadata.name", "a" * 64), False, id="name-too-long"),
    pytest.param(put(REPOSITORY, "metadata.name", "a" * 63), True, id="name-63-chars"),
    pytest.param(put(REPOSITORY, "metadata.nmae", "x"), False, id="metadata-typo"),
    pytest.param(drop(REPOSITORY, "metadata.name"), False, id="metadata-without-name"),
    pytest.param(put(REPOSITORY, "metadata.labels", {"a": 1}), False, id="label-value-not-string"),
    pytest.param(put(REPOSITORY, "metadata.labels", {"a": "v" * 64}), False, id="label-value-too-long"),
    pytest.param(put(REPOSITORY, "metadata.labels", {"bad key": "v"}), False, id="label-key-space"),
    pytest.param(put(REPOSITORY, "metadata.annotations", {"note": "anything"}), True, id="annotations"),
    # Repository
    pytest.param(put(REPOSITORY, "spec.stateBranh", "x"), False, id="repository-typo"),
    pytest.param(put(REPOSITORY, "spec.reportsPrefix", "plumb/reports"), False, id="reports-prefix-no-slash"),
    pytest.param(put(REPOSITORY, "spec.allowedPaths", ["etc/plumb"]), False, id="allowed-path-relative"),
    pytest.param(put(REPOSITORY, "spec.heartbeat", "30"), False, id="duration-without-unit"),
    pytest.param(put(REPOSITORY, "spec.heartbeat", "1.5m"), False, id="duration-fraction"),
    pytest.param(put(REPOSITORY, "spec.planExpiry", 30), False, id="duration-integer"),
    pytest.param(put(REPOSITORY, "spec.heartbeat", "500ms"), True, id="duration-ms"),
    pytest.param(put(REPOSITORY, "spec.verifyCommits", {}), False, id="verify-commits-empty"),
    pytest.param(
        put(REPOSITORY, "spec.issuers.le", {"directory": "https://x/d"}), False, id="issuer-no-email"
    ),
    pytest.param(
        put(
            REPOSITORY,
            "spec.issuers.pebble",
            {"directory": "https://localhost:14000/dir", "email": "a@b.c", "caBundle": "/p"},
        ),
        True,
        id="issuer-with-ca-bundle",
    ),
    pytest.param(put(REPOSITORY, "spec.issuers.letsencrypt.eab", "x"), False, id="issuer-unknown-field"),
    # Node
    pytest.param(NODE, True, id="node-full"),
    pytest.param(put(NODE, "spec.address", "::1"), True, id="node-ipv6"),
    pytest.param(put(NODE, "spec.address", "fe80::1%eth0"), False, id="node-ipv6-scoped"),
    pytest.param(put(NODE, "spec.address", "web-1.internal.example.com"), True, id="node-hostname"),
    pytest.param(put(NODE, "spec.address", "999.1.1.1"), False, id="node-bad-ipv4"),
    pytest.param(put(NODE, "spec.address", "web_1"), False, id="node-bad-hostname"),
    pytest.param(drop(NODE, "spec.address"), False, id="node-without-address"),
    pytest.param(put(NODE, "spec.keys.signing", "not base64!"), False, id="node-key-not-base64"),
    pytest.param(drop(NODE, "spec.keys.sealing"), False, id="node-keys-half"),
    pytest.param(put(NODE, "spec.cordoned", "yes"), False, id="node-cordoned-string"),
    pytest.param(put(NODE, "spec.adress", "10.0.0.1"), False, id="node-typo"),
    # Template
    pytest.param(TEMPLATE, True, id="template-full"),
    pytest.param(put(TEMPLATE, "spec.resources", []), True, id="template-no-resources"),
    pytest.param(drop(TEMPLATE, "spec.resources"), False, id="template-resources-missing"),
    pytest.param(
        put(TEMPLATE, "spec.parameters", {"type": "string"}), False, id="template-parameters-not-object"
    ),
    pytest.param(put(TEMPLATE, "spec.parameters", []), False, id="template-parameters-list"),
    pytest.param(put(TEMPLATE, "spec.ports.0.port", 8080), True, id="port-integer"),
    pytest.param(put(TEMPLATE, "spec.ports.0.port", 0), False, id="port-zero"),
    pytest.param(put(TEMPLATE, "spec.ports.0.port", 70000), False, id="port-too-high"),
    pytest.param(put(TEMPLATE, "spec.ports.0.name", "HTTP"), False, id="port-name-upper"),
    pytest.param(put(TEMPLATE, "spec.ports.0.protocol", "https"), False, id="port-protocol-unknown"),
    pytest.param(put(TEMPLATE, "spec.health.ready", {}), False, id="health-typo"),
    pytest.param(
        put(TEMPLATE, "spec.health.readiness", {"http": {"port": 80}, "tcp": {"port": 80}}),
        False,
        id="probe-two-kinds",
    ),
    pytest.param(put(TEMPLATE, "spec.health.readiness", {"period": "5s"}), False, id="probe-no-kind"),
    pytest.param(put(TEMPLATE, "spec.health.liveness", {"process": {}}), True, id="probe-process"),
    pytest.param(
        put(TEMPLATE, "spec.health.liveness", {"exec": {"command": ["true"]}, "initialDelay": "10s"}),
        True,
        id="probe-exec",
    ),
    pytest.param(
        put(TEMPLATE, "spec.health.liveness", {"exec": {"command": "true"}}), False, id="probe-exec-string"
    ),
    pytest.param(put(TEMPLATE, "spec.health.readiness.period", "5"), False, id="probe-bad-duration"),
    pytest.param(
        put(TEMPLATE, "spec.health.readiness.failureThreshold", 0), False, id="probe-threshold-zero"
    ),
    pytest.param(put(TEMPLATE, "spec.health.readiness.http.verb", "GET"), False, id="probe-http-typo"),
    pytest.param(put(TEMPLATE, "spec.resources.0", {}), False, id="resource-empty"),
    pytest.param(
        put(
            TEMPLATE, "spec.resources.0", {"file": {"path": "/a", "content": ""}, "directory": {"path": "/b"}}
        ),
        False,
        id="resource-two-kinds",
    ),
    pytest.param(
        put(TEMPLATE, "spec.resources.0", {"symlink": {"path": "/a"}}), False, id="resource-unknown-kind"
    ),
    pytest.param(drop(TEMPLATE, "spec.resources.0.file.content"), False, id="file-without-content"),
    pytest.param(put(TEMPLATE, "spec.resources.0.file.mode", 420), False, id="file-mode-unquoted"),
    pytest.param(put(TEMPLATE, "spec.resources.0.file.perms", "0644"), False, id="file-typo"),
    pytest.param(drop(TEMPLATE, "spec.resources.2.unit.content"), False, id="unit-without-content"),
    pytest.param(put(TEMPLATE, "spec.resources.2.unit.state", "started"), False, id="unit-state-unknown"),
    pytest.param(
        put(TEMPLATE, "spec.resources.2.unit.state", "{{ 'running' if params.on else 'stopped' }}"),
        True,
        id="unit-state-template",
    ),
    pytest.param(put(TEMPLATE, "spec.resources.2.unit.enabled", True), True, id="unit-enabled-bool"),
    pytest.param(put(TEMPLATE, "spec.resources.2.unit.restartOn", ["/etc/x"]), True, id="unit-restart-on"),
    pytest.param(put(TEMPLATE, "spec.resources.2.unit.dropIn", "limits.conf"), True, id="unit-drop-in"),
    pytest.param(drop(TEMPLATE, "spec.resources.3.nginx.site"), False, id="nginx-without-site"),
    pytest.param(drop(TEMPLATE, "spec.resources.4.artifact.path"), False, id="artifact-without-path"),
    pytest.param(
        drop(TEMPLATE, "spec.resources.5.certificate.keyPath"), False, id="certificate-resource-no-key"
    ),
    # Trait
    pytest.param(TRAIT, True, id="trait-full"),
    pytest.param(put(TRAIT, "spec.appliesTo", ["python-web", "*"]), True, id="trait-applies-to-names"),
    pytest.param(put(TRAIT, "spec.appliesTo", ["Python"]), False, id="trait-applies-to-bad-name"),
    pytest.param(put(TRAIT, "spec.conflictsWith", "tls"), False, id="trait-conflicts-not-list"),
    pytest.param(drop(TRAIT, "spec.resources"), False, id="trait-resources-missing"),
    pytest.param(put(TRAIT, "spec.placement.replicas", 2), False, id="trait-placement-replicas"),
    pytest.param(
        put(TRAIT, "spec.placement.nodes", ["edge-1"]), False, id="trait-placement-selector-and-nodes"
    ),
    # Service
    pytest.param(SERVICE, True, id="service-full"),
    pytest.param(doc("Service", {"template": "web"}), True, id="service-minimal"),
    pytest.param(drop(SERVICE, "spec.template"), False, id="service-without-template"),
    pytest.param(put(SERVICE, "spec.templte", "web"), False, id="service-typo"),
    pytest.param(put(SERVICE, "spec.template", "Web"), False, id="service-template-bad-name"),
    pytest.param(put(SERVICE, "spec.version", 1.4), False, id="service-version-float"),
    pytest.param(put(SERVICE, "spec.params", [8080]), False, id="service-params-list"),
    pytest.param(put(SERVICE, "spec.placement.replicas", 0), False, id="service-replicas-zero"),
    pytest.param(put(SERVICE, "spec.placement.replica", 2), False, id="service-placement-typo"),
    pytest.param(put(SERVICE, "spec.placement", {"nodes": ["web-1", "web-2"]}), True, id="service-node-list"),
    pytest.param(put(SERVICE, "spec.placement.nodes", ["web-1"]), False, id="service-selector-and-nodes"),
    pytest.param(
        put(SERVICE, "spec.placement", {"nodes": ["web-1", "web-1"]}), False, id="service-nodes-duplicate"
    ),
    pytest.param(put(SERVICE, "spec.dependsOn", ["Redis"]), False, id="service-depends-bad-name"),
    pytest.param(put(SERVICE, "spec.state", "started"), False, id="service-state-unknown"),
    pytest.param(put(SERVICE, "spec.paused", "no"), False, id="service-paused-string"),
    pytest.param(put(SERVICE, "spec.traits.0", {"params": {}}), False, id="service-trait-without-type"),
    pytest.param(put(SERVICE, "spec.traits.0.parms", {}), False, id="service-trait-typo"),
    # Release
    pytest.param(RELEASE, True, id="release-full"),
    pytest.param(
        doc("Release", {"service": "api", "version": "2.0.0-rc.1+build.5"}), True, id="release-prerelease"
    ),
    pytest.param(put(RELEASE, "spec.version", "1.5"), False, id="release-version-partial"),
    pytest.param(put(RELEASE, "metadata.name", "api-1.5.0"), True, id="release-name-with-dots"),
    pytest.param(put(RELEASE, "metadata.name", "api-1.5."), False, id="release-name-trailing-dot"),
    pytest.param(put(SERVICE, "metadata.name", "api.v2"), False, id="service-name-with-dot"),
    pytest.param(put(RELEASE, "spec.version", "v1.5.0"), False, id="release-version-v-prefix"),
    pytest.param(put(RELEASE, "spec.version", "01.5.0"), False, id="release-version-leading-zero"),
    pytest.param(drop(RELEASE, "spec.service"), False, id="release-without-service"),
    pytest.param(put(RELEASE, "spec.artifact.sha256", "AB" * 32), False, id="release-sha-upper"),
    pytest.param(put(RELEASE, "spec.artifact.sha256", "ab" * 31), False, id="release-sha-short"),
    pytest.param(drop(RELEASE, "spec.artifact.url"), False, id="release-artifact-without-url"),
    pytest.param(put(RELEASE, "spec.artifact.unpack", "rar"), False, id="release-unpack-unknown"),
    pytest.param(put(RELEASE, "spec.rollout.batches", []), False, id="release-no-batches"),
    pytest.param(put(RELEASE, "spec.rollout.batches", [0]), False, id="release-batch-zero"),
    pytest.param(put(RELEASE, "spec.rollout.batches", ["0%"]), False, id="release-batch-zero-percent"),
    pytest.param(put(RELEASE, "spec.rollout.batches", ["101%"]), False, id="release-batch-over-100"),
    pytest.param(put(RELEASE, "spec.rollout.batches", ["50"]), False, id="release-batch-string-count"),
    pytest.param(put(RELEASE, "spec.rollout.healthyFor", "half a minute"), False, id="release-bad-duration"),
    pytest.param(put(RELEASE, "spec.rollout.onFailure", "ignore"), False, id="release-on-failure-unknown"),
    pytest.param(put(RELEASE, "spec.rollout.window.days", ["monday"]), False, id="release-window-day"),
    pytest.param(put(RELEASE, "spec.rollout.window.start", "24:00"), False, id="release-window-hour"),
    pytest.param(put(RELEASE, "spec.rollout.window.end", "9:00"), False, id="release-window-short-hour"),
    pytest.param(drop(RELEASE, "spec.rollout.window.end"), False, id="release-window-without-end"),
    pytest.param(
        put(RELEASE, "spec.rollout.window", {"start": "22:00", "end": "06:00"}),
        True,
        id="release-window-overnight",
    ),
    pytest.param(put(RELEASE, "spec.hooks.preStart", "true"), False, id="release-hook-string"),
    pytest.param(put(RELEASE, "spec.hooks.postStop", ["true"]), False, id="release-hook-unknown"),
    # Certificate
    pytest.param(CERTIFICATE, True, id="certificate-full"),
    pytest.param(put(CERTIFICATE, "spec.domains", ["*.example.com"]), True, id="certificate-wildcard"),
    pytest.param(put(CERTIFICATE, "spec.domains", []), False, id="certificate-no-domains"),
    pytest.param(put(CERTIFICATE, "spec.domains", ["not a host"]), False, id="certificate-bad-domain"),
    pytest.param(drop(CERTIFICATE, "spec.issuer"), False, id="certificate-without-issuer"),
    pytest.param(
        put(CERTIFICATE, "spec.challenge", "tls-alpn-01"), False, id="certificate-challenge-unknown"
    ),
    pytest.param(put(CERTIFICATE, "spec.renewBefore", "30 days"), False, id="certificate-bad-duration"),
    # Secret
    pytest.param(SECRET, True, id="secret-full"),
    pytest.param(put(SECRET, "spec.data.password", "hunter2"), False, id="secret-plain-value"),
    pytest.param(put(SECRET, "spec.data", {"bad key": "plumb:sealed:v1:x"}), False, id="secret-bad-key"),
    pytest.param(drop(SECRET, "spec.data"), False, id="secret-without-data"),
    pytest.param(put(SECRET, "kind", "Secrets"), False, id="unknown-kind"),
]


class TestSchemas:
    """The schema files themselves."""

    @pytest.mark.parametrize("kind", KINDS)
    def test_is_valid_draft_2020_12(self, kind: str) -> None:
        """Each schema is itself a valid draft 2020-12 schema with the documented $id."""
        schema = json.loads((SCHEMAS / f"{kind.lower()}.schema.json").read_text())
        Draft202012Validator.check_schema(schema)
        assert schema["$id"] == f"https://plumb.dev/schemas/{kind.lower()}.schema.json"
        assert schema["properties"]["kind"] == {"const": kind}

    @pytest.mark.parametrize("kind", KINDS)
    def test_is_self_contained(self, kind: str) -> None:
        """Every $ref points inside its own file."""
        text = (SCHEMAS / f"{kind.lower()}.schema.json").read_text()
        refs = text.split('"$ref": ')[1:]
        assert refs and all(ref.startswith('"#/') for ref in refs)


class TestDocuments:
    """One row per good or bad document."""

    @pytest.mark.parametrize(("document", "valid"), CASES)
    def test_case(self, document: dict[str, Any], valid: bool) -> None:
        """The document is accepted exactly when it should be."""
        errors = errors_of(document)
        assert (not errors) == valid, errors


def _example_documents() -> list[Any]:
    params = []
    for path in sorted(EXAMPLES.rglob("*.y*ml")):
        if any(part.startswith(".") for part in path.relative_to(EXAMPLES).parts):
            continue
        for index, document in enumerate(yaml.safe_load_all(path.read_text())):
            params.append(pytest.param(document, id=f"{path.relative_to(EXAMPLES)}#{index}"))
    return params


class TestExamples:
    """The bundled example repositories."""

    @pytest.mark.parametrize("document", _example_documents())
    def test_document_is_valid(self, document: Any) -> None:
        """Every document of examples/ passes its kind's schema."""
        assert errors_of(document) == []

    @pytest.mark.parametrize("example", ["minimal", "shop"])
    def test_passes_plumb_validate(self, example: str) -> None:
        """Each example is clean for `plumb validate`: no error and no warning."""
        assert [str(f) for f in _compile(EXAMPLES / example).findings] == []

    @pytest.mark.parametrize("example", ["minimal", "shop"])
    def test_has_one_repository(self, example: str) -> None:
        """Each example has its plumb.yaml."""
        assert yaml.safe_load((EXAMPLES / example / "plumb.yaml").read_text())["kind"] == "Repository"


def _compile(root: Path) -> Any:
    """What `plumb validate` checks, run on a directory."""
    from reconciler.core.compile.desired import SourceFile, compile_desired

    files = [
        SourceFile(p.relative_to(root).as_posix(), p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    ]
    return compile_desired(files)


def _bench_generate() -> Any:
    """bench.generate.generate, loaded by path: `bench` is not an installed package."""
    spec = importlib.util.spec_from_file_location("bench_generate", ROOT / "bench" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate


class TestBenchGenerator:
    """bench/generate.py writes repositories that pass the schemas."""

    def test_generated_documents_are_valid(self, tmp_path: Path) -> None:
        """Every generated document passes its kind's schema."""
        generate = _bench_generate()
        generate(tmp_path, nodes=30, services=60, seed=3)
        documents = [d for p in sorted(tmp_path.rglob("*.yaml")) for d in yaml.safe_load_all(p.read_text())]
        assert len(documents) > 90
        assert {d["kind"] for d in documents} >= {
            "Repository",
            "Node",
            "Template",
            "Trait",
            "Service",
            "Release",
        }
        assert [e for d in documents for e in errors_of(d)] == []
        assert [str(f) for f in _compile(tmp_path).findings] == []

    def test_is_deterministic(self, tmp_path: Path) -> None:
        """The same seed writes the same files."""
        generate = _bench_generate()
        generate(tmp_path / "a", nodes=10, services=20, seed=7)
        generate(tmp_path / "b", nodes=10, services=20, seed=7)
        files_a = {p.relative_to(tmp_path / "a"): p.read_text() for p in (tmp_path / "a").rglob("*.yaml")}
        files_b = {p.relative_to(tmp_path / "b"): p.read_text() for p in (tmp_path / "b").rglob("*.yaml")}
        assert files_a == files_b
