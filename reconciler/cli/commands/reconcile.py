"""`plumb reconcile`: turn desired commits into signed node plans on the state branch, once or watching."""

from __future__ import annotations

import gc
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import click
import structlog

from contract.errors import PlumbError, RewindRefused, TemporaryError
from contract.logs import configure_logging
from reconciler.cli.commands.common import fail, finding_lines
from reconciler.core.compile.model import seconds
from reconciler.drivers.keys import KEY_ENV, default_key_path, load_key
from reconciler.drivers.statestore import LocalLocation, open_location
from reconciler.drivers.watch import install_signals, run_loop, watching_refs
from reconciler.reconcile import PassResult, Reconciler

log = structlog.get_logger("plumb.reconcile")


def settle_caches() -> None:
    """Move what survived a pass (mostly the reconciler's caches) out of the cyclic collector's way.

    A warm reconciler holds millions of cached objects; a full collection walking them all took a
    fifth of a one-service pass at 1,000 nodes. Young garbage is collected first; the caches are
    acyclic and still freed by reference counting when replaced. This tunes the whole process, so
    the process that runs pass after pass calls it (after each pass that did work), not the library.
    """
    gc.collect(1)
    gc.freeze()


def _report(result: PassResult) -> None:
    """The pass in one line; after an invalid desired commit, every finding as `plumb validate` prints it."""
    click.echo(_summary(result))
    if not result.ok:
        for line in finding_lines(result.findings):
            click.echo(line)


def _summary(result: PassResult) -> str:
    desired = (result.desired or "?")[:12]
    if not result.ok:
        return f"{desired}: invalid, {len(result.findings)} finding(s); plans kept as they were"
    if result.written is None:
        return f"{desired}: nothing changed"
    nodes = f"plans of {len(result.changed_nodes)} node(s) changed" if result.changed_nodes else "status only"
    return f"{desired}: wrote {result.written[:12]} ({nodes})"


@click.command()
@click.option(
    "--repo", "repo_url", required=True, metavar="URL_OR_PATH", help="Bare repository path, file://, ssh://."
)
@click.option("--once", "mode", flag_value="once", help="Run one pass and exit.")
@click.option("--watch", "mode", flag_value="watch", default=True, help="Keep running (default).")
@click.option(
    "--interval", default="30s", show_default=True, help="Fetch (remote) or re-check (local) this often."
)
@click.option("--branch", default="main", show_default=True, help="The desired-state branch.")
@click.option(
    "--key-file", type=click.Path(path_type=Path, dir_okay=False), help=f"Signing key (default ${KEY_ENV})."
)
@click.option("--allow-rewind", is_flag=True, help="Accept a desired branch that moved backwards.")
@click.option(
    "--ssh-key", type=click.Path(path_type=Path, dir_okay=False), help="Private key for ssh:// remotes."
)
@click.option("--known-hosts", type=click.Path(path_type=Path, dir_okay=False), help="Pinned SSH host keys.")
@click.option(
    "--cache-dir", type=click.Path(path_type=Path, file_okay=False), help="Where remotes are mirrored."
)
def reconcile(
    repo_url: str,
    mode: str,
    interval: str,
    branch: str,
    key_file: Path | None,
    allow_rewind: bool,
    ssh_key: Path | None,
    known_hosts: Path | None,
    cache_dir: Path | None,
) -> None:
    """Reconcile the desired branch of a repository into signed per-node plans on the state branch.

    With a local bare repository, ref updates are watched and reconciled within a second; with a
    remote, the repository is fetched every --interval and on SIGHUP. A pass that changes nothing
    writes nothing. An invalid desired commit is recorded and its findings are printed after the
    summary line, as `plumb validate` prints them. Exit status (--once): 0 done, 1 error or invalid
    desired commit.

    \b
    Examples:
      plumb reconcile --repo /srv/git/fleet.git --once
      plumb reconcile --repo ssh://git@git.example.com/fleet.git --ssh-key ~/.ssh/plumb \
          --known-hosts ~/.ssh/known_hosts
    """
    configure_logging()
    try:
        key = load_key(key_file or default_key_path())
        location = open_location(repo_url, cache_dir=cache_dir, ssh_key=ssh_key, known_hosts=known_hosts)
        reconciler = Reconciler(location, key=key, branch=branch, allow_rewind=allow_rewind)
        period = float(seconds(interval, 30))
    except (PlumbError, ValueError) as error:
        fail(error if isinstance(error, PlumbError) else PlumbError(str(error)))
        return
    if mode == "once":
        _once(reconciler)
    else:
        _watch(reconciler, period)


def _once(reconciler: Reconciler) -> None:
    try:
        reconciler.location.refresh()
        result = reconciler.reconcile()
    except PlumbError as error:
        fail(error)
        return
    _report(result)
    sys.exit(0 if result.ok else 1)


MIN_ALARM = 0.5  # seconds: a deadline already past never makes the loop spin


class _Alarm:
    """Wakes the loop at the moment a pass said the state will change by itself (`wake_at`)."""

    def __init__(self, wake: threading.Event) -> None:
        self.wake = wake
        self.timer: threading.Timer | None = None

    def set(self, at: datetime | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if at is None:
            return
        delay = max(MIN_ALARM, (at - datetime.now(UTC)).total_seconds() + 0.05)
        self.timer = threading.Timer(delay, self.wake.set)
        self.timer.daemon = True
        self.timer.start()


def _watch(reconciler: Reconciler, interval: float) -> None:
    wake, stop = threading.Event(), threading.Event()
    install_signals(wake, stop)
    alarm = _Alarm(wake)

    def step() -> None:
        try:
            reconciler.location.refresh()
            result = reconciler.reconcile()
        except RewindRefused as error:
            log.error("rewind refused", error=str(error))
        except TemporaryError as error:
            log.warning("pass failed, will retry", error=str(error))
        except PlumbError as error:
            log.error("pass failed", error=str(error))
        except Exception:  # a daemon outlives one bad pass; the next one starts from Git again
            log.exception("pass crashed")
        else:
            if not result.skipped:
                settle_caches()
                alarm.set(result.wake_at)  # a rollout gate, timeout, window or offline deadline
                _report(result)

    location = reconciler.location
    if isinstance(location, LocalLocation):
        ignored = frozenset({"refs/heads/" + reconciler.state_branch})
        with watching_refs(location.git_dir, wake, ignored=ignored):
            run_loop(step, wake=wake, stop=stop, interval=interval)
    else:
        run_loop(step, wake=wake, stop=stop, interval=interval)
