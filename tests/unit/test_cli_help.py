"""Every command of both scripts teaches through --help, and what the help names exists."""

from __future__ import annotations

import re
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from agent.cli import main as agent_cli
from reconciler.cli.main import cli as plumb_cli

SCRIPTS: dict[str, click.Group] = {"plumb": plumb_cli, "plumb-agent": agent_cli}
# A command line quoted in help text: `plumb keys show --secrets`, `plumb-agent run --repo URL ...`.
QUOTED = re.compile(r"`((?:plumb|plumb-agent) [^`]+)`")


def _commands(prefix: tuple[str, ...], group: click.Group) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, f"{' '.join(prefix)} lists {name} but cannot load it"
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _commands((*prefix, name), command)


ALL = [(path, command) for script, group in SCRIPTS.items() for path, command in _commands((script,), group)]


def _help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(SCRIPTS[path[0]], [*path[1:], "--help"])
    assert result.exit_code == 0, result.output
    return result.output


def _resolve(words: list[str]) -> tuple[click.Command, list[str]]:
    """The command a quoted command line names, and the options it uses."""
    command: click.Command = SCRIPTS[words[0]]
    rest = words[1:]
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        found = command.get_command(click.Context(command), rest[0])
        if found is None:
            break
        command, rest = found, rest[1:]
    return command, [word.split("=")[0] for word in rest if word.startswith("--")]


class TestHelp:
    """`--help` of every command, as a user reads it."""

    @pytest.mark.parametrize("path", [p for p, _ in ALL], ids=lambda p: " ".join(p))
    def test_every_command_has_help(self, path: tuple[str, ...]) -> None:
        """Each command answers --help with a usage line and a description."""
        text = _help(path)
        assert text.startswith("Usage:") and len(text.splitlines()) > 3

    @pytest.mark.parametrize("path", [p for p, _ in ALL], ids=lambda p: " ".join(p))
    def test_commands_named_in_help_exist(self, path: tuple[str, ...]) -> None:
        """A command line quoted in help names a real command and only options it has."""
        for quoted in QUOTED.findall(_help(path)):
            words = quoted.replace("[", " ").replace("]", " ").split()
            command, options = _resolve(words)
            have = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
            missing = [o for o in options if o not in have | {"--help", "--version"}]
            assert not missing, f"`{quoted}` in the help of {' '.join(path)}: no option {missing}"

    @pytest.mark.parametrize("script", sorted(SCRIPTS))
    def test_version(self, script: str) -> None:
        """Both scripts answer --version with the one version of Plumb."""
        from contract import __version__

        result = CliRunner().invoke(SCRIPTS[script], ["--version"])
        assert result.exit_code == 0 and __version__ in result.output and script in result.output
