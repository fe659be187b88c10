"""`plumb plan`: what merging HEAD into BASE would change on each node, for reviewers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import pygit2

from contract.errors import PlumbError
from reconciler.cli.commands.common import fail
from reconciler.cli.views.plan import render_json, render_markdown, render_text
from reconciler.core.compile.desired import CompileCache, compile_desired
from reconciler.core.decide.review import (
    Review,
    invalid_review,
    preview_rollouts,
    review,
)
from reconciler.drivers.desired_source import SourceCache, open_repository, read_commit_files


@click.command()
@click.option("--base", required=True, metavar="REV", help="The commit the change starts from.")
@click.option("--head", required=True, metavar="REV", help="The commit to review.")
@click.option(
    "--repo",
    type=click.Path(path_type=Path, file_okay=False),
    default=".",
    show_default=True,
    help="The Git repository (working copy or bare).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text", show_default=True
)
def plan(base: str, head: str, repo: Path, fmt: str) -> None:
    """Show, per node, what HEAD would change against BASE.

    Resources created, updated or deleted (with unified diffs of the rendered content; secrets
    show only a digest), units restarted, nginx reloaded, services started or stopped. When HEAD
    is invalid, its findings with file:line. A change of a service's Release shows its rollout: the
    batches and which nodes fall in each (as if every node were online; cordoned nodes are held).
    `--format markdown` is ready for a pull-request comment.
    Both sides render without reported endpoints, so upstreams change only where the commit does.

    Exit status: 0 no change, 2 changes, 1 error or invalid HEAD (terraform's convention).

    \b
    Examples:
      plumb plan --base origin/main --head HEAD
      plumb plan --base main --head feature --format markdown > plan.md
    """
    try:
        result = build_review(open_repository(repo), base=base, head=head)
    except PlumbError as error:
        fail(error)
        return
    if fmt == "json":
        click.echo(json.dumps(render_json(result), indent=2))
    else:
        click.echo(render_markdown(result) if fmt == "markdown" else render_text(result), nl=False)
    sys.exit(1 if not result.ok else 2 if result.changed else 0)


def build_review(repository: pygit2.Repository, *, base: str, head: str) -> Review:
    """Read and compile both commits (sharing one cache each) and compare their rendered resources."""
    cache, sources = CompileCache(), SourceCache()
    base_commit, base_files = read_commit_files(repository, base, cache=sources)
    head_commit, head_files = read_commit_files(repository, head, cache=sources)
    old = compile_desired(base_files, cache=cache)
    new = compile_desired(head_files, cache=cache)
    if not new.ok:
        return invalid_review(base_commit=base_commit, head_commit=head_commit, findings=new.findings)
    before = old.nodes if old.ok else {}
    assert new.model is not None
    rollouts = preview_rollouts(old.model if old.ok else None, new.model)
    held = {r.service: dict.fromkeys(r.held, r.from_version) for r in rollouts if r.held and r.from_version}
    if held:  # cordoned nodes keep the version they run: their plans do not change
        new = compile_desired(head_files, cache=cache, pins=held)
    return review(
        base=before, head=new.nodes, base_commit=base_commit, head_commit=head_commit, rollouts=rollouts
    )
