"""Build the node report (`schemas/report.schema.json`) from what the agent applied and observed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from agent import __version__
from agent.apply.converge import ApplyResult
from contract.defaults import API_VERSION, REPORT_KIND
from contract.documents import JsonObject
from contract.plan import format_time
from contract.vocabulary import Outcome


def resource_entries(result: ApplyResult) -> list[JsonObject]:
    """Per-resource outcome lines."""
    return [
        {"id": r.id, "outcome": r.change.outcome.value, "reason": r.change.reason, "error": r.change.error}
        for r in result.resources
    ]


def drift_entries(result: ApplyResult) -> list[JsonObject]:
    """Drift found (and corrected, unless the resource failed)."""
    return [
        {"id": r.id, "what": ", ".join(r.drift), "corrected": r.change.outcome is not Outcome.FAILED}
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


def substance(report: Mapping[str, Any]) -> JsonObject:
    """Pure: what the reconciler acts on in a report, so that only a change of it is worth a push.

    Applied serial and outcome, a rejection, whether each resource converged, failed or waits,
    and each instance's state, version, ports, probe states and readiness. Left out: times, pids,
    restart counts, probe messages, reasons, and what only one apply did (`changed` versus
    `unchanged`, drift, hooks), which is pushed with that apply."""
    applied = report.get("applied")
    return {
        "node": report.get("node"),
        "agentVersion": report.get("agentVersion"),
        "applied": {k: v for k, v in applied.items() if k != "at"} if applied else None,
        "rejected": report.get("rejected"),
        "resources": [_resource_substance(r) for r in report.get("resources") or []],
        "instances": [_instance_substance(i) for i in report.get("instances") or []],
        "capabilities": report.get("capabilities"),
    }


def _resource_substance(entry: Mapping[str, Any]) -> JsonObject:
    converged = entry.get("outcome") in (Outcome.CHANGED, Outcome.UNCHANGED)
    outcome = "converged" if converged else entry.get("outcome")
    return {"id": entry.get("id"), "outcome": outcome, "error": entry.get("error")}


def _instance_substance(instance: Mapping[str, Any]) -> JsonObject:
    kept = {k: v for k, v in instance.items() if k not in ("pid", "restarts", "readySince", "probes")}
    kept["probes"] = {kind: bool(p.get("ok")) for kind, p in (instance.get("probes") or {}).items()}
    return kept
