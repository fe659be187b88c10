"""Pure parsers for systemd unit files and `systemctl show` output.

Only what the `process` runtime needs is interpreted: ExecStart, Environment, WorkingDirectory,
Restart, RestartSec and User from [Service], with drop-ins applied in name order and an empty
assignment resetting a list, as systemd does.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from contract.errors import PermanentError

RESTART_POLICIES = ("no", "always", "on-success", "on-failure", "on-abnormal", "on-abort", "on-watchdog")
# longest unit names first, so "1min" is one minute and not "1m" followed by "in"
_SPAN = re.compile(
    r"(\d+(?:\.\d+)?)\s*(usec|us|msec|ms|seconds|second|sec|s|minutes|minute|min|m|hours|hour|hr|h)?"
)
_UNIT_SECONDS = {"usec": 1e-6, "us": 1e-6, "msec": 1e-3, "ms": 1e-3}
_UNIT_SECONDS |= {
    "minutes": 60,
    "minute": 60,
    "min": 60,
    "m": 60,
    "hours": 3600,
    "hour": 3600,
    "hr": 3600,
    "h": 3600,
}


@dataclass(frozen=True)
class ExecConfig:
    """How to run a service's main process."""

    argv: tuple[str, ...]
    environment: tuple[tuple[str, str], ...] = ()
    working_directory: str | None = None
    restart: str = "no"
    restart_sec: float = 0.1
    user: str | None = None


def parse_sections(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) triples in file order; continuation lines joined, comments dropped."""
    entries: list[tuple[str, str, str]] = []
    section, pending = "", ""
    for raw in text.splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif "=" in line:
            key, _, value = line.partition("=")
            entries.append((section, key.strip(), value.strip()))
    return entries


def merged_service(texts: Iterable[str]) -> dict[str, list[str]]:
    """[Service] keys of a unit and its drop-ins (in order): each key's list of values after resets."""
    merged: dict[str, list[str]] = {}
    for text in texts:
        for section, key, value in parse_sections(text):
            if section != "Service":
                continue
            if value == "":
                merged[key] = []
            else:
                merged.setdefault(key, []).append(value)
    return merged


def parse_timespan(text: str) -> float:
    """A systemd time span ("5", "500ms", "1min 30s") in seconds."""
    stripped = text.strip()
    if not stripped or _SPAN.sub("", stripped).strip():
        raise PermanentError(f"{text!r} is not a time span")
    return sum(
        float(number) * _UNIT_SECONDS.get(unit or "s", 1.0) for number, unit in _SPAN.findall(stripped)
    )


def parse_environment(values: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """Environment= assignments ("A=1 \"B=two words\"") as ordered pairs, later ones winning."""
    pairs: dict[str, str] = {}
    for value in values:
        for word in shlex.split(value):
            name, sep, setting = word.partition("=")
            if sep:
                pairs[name] = setting
    return tuple(pairs.items())


def parse_exec(value: str) -> tuple[str, ...]:
    """An ExecStart= command line as argv, without systemd's `-@:+!` prefixes."""
    argv = shlex.split(value.lstrip("-@:+!"))
    if not argv:
        raise PermanentError("ExecStart= is empty")
    return tuple(argv)


def exec_config(texts: Iterable[str], *, unit: str) -> ExecConfig:
    """The ExecConfig of a unit from its file and drop-ins."""
    service = merged_service(texts)
    starts = service.get("ExecStart", [])
    if not starts:
        raise PermanentError(f"{unit}: no ExecStart= in [Service]")
    restart = _last(service, "Restart") or "no"
    if restart not in RESTART_POLICIES:
        raise PermanentError(f"{unit}: Restart={restart} is not one of {', '.join(RESTART_POLICIES)}")
    return ExecConfig(
        argv=parse_exec(starts[-1]),
        environment=parse_environment(service.get("Environment", [])),
        working_directory=(_last(service, "WorkingDirectory") or None),
        restart=restart,
        restart_sec=parse_timespan(_last(service, "RestartSec") or "100ms"),
        user=_last(service, "User") or None,
    )


def _last(service: Mapping[str, list[str]], key: str) -> str:
    values = service.get(key, [])
    return values[-1] if values else ""


def should_restart(policy: str, *, exit_code: int | None, signal: int | None) -> bool:
    """Whether systemd's Restart= `policy` restarts a process that ended this way."""
    clean = exit_code == 0 and signal is None
    if policy == "always":
        return True
    if policy == "on-success":
        return clean
    if policy == "on-failure":
        return not clean
    if policy == "on-abnormal":
        return signal is not None
    if policy == "on-abort":
        return signal is not None and signal not in (1, 2, 13, 15)
    return False


def parse_show(text: str) -> dict[str, str]:
    """`systemctl show` output (Key=Value lines) as a dict."""
    return dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)
