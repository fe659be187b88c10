"""Which dependencies nothing serves yet: one table row per case, from reports and reachable nodes."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import pytest

from reconciler.core.compile.desired import SourceFile, compile_desired
from reconciler.core.compile.model import Model
from reconciler.core.decide.discovery import ready_services, waiting_for
from reconciler.core.decide.status import ReceivedReport
from tests.support import report_of
from tests.unit.test_validate_cases import doc

TEMPLATE = doc(
    "Template",
    "svc",
    """
    parameters: {type: object, required: [port], properties: {port: {type: integer}}}
    ports: [{name: main, port: "{{ params.port }}"}]
    resources:
      - unit: {name: "{{ service.name }}.service", content: "[Service]\\nExecStart=/opt/run\\n"}
    """,
)


def _service(name: str, port: int, depends: str = "") -> str:
    deps = f"\ndependsOn: [{depends}]" if depends else ""
    return doc(
        "Service", name, f"template: svc\nparams: {{port: {port}}}\nplacement: {{nodes: [n1, n2]}}{deps}"
    )


FILES = {
    "plumb.yaml": doc("Repository", "fleet", "allowedPaths: [/etc/systemd/system]"),
    "nodes/n1.yaml": doc("Node", "n1", "address: 10.0.0.1"),
    "nodes/n2.yaml": doc("Node", "n2", "address: 10.0.0.2"),
    "templates/svc.yaml": TEMPLATE,
    "services/db.yaml": _service("db", 5432),
    "services/cache.yaml": _service("cache", 6379),
    "services/api.yaml": _service("api", 8080, "db, cache"),
    "services/worker.yaml": _service("worker", 8081, "api"),
}


@cache
def model() -> Model:
    desired = compile_desired([SourceFile(path, text.encode()) for path, text in FILES.items()])
    assert desired.ok and desired.model is not None, desired.findings
    return desired.model


def reported(node: str, *instances: tuple[str, bool]) -> ReceivedReport:
    """A node's latest report listing (service, ready) instances."""
    listed = [{"service": service, "ready": ready, "state": "running"} for service, ready in instances]
    return ReceivedReport(node=node, report=report_of({"node": node, "instances": listed}), verified=True)


@dataclass(frozen=True)
class Row:
    name: str
    reports: tuple[ReceivedReport, ...]
    waiting: dict[str, list[str]]
    reachable: tuple[str, ...] = ("n1", "n2")
    ready: frozenset[str] = field(default_factory=frozenset)


ROWS = [
    Row(
        "no report yet: every dependant waits for all its dependencies, in dependsOn order",
        (),
        {"api": ["db", "cache"], "worker": ["api"]},
    ),
    Row(
        "a dependency ready on one node serves every node",
        (reported("n1", ("db", True), ("cache", True)), reported("n2", ("db", False))),
        {"worker": ["api"]},
        ready=frozenset({"db", "cache"}),
    ),
    Row(
        "an instance that is running but not ready does not count",
        (reported("n1", ("db", True), ("cache", False), ("api", False)),),
        {"api": ["cache"], "worker": ["api"]},
        ready=frozenset({"db"}),
    ),
    Row(
        "an offline node's instances do not count, however ready its last report says they were",
        (reported("n1", ("db", True), ("cache", True)), reported("n2", ("cache", True))),
        {"api": ["db"], "worker": ["api"]},
        reachable=("n2",),
        ready=frozenset({"cache"}),
    ),
    Row(
        "everything ready: nobody waits",
        (reported("n1", ("db", True), ("cache", True), ("api", True)), reported("n2", ("worker", False))),
        {},
        ready=frozenset({"db", "cache", "api"}),
    ),
    Row(
        "a report of a node that is not in the desired state is ignored",
        (reported("n9", ("db", True), ("cache", True)),),
        {"api": ["db", "cache"], "worker": ["api"]},
    ),
    Row(
        "an unusable report (bad signature) has no instances",
        (ReceivedReport(node="n1", report=None, problem="signature does not verify"),),
        {"api": ["db", "cache"], "worker": ["api"]},
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_waiting_for(row: Row) -> None:
    reports = {r.node: r for r in row.reports}
    assert waiting_for(model(), reports, reachable=row.reachable) == row.waiting
    assert ready_services(reports, reachable=row.reachable) == row.ready


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_report_order_does_not_matter(row: Row) -> None:
    forward = {r.node: r for r in row.reports}
    backward = {r.node: r for r in reversed(row.reports)}
    assert waiting_for(model(), forward, reachable=row.reachable) == waiting_for(
        model(), backward, reachable=tuple(reversed(row.reachable))
    )
