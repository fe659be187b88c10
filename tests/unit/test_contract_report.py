"""The typed report: parsed once, written back byte for byte, and a wrong shape named precisely."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from contract.documents import canonical_json, to_file_json
from contract.errors import ContractError
from contract.report import Applied, Instance, ProbeStatus, parse_report
from contract.vocabulary import InstanceState, Outcome

# What an agent sends: every member it always writes, `unit` and a port's `protocol` only when known.
AGENT_REPORT: dict[str, Any] = {
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
    "rejected": {"serial": 4, "digest": None, "reason": "plan expired at 2026-11-22T07:00:00Z"},
    "resources": [
        {"id": "unit:web.service", "outcome": "unchanged", "reason": "already running", "error": None},
        {"id": "file:/etc/web.conf", "outcome": "failed", "reason": "not converged", "error": "EACCES"},
    ],
    "drift": [{"id": "file:/etc/web.conf", "what": "content", "corrected": False}],
    "instances": [
        {
            "service": "web",
            "unit": "web.service",
            "state": "running",
            "pid": 10,
            "version": "1.0.0",
            "ports": [
                {"name": "http", "port": 8080, "listening": True, "protocol": "http"},
                {"name": "admin", "port": 9090, "listening": False},
            ],
            "ready": True,
            "readySince": "2026-11-22T08:00:00Z",
            "probes": {
                "startup": {"ok": True, "message": "tcp 10.0.0.5:8080 accepts connections", "since": None},
                "readiness": {
                    "ok": True,
                    "message": "GET http://10.0.0.5:8080/ -> 200",
                    "since": "2026-11-22T08:00:00Z",
                },
            },
            "restarts": 0,
        },
        {
            "service": "worker",
            "state": "waiting",
            "pid": None,
            "version": None,
            "ports": [],
            "ready": False,
            "readySince": None,
            "probes": {},
            "restarts": 2,
        },
    ],
    "hooks": [{"service": "web", "hook": "preStart", "version": "1.0.0", "ok": True, "output": "migrated"}],
    "capabilities": ["nginx", "process"],
    "signature": {"key": "k", "ed25519": "s"},
}


class TestRoundTrip:
    def test_agent_document_is_written_back_byte_for_byte(self) -> None:
        """Parsing and writing again changes nothing: signatures and files stay the same."""
        again = parse_report(copy.deepcopy(AGENT_REPORT)).to_document()
        assert canonical_json(again) == canonical_json(AGENT_REPORT)
        assert to_file_json(again) == to_file_json(AGENT_REPORT)

    def test_members_are_typed(self) -> None:
        """Vocabulary members, nested dataclasses, and lookups by service."""
        report = parse_report(AGENT_REPORT)
        assert report.applied == Applied(3, "a" * 40, "sha256:x", "2026-11-22T08:00:00Z", True)
        assert [r.outcome for r in report.resources] == [Outcome.UNCHANGED, Outcome.FAILED]
        assert [r.id for r in report.failed()] == ["file:/etc/web.conf"]
        worker = report.instance("worker")
        assert isinstance(worker, Instance) and worker.state is InstanceState.WAITING
        web = report.instance("web")
        assert web is not None and web.probe("readiness") == ProbeStatus(
            True, "GET http://10.0.0.5:8080/ -> 200", "2026-11-22T08:00:00Z"
        )
        assert report.instance("db") is None

    def test_optional_members_may_be_absent(self) -> None:
        """What the schema leaves optional reads as None or empty, and is not invented on the way back."""
        minimal = {k: v for k, v in AGENT_REPORT.items() if k not in ("rejected", "hooks", "signature")}
        minimal["applied"] = None
        minimal["instances"] = [{"service": "web", "state": "unknown", "ready": False}]
        report = parse_report(minimal)
        assert (report.rejected, report.hooks, report.signature, report.applied) == (None, (), None, None)
        instance = report.instances[0]
        assert (instance.pid, instance.ports, instance.probes, instance.restarts) == (None, (), {}, 0)


def _broken(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    document = copy.deepcopy(AGENT_REPORT)
    target: Any = document
    for key in path[:-1]:
        target = target[key]
    if value is _DROP:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


_DROP = object()

WRONG = [
    ("not an object", [], "the document must be an object, not an array"),
    ("another kind", _broken(("kind",), "NodePlan"), "not a plumb/v1 NodeReport"),
    ("node missing", _broken(("node",), _DROP), "node is missing"),
    (
        "serial a string",
        _broken(("applied", "serial"), "3"),
        "applied.serial must be an integer, not a string",
    ),
    (
        "serial a boolean",
        _broken(("applied", "serial"), True),
        "applied.serial must be an integer, not a boolean",
    ),
    (
        "unknown outcome",
        _broken(("resources", 1, "outcome"), "exploded"),
        "resources[1].outcome is 'exploded'",
    ),
    (
        "unknown state",
        _broken(("instances", 0, "state"), "asleep"),
        "instances[0].state is 'asleep', not one of",
    ),
    ("ready missing", _broken(("instances", 1, "ready"), _DROP), "instances[1].ready is missing"),
    (
        "port a string",
        _broken(("instances", 0, "ports", 0, "port"), "80"),
        "instances[0].ports[0].port must be",
    ),
    (
        "probe not an object",
        _broken(("instances", 0, "probes", "readiness"), True),
        "probes.readiness must be an object",
    ),
    (
        "probe ok null",
        _broken(("instances", 0, "probes", "startup", "ok"), None),
        "probes.startup.ok must be a boolean, not null",
    ),
    ("capability a number", _broken(("capabilities", 1), 3), "capabilities[1] must be a string"),
    ("drift not a list", _broken(("drift",), {}), "drift must be an array, not an object"),
]


@pytest.mark.parametrize(("name", "document", "message"), WRONG, ids=[w[0] for w in WRONG])
def test_wrong_shape_is_named(name: str, document: Any, message: str) -> None:
    """A report of the wrong shape is a ContractError naming the member."""
    with pytest.raises(ContractError) as raised:
        parse_report(document)
    assert message in str(raised.value)
    assert str(raised.value).startswith("report: ")
