"""`plumb keys`: make and show the reconciler's plan-signing key."""

from __future__ import annotations

from pathlib import Path

import click

from contract.errors import PlumbError
from reconciler.cli.commands.common import fail
from reconciler.drivers.keys import KEY_ENV, default_key_path, init_key, load_key, secrets_key

_KEY_FILE = click.option(
    "--key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help=f"Private key file (default: ${KEY_ENV}, else ~/.config/plumb/reconciler.key).",
)


@click.group()
def keys() -> None:
    """Manage the reconciler's Ed25519 key, which signs every node plan."""


@keys.command("init")
@_KEY_FILE
@click.option(
    "--force", is_flag=True, help="Replace an existing key (every agent must then pin the new one)."
)
def init(key_file: Path | None, force: bool) -> None:
    """Make the reconciler's key (mode 0600, outside the repository) and print its public key.

    Each agent pins the printed public key when it runs
    (`plumb-agent run --repo URL --node NAME --reconciler-key KEY`) and refuses plans not
    signed by it. `plumb keys show` prints it again.
    """
    path = key_file or default_key_path()
    try:
        key = init_key(path, force=force)
    except PlumbError as error:
        fail(error)
        return
    click.echo(f"wrote {path} (mode 0600); public key for agents to pin:", err=True)
    click.echo(key.public_b64())


@keys.command("show")
@_KEY_FILE
@click.option(
    "--secrets", is_flag=True, help="Print the public key Secret values are sealed to (`plumb seal`) instead."
)
def show(key_file: Path | None, secrets: bool) -> None:
    """Print the public key agents pin (or, with --secrets, the one `plumb seal` seals to)."""
    try:
        key = load_key(key_file or default_key_path())
    except PlumbError as error:
        fail(error)
        return
    click.echo(secrets_key(key).public_b64() if secrets else key.public_b64())
