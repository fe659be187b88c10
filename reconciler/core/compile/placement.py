"""Where services run: label selectors, explicit node lists, and stable replica choice.

Replicas are chosen by rendezvous (highest random weight) hashing: each candidate node gets a
score from a hash of (service, node) and the top `replicas` win. Adding or removing one node only
moves the services whose top set that node enters or leaves — about replicas/nodes of them — and
the choice depends on nothing else (not on file order, not on other services).
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Mapping
from functools import lru_cache

from reconciler.core.compile.model import Node, Placement


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


_MASK = (1 << 64) - 1


@lru_cache(maxsize=1 << 16)
def _name_hash(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")


_K1 = 0xBF58476D1CE4E5B9


def score(service: str, node: str) -> int:
    """The weight of `node` for `service`: a 64-bit mix of both names' hashes."""
    return _scores(_name_hash(service), [_name_hash(node)])[0]


def _scores(service_hash: int, node_hashes: list[int]) -> list[int]:
    """Weights: the names' hashes mixed by one multiply and one xor-shift (enough: the hashes are
    already uniform; the mix only keeps services from ranking nodes alike)."""
    return [(z := ((service_hash ^ h) * _K1) & _MASK) ^ (z >> 29) for h in node_hashes]


@lru_cache(maxsize=4096)
def _pool_hashes(pool: tuple[str, ...]) -> list[int]:
    return [_name_hash(node) for node in pool]


@lru_cache(maxsize=1 << 15)
def choose(service: str, pool: tuple[str, ...], replicas: int | None) -> tuple[str, ...]:
    """Pick `replicas` of `pool` by rendezvous hashing (all of it when replicas is None)."""
    if replicas is None or replicas >= len(pool):
        return pool
    weights = _scores(_name_hash(service), _pool_hashes(pool))
    best = heapq.nlargest(replicas, zip(weights, pool, strict=True))
    return tuple(sorted(node for _, node in best))


def place(service: str, placement: Placement, nodes: Mapping[str, Node]) -> tuple[str, ...]:
    return choose(service, candidates(placement, nodes), placement.replicas)


class NodeIndex:
    """Nodes indexed by label, so a thousand selectors over a thousand nodes stay cheap."""

    def __init__(self, nodes: Mapping[str, Node]) -> None:
        self.nodes = nodes
        self.by_label: dict[tuple[str, str], set[str]] = {}
        for name, node in nodes.items():
            for key, value in node.labels.items():
                self.by_label.setdefault((key, value), set()).add(name)
        self._memo: dict[tuple[object, ...], tuple[str, ...]] = {}

    def candidates(self, placement: Placement) -> tuple[str, ...]:
        """The same answer as `candidates(placement, nodes)`, memoised per selector or list."""
        selector = (
            tuple(sorted((k, str(v)) for k, v in placement.selector.items())) if placement.selector else None
        )
        key = (selector, placement.nodes)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = self._compute(placement, selector)
        return found

    def _compute(self, placement: Placement, selector: tuple[tuple[str, str], ...] | None) -> tuple[str, ...]:
        if placement.nodes is not None or selector is None:
            return candidates(placement, self.nodes)
        sets = [self.by_label.get(pair, set()) for pair in selector]
        chosen = set.intersection(*sets) if sets else set(self.nodes)
        return tuple(sorted(chosen))

    def place(self, service: str, placement: Placement) -> tuple[str, ...]:
        return choose(service, self.candidates(placement), placement.replicas)
