"""The `plumb` command line: a thin click group whose commands are imported only when used.

Built-in commands live in `reconciler.cli.commands`; other installed packages add commands through the
`plumb.commands` entry-point group (the demo fleet does), so the reconciler never imports them.
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import entry_points
from typing import Any

import click

from reconciler import __version__

# name -> "module:attribute"; imported lazily so `plumb --help` and `plumb validate` start fast.
PLUGIN_GROUP = "plumb.commands"
_COMMANDS: dict[str, str] = {
    "init": "reconciler.cli.commands.init:init",
    "bootstrap": "reconciler.cli.commands.bootstrap:bootstrap_command",
    "validate": "reconciler.cli.commands.validate:validate",
    "render": "reconciler.cli.commands.render:render",
    "reconcile": "reconciler.cli.commands.reconcile:reconcile",
    "plan": "reconciler.cli.commands.plan:plan",
    "status": "reconciler.cli.commands.status:status",
    "keys": "reconciler.cli.commands.keys:keys",
    "rollback": "reconciler.cli.commands.rollback:rollback",
    "seal": "reconciler.cli.commands.seal:seal",
    "service-file": "reconciler.cli.commands.service_file:service_file_command",
}


class LazyGroup(click.Group):
    """A click group that imports each command's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(_COMMANDS) | {plugin.name for plugin in entry_points(group=PLUGIN_GROUP)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            plugins = entry_points(group=PLUGIN_GROUP, name=cmd_name)
            target = next((plugin.value for plugin in plugins), None)
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
