"""`plumb plan` views: a review as terminal text, as a pull-request comment (markdown), or as JSON."""

from __future__ import annotations

from typing import Any

from reconciler.core.decide.review import NodeReview, Review, RolloutPreview


def render_text(result: Review) -> str:
    """Plain text for a terminal."""
    lines = [f"plumb plan {result.base[:12]}..{result.head[:12]}"]
    if not result.ok:
        lines.append("the head is invalid; nothing would be planned:")
        lines += [f"  {f}" for f in result.findings]
        return "\n".join(lines) + "\n"
    if not result.changed:
        return lines[0] + "\nno changes\n"
    for rollout in result.rollouts:
        lines.append(f"\nrollout {rollout.describe()}")
        lines += [f"  batch {i}: {', '.join(nodes)}" for i, nodes in enumerate(rollout.batches, start=1)]
        lines += [f"  held (cordoned): {', '.join(rollout.held)}"] if rollout.held else []
    for node in result.nodes:
        lines.append(f"\nnode {node.node}: {node.summary()}")
        lines += [f"  {a}" for a in node.actions]
        for _, diff in node.diffs:
            lines += ["    " + line for line in diff.splitlines()]
    return "\n".join(lines) + "\n"


MARKDOWN_LIMIT = 60_000  # GitHub refuses comments over 65,536 characters


def render_markdown(result: Review, *, limit: int = MARKDOWN_LIMIT) -> str:
    """A pull-request comment: a summary table, then a collapsible section per node.

    A comment that would be longer than `limit` drops the diffs first, then the sections of the
    last nodes, and says so; the table always lists every node.
    """
    title = f"### Plumb plan: `{result.base[:12]}` → `{result.head[:12]}`\n"
    if not result.ok:
        found = "\n".join(f"- `{f.path}:{f.line}:{f.column}` {f.message} [{f.code}]" for f in result.findings)
        return f"{title}\n:x: **The head is invalid**; no plan would change.\n\n{found}\n"
    if not result.changed:
        return f"{title}\nNo node would change.\n"
    table = ["| Node | Changes |", "| --- | --- |"]
    table += [f"| `{n.node}` | {n.summary()} |" for n in result.nodes]
    head = title + f"\n{len(result.nodes)} node(s) would change.\n\n" + "\n".join(table) + "\n\n"
    head += "".join(_markdown_rollout(r) for r in result.rollouts)
    sections = [_markdown_node(n, diffs=True) for n in result.nodes]
    if len(head) + sum(map(len, sections)) <= limit:
        return head + "\n".join(sections)
    note = "_Diffs left out to fit a pull-request comment; `plumb plan --format text` shows them._\n\n"
    body, shown = head + note, 0
    for node in result.nodes:
        section = _markdown_node(node, diffs=False)
        if len(body) + len(section) > limit:
            break
        body, shown = body + section + "\n", shown + 1
    if shown < len(result.nodes):
        body += f"_…and {len(result.nodes) - shown} more node(s)._\n"
    return body


def _markdown_rollout(rollout: RolloutPreview) -> str:
    rows = [f"| {i} | {', '.join(f'`{n}`' for n in nodes)} |" for i, nodes in enumerate(rollout.batches, 1)]
    held = f"\nHeld (cordoned): {', '.join(f'`{n}`' for n in rollout.held)}\n" if rollout.held else ""
    table = "\n".join(["| Batch | Nodes |", "| --- | --- |", *rows])
    return f"**Rollout** {rollout.describe()}\n\n{table}\n{held}\n"


def _markdown_node(node: NodeReview, *, diffs: bool) -> str:
    actions = "\n".join(f"- **{a.kind.value}** `{a.target}`: {a.reason}" for a in node.actions)
    shown = "\n".join(f"```diff\n{diff}```\n" for _, diff in node.diffs if diff) if diffs else ""
    return (
        f"<details><summary><code>{node.node}</code>: {node.summary()}</summary>\n\n"
        f"{actions}\n\n{shown}\n</details>\n"
    )


def render_json(result: Review) -> dict[str, Any]:
    """The review as data (`--format json`)."""
    return {
        "base": result.base,
        "head": result.head,
        "ok": result.ok,
        "changed": result.changed,
        "findings": [f.as_json() for f in result.findings],
        "rollouts": [r.as_json() for r in result.rollouts],
        "nodes": [
            {"node": n.node, "actions": [a.as_json() for a in n.actions], "diffs": dict(n.diffs)}
            for n in result.nodes
        ],
    }
