"""`plumb status` views: a JSON-ready view of a fleet snapshot, and its rendering as rich tables."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from contract.errors import UsageError
from reconciler.core.decide.status import age_seconds, live_node, service_summary
from reconciler.core.decide.trust import ALERTS_PATH
from reconciler.drivers.snapshot import Snapshot

JsonObject = dict[str, Any]
ALERTS_SHOWN = 5

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
        "verified": snapshot.verified,
        "unverifiedDocuments": list(snapshot.unverified),
        "alerts": list((snapshot.documents.get(ALERTS_PATH) or {}).get("alerts") or []),
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
    return Group(line, *findings, *_trust(view), Text(""))


def _trust(view: Mapping[str, Any]) -> list[Text]:
    """Whether the status is the reconciler's own, and the latest alerts (all in --format json)."""
    verified, dropped = view.get("verified"), view.get("unverifiedDocuments") or []
    lines: list[Text] = []
    if verified is None:
        lines.append(
            Text("Trust   not verified: give --reconciler-key to check the status is signed", style="dim")
        )
    elif not verified:
        lines.append(
            Text("Trust   the state branch's manifest is not signed by this reconciler key", style="red")
        )
    if dropped:
        lines.append(
            Text(
                f"Trust   {len(dropped)} status documents not signed by the reconciler: not shown",
                style="red",
            )
        )
    alerts = [a for a in view.get("alerts") or [] if isinstance(a, Mapping)]
    for alert in alerts[-ALERTS_SHOWN:]:
        where = f"{alert.get('path')} @ {_short(alert.get('commit'))}"
        lines.append(
            Text(f"ALERT   {str(alert.get('at'))[:19]}  {where}: {alert.get('message')}", style="bold red")
        )
    if len(alerts) > ALERTS_SHOWN:
        lines.append(Text(f"        ({len(alerts) - ALERTS_SHOWN} older alerts: --format json)", style="red"))
    return lines


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
    if node.get("reportWarning"):
        parts.append(Text(f"  its report: {node['reportWarning']}", style="red"))
    for claim in node.get("ignoredClaims") or []:
        parts.append(Text(f"  its report claims {claim}: ignored", style="red"))
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


def console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def plain(renderable: RenderableType, *, width: int = 200) -> str:
    """What a terminal would show, without colour or trailing blanks (for pipes and files)."""
    console = Console(file=io.StringIO(), width=width, no_color=True, highlight=False, color_system=None)
    with console.capture() as captured:
        console.print(renderable)
    return "\n".join(line.rstrip() for line in captured.get().splitlines())
