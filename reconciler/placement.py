"""Where services run: label selectors, explicit node lists, and stable replica choice.

Replicas are chosen by rendezvous (highest random weight) hashing: each candidate node gets a
score from a hash of (service, node) and the top `replicas` win. Adding or removing one node only
moves the services whose top set that node enters or leaves — about replicas/nodes of them — and
the choice depends on nothing else (not on file order, not on other services).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from reconciler.model import Node, Placement


def matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """Every selector label must be present with the same value."""
    return all(labels.get(key) == str(value) for key, value in selector.items())


def candidates(placement: Placement, nodes: Mapping[str, Node]) -> tuple[str, ...]:
    """The nodes a placement may use, sorted by name; no selector and no list means every node."""
    if placement.nodes is not None:
        chosen: Iterable[str] = (name for name in placement.nodes if name in nodes)
    elif placement.selector is not None:
        chosen = (name for name, node in nodes.items() if matches(node.labels, placement.selector))
    else:
        chosen = nodes
    return tuple(sorted(set(chosen)))


def score(service: str, node: str) -> int:
    digest = hashlib.blake2b(f"{service}\0{node}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def choose(service: str, pool: tuple[str, ...], replicas: int | None) -> tuple[str, ...]:
    """Pick `replicas` of `pool` by rendezvous hashing (all of it when replicas is None)."""
    if replicas is None or replicas >= len(pool):
        return pool
    ranked = sorted(pool, key=lambda node: (-score(service, node), node))
    return tuple(sorted(ranked[:replicas]))


def place(service: str, placement: Placement, nodes: Mapping[str, Node]) -> tuple[str, ...]:
    return choose(service, candidates(placement, nodes), placement.replicas)
