"""`plumb demo`: the shop example as a live local fleet, a pushed change, and a request through an edge."""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from contract.errors import PlumbError
from contract.vocabulary import ResourceKind
from demo.fleet import (
    Answer,
    FleetError,
    LocalFleet,
    NodeProgress,
    ShopSetup,
    bump_workers,
    ensure_runnable,
    http_get,
    nginx_available,
    prepare_shop,
)

# The wheel carries the shop as `demo/shop`; a source checkout has it under examples/.
_HERE = Path(__file__).resolve().parent
EXAMPLE = _HERE / "shop" if (_HERE / "shop").is_dir() else _HERE.parent / "examples" / "shop"
API_HOST = "api.example.com"
FOREVER = 365 * 86400.0  # "until Ctrl-C"


@dataclass
class _Run:
    """One demo run: the fleet, the console, and whether it got to the end."""

    fleet: LocalFleet
    console: Console
    timeout: float
    shop: ShopSetup | None = None
    done: bool = False


@click.command()
@click.option(
    "--example",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=EXAMPLE,
    show_default=True,
    help="The desired state to run (the demo's change and request expect the shop).",
)
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Keep everything here (it must not exist yet) instead of a temporary directory removed at the end.",
)
@click.option(
    "--duration",
    type=float,
    metavar="SECONDS",
    help="Keep the fleet running this long after the change arrived, then stop (0: at once). "
    "Without it, run until Ctrl-C.",
)
@click.option("--interval", default="1s", show_default=True, help="How often each agent pulls its plan.")
@click.option(
    "--timeout",
    type=float,
    default=240,
    show_default=True,
    help="Give up waiting for convergence after this.",
)
def demo(example: Path, workdir: Path | None, duration: float | None, interval: str, timeout: float) -> None:
    """Run the shop example as a live fleet on this machine and push a change through it.

    Creates a local bare repository from the example, starts the reconciler in watch mode and one
    agent per node (each in its own --root, with the process runtime, and a private nginx on a
    loopback port for the edge nodes), waits until every node has converged, shows a request
    through an edge reaching the API, then pushes a change (one more API worker), shows how long
    it took from `git push` to applied on every node it touched, and the API's new answer.
    Ctrl-C stops everything it started. Exit status: 0 done, 1 it did not converge, 130 interrupted.

    \b
    Examples:
      plumb demo                      # run until Ctrl-C
      plumb demo --duration 0         # stop as soon as the change has arrived (CI)
      plumb demo --workdir /tmp/shop  # keep the repository, roots and logs afterwards
    """
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=110)  # CI logs: room for the table, no wrapping
    if workdir is not None and workdir.exists():
        raise click.BadParameter(f"{workdir} exists; give a new directory", param_hint="--workdir")
    temporary = workdir is None
    path = Path(tempfile.mkdtemp(prefix="plumb-demo-")) if workdir is None else workdir
    fleet = LocalFleet(path, agent_interval=interval, local_artifacts=path / "artifacts")
    run = _Run(fleet, console, timeout)
    code = 130
    try:
        with _signals_interrupt():
            code = _demo(run, example, duration)
    except KeyboardInterrupt:
        console.print("\n[yellow]interrupted[/]")
    except PlumbError as error:
        console.print(f"[red]plumb demo: {error}[/]")
        console.print(f"logs: {run.fleet.workdir / 'logs'}")
        code = 1
    finally:
        _stop(run, temporary)
    sys.exit(code)


def _demo(run: _Run, example: Path, duration: float | None) -> int:
    fleet, console = run.fleet, run.console
    notes = ensure_runnable()
    console.print(f"[bold]plumb demo[/] — {example} as a fleet on this machine, in {fleet.workdir}")
    fleet.create(example)
    run.shop = prepare_shop(fleet.work, fleet.workdir / "artifacts")
    fleet.enroll()
    for line in [*run.shop.artifacts, *run.shop.notes, *notes]:
        console.print(f"  • {line}")
    commit, _ = fleet.publish("The shop, as in examples/shop")
    console.print(f"pushed {commit[:12]} to {fleet.bare} (main)")
    fleet.start()
    edges = sum(1 for n in fleet.nodes.values() if n.nginx)
    console.print(
        f"started the reconciler (watching the repository), {len(fleet.nodes)} agents "
        f"(process runtime, agent interval {fleet.agent_interval})"
        + (f" and {edges} private nginx" if edges and nginx_available() else "")
    )
    if not _converge(run, "every node converges"):
        return 1
    _show_request(run, expect="")
    if not _push_change(run):
        return 1
    run.done = True
    _hold(run, duration)
    return 0


def _converge(run: _Run, what: str) -> bool:
    """Show progress until every node converged; the final table either way."""
    converged = _watch(run, what)
    progress = run.fleet.progress()
    run.console.print(_table(progress))
    if not converged:
        run.console.print(
            f"[red]not converged after {run.timeout:.0f} s[/]; logs in {run.fleet.workdir / 'logs'}"
        )
    return converged


def _watch(run: _Run, what: str) -> bool:
    """Wait (bounded) until every node converged and stayed so for a moment (discovery may re-plan edges)."""
    deadline, stable_since = time.monotonic() + run.timeout, None
    with _display(run.console, what) as show:
        while time.monotonic() < deadline:
            run.fleet.check_children()
            progress = run.fleet.progress()
            show(progress)
            done = all(_done(p) for p in progress)
            stable_since = (stable_since or time.monotonic()) if done else None
            if stable_since is not None and time.monotonic() - stable_since >= 1.5:
                return True
            time.sleep(0.2)
    return False


def _done(progress: NodeProgress) -> bool:
    """Converged; without nginx, an edge whose only failures are its nginx sites counts as converged."""
    if progress.converged or nginx_available():
        return progress.converged
    nginx_only = all(f.startswith(f"{ResourceKind.NGINX}:") for f in progress.failed)
    return progress.in_sync and nginx_only and progress.ready == progress.instances


@contextmanager
def _display(console: Console, what: str) -> Iterator[Callable[[Sequence[NodeProgress]], None]]:
    """A live table on a terminal; elsewhere (CI logs) one line per node whenever its state changes."""
    started = time.monotonic()
    if console.is_terminal:
        with Live(console=console, refresh_per_second=4, transient=True) as live:
            yield lambda p: live.update(
                _table(p, title=f"waiting until {what} ({time.monotonic() - started:.0f} s)")
            )
        return
    seen: dict[str, str] = {}

    def show(progress: Sequence[NodeProgress]) -> None:
        for entry in progress:
            if seen.get(entry.node) != _state(entry):
                seen[entry.node] = _state(entry)
                console.print(f"  {time.monotonic() - started:5.1f} s  {entry.node}: {_state(entry)}")

    console.print(f"waiting until {what}")
    yield show


def _state(progress: NodeProgress) -> str:
    if _done(progress) and not progress.converged:
        return "converged, but for its nginx sites (no nginx here)"
    return progress.describe()


def _table(progress: Sequence[NodeProgress], *, title: str = "fleet") -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("node", "plan serial", "applied", "resources", "services ready"):
        table.add_column(column, no_wrap=True)
    table.add_column("state")
    for p in progress:
        ok = p.resources - len(p.failed)
        colour = "green" if _done(p) else ("red" if p.failed or p.rejected else "yellow")
        table.add_row(
            p.node,
            str(p.planned or "-"),
            str(p.applied or "-"),
            f"{ok}/{p.resources} ok",
            f"{p.ready}/{p.instances}",
            f"[{colour}]{_state(p)}[/]",
        )
    return table


def _push_change(run: _Run) -> bool:
    fleet, console = run.fleet, run.console
    before = fleet.planned()
    workers = bump_workers(fleet.work)
    commit, pushed_at = fleet.publish(f"api: {workers} workers")
    console.print(f"\n[bold]git push[/]: services/api.yaml params.workers = {workers} ({commit[:12]})")
    changed = fleet.wait_applied(commit, before, timeout=run.timeout)
    elapsed = time.monotonic() - pushed_at
    console.print(
        f"[bold green]push → applied in {elapsed:.2f} s[/] on {', '.join(changed) or 'no node'} "
        f"(reconciler signed new plans, each agent pulled, verified and applied its own)"
    )
    if not _converge(run, "the restarted API instances are ready"):
        return False
    _show_request(run, expect=f"with {workers} workers")
    return True


def _show_request(run: _Run, *, expect: str) -> None:
    """GET / through the first edge with `Host: api.example.com`, retried (bounded) until the API answers."""
    edge = next((n for n in run.fleet.nodes.values() if n.nginx), None)
    if edge is None or run.shop is None or not nginx_available():
        run.console.print("[yellow]no request through an edge: no nginx here[/]")
        return
    answer = Answer(0, "")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answer = http_get(edge.address, run.shop.edge_port, host=API_HOST)
        if answer.status == 200 and expect in answer.body:
            break
        time.sleep(0.2)
    command = f"curl -H 'Host: {API_HOST}' http://{edge.address}:{run.shop.edge_port}/"
    colour = "green" if answer.status == 200 else "red"
    run.console.print(f"$ {command}\n[{colour}]{answer.status or 'no answer'}[/] {answer.body.strip()}")
    if answer.status != 200:
        raise FleetError(f"the API did not answer through {edge.name}")


def _hold(run: _Run, duration: float | None) -> None:
    console, fleet = run.console, run.fleet
    if duration is not None and duration <= 0:
        return
    edge = next((n for n in fleet.nodes.values() if n.nginx), None)
    console.print("\nthe fleet keeps running" + (f" for {duration:g} s" if duration else "; meanwhile, try:"))
    if duration is None:
        if edge is not None and run.shop is not None and nginx_available():
            console.print(f"  curl -H 'Host: {API_HOST}' http://{edge.address}:{run.shop.edge_port}/")
        console.print(f"  git clone {fleet.bare}   # edit, commit, push: the fleet follows")
        console.print(f"  tail -f {fleet.workdir / 'logs'}/*.log")
        console.print("Ctrl-C stops everything the demo started")
    time.sleep(duration if duration is not None else FOREVER)


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM stop the demo, even when SIGINT came in ignored (a `&` job of a script)."""

    def interrupt(signum: int, frame: object) -> NoReturn:
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop(run: _Run, temporary: bool) -> None:
    """Stop every process the demo started (ignoring further Ctrl-C meanwhile), then tidy up."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        run.console.print("stopping the agents, their services, nginx and the reconciler…")
        run.fleet.stop()
        if temporary:
            shutil.rmtree(run.fleet.workdir, ignore_errors=True)
        else:
            run.console.print(f"kept {run.fleet.workdir}: repository fleet.git, nodes/*/root, logs/")
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
