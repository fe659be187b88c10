"""Reconcile benchmarks: a cold pass, a pass after a one-service change, and a no-op pass (`make bench`)."""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from pathlib import Path

import pygit2
import structlog

from bench.generate import generate, node_signing_key
from contract.crypto import SigningKey
from contract.defaults import API_VERSION, REPORT_KIND, REPORTS_PREFIX
from contract.documents import sign_document
from reconciler.cli.commands.reconcile import settle_caches
from reconciler.drivers.statestore import LocalLocation
from reconciler.reconcile import PassResult, Reconciler

NODES, SERVICES = 1000, 2000
SIGNATURE = pygit2.Signature("bench", "bench@plumb.invalid", 1_700_000_000, 0)


def _tree(repo: pygit2.Repository, directory: Path) -> pygit2.Oid:
    builder = repo.TreeBuilder()
    for path in sorted(directory.iterdir()):
        if path.is_dir():
            builder.insert(path.name, _tree(repo, path), pygit2.GIT_FILEMODE_TREE)
        else:
            builder.insert(path.name, repo.create_blob(path.read_bytes()), pygit2.GIT_FILEMODE_BLOB)
    return builder.write()


def commit_directory(repo: pygit2.Repository, directory: Path, message: str) -> str:
    """Commit the whole of `directory` on main, on top of main's tip."""
    ref = repo.references.get("refs/heads/main")
    parents = [ref.target] if ref is not None else []
    oid = repo.create_commit(None, SIGNATURE, SIGNATURE, message, _tree(repo, directory), parents)
    repo.references.create("refs/heads/main", oid, force=True)
    return str(oid)


def change_one_service(root: Path) -> None:
    """Move the first service to another port, as a developer's one-line commit would."""
    path = sorted((root / "services").glob("*.yaml"))[0]
    text = path.read_text()
    port = re.search(r"port: (\d+)", text)
    if port is None:
        raise RuntimeError(f"{path}: no port parameter")
    path.write_text(text.replace(port.group(0), f"port: {int(port.group(1)) + 40000}", 1))


def push_report(repo: pygit2.Repository, node: str) -> None:
    """What an agent's heartbeat looks like to the reconciler: a new commit on its report branch."""
    report = {
        "apiVersion": API_VERSION, "kind": REPORT_KIND, "node": node, "time": "2030-01-01T00:00:00Z",
        "agentVersion": "bench", "applied": None, "resources": [], "drift": [], "instances": [],
        "capabilities": [],
    }  # fmt: skip
    signed = sign_document(report, node_signing_key(node))
    builder = repo.TreeBuilder()
    builder.insert("report.json", repo.create_blob(json.dumps(signed).encode()), pygit2.GIT_FILEMODE_BLOB)
    oid = repo.create_commit(None, SIGNATURE, SIGNATURE, "report", builder.write(), [])
    repo.references.create(f"refs/heads/{REPORTS_PREFIX}{node}", oid, force=True)


def timed(reconciler: Reconciler) -> tuple[float, PassResult]:
    """One pass as `plumb reconcile --watch` runs it: settling the caches after work is part of it."""
    start = time.perf_counter()
    result = reconciler.reconcile()
    if not result.skipped:
        settle_caches()
    return time.perf_counter() - start, result


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory(prefix="plumb-bench-") as tmp:
        root, git = Path(tmp) / "fleet", Path(tmp) / "fleet.git"
        generate(root, nodes=NODES, services=SERVICES, seed=0)
        repo = pygit2.init_repository(str(git), bare=True)
        commit_directory(repo, root, "fleet")
        reconciler = Reconciler(LocalLocation(git), key=SigningKey.generate())
        fleet = f"({NODES} nodes, {SERVICES} services)"
        seconds, result = timed(reconciler)
        assert result.ok and result.written, result.findings[:3]
        print(f"reconcile: cold {fleet}  {seconds:.2f} s  ({len(result.changed_nodes)} plans written)")
        change_one_service(root)
        commit_directory(repo, root, "one service changed")
        seconds, result = timed(reconciler)
        assert result.written
        print(
            f"reconcile: one-service change  {seconds:.3f} s  ({len(result.changed_nodes)} plans rewritten)"
        )
        seconds, result = timed(reconciler)
        assert result.written is None
        print(f"reconcile: no-op  {seconds * 1000:.1f} ms")
        push_report(repo, sorted(p.stem for p in (root / "nodes").glob("*.yaml"))[0])
        seconds, result = timed(reconciler)
        print(f"reconcile: one new report (heartbeat)  {seconds:.3f} s")


if __name__ == "__main__":
    main()
