"""`plumb status`: read a fleet snapshot, print its view for people or machines, or redraw it."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.live import Live

from contract.crypto import VerifyKey
from contract.defaults import REPORTS_PREFIX, STATE_BRANCH
from contract.errors import PlumbError, UsageError
from reconciler.cli.commands.common import fail
from reconciler.cli.views.status import console, fleet_view, node_view, plain, render, service_view
from reconciler.drivers.keys import default_key_path, load_key
from reconciler.drivers.snapshot import read_snapshot

WATCH_PERIOD = 2.0
JsonObject = dict[str, Any]


@click.command()
@click.option(
    "--repo",
    "repo_path",
    default=".",
    show_default=True,
    type=click.Path(path_type=Path),
    help="The fleet's Git repository (bare, or a clone that fetched the plumb/* branches).",
)
@click.option("--node", metavar="NAME", help="Show one node: its pending actions, drift, rejected plan.")
@click.option("--service", metavar="NAME", help="Show one service: endpoints, instances, its rollout.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="table for people (colour on a terminal), json for machines.",
)
@click.option("--watch", is_flag=True, help=f"Redraw every {WATCH_PERIOD:.0f} s until Ctrl-C.")
@click.option(
    "--reconciler-key",
    metavar="KEY|FILE",
    envvar="PLUMB_RECONCILER_KEY",
    help="The reconciler's public key (base64, or a file holding it; env PLUMB_RECONCILER_KEY): only "
    "status it signed is shown. Default: the public half of the local reconciler key, if there is one.",
)
@click.option("--state-branch", default=STATE_BRANCH, show_default=True, help="The state branch.")
@click.option(
    "--reports-prefix", default=REPORTS_PREFIX, show_default=True, help="Prefix of report branches."
)
def status(
    repo_path: Path,
    node: str | None,
    service: str | None,
    fmt: str,
    watch: bool,
    reconciler_key: str | None,
    state_branch: str,
    reports_prefix: str,
) -> None:
    """Show the fleet: nodes, services, applications, rollouts and the desired commit last reconciled.

    Everything is read with Git from the repository (no checkout, nothing written): the status
    documents the reconciler keeps on the state branch, and each node's latest report for how long
    ago it reported and which plan serial it applied.

    \b
    Nodes     online, offline (no report within offlineAfter) or cordoned; LAST REPORT is
              computed now; APPLIED/PLAN is the serial the node applied against its plan's
              (yellow when behind); PENDING counts actions still to do, DRIFT changes made on
              the host that the agent found (and corrected).
    Services  pending, deploying, running, degraded (some instances unhealthy), failed (none
              ready) or stopped; ENDPOINTS counts the healthy ones the upstreams use;
              VERSIONS what the nodes run; REASON names the instances that are not ready.
    Apps      services sharing an `app` label, rolled up: running, deploying,
              partially-degraded or failed.
    Source    the desired commit reconciled last; when it was invalid, its findings as
              file:line:col, and the commit whose plans the nodes keep.
    Trust     whether the status shown is signed by the reconciler (its manifest verified
              with --reconciler-key); ALERT lines name what the reconciler found on the
              state or report branches that it did not write or that did not verify.

    \b
    Examples:
      plumb status --repo /srv/git/fleet.git
      plumb status --service api          # endpoints, instances, rollout phase and batch
      plumb status --node app-1           # pending actions and drift of one node
      plumb status --format json | jq '.services[] | select(.state != "running")'
      plumb status --watch

    Exit status: 0 shown, 1 error (no repository, no state branch yet, unknown node or service).
    """
    if node and service:
        fail(UsageError("give --node or --service, not both"))
    try:
        key = _verify_key(reconciler_key)
        show = _shower(
            repo_path, node=node, service=service, fmt=fmt, branches=(state_branch, reports_prefix), key=key
        )
        if watch:
            _watch(show, fmt)
        else:
            _print(show(), fmt)
    except PlumbError as error:
        fail(error)


def _verify_key(given: str | None) -> VerifyKey | None:
    """The key status is verified with: the one given, else the local reconciler's, else none."""
    if given:
        return VerifyKey.from_text_or_file(given)
    local = default_key_path()
    if local.is_file():
        with contextlib.suppress(PlumbError, OSError, ValueError):
            return load_key(local).verify_key()
    return None


def _shower(
    path: Path,
    *,
    node: str | None,
    service: str | None,
    fmt: str,
    branches: tuple[str, str],
    key: VerifyKey | None,
) -> Callable[[], JsonObject]:
    """A function reading the repository afresh and returning the view asked for."""

    def show() -> JsonObject:
        snapshot = read_snapshot(
            path, state_branch=branches[0], reports_prefix=branches[1], reconciler_key=key
        )
        now = datetime.now(UTC)
        if node:
            return node_view(snapshot, node, now)
        if service:
            return service_view(snapshot, service, now)
        return fleet_view(snapshot, now)

    return show


def _print(view: JsonObject, fmt: str, *, compact: bool = False) -> None:
    if fmt == "json":
        click.echo(json.dumps(view, sort_keys=True, indent=None if compact else 2))
    elif sys.stdout.isatty():
        console().print(render(view))
    else:
        click.echo(plain(render(view)))


def _watch(show: Callable[[], JsonObject], fmt: str) -> None:
    """Redraw in place on a terminal; elsewhere print one view (one JSON line) per period."""
    try:
        if fmt == "table" and sys.stdout.isatty():
            with Live(render(show()), console=console(), auto_refresh=False) as live:
                while True:
                    time.sleep(WATCH_PERIOD)
                    live.update(render(show()), refresh=True)
        while True:
            _print(show(), fmt, compact=True)
            sys.stdout.flush()
            time.sleep(WATCH_PERIOD)
    except KeyboardInterrupt:
        return
