"""The `plumb-agent` command line: enroll, run, status. Thin: parse, call one function, print.

Exit codes: 0 everything converged (or nothing to do), 2 a plan was rejected or a resource failed,
1 an error (bad options, unreadable keys).
"""

from __future__ import annotations

import json
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from agent import __version__
from agent.host.nginxctl import Nginx
from agent.host.unitfile import parse_timespan
from agent.loop.runner import Agent, AgentOptions
from agent.loop.state import StateDir
from contract.crypto import SealingKey, SigningKey, VerifyKey
from contract.defaults import REPORTS_PREFIX, STATE_BRANCH
from contract.errors import PlumbError
from contract.logs import configure_logging
from contract.report import parse_report
from contract.units import service_file

DEFAULT_STATE_DIR = "/var/lib/plumb-agent"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _state_dir(state_dir: str | None, root: str) -> Path:
    if state_dir:
        return Path(state_dir)
    return Path(root) / DEFAULT_STATE_DIR.lstrip("/")


def _check_node(node: str) -> str:
    if not _NAME.match(node):
        raise click.BadParameter(f"{node!r} is not a valid node name", param_hint="--node")
    return node


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="plumb-agent")
def main() -> None:
    """Plumb's node agent: pull this node's signed plan, converge the host, report back."""


def enroll_keys(state: StateDir) -> tuple[str, str]:
    """Create the node's signing and sealing keys unless they exist; return their public halves."""
    if not state.signing_key.exists():
        SigningKey.generate().save(state.signing_key)
    if not state.sealing_key.exists():
        SealingKey.generate().save(state.sealing_key)
    return SigningKey.load(state.signing_key).public_b64(), SealingKey.load(state.sealing_key).public_b64()


@main.command()
@click.option("--node", required=True, help="This node's name, as in nodes/NAME.yaml.")
@click.option("--state-dir", default=None, help=f"Where keys and state live (default {DEFAULT_STATE_DIR}).")
@click.option("--root", default="/", help="Map every absolute path under this directory.")
def enroll(node: str, state_dir: str | None, root: str) -> None:
    """Create the node's keys (kept if present) and print the spec.keys block for nodes/NAME.yaml."""
    _check_node(node)
    signing, sealing = enroll_keys(StateDir(_state_dir(state_dir, root)))
    click.echo(f"# nodes/{node}.yaml\nspec:\n  keys:\n    signing: {signing}\n    sealing: {sealing}")


def _reconciler_key(value: str) -> VerifyKey:
    return VerifyKey.from_text_or_file(value)


def _seconds(value: str) -> float:
    try:
        return parse_timespan(value)
    except PlumbError as exc:
        raise click.BadParameter(str(exc), param_hint="--interval") from exc


@main.command()
@click.option("--repo", required=True, help="The Git remote: file://, ssh://, https:// or a path.")
@click.option("--node", required=True, help="This node's name.")
@click.option(
    "--reconciler-key", required=True, help="The reconciler's public key (base64) or a file holding it."
)
@click.option(
    "--root", default="/", show_default=True, help="Map every absolute path of the plan under this directory."
)
@click.option("--state-dir", default=None, help="Agent state (default <root>/var/lib/plumb-agent).")
@click.option("--runtime", type=click.Choice(["systemd", "process"]), default="systemd", show_default=True)
@click.option("--once", is_flag=True, help="Run one cycle and exit.")
@click.option("--interval", default="15s", show_default=True, help="Time between cycles.")
@click.option("--state-branch", default=STATE_BRANCH, show_default=True)
@click.option("--reports-prefix", default=REPORTS_PREFIX, show_default=True)
@click.option(
    "--ssh-key", type=click.Path(dir_okay=False), default=None, help="Private key for ssh:// remotes."
)
@click.option(
    "--known-hosts", type=click.Path(dir_okay=False), default=None, help="Pinned host keys for ssh://."
)
@click.option("--nginx-binary", default="/usr/sbin/nginx", show_default=True)
@click.option(
    "--nginx-config", default=None, help="nginx's main config (-c); it must include the sites directory."
)
@click.option("--nginx-prefix", default=None, help="nginx's prefix (-p).")
@click.option(
    "--local-artifacts",
    type=click.Path(file_okay=False),
    default=None,
    help="Accept file:// artifact URLs for files below this directory (demos, tests); refused otherwise.",
)
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def run(**options: Any) -> None:
    """Pull the plan, verify it, converge the host, probe and report (every --interval)."""
    agent_options = _agent_options(options)
    configure_logging()
    stopping = threading.Event()

    def stop(*_: Any) -> None:
        # the exit may land inside a libgit2 callback, which swallows it: the flag ends the loop then
        stopping.set()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        outcome = Agent(agent_options).run(once=options["once"], stop=stopping.is_set)
    except PlumbError as exc:
        if stopping.is_set():
            sys.exit(0)
        click.echo(f"plumb-agent: {exc}", err=True)
        sys.exit(1)
    if stopping.is_set():
        sys.exit(0)
    _print_outcome(outcome.report, output=options["output"])
    sys.exit(0 if outcome.ok else 2)


def _agent_options(options: dict[str, Any]) -> AgentOptions:
    root = Path(options["root"]).resolve()
    mapped = root != Path("/")
    if mapped and options["runtime"] == "systemd":
        raise click.BadParameter(
            f"{root}: the systemd runtime would drive this machine's own systemd (daemon-reload, start "
            "and stop units); with --root, use --runtime process",
            param_hint="--root",
        )
    refused = None
    if mapped and not options["nginx_config"]:
        refused = (
            "--root without --nginx-config: this machine's nginx does not read the sites under "
            f"{root}, so it is never tested or reloaded for them; give a private nginx's config"
        )
    nginx = Nginx(
        binary=options["nginx_binary"],
        config=Path(options["nginx_config"]) if options["nginx_config"] else None,
        prefix=Path(options["nginx_prefix"]) if options["nginx_prefix"] else None,
        site_dir="/etc/nginx/conf.d",
        refused=refused,
    )
    try:
        key = _reconciler_key(options["reconciler_key"])
    except PlumbError as exc:
        raise click.BadParameter(str(exc), param_hint="--reconciler-key") from exc
    return AgentOptions(
        node=_check_node(options["node"]),
        repo_url=options["repo"],
        reconciler_key=key,
        root=root,
        state_dir=_state_dir(options["state_dir"], str(root)),
        runtime=options["runtime"],
        state_branch=options["state_branch"],
        reports_prefix=options["reports_prefix"],
        ssh_key=Path(options["ssh_key"]) if options["ssh_key"] else None,
        known_hosts=Path(options["known_hosts"]) if options["known_hosts"] else None,
        interval=_seconds(options["interval"]),
        nginx=nginx,
        local_artifacts=Path(options["local_artifacts"]).resolve() if options["local_artifacts"] else None,
    )


def _print_outcome(document: dict[str, Any], *, output: str) -> None:
    if output == "json":
        click.echo(json.dumps(document, indent=2, sort_keys=True))
        return
    report = parse_report(document)
    serial, commit = (report.applied.serial, report.applied.commit) if report.applied else ("-", "-")
    click.echo(f"node {report.node}: applied serial {serial} ({commit})")
    if report.rejected is not None:
        click.echo(f"  rejected plan: {report.rejected.reason}")
    for entry in report.resources:
        error = f" — {entry.error}" if entry.error else ""
        click.echo(f"  {entry.outcome:<9} {entry.id}: {entry.reason or ''}{error}")
    for drift in report.drift:
        click.echo(f"  drift     {drift.id}: {drift.what}{' (corrected)' if drift.corrected else ''}")


@main.command("service-file")
def service_file_command() -> None:
    """Print plumb-agent.service for this installation, for /etc/systemd/system/.

    \b
    It reads /etc/plumb/agent.env (PLUMB_REPO, PLUMB_NODE, PLUMB_INTERVAL) and the files under
    /etc/plumb (reconciler.pub, deploy_key, known_hosts); state lives in /var/lib/plumb-agent.
    Example:
      plumb-agent service-file > /etc/systemd/system/plumb-agent.service
      systemctl daemon-reload && systemctl enable --now plumb-agent
    """
    click.echo(service_file("agent", "plumb-agent.service"), nl=False)


@main.command()
@click.option("--state-dir", default=None, help="Agent state (default <root>/var/lib/plumb-agent).")
@click.option("--root", default="/", help="The --root the agent runs with.")
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def status(state_dir: str | None, root: str, output: str) -> None:
    """Print what is applied and the last report."""
    state = StateDir(_state_dir(state_dir, root))
    report = state.load("report")
    applied = state.load("applied")
    if output == "json":
        click.echo(
            json.dumps({"applied": applied, "report": report, "applying": state.load("journal")}, indent=2)
        )
        return
    if report is None:
        click.echo(f"no report yet; applied: {applied}")
        return
    click.echo(f"last report at {report['time']}")
    _print_outcome(report, output="text")
    if state.load("journal") is not None:
        click.echo("  an apply was interrupted; it will be finished at the next start")
