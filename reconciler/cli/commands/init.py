"""`plumb init`: start a new desired-state repository from the skeleton shipped with Plumb."""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

import click
import pygit2

from contract import __version__
from contract.errors import PlumbError, UsageError
from reconciler.cli.commands.common import fail
from reconciler.drivers.keys import default_key_path, init_key, load_key

SKELETON = "reconciler.cli"


@click.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", default=None, help="The Repository's name (default: the directory's name).")
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where the reconciler's key is, or is made if missing (default: ~/.config/plumb/reconciler.key).",
)
def init(directory: Path, name: str | None, key_file: Path | None) -> None:
    """Start a new desired-state repository in DIRECTORY (new, or empty but for .git).

    \b
    Writes:
      plumb.yaml                      the Repository: allowed paths, heartbeat, offlineAfter
      templates/static-site.yaml      one template: a file and a systemd unit with a probe
      services/hello.yaml             one service from it, on nodes labelled role=web
      nodes/node-1.yaml.example       a node to copy once its agent is enrolled
      .github/workflows/plumb-plan.yml  plumb validate + plumb plan as a pull-request comment,
                                      with this version of Plumb pinned
      .gitignore
    makes DIRECTORY a Git repository (branch main) unless it is one, and makes the reconciler's
    key unless it exists (printing the public key agents pin). Nothing is committed.

    \b
    Example:
      plumb init fleet && cd fleet && plumb validate
    """
    try:
        written = create(directory, name=name or directory.resolve().name)
        key_path = key_file or default_key_path()
        made = not key_path.exists()
        key = init_key(key_path) if made else load_key(key_path)
    except PlumbError as error:
        fail(error)
        return
    click.echo(f"wrote {len(written)} files in {directory}")
    state = "made" if made else "found"
    click.echo(f"reconciler key {state} at {key_path}; the public key agents pin:\n  {key.public_b64()}")
    click.echo(
        "\nnext:\n"
        f"  cd {directory} && plumb validate          # valid, with a warning until a node has role=web\n"
        "  on each host: plumb-agent enroll --node NAME, then write nodes/NAME.yaml from\n"
        "    nodes/node-1.yaml.example with the printed keys (or use plumb bootstrap)\n"
        "  git add -A && git commit -m 'A fleet' && git push to the repository agents reach\n"
        "  plumb reconcile --repo URL --watch      # on the machine that holds the key"
    )


def create(directory: Path, *, name: str) -> list[str]:
    """Copy the skeleton into `directory` (refusing one with anything but .git in it) and make it
    a Git repository if it is not one; the paths written."""
    if directory.exists() and any(p.name != ".git" for p in directory.iterdir()):
        raise UsageError(
            f"{directory} is not empty; plumb init starts a new repository in a new or empty one"
        )
    if not name or "/" in name:
        raise UsageError(f"{name!r} cannot name a repository; give --name")
    written: list[str] = []
    _copy(resources.files(SKELETON).joinpath("skeleton"), directory, "", written, {"{name}": name})
    if not (directory / ".git").exists():
        pygit2.init_repository(str(directory), initial_head="main")
    return sorted(written)


def _copy(
    source: Traversable, target: Path, relative: str, written: list[str], values: dict[str, str]
) -> None:
    for entry in sorted(source.iterdir(), key=lambda e: e.name):
        path = f"{relative}{entry.name}"
        if entry.is_dir():
            _copy(entry, target, path + "/", written, values)
            continue
        text = entry.read_text()
        for placeholder, value in {**values, "{version}": __version__}.items():
            text = text.replace(placeholder, value)
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        (target / path).write_text(text)
        written.append(path)
