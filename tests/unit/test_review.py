"""Review: which actions a change of plan entries implies, and diffs that never show secrets."""

from __future__ import annotations

from typing import Any

import pytest

from contract.documents import resource_digest
from reconciler.cli.views.plan import render_markdown
from reconciler.core.decide.review import NodeReview, Review, diff_entries, unified_diff


def entry(ident: str, spec: dict[str, Any], service: str = "api") -> dict[str, Any]:
    kind = ident.split(":")[0]
    return {
        "id": ident,
        "kind": kind,
        "service": service,
        "spec": spec,
        "after": [],
        "digest": resource_digest(kind, spec),
    }


CONF = entry("file:/etc/api/c", {"path": "/etc/api/c", "mode": "0644", "content": "a\n"})
CONF2 = entry("file:/etc/api/c", {"path": "/etc/api/c", "mode": "0644", "content": "b\n"})
UNIT = entry("unit:api.service", {"name": "api.service", "content": "[Service]\n"})
UNIT2 = entry("unit:api.service", {"name": "api.service", "content": "[Service]\nX=1\n"})
UNIT_R = entry(
    "unit:api.service", {"name": "api.service", "content": "[Service]\n", "restartOn": ["/etc/api/c"]}
)
DROPIN = entry(
    "unit:api.service/limits.conf", {"name": "api.service", "dropIn": "limits.conf", "content": "[Service]\n"}
)
SITE = entry("nginx:api", {"site": "api", "content": "server {}\n"})
SITE2 = entry("nginx:api", {"site": "api", "content": "server { listen 80; }\n"})
RUN = entry("service:api", {"name": "api", "state": "running", "unit": "api.service"})
STOP = entry("service:api", {"name": "api", "state": "stopped", "unit": "api.service"})
ART = entry("artifact:/opt/api", {"url": "u", "sha256": "0" * 64, "path": "/opt/api", "version": "1"})
ART2 = entry("artifact:/opt/api", {"url": "u", "sha256": "1" * 64, "path": "/opt/api", "version": "2"})

# name, old entries, new entries, expected actions
CASES = [
    ("nothing changed", [CONF, UNIT], [CONF, UNIT], []),
    (
        "new file and unit",
        [],
        [CONF, UNIT],
        [
            "create file:/etc/api/c: new in the plan",
            "create unit:api.service: new in the plan",
            "start api.service: new unit",
        ],
    ),
    (
        "file content changed, no restartOn",
        [CONF, UNIT],
        [CONF2, UNIT],
        ["update file:/etc/api/c: content changed"],
    ),
    (
        "file in restartOn restarts the unit",
        [CONF, UNIT_R],
        [CONF2, UNIT_R],
        ["update file:/etc/api/c: content changed", "restart api.service: file:/etc/api/c changed"],
    ),
    (
        "unit changed restarts it",
        [UNIT],
        [UNIT2],
        ["update unit:api.service: content changed", "restart api.service: unit:api.service changed"],
    ),
    (
        "drop-in added restarts its unit",
        [UNIT],
        [UNIT, DROPIN],
        [
            "create unit:api.service/limits.conf: new in the plan",
            "restart api.service: unit:api.service/limits.conf changed",
        ],
    ),
    (
        "unit removed stops it",
        [UNIT],
        [],
        ["delete unit:api.service: no longer in the plan", "stop api.service: unit removed"],
    ),
    (
        "nginx site changed reloads nginx",
        [SITE],
        [SITE2],
        ["update nginx:api: content changed", "reload nginx: site api changed"],
    ),
    (
        "nginx site removed reloads nginx",
        [SITE],
        [],
        ["delete nginx:api: no longer in the plan", "reload nginx: site api changed"],
    ),
    (
        "service stopped",
        [RUN],
        [STOP],
        ["update service:api: state changed", "stop api: desired state stopped (was running)"],
    ),
    (
        "service started",
        [STOP],
        [RUN],
        ["update service:api: state changed", "start api: desired state running (was stopped)"],
    ),
    (
        "new running service starts",
        [],
        [RUN],
        ["create service:api: new in the plan", "start api: desired state running (was absent)"],
    ),
    (
        "artifact changed restarts the service unit",
        [ART, RUN],
        [ART2, RUN],
        [
            "update artifact:/opt/api: sha256, version changed",
            "restart api.service: artifact:/opt/api changed",
        ],
    ),
]


@pytest.mark.parametrize(("name", "old", "new", "expected"), CASES, ids=[c[0] for c in CASES])
def test_diff_entries(name: str, old: list[Any], new: list[Any], expected: list[str]) -> None:
    """Each change implies exactly these actions, resources first, then handlers."""
    assert [str(a) for a in diff_entries(old, new)] == expected


# name, old, new, secret, lines that must appear, text that must not
DIFFS = [
    ("content diff", CONF, CONF2, False, ["-a", "+b", "--- a/file:/etc/api/c", "+++ b/file:/etc/api/c"], []),
    ("created from /dev/null", None, CONF, False, ["--- /dev/null", "+a"], []),
    ("secret shows digests only", CONF, CONF2, True, [f"-(secret content, {CONF['digest']})"], ["+b", "-a"]),
    ("unchanged is empty", CONF, CONF, False, [], ["---"]),
]


@pytest.mark.parametrize(
    ("name", "old", "new", "secret", "present", "absent"), DIFFS, ids=[d[0] for d in DIFFS]
)
def test_unified_diff(
    name: str, old: Any, new: Any, secret: bool, present: list[str], absent: list[str]
) -> None:
    """Diffs show rendered content, or only a digest when the content carries a secret."""
    lines = unified_diff("file:/etc/api/c", old, new, secret=secret).splitlines()
    assert all(p in lines for p in present), lines
    assert not any(a in line for a in absent for line in lines), lines


def _review(nodes: int) -> Review:
    actions = diff_entries([CONF], [CONF2])
    diffs = (("file:/etc/api/c", unified_diff("file:/etc/api/c", CONF, CONF2)),)
    reviews = tuple(NodeReview(node=f"n{i}", actions=actions, diffs=diffs) for i in range(nodes))
    return Review(base="a" * 40, head="b" * 40, nodes=reviews)


# name, nodes, limit, diffs shown, sections shown, "more" note
MARKDOWN = [
    ("fits: everything", 3, 60_000, True, 3, False),
    ("too long with diffs: actions only", 3, 800, False, 3, False),
    ("too long even without diffs: last nodes left out", 10, 800, False, 3, True),
]


@pytest.mark.parametrize(
    ("name", "nodes", "limit", "diffs", "sections", "more"), MARKDOWN, ids=[m[0] for m in MARKDOWN]
)
def test_markdown_fits_a_pull_request_comment(
    name: str, nodes: int, limit: int, diffs: bool, sections: int, more: bool
) -> None:
    """The table lists every node; diffs, then sections, give way to the size limit."""
    text = render_markdown(_review(nodes), limit=limit)
    assert len(text) <= limit
    assert text.count("| `n") == nodes
    assert ("```diff" in text) is diffs
    assert text.count("<details>") == sections
    assert ("more node(s)" in text) is more
