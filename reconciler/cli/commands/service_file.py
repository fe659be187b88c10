"""`plumb service-file`: print the reconciler's systemd unit for this installation."""

from __future__ import annotations

import click

from contract.units import service_file


@click.command("service-file")
def service_file_command() -> None:
    """Print plumb-reconciler.service for this installation, for /etc/systemd/system/.

    \b
    The reconciler runs sandboxed as a dynamic user (ProtectSystem=strict, its own state and
    cache directories). It reads /etc/plumb/reconciler.env (PLUMB_REPO: the fleet's ssh:// URL);
    its signing key, SSH key and known_hosts go in /var/lib/plumb-reconciler.
    Example:
      plumb service-file > /etc/systemd/system/plumb-reconciler.service
      plumb keys init --key-file /var/lib/plumb-reconciler/reconciler.key
      systemctl daemon-reload && systemctl enable --now plumb-reconciler
    """
    click.echo(service_file("reconciler", "plumb-reconciler.service"), nl=False)
