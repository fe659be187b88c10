"""Build the node report (`contract.report.Report`) from what the agent applied and observed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from agent import __version__
from agent.apply.converge import ApplyResult
from contract.documents import JsonObject
from contract.plan import format_time
from contract.report import Applied, Drift, HookResult, Instance, Rejected, Report, ResourceResult
from contract.vocabulary import Outcome


def resource_entries(result: ApplyResult) -> tuple[ResourceResult, ...]:
    """Per-resource outcome lines."""
    return tuple(
        ResourceResult(r.id, r.change.outcome, r.change.reason, r.change.error) for r in result.resources
    )


def drift_entries(result: ApplyResult) -> tuple[Drift, ...]:
    """Drift found (and corrected, unless the resource failed)."""
    return tuple(
        Drift(r.id, ", ".join(r.drift), r.change.outcome is not Outcome.FAILED)
        for r in result.resources
        if r.drift
    )


def hook_entries(result: ApplyResult) -> tuple[HookResult, ...]:
    return tuple(HookResult(h.service, h.hook, h.version, h.ok, h.output) for h in result.hooks)


def applied_record(record: Mapping[str, Any] | None) -> Applied | None:
    """The agent's `applied.json` (written by the agent itself) as the report's `applied` block."""
    if not record:
        return None
    ok = record.get("ok")
    return Applied(record["serial"], record["commit"], record["digest"], record["at"], ok)


def build_report(
    *,
    node: str,
    now: datetime,
    applied: Applied | None,
    rejected: Rejected | None,
    result: ApplyResult | None,
    instances: Sequence[Instance],
    capabilities: Sequence[str],
) -> Report:
    """The unsigned report."""
    return Report(
        node=node,
        time=format_time(now),
        agent_version=__version__,
        applied=applied,
        rejected=rejected,
        resources=resource_entries(result) if result else (),
        drift=drift_entries(result) if result else (),
        instances=tuple(instances),
        hooks=hook_entries(result) if result else (),
        capabilities=tuple(sorted(capabilities)),
    )


def substance(report: Report) -> JsonObject:
    """Pure: what the reconciler acts on in a report, so that only a change of it is worth a push.

    Applied serial and outcome, a rejection, whether each resource converged, failed or waits,
    and each instance's state, version, ports, probe states and readiness. Left out: times, pids,
    restart counts, probe messages, reasons, and what only one apply did (`changed` versus
    `unchanged`, drift, hooks), which is pushed with that apply."""
    applied = report.applied
    return {
        "node": report.node,
        "agentVersion": report.agent_version,
        "applied": (applied.serial, applied.commit, applied.digest, applied.ok) if applied else None,
        "rejected": report.rejected,
        "resources": [_resource_substance(r) for r in report.resources],
        "instances": [_instance_substance(i) for i in report.instances],
        "capabilities": report.capabilities,
    }


def _resource_substance(entry: ResourceResult) -> tuple[str, str, str | None]:
    converged = entry.outcome in (Outcome.CHANGED, Outcome.UNCHANGED)
    return entry.id, "converged" if converged else entry.outcome, entry.error


def _instance_substance(instance: Instance) -> tuple[Any, ...]:
    probes = {kind: probe.ok for kind, probe in instance.probes.items()}
    return (
        instance.service,
        instance.unit,
        instance.state,
        instance.version,
        instance.ports,
        instance.ready,
        probes,
    )
