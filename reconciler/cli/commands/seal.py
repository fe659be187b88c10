"""`plumb seal`: seal one Secret value to the reconciler, for `secrets/*.yaml`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from contract.errors import PlumbError, UsageError
from reconciler.cli.commands.common import fail
from reconciler.drivers.keys import KEY_ENV, default_key_path, load_key, seal_secret, secrets_key


@click.command()
@click.argument("name")
@click.argument("field")
@click.option(
    "--recipient",
    metavar="KEY",
    help="The reconciler's secrets public key (`plumb keys show --secrets`); no private key needed.",
)
@click.option(
    "--key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help=f"Derive the recipient from the reconciler's key file (default: ${KEY_ENV}, else "
    "~/.config/plumb/reconciler.key) when --recipient is not given.",
)
def seal(name: str, field: str, recipient: str | None, key_file: Path | None) -> None:
    """Seal the value read from standard input as FIELD of the Secret NAME.

    Prints `plumb:sealed:v1:…` to paste under `spec.data.FIELD` of `secrets/NAME.yaml`. Only the
    reconciler can open it, and only as that field of that Secret; it then seals the value again
    to each node whose plan uses `{{ secret("NAME", "FIELD") }}`. Diffs, logs and `plumb plan`
    show only that such a file changed, never the value. One trailing newline of the input is
    dropped.

    \b
    Examples:
      printf %s 's3cret' | plumb seal api-db password --recipient "$(plumb keys show --secrets)"
      plumb seal tls-api key < api.key
    """
    try:
        to = recipient or secrets_key(load_key(key_file or default_key_path())).public_b64()
        value = sys.stdin.buffer.read()
        if not value:
            raise UsageError("nothing to seal: give the value on standard input")
        click.echo(seal_secret(value.removesuffix(b"\n"), to, name=name, field=field))
    except PlumbError as error:
        fail(error)
