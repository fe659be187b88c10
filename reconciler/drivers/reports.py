"""Node reports from `plumb/reports/<node>` branches: read `report.json` at each tip and check its signature.

Anyone who can push one node's report may be able to push every report branch, so a report is
hostile until verified: read with limits (object size from its header, JSON depth, integer size),
then its signature checked with the key the node enrolled (`spec.keys.signing`), and only then
its shape. A node without an enrolled key has no report believed (validation makes that an error
for any node with services). A report that does not verify or breaks `schemas/report.schema.json`
is ignored and the node's status says why, so one broken or hostile node cannot stop the reconciler
or speak for another. Reports are cached by branch tip, so an unchanged branch costs a ref lookup.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import pygit2
from jsonschema.exceptions import best_match

from contract.crypto import VerifyKey
from contract.defaults import MAX_REPORT_BYTES, REPORT_KIND
from contract.documents import parse_json_document, verify_document
from contract.errors import ContractError
from contract.report import parse_report
from contract.transport.gitread import read_file
from reconciler.core.compile import schemas
from reconciler.core.decide.status import ReceivedReport

REPORT_FILE = "report.json"


def report_tips(repo: pygit2.Repository, prefix: str) -> dict[str, str]:
    """node -> commit id of every report branch under `refs/heads/<prefix>`."""
    base = "refs/heads/" + prefix
    tips: dict[str, str] = {}
    for name in repo.listall_references():
        if name.startswith(base) and "/" not in name[len(base) :]:
            ref = repo.references.get(name)
            if ref is not None:
                tips[name[len(base) :]] = str(ref.resolve().target)
    return tips


class _Read(NamedTuple):
    """One node's report as read at a branch tip, checked with the node's signing key at that time."""

    tip: str
    signing_key: str | None
    report: ReceivedReport


@dataclass
class ReportCache:
    """The last report read per node, with the tip and signing key it was read for."""

    seen: dict[str, _Read] = field(default_factory=dict)


def read_reports(
    repo: pygit2.Repository,
    *,
    tips: Mapping[str, str],
    keys: Mapping[str, str | None],
    cache: ReportCache,
) -> dict[str, ReceivedReport]:
    """The latest report of every node that has a branch and is in the desired state."""
    reports: dict[str, ReceivedReport] = {}
    for node, tip in tips.items():
        if node not in keys:
            continue
        hit = cache.seen.get(node)
        if hit is None or (hit.tip, hit.signing_key) != (tip, keys[node]):
            hit = _Read(tip, keys[node], read_report(repo, node=node, tip=tip, signing_key=keys[node]))
            cache.seen[node] = hit
        reports[node] = hit.report
    return reports


def read_report(
    repo: pygit2.Repository, *, node: str, tip: str, signing_key: str | None, verify: bool = True
) -> ReceivedReport:
    """One report: bounded read, signature by the node's enrolled key, then shape and node name.

    `verify=False` only for showing what a branch holds where no key is at hand (`plumb status`
    shows the age of a report whose signature the reconciler already checked)."""
    try:
        document, others = _load(repo, tip, node)
        if verify:
            if signing_key is None:
                raise ContractError(
                    f"{node} has no enrolled signing key, so its report is not believed; run "
                    f"`plumb-agent enroll --node {node}` on it and add the keys to nodes/{node}.yaml"
                )
            _verify(document, node, signing_key)
        _check_shape(document, node)
        report = parse_report(document)
    except ContractError as exc:
        return ReceivedReport(node=node, report=None, problem=str(exc))
    warning = f"the report commit also holds {', '.join(others)}, which no agent writes" if others else None
    return ReceivedReport(node=node, report=report, verified=verify, warning=warning)


def _verify(document: dict[str, object], node: str, signing_key: str) -> None:
    try:
        verify_document(document, VerifyKey.from_b64(signing_key), what=f"report of {node}")
    except ContractError as exc:
        raise ContractError(
            f"{exc}; if {node} was enrolled again, put the keys `plumb-agent enroll` prints "
            f"into nodes/{node}.yaml"
        ) from exc


def _load(repo: pygit2.Repository, tip: str, node: str) -> tuple[dict[str, object], list[str]]:
    """The report document, and the names of anything else the commit's tree holds."""
    try:
        tree = repo[tip].peel(pygit2.Commit).tree
    except (KeyError, ValueError, pygit2.GitError) as exc:
        raise ContractError(f"report branch of {node} has no commit to read") from exc
    others = [str(e.name) for e in itertools.islice(tree, 6) if e.name != REPORT_FILE][:5]
    data = read_file(repo, tree, REPORT_FILE, what=f"report of {node}", limit=MAX_REPORT_BYTES)
    if data is None:
        raise ContractError(f"report branch of {node} has no {REPORT_FILE}")
    return parse_json_document(data, what=f"report of {node}", limit=MAX_REPORT_BYTES), others


def _check_shape(document: dict[str, object], node: str) -> None:
    if document.get("kind") != REPORT_KIND or document.get("node") != node:
        raise ContractError(f"report of {node} is not a NodeReport for {node}")
    if not schemas.is_valid("report", document):
        error = best_match(schemas.validator("report").iter_errors(document))
        where = "/".join(str(p) for p in error.absolute_path) if error else ""
        raise ContractError(
            f"report of {node} breaks the report schema at {where or '/'}: {error and error.message}"
        )
