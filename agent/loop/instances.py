"""Observe each service instance on the node: unit state, pid, listening ports and health probes.

A liveness probe that has failed past its threshold restarts the unit (as Kubernetes does);
readiness decides `ready`; while a startup probe has not yet passed, the others wait. A new main
process (restarted by the agent, by an apply or by the supervisor) or a stopped one starts its
probe series afresh: readiness is earned again, never inherited from the process before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from agent.apply.resources.base import Host
from agent.apply.runtimes.base import UnitStatus
from agent.host.probes import ProbeResult, ProbeTracker, run_probe
from agent.host.procnet import listening_ports
from contract.errors import PlumbError
from contract.plan import Plan, PlanResource, ServiceSpec, format_time
from contract.report import Instance, PortStatus, ProbeStatus
from contract.vocabulary import InstanceState, ResourceKind

PROBE_ORDER = ("startup", "liveness", "readiness")


@dataclass
class InstanceObserver:
    """Keeps probe series across cycles and builds the report's `instances`."""

    tracker: ProbeTracker = field(default_factory=ProbeTracker)
    restarted: list[str] = field(default_factory=list)
    pids: dict[str, int | None] = field(default_factory=dict)  # main pid per service, last cycle

    def observe(
        self, plan: Plan, host: Host, now: datetime, *, failing: Mapping[str, str] | None = None
    ) -> list[Instance]:
        """Every service's instance. A unit in `failing` (found failed by this apply and started again)
        is reported failed and not ready, whatever the moment after its new start looks like."""
        return [
            self._instance(r, host, now, address=plan.address, failing=failing or {})
            for r in plan.resources
            if r.kind == ResourceKind.SERVICE
        ]

    def _instance(
        self, resource: PlanResource, host: Host, now: datetime, *, address: str, failing: Mapping[str, str]
    ) -> Instance:
        spec = resource.typed_service
        status = _status(host, spec.unit)
        failure = failing.get(spec.unit) if spec.unit else None
        if failure is not None and status.state is not InstanceState.FAILED:
            status = replace(status, state=InstanceState.FAILED, detail=failure)
        self._forget_replaced(spec.name, status)
        ports = {p.name: p.port for p in spec.ports}
        probes = self._probes(spec, ports, status, now, address=address)
        listening = listening_ports(status.pid, set(ports.values())) if status.pid and ports else set()
        liveness = probes.get("liveness")
        if liveness is not None and not liveness.ok and spec.unit and status.active:
            self._restart(host, spec.unit)
            self.tracker.forget(spec.name)
            status = _status(host, spec.unit)
            self.pids[spec.name] = status.pid
        ready, since = _readiness(status, probes)
        return Instance(
            service=spec.name,
            state=_state(spec, status),
            ready=ready,
            unit=spec.unit,
            pid=status.pid,
            version=spec.version,
            ports=tuple(PortStatus(p.name, p.port, p.protocol, p.port in listening) for p in spec.ports),
            ready_since=since,
            probes=probes,
            restarts=status.restarts,
        )

    def _forget_replaced(self, service: str, status: UnitStatus) -> None:
        """Start the probe series afresh when the main process is not the one seen last time."""
        if service in self.pids and self.pids[service] != status.pid:
            self.tracker.forget(service)
        self.pids[service] = status.pid

    def _probes(
        self,
        spec: ServiceSpec,
        ports: Mapping[str, int],
        status: UnitStatus,
        now: datetime,
        *,
        address: str,
    ) -> dict[str, ProbeStatus]:
        results: dict[str, ProbeStatus] = {}
        started = True
        for kind in PROBE_ORDER:
            probe = spec.health.get(kind)
            if probe is None:
                continue
            key = (spec.name, kind)
            if not started:
                results[kind] = ProbeStatus(False, "waiting for the startup probe")
                continue
            try:
                result = run_probe(probe, ports=ports, unit_active=status.active, address=address)
            except PlumbError as exc:
                result = ProbeResult(False, str(exc))
            self.tracker.record(key, probe, result, now, initial=kind == "liveness")
            ok, message, since = self.tracker.state(key)
            results[kind] = ProbeStatus(ok, message, format_time(since) if since else None)
            started = started and (kind != "startup" or ok)
        return results

    def _restart(self, host: Host, unit: str) -> None:
        try:
            host.runtime.restart(unit)
        except (PlumbError, OSError):
            return
        self.restarted.append(unit)


def _status(host: Host, unit: str | None) -> UnitStatus:
    if not unit:
        return UnitStatus(InstanceState.UNKNOWN)
    try:
        return host.runtime.status(unit)
    except (PlumbError, OSError):
        return UnitStatus(InstanceState.UNKNOWN)


def _readiness(status: UnitStatus, probes: Mapping[str, ProbeStatus]) -> tuple[bool, str | None]:
    """Ready when the unit runs and the readiness probe passes (without one, while it runs): a unit
    still starting, or failing, is not ready whatever a probe says."""
    running = status.state is InstanceState.RUNNING
    readiness = probes.get("readiness")
    if readiness is not None:
        return readiness.ok and running, readiness.since
    return running, None


def _state(spec: ServiceSpec, status: UnitStatus) -> InstanceState:
    if spec.waiting_for and not status.active:
        return InstanceState.WAITING
    return status.state
