"""Dependency order between services, and the cycles that make one impossible."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def order(depends_on: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """Services with their dependencies first; ties by name. Unknown names and cycles are skipped."""
    done: dict[str, None] = {}
    visiting: set[str] = set()
    for root in sorted(depends_on):
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            name, index = stack.pop()
            if name in done or (index == 0 and name in visiting):
                continue
            visiting.add(name)
            deps = sorted(d for d in depends_on.get(name, ()) if d in depends_on)
            if index < len(deps):
                stack.append((name, index + 1))
                if deps[index] not in done and deps[index] not in visiting:
                    stack.append((deps[index], 0))
                continue
            visiting.discard(name)
            done[name] = None
    return tuple(done)


def cycles(depends_on: Mapping[str, Sequence[str]]) -> list[tuple[str, ...]]:
    """Each elementary cycle once, as the names along it, rotated to start at its smallest name."""
    found: set[tuple[str, ...]] = set()
    for component in _strongly_connected(depends_on):
        if len(component) > 1 or component[0] in depends_on.get(component[0], ()):
            found.add(_cycle_in(component, depends_on))
    return sorted(found)


def _cycle_in(component: Sequence[str], depends_on: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """One cycle through the smallest member of a strongly connected component (breadth first)."""
    members, start = set(component), min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for name in frontier:
            for dep in sorted(depends_on.get(name, ())):
                if dep == start:
                    path = [name]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return tuple(reversed(path))
                if dep in members and dep not in parents:
                    parents[dep] = name
                    following.append(dep)
        frontier = following
    return (start,)


def _strongly_connected(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative so deep chains cannot exhaust the stack."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            deps = [d for d in sorted(graph.get(node, ())) if d in graph]
            if i < len(deps):
                work.append((node, i + 1))
                dep = deps[i]
                if dep not in index:
                    work.append((dep, 0))
                elif dep in on_stack:
                    low[node] = min(low[node], index[dep])
                continue
            for dep in deps:
                if dep in on_stack:
                    low[node] = min(low[node], low[dep])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                result.append(sorted(component))
    return result
