"""Build the node report (`schemas/report.schema.json`) from what the agent applied and observed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from agent import __version__
from agent.apply import ApplyResult
from agent.contract import API_VERSION, REPORT_KIND, JsonObject
from agent.plan import format_time


def resource_entries(result: ApplyResult) -> list[JsonObject]:
    """Per-resource outcome lines."""
    return [
        {"id": r.id, "outcome": r.change.outcome.value, "reason": r.change.reason, "error": r.change.error}
        for r in result.resources
    ]


def drift_entries(result: ApplyResult) -> list[JsonObject]:
    """Drift found (and corrected, unless the resource failed)."""
    return [
        {"id": r.id, "what": ", ".join(r.drift), "corrected": r.change.outcome.value != "failed"}
        for r in result.resources
        if r.drift
    ]


def hook_entries(result: ApplyResult) -> list[JsonObject]:
    return [
        {"service": h.service, "hook": h.hook, "version": h.version, "ok": h.ok, "output": h.output}
        for h in result.hooks
    ]


def build_report(
    *,
    node: str,
    now: datetime,
    applied: Mapping[str, Any] | None,
    rejected: Mapping[str, Any] | None,
    result: ApplyResult | None,
    instances: Sequence[JsonObject],
    capabilities: Sequence[str],
) -> JsonObject:
    """The unsigned report document."""
    return {
        "apiVersion": API_VERSION,
        "kind": REPORT_KIND,
        "node": node,
        "time": format_time(now),
        "agentVersion": __version__,
        "applied": dict(applied) if applied else None,
        "rejected": dict(rejected) if rejected else None,
        "resources": resource_entries(result) if result else [],
        "drift": drift_entries(result) if result else [],
        "instances": list(instances),
        "hooks": hook_entries(result) if result else [],
        "capabilities": sorted(capabilities),
    }
