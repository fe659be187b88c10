"""`plumb bootstrap`: put the agent on a host over SSH and write its Node document."""

from __future__ import annotations

from pathlib import Path

import click

from contract.crypto import VerifyKey
from contract.errors import PlumbError, UsageError
from reconciler.cli.commands.common import fail
from reconciler.drivers.bootstrap import Request, Step, bootstrap, node_document
from reconciler.drivers.keys import default_key_path, load_key
from reconciler.drivers.ssh import DEFAULT_KNOWN_HOSTS, Host, Target


@click.command()
@click.argument("target", metavar="[USER@]HOST[:PORT]")
@click.option("--node", required=True, help="The node's name, as in nodes/NAME.yaml.")
@click.option("--repo", "repo_url", required=True, help="The Git URL the agent fetches plans from.")
@click.option(
    "--identity", type=click.Path(dir_okay=False, path_type=Path), help="SSH private key for the host."
)
@click.option(
    "--known-hosts",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_KNOWN_HOSTS,
    show_default=True,
    help="Pinned host keys: an unknown or changed key is refused.",
)
@click.option("--address", help="The node's address for the desired state (default: HOST).")
@click.option(
    "--label", "labels", multiple=True, metavar="KEY=VALUE", help="A label of the node (repeatable)."
)
@click.option(
    "--reconciler-key",
    metavar="KEY|FILE",
    help="The key agents pin (default: this machine's reconciler key).",
)
@click.option("--wheel", type=click.Path(dir_okay=False, path_type=Path), help="Install this wheel of Plumb.")
@click.option(
    "--wheelhouse",
    type=click.Path(file_okay=False, path_type=Path),
    help="Wheels of every dependency (`make wheelhouse`), for hosts that reach no package index.",
)
@click.option(
    "--git-known-hosts",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="known_hosts lines of the Git server, for the agent (default: none; needed for ssh:// repos).",
)
@click.option(
    "--desired",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="The desired-state working directory nodes/NAME.yaml is written into.",
)
@click.option("--sudo", is_flag=True, help="Run the host's commands through sudo -n (a non-root user).")
@click.option("--dry-run", is_flag=True, help="Check the host and say what would be done; change nothing.")
def bootstrap_command(
    target: str,
    node: str,
    repo_url: str,
    identity: Path | None,
    known_hosts: Path,
    address: str | None,
    labels: tuple[str, ...],
    reconciler_key: str | None,
    wheel: Path | None,
    wheelhouse: Path | None,
    git_known_hosts: Path | None,
    desired: Path,
    sudo: bool,
    dry_run: bool,
) -> None:
    """Install the agent on a host over SSH, enroll it, start it, and write nodes/NAME.yaml.

    \b
    Steps, each skipped when already done (a second run changes nothing and keeps the keys):
      check       Python 3.11+, python3-venv, systemd as PID 1, free disk
      install     a virtualenv in /opt/plumb-agent with this version of Plumb (--wheel and
                  --wheelhouse for hosts without a package index)
      enroll      the node's signing and sealing keys in /var/lib/plumb-agent
      deploy key  /etc/plumb/deploy_key, whose public key you register with the Git server
      configure   /etc/plumb/agent.env, reconciler.pub, known_hosts
      service     plumb-agent.service installed, enabled and started
    then nodes/NAME.yaml (address, labels, keys) in --desired, ready to commit.

    \b
    Example:
      plumb bootstrap root@10.0.0.5 --node web-1 --repo ssh://git@git.example.com/fleet.git \\
          --label role=web --git-known-hosts ~/.ssh/known_hosts
    """
    try:
        where = Target.parse(target)
        request = Request(
            node=node,
            repo_url=repo_url,
            reconciler_key=_pinned(reconciler_key),
            wheel=wheel,
            wheelhouse=wheelhouse,
            git_known_hosts=git_known_hosts.read_text() if git_known_hosts else "",
        )
        node_labels = _labels(labels)
        host = Host(where, identity=identity, known_hosts=known_hosts, sudo=sudo)
    except PlumbError as error:
        fail(error)
        return
    try:
        enrolled = bootstrap(host, request, dry_run=dry_run, progress=_show)
    except PlumbError as error:
        fail(error)
        return
    finally:
        host.close()
    if dry_run:
        click.echo("dry run: nothing changed")
        return
    path = desired / "nodes" / f"{node}.yaml"
    text = node_document(
        node,
        address=address or where.host,
        labels=node_labels,
        signing=enrolled.signing,
        sealing=enrolled.sealing,
    )
    state = "unchanged" if path.exists() and path.read_text() == text else "written"
    if state == "written":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    click.echo(f"  {'node file':<11} {state}: {path}")
    click.echo("\nregister this deploy key with the Git server (read, and push to its own report branch):")
    click.echo(f"  {enrolled.deploy_key}")


def _labels(items: tuple[str, ...]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--label {item!r}: give KEY=VALUE")
        labels[key] = value
    return labels


def _pinned(given: str | None) -> str:
    """The reconciler key agents pin: the one given, else this machine's reconciler key."""
    key = VerifyKey.from_text_or_file(given) if given else load_key(default_key_path()).verify_key()
    return key.public_b64()


def _show(step: Step) -> None:
    click.echo(f"  {step.name:<11} {step.outcome}: {step.detail}")
