"""Health probes (http / tcp / exec / process) and their thresholds, as in Kubernetes.

`run_probe` performs one check; `ProbeTracker` turns a series of checks into a state that changes
only after `failureThreshold` failures or `successThreshold` successes in a row.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from contract.errors import PermanentError
from contract.plan import LOOPBACK, ProbeSpec


@dataclass(frozen=True)
class ProbeResult:
    """One check."""

    ok: bool
    message: str


def resolve_port(value: int | str, ports: Mapping[str, int]) -> int:
    """A probe's port: a number, or the name of one of the service's ports."""
    if isinstance(value, int):
        return value
    if value.isdigit():
        return int(value)
    if value not in ports:
        raise PermanentError(f"probe names port {value!r}, which the service does not declare")
    return ports[value]


def authority(host: str, port: int) -> str:
    """`host:port` as in a URL (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _http(probe: ProbeSpec, port: int, *, address: str) -> ProbeResult:
    host, path, timeout = probe.host or address, probe.path, float(probe.timeout)
    url = f"http://{authority(host, port)}{path}"
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path)
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return ProbeResult(False, f"GET {url}: {exc}")
    finally:
        connection.close()
    return ProbeResult(200 <= status < 400, f"GET {url} -> {status}")


def _tcp(probe: ProbeSpec, port: int, *, address: str) -> ProbeResult:
    host = probe.host or address
    try:
        with socket.create_connection((host, port), timeout=float(probe.timeout)):
            return ProbeResult(True, f"tcp {authority(host, port)} accepts connections")
    except OSError as exc:
        return ProbeResult(False, f"tcp {authority(host, port)}: {exc.strerror or exc}")


def _exec(probe: ProbeSpec) -> ProbeResult:
    try:
        result = subprocess.run(
            list(probe.command), capture_output=True, timeout=float(probe.timeout), check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return ProbeResult(False, f"exec: {exc}")
    return ProbeResult(result.returncode == 0, f"exec exited {result.returncode}")


def run_probe(
    probe: ProbeSpec, *, ports: Mapping[str, int], unit_active: bool, address: str = LOOPBACK
) -> ProbeResult:
    """Perform one check of `probe`; an http or tcp probe without a `host` knocks on `address`.

    `address` is the node's address, where its endpoints are published (as a Kubernetes probe
    defaults to the pod's IP): a service bound to it does not answer on 127.0.0.1.
    """
    if probe.check in ("http", "tcp"):
        port = resolve_port(probe.port if probe.port is not None else 0, ports)
        return (_http if probe.check == "http" else _tcp)(probe, port, address=address)
    if probe.check == "exec":
        return _exec(probe)
    return ProbeResult(unit_active, "process running" if unit_active else "process not running")


@dataclass
class _Series:
    ok: bool = False
    streak: int = 0
    since: datetime | None = None
    message: str = ""


@dataclass
class ProbeTracker:
    """Consecutive results per (service, probe kind); state flips only past the thresholds.

    As in Kubernetes, readiness and startup probes start failing and pass after `successThreshold`
    successes; liveness starts passing and fails after `failureThreshold` failures.
    """

    def forget(self, service: str) -> None:
        """Start the service's series afresh (after a restart)."""
        for key in [k for k in self.series if k[0] == service]:
            del self.series[key]

    series: dict[tuple[str, str], _Series] = field(default_factory=dict)

    def record(
        self,
        key: tuple[str, str],
        probe: ProbeSpec,
        result: ProbeResult,
        now: datetime,
        *,
        initial: bool = False,
    ) -> bool:
        """Record one check; return the probe's current state (`initial` before any threshold was crossed)."""
        entry = self.series.setdefault(key, _Series(ok=initial))
        entry.message = result.message
        entry.streak = entry.streak + 1 if result.ok != entry.ok else 0
        needed = probe.success_threshold if result.ok else probe.failure_threshold
        if result.ok != entry.ok and entry.streak >= needed:
            entry.ok, entry.streak, entry.since = result.ok, 0, now
        return entry.ok

    def state(self, key: tuple[str, str]) -> tuple[bool, str, datetime | None]:
        entry = self.series.get(key, _Series())
        return entry.ok, entry.message, entry.since
