"""`plumb render`: print one node's resources in apply order, each with the service it came from."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from contract.errors import PlumbError
from reconciler.cli.commands.common import fail, load_desired, print_findings, source_options


@click.command()
@source_options
@click.option("--node", "node", required=True, metavar="NAME", help="The node whose resources to print.")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
def render(path: Path, rev: str | None, node: str, fmt: str) -> None:
    """Render the resources NODE would get from the desired state in PATH.

    Resources come in apply order (dependencies first), each with its id, kind, the service it came
    from, where it was declared, and the ids it is applied after. Endpoints are empty here: no
    reports are read, so upstreams render their fallback. The desired state must be valid.

    \b
    Example:
      plumb render examples/shop --node edge-1
    """
    try:
        desired = load_desired(path, rev)
    except PlumbError as error:
        fail(error)
        return
    if not desired.ok or desired.model is None:
        print_findings([f for f in desired.findings if f.is_error], "text")
        click.echo("plumb: the desired state is invalid; nothing rendered", err=True)
        sys.exit(1)
    if node not in desired.nodes:
        known = ", ".join(sorted(desired.nodes)) or "none"
        click.echo(f"plumb: unknown node {node!r} (nodes: {known})", err=True)
        sys.exit(1)
    resources = [_entry(r) for r in desired.nodes[node]]
    document = {"node": node, "resources": resources}
    if fmt == "json":
        click.echo(json.dumps(document, indent=2, sort_keys=False))
    else:
        click.echo(
            yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100), nl=False
        )


def _entry(resource: Any) -> dict[str, Any]:
    return {
        "id": resource.id,
        "kind": str(resource.kind),
        "service": resource.service,
        "source": resource.source,
        "after": list(resource.after),
        "spec": dict(resource.spec),
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as `|` blocks, so rendered files read as files."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = (
        "|" if "\n" in value and not any(c in value for c in "\t\r") and value == value.rstrip(" ") else None
    )
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)
_Dumper.add_multi_representer(str, _str)  # str enums (resource kinds) too
