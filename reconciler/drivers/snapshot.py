"""The fleet as the state and report branches show it at one moment, read from Git without a checkout."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pygit2
import yaml

from contract.crypto import VerifyKey
from contract.defaults import MAX_PLAN_BYTES
from contract.documents import parse_json_document
from contract.errors import ContractError, UsageError
from contract.transport.gitread import read_blob
from reconciler.core.compile.model import seconds
from reconciler.core.decide.status import ReceivedReport
from reconciler.core.decide.trust import MANIFEST_PATH, verified_manifest
from reconciler.drivers.reports import read_report

DEFAULT_OFFLINE_AFTER = 120
JsonObject = dict[str, Any]


@dataclass(frozen=True)
class Snapshot:
    """Everything `plumb status` shows, as read from the repository at one moment."""

    repository: str
    state_ref: str
    state_commit: str
    state_time: datetime
    documents: Mapping[str, JsonObject]  # status/... path -> document
    reports: Mapping[str, ReceivedReport]
    offline_after: int
    verified: bool | None = None  # None: no reconciler key given; else whether its manifest verified
    unverified: tuple[str, ...] = ()  # status documents left out: not vouched for by the manifest

    def under(self, prefix: str) -> list[JsonObject]:
        return [doc for path, doc in sorted(self.documents.items()) if path.startswith(prefix)]


def read_snapshot(
    path: Path, *, state_branch: str, reports_prefix: str, reconciler_key: VerifyKey | None = None
) -> Snapshot:
    """Read the state branch's status documents and every node's latest report (local or remote-tracking).

    With the reconciler's public key, only documents its signed manifest vouches for are kept."""
    repo = _open(path)
    state_ref = _find_ref(repo, state_branch)
    if state_ref is None:
        raise UsageError(
            f"{path}: no state branch {state_branch!r} yet; run `plumb reconcile --repo {path}` first "
            "(or fetch it into this clone)"
        )
    commit = repo.references[state_ref].peel(pygit2.Commit)
    documents, blobs = _status_documents(repo, commit.tree)
    verified: bool | None = None
    dropped: tuple[str, ...] = ()
    if reconciler_key is not None:
        manifest = verified_manifest(documents.get(MANIFEST_PATH), reconciler_key)
        verified = manifest is not None
        dropped = tuple(
            p
            for p in sorted(documents)
            if p != MANIFEST_PATH and not (manifest and manifest.vouches(p, blobs[p]))
        )
        documents = {p: d for p, d in documents.items() if p not in dropped}
    source = documents.get("status/source.json") or {}
    nodes = [str(d.get("node")) for p, d in documents.items() if p.startswith("status/nodes/")]
    return Snapshot(
        repository=str(path),
        state_ref=state_ref,
        state_commit=str(commit.id),
        state_time=datetime.fromtimestamp(commit.commit_time, UTC),
        documents=documents,
        reports=_reports(repo, reports_prefix, nodes),
        offline_after=_offline_after(repo, source.get("commit")),
        verified=verified,
        unverified=dropped,
    )


def _open(path: Path) -> pygit2.Repository:
    try:
        found = pygit2.discover_repository(str(path))
        if found is None:
            raise UsageError(f"{path}: not a Git repository (give the fleet's repository with --repo)")
        return pygit2.Repository(found)
    except pygit2.GitError as exc:
        raise UsageError(f"{path}: cannot open the Git repository: {exc}") from exc


def _find_ref(repo: pygit2.Repository, branch: str, names: Sequence[str] | None = None) -> str | None:
    """The local branch, else a remote-tracking one (`refs/remotes/<remote>/<branch>`) of a clone."""
    if f"refs/heads/{branch}" in repo.references:
        return f"refs/heads/{branch}"
    names = names if names is not None else _remote_refs(repo)
    remote = sorted(r for r in names if r.split("/", 3)[-1] == branch)
    return remote[0] if remote else None


def _remote_refs(repo: pygit2.Repository) -> list[str]:
    return [r for r in repo.references if r.startswith("refs/remotes/")]


def _status_documents(
    repo: pygit2.Repository, tree: pygit2.Tree
) -> tuple[dict[str, JsonObject], dict[str, str]]:
    """The status documents that parse within the contract's bounds (any other file is left out),
    and their object ids."""
    documents: dict[str, JsonObject] = {}
    blobs: dict[str, str] = {}
    if "status" not in tree:
        return documents, blobs
    for path, blob in _blobs(tree["status"].peel(pygit2.Tree), "status/"):
        with contextlib.suppress(ContractError):
            data = read_blob(repo, blob.id, what=path, limit=MAX_PLAN_BYTES)
            documents[path] = parse_json_document(data, what=path, limit=MAX_PLAN_BYTES)
            blobs[path] = str(blob.id)
    return documents, blobs


def _blobs(tree: pygit2.Tree, prefix: str) -> Iterator[tuple[str, pygit2.Blob]]:
    for entry in tree:
        if isinstance(entry, pygit2.Tree):
            yield from _blobs(entry, f"{prefix}{entry.name}/")
        elif isinstance(entry, pygit2.Blob) and str(entry.name).endswith(".json"):
            yield f"{prefix}{entry.name}", entry


def _reports(repo: pygit2.Repository, prefix: str, nodes: Sequence[str]) -> dict[str, ReceivedReport]:
    """Each node's latest report, for its age and applied serial (the reconciler checked signatures)."""
    found: dict[str, ReceivedReport] = {}
    remote = _remote_refs(repo)
    for node in nodes:
        ref = _find_ref(repo, prefix + node, remote)
        if ref is not None:
            tip = str(repo.references[ref].resolve().target)
            found[node] = read_report(repo, node=node, tip=tip, signing_key=None, verify=False)
    return found


def _offline_after(repo: pygit2.Repository, commit: Any) -> int:
    """`offlineAfter` of plumb.yaml in the reconciled desired commit, or the default."""
    try:
        tree = repo[str(commit)].peel(pygit2.Commit).tree
        spec = yaml.safe_load(tree["plumb.yaml"].peel(pygit2.Blob).data).get("spec") or {}
        return seconds(spec.get("offlineAfter"), DEFAULT_OFFLINE_AFTER)
    except (KeyError, ValueError, TypeError, AttributeError, pygit2.GitError, yaml.YAMLError):
        return DEFAULT_OFFLINE_AFTER
