"""The `plumb` command line: a thin click group whose commands are imported only when used."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from reconciler import __version__

# name -> "module:attribute"; imported lazily so `plumb --help` and `plumb validate` start fast.
_COMMANDS: dict[str, str] = {
    "validate": "reconciler.commands.validate:validate",
    "render": "reconciler.commands.render:render",
    "reconcile": "reconciler.commands.reconcile:reconcile",
    "plan": "reconciler.commands.plan:plan",
    "status": "reconciler.commands.status:status",
    "keys": "reconciler.commands.keys:keys",
    "rollback": "reconciler.commands.rollback:rollback",
    "demo": "reconciler.commands.demo:demo",
    "seal": "reconciler.commands.seal:seal",
}


class LazyGroup(click.Group):
    """A click group that imports each command's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attribute)
        return command


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, prog_name="plumb")
def cli() -> None:
    """Plumb: GitOps for plain Linux hosts.

    The desired state of a fleet lives as YAML in a Git repository. `plumb` validates and renders
    it, reconciles each commit into one signed plan per node on the state branch, shows reviewers
    what a change would do, and reports fleet status. Run `plumb COMMAND --help` for details.
    """


def main(argv: list[str] | None = None) -> Any:
    return cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="plumb")
