"""Invariants that hold for any fleet: rendering is deterministic, placement is stable."""

from __future__ import annotations

import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.compile.desired import SourceFile, compile_desired
from reconciler.core.compile.placement import choose

TEMPLATE = """apiVersion: plumb/v1
kind: Template
metadata: {name: web}
spec:
  parameters: {type: object, properties: {port: {type: integer}, greeting: {type: string, default: hi}}}
  ports: [{name: http, port: "{{ params.port }}"}]
  resources:
    - file: {path: "/etc/plumb/{{ service.name }}/{{ node.name }}.conf", content: "{{ params.greeting }} {{ node.address }}\\n"}
    - unit: {name: "{{ service.name }}.service", content: "[Service]\\nExecStart=/opt/run {{ params.port }}\\n"}
"""


def _fleet(nodes: int, services: list[tuple[int, int, str, list[int]]]) -> list[SourceFile]:
    files = {"templates/web.yaml": TEMPLATE}
    for n in range(nodes):
        files[f"nodes/n{n}.yaml"] = (
            f"apiVersion: plumb/v1\nkind: Node\nmetadata: {{name: n{n}, labels: {{zone: z{n % 3}}}}}\n"
            f"spec: {{address: 10.0.{n // 250}.{n % 250 + 1}}}\n"
        )
    for index, (replicas, zone, greeting, deps) in enumerate(services):
        depends = [f"s{d}" for d in deps if d < index]
        files[f"services/s{index}.yaml"] = (
            f"apiVersion: plumb/v1\nkind: Service\nmetadata: {{name: s{index}}}\nspec:\n  template: web\n"
            f"  params: {{port: {9000 + index}, greeting: {json.dumps(greeting)}}}\n"
            f"  placement: {{selector: {{zone: z{zone}}}, replicas: {replicas}}}\n"
            f"  dependsOn: {json.dumps(depends)}\n"
        )
    return [SourceFile(path, text.encode()) for path, text in files.items()]


def _output(files: list[SourceFile]) -> bytes:
    desired = compile_desired(files)
    nodes = {name: [r.plan_entry() for r in resources] for name, resources in desired.nodes.items()}
    return json.dumps(
        {"nodes": nodes, "findings": [f.as_json() for f in desired.findings]}, sort_keys=True
    ).encode()


service_rows = st.lists(
    st.tuples(
        st.integers(1, 3),
        st.integers(0, 2),
        st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12),
        st.lists(st.integers(0, 15), max_size=3),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=40, deadline=None)
@given(nodes=st.integers(1, 9), services=service_rows, seed=st.integers(0, 2**32))
def test_rendering_is_deterministic(
    nodes: int, services: list[tuple[int, int, str, list[int]]], seed: int
) -> None:
    """The same files, in any order, render to byte-identical output."""
    files = _fleet(nodes, services)
    shuffled = list(files)
    random.Random(seed).shuffle(shuffled)
    assert _output(files) == _output(shuffled)


@settings(max_examples=60, deadline=None)
@given(
    node_count=st.integers(3, 60),
    replicas=st.integers(1, 3),
    services=st.lists(
        st.text("abcdefghij-", min_size=1, max_size=10), min_size=20, max_size=200, unique=True
    ),
)
def test_adding_a_node_moves_only_what_it_must(node_count: int, replicas: int, services: list[str]) -> None:
    """A new node only takes replicas onto itself; no service moves between old nodes,
    and about replicas/(nodes+1) of the services move at all."""
    before_pool = tuple(f"node-{i}" for i in range(node_count))
    after_pool = tuple(sorted((*before_pool, "node-new")))
    moved = 0
    for service in services:
        before = set(choose(service, before_pool, replicas))
        after = set(choose(service, after_pool, replicas))
        if before != after:
            moved += 1
            assert after - before == {"node-new"}, (service, before, after)
            assert len(before - after) == (1 if replicas < node_count + 1 and len(before) == replicas else 0)
    expected = len(services) * min(replicas, node_count + 1) / (node_count + 1)
    assert moved <= 2 * expected + 5


@settings(max_examples=60, deadline=None)
@given(
    node_count=st.integers(3, 60),
    replicas=st.integers(1, 3),
    services=st.lists(
        st.text("abcdefghij-", min_size=1, max_size=10), min_size=20, max_size=200, unique=True
    ),
    gone=st.integers(0, 59),
)
def test_removing_a_node_moves_only_its_services(
    node_count: int, replicas: int, services: list[str], gone: int
) -> None:
    """Only services that ran on the removed node move, and each keeps its other nodes."""
    pool = tuple(f"node-{i}" for i in range(node_count))
    removed = pool[gone % node_count]
    smaller = tuple(n for n in pool if n != removed)
    for service in services:
        before = set(choose(service, pool, replicas))
        after = set(choose(service, smaller, replicas))
        if removed not in before:
            assert before == after
        else:
            assert before - {removed} <= after
