"""Agent benchmark: a first apply, converged runs, and an apply restarting every unit, over 300 resources."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pygit2
import structlog

from agent.apply.runtimes.process import ProcessRuntime
from agent.cli import enroll_keys
from agent.host.nginxctl import Nginx
from agent.host.paths import Confinement
from agent.loop.runner import Agent, AgentOptions
from agent.loop.state import StateDir
from contract.crypto import SigningKey
from contract.documents import resource_digest, resources_digest, sign_document, to_file_json

NODE = "bench-1"
NGINX = "/usr/sbin/nginx"
RUNS = 5
ALLOWED = ["/etc/plumb", "/etc/nginx/conf.d", "/etc/systemd/system", "/srv"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _entry(kind: str, rid: str, spec: dict[str, Any], after: list[str] | None = None) -> dict[str, Any]:
    digest = resource_digest(kind, spec)
    return {"id": rid, "kind": kind, "service": "bench", "spec": spec, "digest": digest, "after": after or []}


def resources(*, files: int, units: int, sites: int, port: int) -> list[dict[str, Any]]:
    """A plan's resources: files in a few directories, `sleep` units, and nginx sites."""
    entries = [
        _entry("directory", f"directory:/srv/app{d}", {"path": f"/srv/app{d}", "mode": "0755"})
        for d in range(4)
    ]
    for index in range(files):
        path = f"/srv/app{index % 4}/file{index:03}.conf"
        spec = {"path": path, "mode": "0644", "content": f"# file {index}\nkey = {index}\n" * 20}
        entries.append(_entry("file", f"file:{path}", spec, [f"directory:/srv/app{index % 4}"]))
    for index in range(units):
        content = (
            f"[Unit]\nDescription=bench {index}\n[Service]\nExecStart=/bin/sleep 3600\nRestart=on-failure\n"
        )
        entries.append(
            _entry(
                "unit", f"unit:bench{index}.service", {"name": f"bench{index}.service", "content": content}
            )
        )
    for index in range(sites):
        body = f"server {{ listen 127.0.0.1:{port}; server_name site{index}.test; return 200 'site'; }}\n"
        entries.append(_entry("nginx", f"nginx:site{index}", {"site": f"site{index}", "content": body}))
    return entries


def plan(entries: list[dict[str, Any]], key: SigningKey, *, serial: int = 1) -> dict[str, Any]:
    document = {
        "apiVersion": "plumb/v1",
        "kind": "NodePlan",
        "node": NODE,
        "serial": serial,
        "source": {"commit": "b" * 40},
        "expires": (datetime.now(UTC) + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "allowedPaths": ALLOWED,
        "heartbeat": 3600,
        "resources": entries,
        "digest": resources_digest(entries),
    }
    return sign_document(document, key)


def publish(origin: Path, document: dict[str, Any]) -> None:
    repo = pygit2.init_repository(str(origin), bare=True)
    blob = repo.create_blob(to_file_json(document))
    plans = repo.TreeBuilder()
    plans.insert(f"{NODE}.json", blob, pygit2.enums.FileMode.BLOB)
    root = repo.TreeBuilder()
    root.insert("plans", plans.write(), pygit2.enums.FileMode.TREE)
    who = pygit2.Signature("bench", "bench@plumb.invalid")
    tip = repo.references.get("refs/heads/plumb/state")
    parents = [tip.target] if tip is not None else []
    repo.create_commit("refs/heads/plumb/state", who, who, "plan", root.write(), parents)


def units_changed(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same resources with every unit file changed, so that an apply restarts every unit."""
    return [
        _entry("unit", e["id"], {**e["spec"], "content": e["spec"]["content"] + "# changed\n"})
        if e["kind"] == "unit"
        else e
        for e in entries
    ]


@contextlib.contextmanager
def running_nginx(base: Path, sites: Path) -> Iterator[Nginx | None]:
    """A private nginx master including `sites`, or None when nginx is not installed."""
    if not Path(NGINX).exists():
        yield None
        return
    prefix = base / "nginx"
    for name in ("logs", "tmp"):
        (prefix / name).mkdir(parents=True)
    config = prefix / "nginx.conf"
    config.write_text(
        f"pid {prefix}/nginx.pid;\nerror_log {prefix}/logs/error.log;\nevents {{ worker_connections 64; }}\n"
        f"http {{ access_log off; client_body_temp_path {prefix}/tmp/cb; proxy_temp_path {prefix}/tmp/p;\n"
        f"fastcgi_temp_path {prefix}/tmp/f; uwsgi_temp_path {prefix}/tmp/u; scgi_temp_path {prefix}/tmp/s;\n"
        f"include {sites}/*.conf; }}\n"
    )
    subprocess.run([NGINX, "-p", str(prefix), "-c", str(config)], check=True)
    try:
        yield Nginx(binary=NGINX, config=config, prefix=prefix)
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((prefix / "nginx.pid").read_text()), signal.SIGQUIT)


def _timed(action: Any) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def _stop_units(options: AgentOptions) -> None:
    runtime = ProcessRuntime(
        confinement=Confinement.create(root=options.root, allowed=["/"]), state_dir=options.state_dir
    )
    supervise = options.state_dir / "supervise"
    for directory in supervise.iterdir() if supervise.is_dir() else []:
        runtime.stop(directory.name)


def measure(base: Path, *, files: int, units: int, sites: int) -> None:
    root, origin = base / "root", base / "origin.git"
    (root / "etc/nginx/conf.d").mkdir(parents=True)
    enroll_keys(StateDir(base / "state"))
    key = SigningKey.generate()
    with running_nginx(base, root / "etc/nginx/conf.d") as nginx:
        sites = sites if nginx is not None else 0
        entries = resources(files=files + (0 if nginx else 50), units=units, sites=sites, port=_free_port())
        publish(origin, plan(entries, key))
        options = AgentOptions(
            node=NODE,
            repo_url=f"file://{origin}",
            reconciler_key=key.verify_key(),
            root=root,
            state_dir=base / "state",
            runtime="process",
            nginx=nginx,
        )
        try:
            _report(options, len(entries), files, units, sites)
            publish(origin, plan(units_changed(entries), key, serial=2))
            restart = _timed(lambda: Agent(options).run(once=True))
            print(f"agent: apply restarting all {units} units  {restart:.2f} s")
        finally:
            _stop_units(options)


def _report(options: AgentOptions, total: int, files: int, units: int, sites: int) -> None:
    first = _timed(lambda: Agent(options).run(once=True))
    print(f"agent: first apply of {total} resources ({units} units, {sites} nginx sites)  {first:.2f} s")
    fresh = [_timed(lambda: Agent(options).run(once=True)) for _ in range(RUNS)]
    median = statistics.median(fresh)
    print(f"agent: converged run --once over {total} resources  {median:.3f} s (median of {RUNS})")
    agent = Agent(options)
    agent.run(once=True)
    cycles = [_timed(agent.cycle) for _ in range(RUNS)]
    print(f"agent: converged cycle of a running agent  {statistics.median(cycles):.3f} s (median of {RUNS})")


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    base = Path(tempfile.mkdtemp(prefix="plumb-bench-agent-"))
    try:
        measure(base, files=196, units=50, sites=50)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
