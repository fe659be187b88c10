"""What in a report is worth a push (`agent.loop.report.substance`, pure)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from agent.loop.report import substance
from contract.report import parse_report

BASE: dict[str, Any] = {
    "apiVersion": "plumb/v1",
    "kind": "NodeReport",
    "node": "web-1",
    "time": "2026-11-22T08:00:00Z",
    "agentVersion": "0.1.0",
    "applied": {
        "serial": 3,
        "commit": "a" * 40,
        "digest": "sha256:x",
        "at": "2026-11-22T08:00:00Z",
        "ok": True,
    },
    "rejected": None,
    "resources": [
        {"id": "unit:web.service", "outcome": "unchanged", "reason": "already running", "error": None}
    ],
    "drift": [],
    "instances": [
        {
            "service": "web",
            "unit": "web.service",
            "state": "running",
            "pid": 10,
            "version": "1.0.0",
            "ports": [{"name": "http", "port": 8080, "listening": True}],
            "ready": True,
            "readySince": "2026-11-22T08:00:00Z",
            "probes": {"readiness": {"ok": True, "message": "GET :8080/ -> 200", "since": None}},
            "restarts": 0,
        }
    ],
    "hooks": [],
    "capabilities": ["process"],
    "signature": {"key": "k", "ed25519": "s"},
}

# (name, where to change, new value, substance changes)
CASES = [
    ("time", ("time",), "2026-11-22T09:00:00Z", False),
    ("signature", ("signature",), {"key": "k", "ed25519": "t"}, False),
    ("applied at", ("applied", "at"), "2026-11-22T09:00:00Z", False),
    ("pid", ("instances", 0, "pid"), 11, False),
    ("restarts", ("instances", 0, "restarts"), 2, False),
    ("readySince", ("instances", 0, "readySince"), None, False),
    ("probe message", ("instances", 0, "probes", "readiness", "message"), "GET :8080/ -> 204", False),
    ("changed after unchanged", ("resources", 0, "outcome"), "changed", False),
    ("a reason", ("resources", 0, "reason"), "restart (changed)", False),
    ("hooks run", ("hooks",), [{"service": "web", "hook": "preStart", "version": "1", "ok": True}], False),
    ("ready", ("instances", 0, "ready"), False, True),
    ("state", ("instances", 0, "state"), "failed", True),
    ("listening", ("instances", 0, "ports", 0, "listening"), False, True),
    ("version", ("instances", 0, "version"), "1.1.0", True),
    ("probe state", ("instances", 0, "probes", "readiness", "ok"), False, True),
    ("applied serial", ("applied", "serial"), 4, True),
    ("failed resource", ("resources", 0, "outcome"), "failed", True),
    ("resource error", ("resources", 0, "error"), "boom", True),
    ("rejected", ("rejected",), {"serial": 5, "digest": None, "reason": "expired"}, True),
    ("capabilities", ("capabilities",), ["nginx", "process"], True),
]


@pytest.mark.parametrize(("name", "where", "value", "changes"), CASES, ids=[c[0] for c in CASES])
def test_substance(name: str, where: tuple[Any, ...], value: Any, changes: bool) -> None:
    """Only what the reconciler acts on changes a report's substance."""
    changed = copy.deepcopy(BASE)
    target: Any = changed
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    assert (substance(parse_report(changed)) != substance(parse_report(BASE))) is changes
