"""Waking the reconciler: watchdog on a local repository's refs, an interval timer, and SIGHUP.

A push to a local bare repository shows up as a `<ref>.lock` created, written and renamed onto
the ref (a moved event), or as a rewritten `packed-refs`; lock files themselves are ignored, and so
is the state branch, which only reconcilers write. Only events that can change a ref are asked
of the kernel (`REF_EVENTS`): agents fetching read refs all the time, and those opens and closes
never reach the handler. Every wake-up runs one pass; events arriving during a pass are coalesced
into the next one.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

DEBOUNCE_SECONDS = 0.05
# a ref written in place or renamed from its lock, deleted, or a directory of refs moved or removed
REF_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]


def is_ref_change(git_dir: Path, path: str, *, ignored: frozenset[str]) -> bool:
    """True for a ref or packed-refs under `git_dir`, not a lock file and not an ignored ref."""
    try:
        relative = Path(path).resolve().relative_to(git_dir.resolve()).as_posix()
    except ValueError:
        return False
    if relative.endswith(".lock") or relative in ignored:
        return False
    return relative == "packed-refs" or relative.startswith("refs/")


class _RefEvents(FileSystemEventHandler):
    """Sets `wake` when a ref of the repository changes."""

    def __init__(self, git_dir: Path, wake: threading.Event, ignored: frozenset[str]) -> None:
        self.git_dir = git_dir
        self.wake = wake
        self.ignored = ignored

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in ("created", "modified", "moved", "deleted"):
            return
        paths = [event.src_path, getattr(event, "dest_path", "")]
        if any(p and is_ref_change(self.git_dir, _text(p), ignored=self.ignored) for p in paths):
            self.wake.set()


def _text(path: Any) -> str:
    return path.decode() if isinstance(path, bytes) else str(path)


@contextmanager
def watching_refs(
    git_dir: Path, wake: threading.Event, *, ignored: frozenset[str] = frozenset()
) -> Iterator[None]:
    """Watch `refs/` (recursively) and `packed-refs` of a bare repository while the block runs."""
    handler = _RefEvents(git_dir, wake, ignored)
    observer = Observer()
    (git_dir / "refs").mkdir(exist_ok=True)
    observer.schedule(handler, str(git_dir / "refs"), recursive=True, event_filter=REF_EVENTS)
    observer.schedule(handler, str(git_dir), recursive=False, event_filter=REF_EVENTS)
    observer.start()
    try:
        yield
    finally:
        observer.stop()
        observer.join(timeout=5)


def install_signals(wake: threading.Event, stop: threading.Event) -> None:
    """SIGHUP wakes the loop (fetch now); SIGTERM and SIGINT stop it after the current pass."""

    def hup(signum: int, frame: object) -> None:
        wake.set()

    def term(signum: int, frame: object) -> None:
        stop.set()
        wake.set()

    signal.signal(signal.SIGHUP, hup)
    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGINT, term)


def run_loop(
    step: Callable[[], None], *, wake: threading.Event, stop: threading.Event, interval: float
) -> None:
    """Run `step` now, then whenever woken or every `interval` seconds, until `stop` is set."""
    while not stop.is_set():
        wake.clear()
        step()
        if stop.is_set():
            return
        if wake.wait(timeout=interval):
            time.sleep(DEBOUNCE_SECONDS)  # let the rest of a push (several refs) land first
