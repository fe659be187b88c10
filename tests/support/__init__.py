"""Helpers the tests share: real bare Git repositories, a real sshd on 127.0.0.1, and signed node plans.

`make_plan` builds what the reconciler would write to `plans/<node>.json` (resource digests, plan
digest, signature), so agent tests exercise exactly the contract in `schemas/plan.schema.json`.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from contract.crypto import SealingKey, SigningKey
from contract.documents import resource_digest, resources_digest, sign_document

ALLOWED = ["/etc/plumb", "/etc/nginx/conf.d", "/etc/systemd/system", "/opt", "/srv", "/var/lib/plumb"]


def node_key(name: str) -> SigningKey:
    """The signing key test node `name` enrolled with: derived from its name, so that a fixture's
    Node document and the reports a test pushes for that node agree without passing keys around."""
    return SigningKey(Ed25519PrivateKey.from_private_bytes(_seed("signing", name)))


def node_sealing_key(name: str) -> SealingKey:
    """The sealing key test node `name` enrolled with (see `node_key`)."""
    return SealingKey(X25519PrivateKey.from_private_bytes(_seed("sealing", name)))


def node_keys_yaml(name: str) -> str:
    """The `keys:` member of a test node's spec, as `plumb-agent enroll` prints it (flow style)."""
    signing, sealing = node_key(name).public_b64(), node_sealing_key(name).public_b64()
    return f"keys: {{signing: {signing}, sealing: {sealing}}}"


def _seed(what: str, name: str) -> bytes:
    return hashlib.sha256(f"plumb tests {what} key of {name}".encode()).digest()


def resource_id(kind: str, spec: Mapping[str, Any]) -> str:
    """The id the reconciler gives a resource (kind:identity)."""
    if kind == "unit":
        return f"unit:{spec['name']}" + (f"/{spec['dropIn']}" if spec.get("dropIn") else "")
    if kind == "nginx":
        return f"nginx:{spec['site']}"
    if kind in ("certificate", "service"):
        return f"{kind}:{spec['name']}"
    return f"{kind}:{spec['path']}"


def resource(
    kind: str,
    spec: Mapping[str, Any],
    *,
    service: str = "app",
    after: Sequence[str] = (),
    rid: str | None = None,
) -> dict[str, Any]:
    """One plan entry with its digest."""
    return {
        "id": rid or resource_id(kind, spec),
        "kind": kind,
        "service": service,
        "spec": dict(spec),
        "digest": resource_digest(kind, spec),
        "after": list(after),
    }


def make_plan(
    node: str,
    resources: Iterable[Mapping[str, Any]],
    *,
    serial: int,
    key: SigningKey | None,
    allowed: Sequence[str] = ALLOWED,
    heartbeat: int = 30,
    expires: datetime | None = None,
    commit: str = "a" * 40,
    address: str | None = None,
) -> dict[str, Any]:
    """A node plan, signed with `key` (unsigned when `key` is None); `address` is the node's, if given."""
    entries = [copy.deepcopy(dict(r)) for r in resources]
    plan = {
        "apiVersion": "plumb/v1",
        "kind": "NodePlan",
        "node": node,
        "serial": serial,
        "source": {"commit": commit},
        "expires": (expires or datetime.now(UTC) + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "allowedPaths": list(allowed),
        "heartbeat": heartbeat,
        "resources": entries,
        "digest": resources_digest(entries),
    } | ({"address": address} if address is not None else {})
    return sign_document(plan, key) if key is not None else plan


class AgentWorld:
    """A node under test: a bare origin repository, a reconciler key, an enrolled agent under `root`."""

    def __init__(self, base: Any, *, node: str = "web-1", runtime: str = "process", **options: Any) -> None:
        from agent.cli import enroll_keys
        from agent.loop.state import StateDir
        from tests.support.gitrepo import bare_repo

        self.base = base
        self.node = node
        self.root = base / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.state_dir = base / "state"
        self.origin_path = base / "origin.git"
        self.origin = bare_repo(self.origin_path)
        self.reconciler_key = SigningKey.generate()
        self.node_signing, self.node_sealing = enroll_keys(StateDir(self.state_dir))
        self.runtime = runtime
        self.options = options
        self.serial = 0

    def publish(
        self, resources: Iterable[Mapping[str, Any]], *, serial: int | None = None, **plan: Any
    ) -> dict[str, Any]:
        """Sign a plan for this node and commit it to the state branch."""
        from contract.documents import to_file_json
        from tests.support.gitrepo import commit_files

        self.serial = serial if serial is not None else self.serial + 1
        plan.setdefault("key", self.reconciler_key)
        document = make_plan(self.node, resources, serial=self.serial, **plan)
        commit_files(self.origin, "plumb/state", {f"plans/{self.node}.json": to_file_json(document)})
        return document

    def publish_raw(self, document: Mapping[str, Any]) -> None:
        from contract.documents import to_file_json
        from tests.support.gitrepo import commit_files

        commit_files(self.origin, "plumb/state", {f"plans/{self.node}.json": to_file_json(document)})

    def agent_options(self, **overrides: Any) -> Any:
        from agent.loop.runner import AgentOptions

        values = {
            "node": self.node,
            "repo_url": f"file://{self.origin_path}",
            "reconciler_key": self.reconciler_key.verify_key(),
            "root": self.root,
            "state_dir": self.state_dir,
            "runtime": self.runtime,
            "interval": 0.2,
        }
        return AgentOptions(**(values | self.options | overrides))

    def agent(self, **overrides: Any) -> Any:
        from agent.loop.runner import Agent

        return Agent(self.agent_options(**overrides))

    def cli_args(self) -> list[str]:
        """Arguments for `plumb-agent run` as a subprocess."""
        return [
            "run",
            "--repo",
            f"file://{self.origin_path}",
            "--node",
            self.node,
            "--reconciler-key",
            self.reconciler_key.public_b64(),
            "--root",
            str(self.root),
            "--state-dir",
            str(self.state_dir),
            "--runtime",
            self.runtime,
        ]

    def path(self, plan_path: str) -> Any:
        """Where a plan path lives under the root."""
        return self.root / plan_path.lstrip("/")

    def report(self) -> dict[str, Any]:
        """The report the agent pushed last, checked against report.schema.json and the node's key."""
        import json
        from importlib import resources as package_files

        import jsonschema

        from contract.crypto import VerifyKey
        from contract.documents import verify_document
        from tests.support.gitrepo import read_file

        report = dict(json.loads(read_file(self.origin, f"plumb/reports/{self.node}", "report.json")))
        schema = json.loads(package_files.files("plumb_schemas").joinpath("report.schema.json").read_text())
        jsonschema.validate(report, schema)
        verify_document(report, VerifyKey.from_b64(self.node_signing), what="report")
        return report

    def stop_units(self) -> None:
        """Stop every supervisor this node's process runtime started, and wait for them (test cleanup)."""
        from agent.apply.runtimes.process import ProcessRuntime
        from agent.host.paths import Confinement

        supervise = self.state_dir / "supervise"
        if not supervise.is_dir():
            return
        runtime = ProcessRuntime(
            confinement=Confinement.create(root=self.root, allowed=["/"]), state_dir=self.state_dir
        )
        for directory in supervise.iterdir():
            runtime.stop(directory.name)


def report_of(document: Mapping[str, Any]) -> Any:
    """A typed report (`contract.report.Report`) from a partial report document: what a test leaves
    out gets what an agent with nothing to say would send."""
    from contract.report import parse_report

    defaults: dict[str, Any] = {
        "apiVersion": "plumb/v1",
        "kind": "NodeReport",
        "node": "web-1",
        "time": "2026-01-01T00:00:00Z",
        "agentVersion": "test",
        "applied": None,
        "resources": [],
        "drift": [],
        "instances": [],
        "capabilities": [],
    }
    return parse_report(defaults | dict(document))
