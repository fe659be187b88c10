"""`plumb plan` on a release pull request: which rollouts it starts, its batches and the nodes in each."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import pytest

from reconciler.cli.views.plan import render_json, render_markdown, render_text
from reconciler.core.compile.desired import SourceFile, compile_desired
from reconciler.core.compile.model import Model
from reconciler.core.decide.review import (
    NodeReview,
    Review,
    batch_cuts,
    preview_rollouts,
)
from reconciler.core.decide.rollout import order
from tests.unit.test_validate_cases import doc

NODES = ("n1", "n2", "n3", "n4")
TEMPLATE = doc(
    "Template",
    "svc",
    """
    resources:
      - artifact: {path: "/opt/{{ service.name }}"}
      - unit: {name: "{{ service.name }}.service", content: "[Service]\\nExecStart=/opt/run\\n"}
    """,
)


def _release(
    version: str, rollout: str = '{batches: [1, "50%", "100%"], healthyFor: 30s, onFailure: rollback}'
) -> str:
    name = "api-" + version.replace(".", "-")
    artifact = f'{{url: "https://example.com/{name}.tgz", sha256: "{"a" * 64}"}}'
    return doc("Release", name, f"service: api\nversion: {version}\nartifact: {artifact}\nrollout: {rollout}")


def _files(
    *, version: str = "^1.0", releases: tuple[str, ...] = ("1.0.0",), cordoned: str = ""
) -> list[SourceFile]:
    files = {
        "plumb.yaml": doc("Repository", "fleet", "allowedPaths: [/opt, /etc/systemd/system]"),
        "templates/svc.yaml": TEMPLATE,
        "services/api.yaml": doc(
            "Service", "api", f'template: svc\nversion: "{version}"\nplacement: {{nodes: [n1, n2, n3, n4]}}'
        ),
    }
    for index, node in enumerate(NODES, start=1):
        extra = "\ncordoned: true" if node == cordoned else ""
        files[f"nodes/{node}.yaml"] = doc("Node", node, f"address: 10.0.0.{index}{extra}")
    for release in releases:
        files[f"releases/api-{release}.yaml"] = _release(release)
    return [SourceFile(path, text.encode()) for path, text in files.items()]


@cache
def model(version: str = "^1.0", releases: tuple[str, ...] = ("1.0.0",), cordoned: str = "") -> Model:
    desired = compile_desired(_files(version=version, releases=releases, cordoned=cordoned))
    assert desired.ok and desired.model is not None, desired.findings
    return desired.model


RANKED = order("api", "1.1.0", NODES)
NODE = NodeReview(node="n1", actions=(), diffs=())


@dataclass(frozen=True)
class Row:
    name: str
    base: Model | None
    head: Model
    expected: list[tuple[str | None, str, list[list[str]], list[str]]]  # from, to, batches, held


ROWS = [
    Row("same release: no rollout", model(), model(), []),
    Row(
        "a new release in range: one node, then half, then the rest, in rollout order",
        model(),
        model(releases=("1.0.0", "1.1.0")),
        [("1.0.0", "1.1.0", [RANKED[:1], RANKED[1:2], RANKED[2:]], [])],
    ),
    Row(
        "a cordoned node is held and not counted",
        model(),
        model(releases=("1.0.0", "1.1.0"), cordoned="n2"),
        [
            (
                "1.0.0",
                "1.1.0",
                batch_cuts([n for n in RANKED if n != "n2"], (1, "50%", "100%")),
                ["n2"],
            )
        ],
    ),
    Row(
        "no base (a first commit): every node at once",
        None,
        model(),
        [(None, "1.0.0", [list(NODES)], [])],
    ),
    Row(
        "a rollback pin rolls out the older release",
        model(releases=("1.0.0", "1.1.0")),
        model(version="1.0.0", releases=("1.0.0", "1.1.0")),
        [("1.1.0", "1.0.0", batch_cuts(order("api", "1.0.0", NODES), (1, "50%", "100%")), [])],
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_preview_rollouts(row: Row) -> None:
    previews = preview_rollouts(row.base, row.head)
    got = [(p.from_version, p.to_version, [list(b) for b in p.batches], list(p.held)) for p in previews]
    expected = [(f, t, [list(b) for b in batches], held) for f, t, batches, held in row.expected]
    assert got == expected


@pytest.mark.parametrize(
    ("count", "batches", "sizes"),
    [
        (4, (1, "50%", "100%"), [1, 1, 2]),
        (1, (1, "50%", "100%"), [1]),  # later batches with nothing to move are left out
        (10, ("10%", "25%", "100%"), [1, 2, 7]),
        (3, (5, "100%"), [3]),
        (0, (1, "100%"), []),
        (5, ("100%",), [5]),
    ],
)
def test_batch_cuts(count: int, batches: tuple[int | str, ...], sizes: list[int]) -> None:
    nodes = [f"n{i}" for i in range(count)]
    cuts = batch_cuts(nodes, batches)
    assert [len(c) for c in cuts] == sizes
    assert [n for c in cuts for n in c] == nodes


def test_renderings_name_each_batch_and_its_nodes() -> None:
    """Text, markdown and JSON all list the batches with their nodes, and the rollout's rules."""
    previews = preview_rollouts(model(), model(releases=("1.0.0", "1.1.0"), cordoned="n2"))
    result = Review(base="a" * 40, head="b" * 40, nodes=(NODE,), rollouts=previews)
    first = previews[0].batches[0][0]
    text = render_text(result)
    assert "rollout api 1.0.0 -> 1.1.0 in 3 batches (healthyFor 30s, timeout 10m, onFailure rollback)" in text
    assert f"  batch 1: {first}\n" in text and "  held (cordoned): n2" in text
    data = render_json(result)
    assert data["rollouts"][0]["batches"] == [list(b) for b in previews[0].batches]
    assert data["rollouts"][0]["held"] == ["n2"] and data["rollouts"][0]["onFailure"] == "rollback"


def test_markdown_has_a_batch_table() -> None:
    previews = preview_rollouts(model(), model(releases=("1.0.0", "1.1.0")))
    markdown = render_markdown(Review(base="a" * 40, head="b" * 40, nodes=(NODE,), rollouts=previews))
    assert "**Rollout** api 1.0.0 -> 1.1.0 in 3 batches" in markdown
    assert f"| 1 | `{previews[0].batches[0][0]}` |" in markdown
