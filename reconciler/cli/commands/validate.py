"""`plumb validate`: check a desired-state repository and print every finding."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from contract.errors import PlumbError
from reconciler.cli.commands.common import fail, load_desired, print_findings, source_options
from reconciler.core.findings import has_errors


@click.command()
@source_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "github"]),
    default="text",
    show_default=True,
    help="text: path:line:col: field: message [code]; json: a list of findings; "
    "github: ::error annotations for GitHub Actions.",
)
def validate(path: Path, rev: str | None, fmt: str) -> None:
    """Validate the desired state in PATH (default: the current directory).

    Checks every document against its kind's JSON Schema, then every reference between documents
    (templates, traits, services, nodes, issuers, releases), dependency cycles, parameters, paths
    against allowedPaths, and conflicts between rendered resources and ports on each node. All
    findings are printed, not only the first. Warnings do not fail.

    Exit status: 0 valid, 1 invalid.

    \b
    Examples:
      plumb validate examples/shop
      plumb validate . --rev origin/main --format github
    """
    try:
        desired = load_desired(path, rev)
    except PlumbError as error:
        fail(error)
        return
    root = "" if rev else _prefix(path)
    print_findings(desired.findings, fmt, root=root)
    errors = sum(1 for f in desired.findings if f.is_error)
    warnings = len(desired.findings) - errors
    if fmt == "text":
        model = desired.model
        counts = f"{len(model.nodes)} nodes, {len(model.services)} services" if model else ""
        verdict = "invalid" if errors else "valid"
        click.echo(f"{verdict}: {errors} error(s), {warnings} warning(s); {counts}", err=True)
    sys.exit(1 if has_errors(desired.findings) else 0)


def _prefix(path: Path) -> str:
    """Findings name files relative to the repository root; show them from the caller's directory."""
    text = path.as_posix()
    return "" if text in (".", "") else text.rstrip("/") + "/"
