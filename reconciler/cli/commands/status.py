"""`plumb status`: the fleet as the state and report branches show it, read from Git without a checkout."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import pygit2
import yaml
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from contract.defaults import REPORTS_PREFIX, STATE_BRANCH
from contract.errors import PlumbError, UsageError
from reconciler.cli.commands.common import fail
from reconciler.core.compile.model import seconds
from reconciler.core.decide.status import ReceivedReport, age_seconds, live_node, service_summary
from reconciler.drivers.reports import read_report

DEFAULT_OFFLINE_AFTER = 120
WATCH_PERIOD = 2.0
JsonObject = dict[str, Any]

COLOURS = {
    "online": "green",
    "running": "green",
    "ok": "green",
    "cordoned": "blue",
    "stopped": "blue",
    "pending": "yellow",
    "deploying": "yellow",
    "progressing": "yellow",
    "degraded": "yellow",
    "partially-degraded": "yellow",
    "offline": "red",
    "failed": "red",
    "invalid": "red",
}


# -- reading ---------------------------------------------------------------------------------------


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

    def under(self, prefix: str) -> list[JsonObject]:
        return [doc for path, doc in sorted(self.documents.items()) if path.startswith(prefix)]


def read_snapshot(path: Path, *, state_branch: str, reports_prefix: str) -> Snapshot:
    """Read the state branch's status documents and every node's latest report (local or remote-tracking)."""
    repo = _open(path)
    state_ref = _find_ref(repo, state_branch)
    if state_ref is None:
        raise UsageError(
            f"{path}: no state branch {state_branch!r} yet; run `plumb reconcile --repo {path}` first "
            "(or fetch it into this clone)"
        )
    commit = repo.references[state_ref].peel(pygit2.Commit)
    documents = _status_documents(commit.tree)
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


def _status_documents(tree: pygit2.Tree) -> dict[str, JsonObject]:
    documents: dict[str, JsonObject] = {}
    if "status" not in tree:
        return documents
    for path, blob in _blobs(tree["status"].peel(pygit2.Tree), "status/"):
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            value = json.loads(blob.data)
            if isinstance(value, dict):
                documents[path] = value
    return documents


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
            found[node] = read_report(repo, node=node, tip=tip, signing_key=None)
    return found


def _offline_after(repo: pygit2.Repository, commit: Any) -> int:
    """`offlineAfter` of plumb.yaml in the reconciled desired commit, or the default."""
    try:
        tree = repo[str(commit)].peel(pygit2.Commit).tree
        spec = yaml.safe_load(tree["plumb.yaml"].peel(pygit2.Blob).data).get("spec") or {}
        return seconds(spec.get("offlineAfter"), DEFAULT_OFFLINE_AFTER)
    except (KeyError, ValueError, TypeError, AttributeError, pygit2.GitError, yaml.YAMLError):
        return DEFAULT_OFFLINE_AFTER


# -- the views (JSON-ready) ------------------------------------------------------------------------


def fleet_view(snapshot: Snapshot, now: datetime) -> JsonObject:
    """Source, every node, service and application."""
    return {
        **_header(snapshot, now),
        "nodes": [_node(snapshot, doc, now) for doc in snapshot.under("status/nodes/")],
        "services": [service_summary(doc) for doc in snapshot.under("status/services/")],
        "apps": snapshot.under("status/apps/"),
    }


def node_view(snapshot: Snapshot, name: str, now: datetime) -> JsonObject:
    document = snapshot.documents.get(f"status/nodes/{name}.json")
    if document is None:
        raise UsageError(f"unknown node {name!r}; known: {_known(snapshot, 'status/nodes/')}")
    return {**_header(snapshot, now), "node": _node(snapshot, document, now)}


def service_view(snapshot: Snapshot, name: str, now: datetime) -> JsonObject:
    document = snapshot.documents.get(f"status/services/{name}.json")
    if document is None:
        raise UsageError(f"unknown service {name!r}; known: {_known(snapshot, 'status/services/')}")
    rollout = snapshot.documents.get(f"status/releases/{name}.json")
    return {**_header(snapshot, now), "service": service_summary(document), "rollout": rollout}


def _header(snapshot: Snapshot, now: datetime) -> JsonObject:
    return {
        "repository": snapshot.repository,
        "stateBranch": snapshot.state_ref,
        "stateCommit": snapshot.state_commit,
        "stateAge": age_seconds(snapshot.state_time, now),
        "source": snapshot.documents.get("status/source.json"),
    }


def _node(snapshot: Snapshot, document: Mapping[str, Any], now: datetime) -> JsonObject:
    report = snapshot.reports.get(str(document.get("node")))
    return live_node(document, report, now=now, offline_after=snapshot.offline_after)


def _known(snapshot: Snapshot, prefix: str) -> str:
    names = [p[len(prefix) : -len(".json")] for p in sorted(snapshot.documents) if p.startswith(prefix)]
    return ", ".join(names) or "none"


# -- rendering for people --------------------------------------------------------------------------


def render(view: Mapping[str, Any]) -> RenderableType:
    """The view as tables: the fleet, one node, or one service."""
    parts: list[RenderableType] = [_source(view)]
    if "node" in view:
        parts += _node_detail(view["node"])
    elif "service" in view:
        parts += _service_detail(view["service"], view.get("rollout"))
    else:
        parts += [_nodes_table(view["nodes"]), Text(""), _services_table(view["services"])]
        if view["apps"]:
            parts += [Text(""), _apps_table(view["apps"])]
    return Group(*parts)


def _state(value: Any) -> Text:
    text = str(value) if value is not None else "-"
    return Text(text, style=COLOURS.get(text, ""))


def _age(value: int | None) -> str:
    """12s, 3m05s, 2h10m, 4d3h; "never" for no report at all."""
    if value is None:
        return "never"
    if value < 60:
        return f"{value}s"
    if value < 3600:
        return f"{value // 60}m{value % 60:02d}s"
    if value < 86400:
        return f"{value // 3600}h{value % 3600 // 60:02d}m"
    return f"{value // 86400}d{value % 86400 // 3600}h"


def _short(commit: Any) -> str:
    return str(commit)[:12] if commit else "-"


def _source(view: Mapping[str, Any]) -> RenderableType:
    source = view.get("source") or {}
    state = f"state {_short(view['stateCommit'])} written {_age(view['stateAge'])} ago"
    line = Text("Source  ", style="bold")
    line.append(f"{source.get('branch', '?')} @ {_short(source.get('commit'))}  ")
    if source.get("ok", True):
        line.append_text(_state("ok"))
    else:
        line.append_text(_state("invalid"))
        line.append(f" (plans kept from {_short(source.get('lastGood'))})")
    line.append(f"   {state}", style="dim")
    findings = [Text(f"  {_finding(f)}", style=_finding_style(f)) for f in source.get("findings") or []]
    return Group(line, *findings, Text(""))


def _finding(finding: Mapping[str, Any]) -> str:
    where = f"{finding.get('path')}:{finding.get('line')}:{finding.get('column')}"
    field = f" {finding['field']}:" if finding.get("field") else ""
    warning = " warning:" if finding.get("severity") == "warning" else ""
    return f"{where}:{warning}{field} {finding.get('message')} [{finding.get('code')}]"


def _finding_style(finding: Mapping[str, Any]) -> str:
    return "yellow" if finding.get("severity") == "warning" else "red"


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=None, pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=column not in ("REASON", "WHY"))
    return table


def _nodes_table(nodes: Sequence[Mapping[str, Any]]) -> Table:
    table = _table("Nodes", "NODE", "STATE", "ADDRESS", "LAST REPORT", "APPLIED/PLAN", "PENDING", "DRIFT")
    for node in nodes:
        serials = f"{node['appliedSerial'] or '-'}/{node['planSerial'] or '-'}"
        table.add_row(
            str(node["node"]),
            _state(node["state"]),
            str(node["address"]),
            _age(node["reportAge"]) + (" ago" if node["reportAge"] is not None else ""),
            Text(serials, style="" if node["inSync"] else "yellow"),
            str(len(node["pending"])),
            str(len(node["drift"])),
        )
    return table


def _services_table(services: Sequence[Mapping[str, Any]]) -> Table:
    table = _table("Services", "SERVICE", "APP", "STATE", "ENDPOINTS", "VERSIONS", "REASON")
    for service in services:
        endpoints = f"{service['healthyEndpoints']}/{len(service.get('endpoints') or [])} healthy"
        table.add_row(
            str(service["service"]),
            str(service.get("app") or "-"),
            _state(service.get("state")),
            endpoints if service.get("endpoints") else "-",
            _versions(service["versions"]) or str(service.get("version") or "-"),
            str(service.get("reason") or ""),
        )
    return table


def _versions(versions: Mapping[str, int]) -> str:
    return ", ".join(f"{version} ×{count}" for version, count in versions.items())


def _apps_table(apps: Sequence[Mapping[str, Any]]) -> Table:
    table = _table("Applications", "APP", "STATE", "SERVICES", "REASON")
    for app in apps:
        services = ", ".join(app.get("services") or {})
        table.add_row(str(app["app"]), _state(app["state"]), services, str(app.get("reason") or ""))
    return table


def _node_detail(node: Mapping[str, Any]) -> list[RenderableType]:
    head = Text(f"Node {node['node']} ({node['address']}): ", style="bold")
    head.append_text(_state(node["state"]))
    head.append(f" — {node['reason']}")
    sync = "in sync" if node["inSync"] else "behind"
    age = _age(node["reportAge"]) + (" ago" if node["reportAge"] is not None else "")
    facts = f"  last report {age}; plan serial {node['planSerial']}, applied {node['appliedSerial']} ({sync})"
    parts: list[RenderableType] = [head, Text(facts), Text("")]
    if node.get("rejected"):
        parts.append(Text(f"  newest plan rejected: {node['rejected'].get('reason')}", style="red"))
    pending = _table("Pending actions", "ACTION", "TARGET", "WHY")
    for action in node["pending"]:
        pending.add_row(str(action.get("action")), str(action.get("target")), str(action.get("reason", "")))
    drift = _table("Drift", "RESOURCE", "WHAT", "CORRECTED")
    for item in node["drift"]:
        drift.add_row(str(item.get("id")), str(item.get("what")), "yes" if item.get("corrected") else "no")
    parts.append(pending if node["pending"] else Text("No pending actions."))
    parts.append(drift if node["drift"] else Text("No drift."))
    return parts


def _service_detail(service: Mapping[str, Any], rollout: Mapping[str, Any] | None) -> list[RenderableType]:
    head = Text(f"Service {service['service']}", style="bold")
    head.append(f" (app {service['app']}): " if service.get("app") else ": ", style="bold")
    head.append_text(_state(service.get("state")))
    head.append(f" — {service.get('reason', '')}")
    desired = f"  desired {service.get('desired', '-')}, version {service.get('version') or '-'}"
    placed = f", placed on {', '.join(service.get('nodes') or []) or 'no node'}"
    endpoints = _table("Endpoints", "NODE", "ADDRESS", "PORT", "NAME", "HEALTHY")
    for e in service.get("endpoints") or []:
        healthy = Text("yes", style="green") if e.get("healthy") else Text("no", style="red")
        endpoints.add_row(str(e["node"]), str(e["address"]), str(e["port"]), str(e["name"]), healthy)
    instances = _table("Instances", "NODE", "STATE", "READY", "VERSION", "SEEN")
    for i in service.get("instances") or []:
        seen = str(i.get("seen", "-"))
        instances.add_row(
            str(i["node"]), str(i["state"]), "yes" if i["ready"] else "no", str(i["version"] or "-"), seen
        )
    parts: list[RenderableType] = [head, Text(desired + placed), Text("")]
    parts += [endpoints if service.get("endpoints") else Text("No endpoints."), Text(""), instances, Text("")]
    return [*parts, _rollout(rollout)]


def _rollout(rollout: Mapping[str, Any] | None) -> RenderableType:
    if not rollout:
        return Text("No rollout recorded.")
    line = Text(f"Rollout {rollout.get('from') or '-'} → {rollout.get('to')}: ", style="bold")
    line.append_text(_state(rollout.get("phase")))
    batch = f"batch {int(rollout.get('batch', -1)) + 1}/{rollout.get('batchTotal')}"
    line.append(f", {batch}, {rollout.get('nodesDone')} node(s) done")
    reason = rollout.get("reason")
    return Group(line, *([Text(f"  {reason}", style="red")] if reason else []))


# -- the command -----------------------------------------------------------------------------------


@click.command()
@click.option(
    "--repo",
    "repo_path",
    default=".",
    show_default=True,
    type=click.Path(path_type=Path),
    help="The fleet's Git repository (bare, or a clone that fetched the plumb/* branches).",
)
@click.option("--node", metavar="NAME", help="Show one node: its pending actions, drift, rejected plan.")
@click.option("--service", metavar="NAME", help="Show one service: endpoints, instances, its rollout.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="table for people (colour on a terminal), json for machines.",
)
@click.option("--watch", is_flag=True, help=f"Redraw every {WATCH_PERIOD:.0f} s until Ctrl-C.")
@click.option("--state-branch", default=STATE_BRANCH, show_default=True, help="The state branch.")
@click.option(
    "--reports-prefix", default=REPORTS_PREFIX, show_default=True, help="Prefix of report branches."
)
def status(
    repo_path: Path,
    node: str | None,
    service: str | None,
    fmt: str,
    watch: bool,
    state_branch: str,
    reports_prefix: str,
) -> None:
    """Show the fleet: nodes, services, applications, rollouts and the desired commit last reconciled.

    Everything is read with Git from the repository (no checkout, nothing written): the status
    documents the reconciler keeps on the state branch, and each node's latest report for how long
    ago it reported and which plan serial it applied.

    \b
    Nodes     online, offline (no report within offlineAfter) or cordoned; LAST REPORT is
              computed now; APPLIED/PLAN is the serial the node applied against its plan's
              (yellow when behind); PENDING counts actions still to do, DRIFT changes made on
              the host that the agent found (and corrected).
    Services  pending, deploying, running, degraded (some instances unhealthy), failed (none
              ready) or stopped; ENDPOINTS counts the healthy ones the upstreams use;
              VERSIONS what the nodes run; REASON names the instances that are not ready.
    Apps      services sharing an `app` label, rolled up: running, deploying,
              partially-degraded or failed.
    Source    the desired commit reconciled last; when it was invalid, its findings as
              file:line:col, and the commit whose plans the nodes keep.

    \b
    Examples:
      plumb status --repo /srv/git/fleet.git
      plumb status --service api          # endpoints, instances, rollout phase and batch
      plumb status --node app-1           # pending actions and drift of one node
      plumb status --format json | jq '.services[] | select(.state != "running")'
      plumb status --watch

    Exit status: 0 shown, 1 error (no repository, no state branch yet, unknown node or service).
    """
    if node and service:
        fail(UsageError("give --node or --service, not both"))
    try:
        show = _shower(
            repo_path, node=node, service=service, fmt=fmt, branches=(state_branch, reports_prefix)
        )
        if watch:
            _watch(show, fmt)
        else:
            _print(show(), fmt)
    except PlumbError as error:
        fail(error)


def _shower(
    path: Path, *, node: str | None, service: str | None, fmt: str, branches: tuple[str, str]
) -> Callable[[], JsonObject]:
    """A function reading the repository afresh and returning the view asked for."""

    def show() -> JsonObject:
        snapshot = read_snapshot(path, state_branch=branches[0], reports_prefix=branches[1])
        now = datetime.now(UTC)
        if node:
            return node_view(snapshot, node, now)
        if service:
            return service_view(snapshot, service, now)
        return fleet_view(snapshot, now)

    return show


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def plain(renderable: RenderableType, *, width: int = 200) -> str:
    """What a terminal would show, without colour or trailing blanks (for pipes and files)."""
    console = Console(file=io.StringIO(), width=width, no_color=True, highlight=False, color_system=None)
    with console.capture() as captured:
        console.print(renderable)
    return "\n".join(line.rstrip() for line in captured.get().splitlines())


def _print(view: JsonObject, fmt: str, *, compact: bool = False) -> None:
    if fmt == "json":
        click.echo(json.dumps(view, sort_keys=True, indent=None if compact else 2))
    elif sys.stdout.isatty():
        _console().print(render(view))
    else:
        click.echo(plain(render(view)))


def _watch(show: Callable[[], JsonObject], fmt: str) -> None:
    """Redraw in place on a terminal; elsewhere print one view (one JSON line) per period."""
    try:
        if fmt == "table" and sys.stdout.isatty():
            with Live(render(show()), console=_console(), auto_refresh=False) as live:
                while True:
                    time.sleep(WATCH_PERIOD)
                    live.update(render(show()), refresh=True)
        while True:
            _print(show(), fmt, compact=True)
            sys.stdout.flush()
            time.sleep(WATCH_PERIOD)
    except KeyboardInterrupt:
        return
