"""A whole fleet on one machine (bare repository, reconciler, agents, nginx) for the demo, bench and tests."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pygit2

from agent.apply.runtimes.process import process_alive
from agent.cli import enroll_keys
from agent.loop.state import StateDir
from contract.defaults import MAX_PLAN_BYTES, REPORTS_PREFIX, STATE_BRANCH
from contract.documents import parse_json_document
from contract.errors import ContractError, PlumbError, UsageError
from contract.report import Report, parse_report
from contract.transport.gitread import read_file
from contract.vocabulary import ResourceKind
from reconciler.core.compile.desired import compile_desired
from reconciler.drivers.desired_source import read_worktree_files
from reconciler.drivers.keys import init_key

NGINX = "/usr/sbin/nginx"
STOP_GRACE = 5.0
POLL = 0.05  # reading the bare repository also wakes the reconciler's file watcher: not too often
_GIT_CONFIG = ("user.name=plumb demo", "user.email=demo@plumb.invalid", "commit.gpgsign=false")


class FleetError(PlumbError):
    """The local fleet could not be set up or did not converge in time."""


# -- processes -----------------------------------------------------------------------------------


@dataclass
class Child:
    """One process the fleet started, in its own process group."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Children:
    """The processes a fleet started; stopped in the reverse order of starting, group by group."""

    logs: Path
    started: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: list[str], *, env: Mapping[str, str] | None = None) -> Child:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        child = Child(name, process, log)
        self.started.append(child)
        return child

    def stop(self, names: Iterable[str] | None = None) -> None:
        """SIGTERM each group (children first started last), wait, then SIGKILL whatever is left."""
        wanted = set(names) if names is not None else None
        chosen = [c for c in reversed(self.started) if wanted is None or c.name in wanted]
        for child in chosen:
            _signal_group(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for child in chosen:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            _signal_group(child.process.pid, signal.SIGKILL)
            child.process.wait()
            self.started.remove(child)

    def dead(self) -> list[Child]:
        """Children that exited although nobody stopped them."""
        return [c for c in self.started if c.process.poll() is not None]


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def stop_supervisors(state_dir: Path) -> None:
    """Stop the detached unit supervisors an agent's process runtime left running (they outlive agents)."""
    running: list[tuple[int, Path]] = []
    for pid_file in sorted((state_dir / "supervise").glob("*/supervisor.pid")):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text())
            if process_alive(pid, str(pid_file.parent)):
                os.kill(pid, signal.SIGTERM)
                running.append((pid, pid_file.parent))
    deadline = time.monotonic() + STOP_GRACE + 1
    while any(process_alive(p, str(d)) for p, d in running) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid, directory in running:
        if process_alive(pid, str(directory)):  # stuck: kill it and the service it ran
            _signal_group(pid, signal.SIGKILL)
            with contextlib.suppress(OSError, ValueError, TypeError):
                service = json.loads((directory / "status.json").read_text()).get("pid")
                _signal_group(int(service), signal.SIGKILL)


def executable(name: str) -> str:
    """A console script of this installation (next to the running Python), else from PATH."""
    sibling = Path(sys.executable).parent / name
    if sibling.is_file():
        return str(sibling)
    found = shutil.which(name)
    if found is None:
        raise FleetError(f"{name} is not installed next to {sys.executable} nor on PATH")
    return found


def port_is_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def free_port(addresses: Iterable[str], *, start: int = 8080) -> int:
    """The first port from `start` free on every one of `addresses`."""
    wanted = list(addresses)
    for port in range(start, start + 1000):
        if all(port_is_free(a, port) for a in wanted):
            return port
    raise FleetError(f"no free port from {start} on {', '.join(wanted)}")


# -- git -----------------------------------------------------------------------------------------


def git(*args: str, cwd: Path) -> str:
    """Run the real git (a user's push is what the reconciler must see); its stderr names any failure."""
    try:
        result = subprocess.run(
            ["git", *[a for c in _GIT_CONFIG for a in ("-c", c)], *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    except FileNotFoundError as exc:
        raise FleetError("git is not installed (apt-get install git)") from exc
    if result.returncode != 0:
        raise FleetError(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


# -- progress ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeProgress:
    """One node as the bare repository shows it: its plan's serial against its latest report."""

    node: str
    planned: int | None = None
    applied: int | None = None
    resources: int = 0
    failed: tuple[str, ...] = ()
    instances: int = 0
    ready: int = 0
    rejected: str | None = None

    @property
    def in_sync(self) -> bool:
        return self.planned is not None and self.applied == self.planned

    @property
    def converged(self) -> bool:
        """Applied the current plan, every resource ok, every instance ready."""
        return self.in_sync and not self.failed and not self.rejected and self.ready == self.instances

    def describe(self) -> str:
        if self.rejected:
            return f"plan rejected: {self.rejected}"
        if self.failed:
            return f"failed: {'; '.join(self.failed)}"
        if self.planned is None:
            return "waiting for its plan"
        if self.applied is None:
            return f"plan {self.planned} signed; waiting for its agent"
        if not self.in_sync:
            return f"applying serial {self.planned}"
        if self.ready < self.instances:
            return f"{self.instances - self.ready} instance(s) not ready yet"
        return "converged"


class BranchReader:
    """Reads JSON files at branch tips of the bare repository; parsed files are kept by commit, so polling
    an unchanged branch costs a ref lookup."""

    LIMIT = 4096

    def __init__(self, path: Path) -> None:
        self.repo = pygit2.Repository(str(path))
        self.parsed: dict[tuple[str, str], dict[str, Any] | None] = {}

    def read(self, ref: str, path: str) -> dict[str, Any] | None:
        reference = self.repo.references.get(ref)
        if reference is None:
            return None
        key = (str(reference.target), path)
        if key not in self.parsed:
            if len(self.parsed) > self.LIMIT:
                self.parsed.clear()
            self.parsed[key] = self._parse(reference, path)
        return self.parsed[key]

    def _parse(self, reference: Any, path: str) -> dict[str, Any] | None:
        """The document, read as the reconciler reads hostile input (bounded); None when refused."""
        try:
            tree = reference.peel(pygit2.Commit).tree
            data = read_file(self.repo, tree, path, what=path, limit=MAX_PLAN_BYTES)
            return parse_json_document(data, what=path, limit=MAX_PLAN_BYTES) if data is not None else None
        except (ContractError, pygit2.GitError, ValueError):
            return None


def node_progress(reader: BranchReader, node: str, *, state_ref: str, report_ref: str) -> NodeProgress:
    plan = reader.read(state_ref, f"plans/{node}.json") or {}
    report = _report(reader.read(report_ref, "report.json"))
    if report is None:
        return NodeProgress(node=node, planned=plan.get("serial"))
    return NodeProgress(
        node=node,
        planned=plan.get("serial"),
        applied=report.applied.serial if report.applied else None,
        resources=len(report.resources),
        failed=tuple(f"{r.id}: {r.error or r.reason or ''}" for r in report.failed()),
        instances=len(report.instances),
        ready=sum(1 for i in report.instances if i.ready),
        rejected=report.rejected.reason if report.rejected else None,
    )


def _report(document: dict[str, Any] | None) -> Report | None:
    """A node's latest report, or None when it has none yet or one this demo cannot read."""
    try:
        return parse_report(document) if document is not None else None
    except ContractError:
        return None


# -- the fleet -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeInfo:
    """What the fleet needs to know about one node of the desired state."""

    name: str
    address: str
    nginx: bool

    def root(self, workdir: Path) -> Path:
        return workdir / "nodes" / self.name / "root"

    def state_dir(self, workdir: Path) -> Path:
        return workdir / "nodes" / self.name / "state"


@dataclass
class LocalFleet:
    """A bare repository, a reconciler and one agent per node, each a real process on this machine.

    It makes the keys, enrolls every node of a desired state (writing `spec.keys` into
    `nodes/*.yaml`), commits and pushes with the real `git`, starts a private nginx for every node
    whose plan has nginx sites, the reconciler in watch mode and one `plumb-agent --runtime process`
    per node in its own `--root`, and reads progress back from the bare repository. Every process
    runs in its own process group; `stop()` ends them all, and the services the agents' supervisors
    run, in order.
    """

    workdir: Path
    agent_interval: str = "1s"
    reconcile_interval: str = "5s"
    branch: str = "main"
    state_branch: str = STATE_BRANCH
    reports_prefix: str = REPORTS_PREFIX
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    public_key: str = ""
    local_artifacts: Path | None = None  # agents accept file:// artifacts below it (none otherwise)

    def __post_init__(self) -> None:
        self.workdir = self.workdir.resolve()
        self.local_artifacts = self.local_artifacts.resolve() if self.local_artifacts else None
        self.children = Children(self.workdir / "logs")
        self._reader: BranchReader | None = None

    @property
    def bare(self) -> Path:
        return self.workdir / "fleet.git"

    @property
    def work(self) -> Path:
        """The Git working tree the desired state is edited in and pushed from."""
        return self.workdir / "work"

    @property
    def key_file(self) -> Path:
        return self.workdir / "reconciler.key"

    # set-up

    def create(self, source: Path | None = None) -> None:
        """Make the workspace, the key and the repositories; copy `source` into the working tree."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.public_key = init_key(self.key_file).public_b64()
        git("init", "--quiet", "--bare", "--initial-branch", self.branch, str(self.bare), cwd=self.workdir)
        if source is not None:
            shutil.copytree(source, self.work, ignore=shutil.ignore_patterns(".git"))
        self.work.mkdir(exist_ok=True)
        git("init", "--quiet", "--initial-branch", self.branch, cwd=self.work)
        git("remote", "add", "origin", str(self.bare), cwd=self.work)

    def enroll(self) -> None:
        """Create every node's keys and write them into its Node document, as an operator would."""
        self.nodes = self.read_nodes()
        for info in self.nodes.values():
            signing, sealing = enroll_keys(StateDir(info.state_dir(self.workdir)))
            info.root(self.workdir).mkdir(parents=True, exist_ok=True)
            _insert_keys(self.work, info.name, signing=signing, sealing=sealing)

    def read_nodes(self) -> dict[str, NodeInfo]:
        desired = compile_desired(read_worktree_files(self.work))
        # nodes are read to be enrolled: that they are not yet is no reason to stop
        errors = [f for f in desired.findings if f.is_error and f.code != "unenrolled-node"]
        if errors or desired.model is None:
            problems = "\n".join(str(f) for f in errors)
            raise FleetError(f"the desired state in {self.work} is invalid:\n{problems}")
        repository = desired.model.repository
        self.state_branch, self.reports_prefix = repository.state_branch, repository.reports_prefix
        return {
            name: NodeInfo(
                name, node.address, any(r.kind == ResourceKind.NGINX for r in desired.nodes.get(name, ()))
            )
            for name, node in sorted(desired.model.nodes.items())
        }

    def publish(self, message: str) -> tuple[str, float]:
        """Commit the working tree and `git push` it; (commit, monotonic time just before the push)."""
        git("add", "--all", cwd=self.work)
        git("commit", "--quiet", "--allow-empty", "-m", message, cwd=self.work)
        commit = git("rev-parse", "HEAD", cwd=self.work)
        pushed_at = time.monotonic()
        git("push", "--quiet", "origin", f"HEAD:refs/heads/{self.branch}", cwd=self.work)
        return commit, pushed_at

    # processes

    def start(self) -> None:
        """nginx for the nodes that need one, then the reconciler, then one agent per node."""
        for info in self.nodes.values():
            if info.nginx and nginx_available():
                self._start_nginx(info)
        argv = [executable("plumb"), "reconcile", "--repo", str(self.bare), "--watch"]
        self.children.start(
            "reconciler", [*argv, "--interval", self.reconcile_interval, "--key-file", str(self.key_file)]
        )
        for info in self.nodes.values():
            self.start_agent(info.name)

    def start_agent(self, name: str) -> Child:
        info = self.nodes[name]
        argv = [executable("plumb-agent"), "run", "--repo", f"file://{self.bare}", "--node", name]
        argv += ["--reconciler-key", self.public_key, "--root", str(info.root(self.workdir))]
        argv += ["--state-dir", str(info.state_dir(self.workdir)), "--runtime", "process"]
        argv += ["--interval", self.agent_interval, "--state-branch", self.state_branch]
        argv += ["--reports-prefix", self.reports_prefix, "--nginx-binary", NGINX]  # never another nginx
        if self.local_artifacts is not None:
            argv += ["--local-artifacts", str(self.local_artifacts)]
        if info.nginx and nginx_available():
            argv += ["--nginx-config", str(self._nginx_config(info))]
            argv += ["--nginx-prefix", str(self._nginx_prefix(info))]
        return self.children.start(f"agent-{name}", argv)

    def _nginx_prefix(self, info: NodeInfo) -> Path:
        return info.root(self.workdir) / "var/lib/nginx"

    def _nginx_config(self, info: NodeInfo) -> Path:
        return info.root(self.workdir) / "etc/nginx/nginx.conf"

    def _start_nginx(self, info: NodeInfo) -> None:
        root, prefix = info.root(self.workdir), self._nginx_prefix(info)
        config = self._nginx_config(info)
        for directory in (prefix / "tmp", root / "etc/nginx/conf.d", config.parent):
            directory.mkdir(parents=True, exist_ok=True)
        config.write_text(nginx_main_config(root, prefix))
        self.children.start(f"nginx-{info.name}", [NGINX, "-p", str(prefix), "-c", str(config)])
        wait_for(lambda: (prefix / "nginx.pid").exists(), 10, f"nginx of {info.name} did not start")

    def stop(self) -> None:
        """Agents first (so nothing restarts), then their services, then nginx and the reconciler."""
        self.children.stop([c.name for c in self.children.started if c.name.startswith("agent-")])
        for info in self.nodes.values():
            stop_supervisors(info.state_dir(self.workdir))
        self.children.stop()

    # reading progress

    def repository(self) -> Any:
        """A fresh pygit2 Repository of the bare repository."""
        return pygit2.Repository(str(self.bare))

    @property
    def reader(self) -> BranchReader:
        if self._reader is None:
            self._reader = BranchReader(self.bare)
        return self._reader

    def progress(self) -> list[NodeProgress]:
        state_ref = f"refs/heads/{self.state_branch}"
        return [
            node_progress(
                self.reader, n, state_ref=state_ref, report_ref=f"refs/heads/{self.reports_prefix}{n}"
            )
            for n in self.nodes
        ]

    def source(self) -> dict[str, Any]:
        """status/source.json on the state branch: which desired commit was reconciled last."""
        return self.reader.read(f"refs/heads/{self.state_branch}", "status/source.json") or {}

    def planned(self) -> dict[str, int | None]:
        return {p.node: p.planned for p in self.progress()}

    def check_children(self) -> None:
        """Fail early, naming the log, when a process the fleet started died."""
        for child in self.children.dead():
            tail = child.log.read_text(errors="replace").strip().splitlines()[-5:]
            raise FleetError(
                f"{child.name} exited ({child.process.returncode}); {child.log}:\n" + "\n".join(tail)
            )

    def wait_applied(self, commit: str, before: Mapping[str, int | None], *, timeout: float) -> list[str]:
        """Wait until `commit` is reconciled and every node whose plan it changed reports it applied.

        Returns the nodes it changed (possibly none)."""
        deadline = time.monotonic() + timeout
        changed: list[str] | None = None
        while time.monotonic() < deadline:
            if changed is None and self.source().get("commit") == commit:
                after = self.planned()
                changed = [n for n, serial in after.items() if serial != before.get(n)]
                targets = {n: after[n] for n in changed}
            if changed is not None:
                done = {p.node: p.applied for p in self.progress()}
                if all((done.get(n) or 0) >= (targets[n] or 0) for n in changed):
                    return changed
            self.check_children()
            time.sleep(POLL)
        what = "reconciled" if changed is None else f"applied on {', '.join(changed)}"
        raise FleetError(f"commit {commit[:12]} was not {what} within {timeout:.0f} s")


def _insert_keys(work: Path, node: str, *, signing: str, sealing: str) -> None:
    """Add `spec.keys` to nodes/<node>.yaml (a block-style `spec:` mapping), replacing keys already there."""
    path = work / "nodes" / f"{node}.yaml"
    if not path.exists():
        raise FleetError(f"expected the Node document of {node} in nodes/{node}.yaml")
    text = re.sub(r"(?m)^  # An example enrollment.*\n(  # .*\n)*", "", path.read_text())
    text = re.sub(r"(?m)^  keys:.*\n(    .*\n)*", "", text)
    block = f"  keys:\n    signing: {signing}\n    sealing: {sealing}\n"
    text, count = re.subn(r"(?m)^spec:[ \t]*\n", lambda m: m.group(0) + block, text, count=1)
    if count != 1:
        raise FleetError(f"nodes/{node}.yaml: no block-style `spec:` to add the node's keys to")
    path.write_text(text)


def nginx_available() -> bool:
    return Path(NGINX).is_file() and os.access(NGINX, os.X_OK)


def nginx_main_config(root: Path, prefix: Path) -> str:
    """A private nginx: everything under the node's root, sites from `<root>/etc/nginx/conf.d`."""
    temps = "".join(
        f"  {kind}_temp_path {prefix}/tmp/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        "# Written by plumb demo: a private nginx for one node; the agent manages conf.d.\n"
        f"daemon off;\nworker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log;\n"
        "events { worker_connections 256; }\n"
        f"http {{\n  access_log off;\n{temps}  include {root}/etc/nginx/conf.d/*.conf;\n}}\n"
    )


def wait_for(condition: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise FleetError(message)
        time.sleep(0.05)


# -- the shop --------------------------------------------------------------------------------------

PROGRAMS = resources.files("demo") / "programs"  # package data: the programs the fleet runs
_VERSION_LINE = 'VERSION = "0.0.0"'
REDIS_SERVER = "/usr/bin/redis-server"
DEMO_HEARTBEAT = "5s"


def build_artifact(directory: Path, service: str, version: str) -> tuple[str, str]:
    """A reproducible tar.gz holding an executable `bin/server`; (file:// url, sha256)."""
    script = PROGRAMS.joinpath("api_server.py").read_text().replace(_VERSION_LINE, f'VERSION = "{version}"')
    return pack_server(directory / f"{service}-{version}.tar.gz", script)


def pack_server(path: Path, script: str) -> tuple[str, str]:
    """Write a reproducible tar.gz at `path` holding `script` as executable `bin/server`; (url, sha256)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = script.encode()
    member = tarfile.TarInfo("bin/server")
    member.size, member.mode, member.mtime = len(data), 0o755, 0
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(member, io.BytesIO(data))
    path.write_bytes(raw.getvalue())
    return path.as_uri(), hashlib.sha256(raw.getvalue()).hexdigest()


@dataclass(frozen=True)
class ShopSetup:
    """What `prepare_shop` did to the demo's copy of examples/shop, to be said on screen."""

    edge_port: int
    artifacts: tuple[str, ...]
    notes: tuple[str, ...]


def prepare_shop(work: Path, artifacts: Path) -> ShopSetup:
    """Make the copy in `work` runnable on this machine: real artifacts, a free edge port, stand-ins."""
    built = [_point_release(path, artifacts) for path in sorted((work / "releases").glob("*.yaml"))]
    edges = [n for n in _node_addresses(work) if n[0].startswith("edge")]
    port = free_port([address for _, address in edges])
    _sub(work / "services/api.yaml", r"(\{type: ingress, params: \{host: [^}]*?)\}", rf"\1, port: {port}}}")
    notes = [f"the edges listen on port {port} of their own addresses (a free port; 80 on real hosts)"]
    _sub(work / "plumb.yaml", r"(?m)^(  heartbeat: *).*$", rf"\g<1>{DEMO_HEARTBEAT}")
    notes.append(f"agents report at least every {DEMO_HEARTBEAT} (heartbeat), so readiness shows up quickly")
    if not Path(REDIS_SERVER).is_file():
        _redis_standin(work / "templates/redis.yaml")
        notes.append(
            f"capability missing: {REDIS_SERVER} is not installed (apt-get install redis-server); "
            "this demo's copy runs a small stand-in that answers PING instead"
        )
    return ShopSetup(edge_port=port, artifacts=tuple(built), notes=tuple(notes))


def _point_release(path: Path, artifacts: Path) -> str:
    text = path.read_text()
    service = re.search(r"(?m)^  service: *(\S+)", text)
    version = re.search(r"(?m)^  version: *(\S+)", text)
    if service is None or version is None:
        raise FleetError(f"{path}: no spec.service / spec.version to build an artifact for")
    url, sha256 = build_artifact(artifacts, service.group(1), version.group(1).strip("\"'"))
    text = _sub_text(path, text, r"(?m)^(    url: *).*$", rf"\g<1>{url}")
    path.write_text(_sub_text(path, text, r"(?m)^(    sha256: *).*$", rf"\g<1>{sha256}"))
    return f"{service.group(1)} {version.group(1)}: {Path(url[len('file://') :]).name} sha256 {sha256[:12]}"


def _redis_standin(template: Path) -> None:
    lines = PROGRAMS.joinpath("redis_standin.py").read_text().splitlines()
    script = "".join(f"          {line}\n" if line else "\n" for line in lines)
    resource = (
        '    - file:\n        path: "/opt/redis-standin/server.py"\n        mode: "0644"\n'
        f"        content: |\n{script}"
    )
    text = _sub_text(template, template.read_text(), r"(?m)^    - unit:\n", lambda m: resource + m.group(0))
    text = _sub_text(
        template,
        text,
        r"/usr/bin/redis-server (.+?) --daemonize no",
        r"/usr/bin/python3 opt/redis-standin/server.py \1",
    )
    template.write_text(text)


def _node_addresses(work: Path) -> list[tuple[str, str]]:
    found = []
    for path in sorted((work / "nodes").glob("*.yaml")):
        address = re.search(r"(?m)^  address: *(\S+)", path.read_text())
        if address is not None:
            found.append((path.stem, address.group(1)))
    return found


def _sub(path: Path, pattern: str, replacement: str) -> None:
    path.write_text(_sub_text(path, path.read_text(), pattern, replacement))


def _sub_text(path: Path, text: str, pattern: str, replacement: str | Callable[[re.Match[str]], str]) -> str:
    """Replace exactly one match, or say which file no longer looks as the demo expects."""
    result, count = re.subn(pattern, replacement, text, count=1)
    if count != 1:
        raise FleetError(f"{path}: the demo expected to find /{pattern}/ here; has the example changed?")
    return result


def bump_workers(work: Path) -> int:
    """The change the demo pushes: one more worker for the API (its config, so its instances restart)."""
    path = work / "services/api.yaml"
    text = path.read_text()
    current = re.search(r"params: \{port: (\d+)(?:, workers: (\d+))?\}", text)
    if current is None:
        raise FleetError(f"{path}: expected `params: {{port: N}}` to add workers to")
    workers = int(current.group(2) or 2) + 1
    path.write_text(
        text.replace(current.group(0), f"params: {{port: {current.group(1)}, workers: {workers}}}")
    )
    return workers


@dataclass(frozen=True)
class Answer:
    """What an HTTP GET through an edge got back."""

    status: int
    body: str


def http_get(address: str, port: int, *, host: str, path: str = "/") -> Answer:
    """GET http://address:port/path with a Host header (what `curl -H 'Host: …'` does)."""
    request = urllib.request.Request(f"http://{address}:{port}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return Answer(response.status, response.read().decode(errors="replace"))
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.read().decode(errors="replace"))
    except (urllib.error.URLError, OSError) as error:
        return Answer(0, str(getattr(error, "reason", error)))


def ensure_runnable() -> list[str]:
    """Capabilities the fleet needs or would like; raises for what it cannot do without, else notes."""
    if shutil.which("git") is None:
        raise UsageError("git is not installed (apt-get install git)")
    if not Path("/usr/bin/python3").is_file():
        raise UsageError("/usr/bin/python3 is missing: the shop's units run it")
    if nginx_available():
        return []
    return [
        f"capability missing: nginx ({NGINX}) is not installed (apt-get install nginx-light): the edges get "
        "their site files but nothing serves them, and the demo cannot curl through an edge"
    ]


# -- a generated fleet of tiny services (benchmarks and tests) ------------------------------------

TINY_TEMPLATE = """\
apiVersion: plumb/v1
kind: Template
metadata: {name: tiny}
spec:
  description: A config file and a process that is restarted when it changes
  parameters:
    type: object
    additionalProperties: false
    required: [message]
    properties: {message: {type: string}}
  health:
    liveness: {process: {}, period: 10s}
  resources:
    - file: {path: /etc/tiny/message.txt, mode: "0644", content: "{{ params.message }}\\n"}
    - unit:
        name: tiny.service
        restartOn: [/etc/tiny/message.txt]
        content: |
          [Service]
          WorkingDirectory=/
          ExecStart=/bin/sleep infinity
          Restart=on-failure
"""


def tiny_fleet(work: Path, count: int, *, message: str = "hello") -> list[str]:
    """Write a desired state of `count` nodes (127.0.1.x) that each run the `tiny` service; their names."""
    names = [f"node-{i:02d}" for i in range(1, count + 1)]
    for directory in ("nodes", "templates", "services"):
        (work / directory).mkdir(parents=True, exist_ok=True)
    (work / "plumb.yaml").write_text(
        "apiVersion: plumb/v1\nkind: Repository\nmetadata: {name: tiny}\n"
        "spec: {allowedPaths: [/etc/tiny, /etc/systemd/system], heartbeat: 30s}\n"
    )
    for index, name in enumerate(names, start=1):
        (work / "nodes" / f"{name}.yaml").write_text(
            f"apiVersion: plumb/v1\nkind: Node\nmetadata: {{name: {name}, labels: {{role: tiny}}}}\n"
            f"spec:\n  address: 127.0.1.{index}\n"
        )
    (work / "templates/tiny.yaml").write_text(TINY_TEMPLATE)
    set_tiny_message(work, message)
    return names


def set_tiny_message(work: Path, message: str) -> None:
    """The tiny service's one parameter: changing it rewrites a file and restarts a unit on every node."""
    (work / "services/tiny.yaml").write_text(
        "apiVersion: plumb/v1\nkind: Service\nmetadata: {name: tiny}\nspec:\n  template: tiny\n"
        f"  params: {{message: {json.dumps(message)}}}\n  placement: {{selector: {{role: tiny}}}}\n"
    )
