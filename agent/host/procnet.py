"""Which TCP ports a process tree listens on, read from /proc (parsers pure, table-tested)."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

LISTEN = "0A"


@dataclass(frozen=True)
class Listener:
    """A listening socket from /proc/net/tcp or tcp6."""

    port: int
    inode: int


def parse_proc_net_tcp(text: str) -> tuple[Listener, ...]:
    """Listening sockets in the text of /proc/net/tcp or /proc/net/tcp6."""
    found = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != LISTEN:
            continue
        port = int(fields[1].rpartition(":")[2], 16)
        found.append(Listener(port, int(fields[9])))
    return tuple(found)


def parse_ppid(stat: str) -> int:
    """The parent pid from the text of /proc/<pid>/stat (the command may contain spaces and parens)."""
    return int(stat.rpartition(")")[2].split()[1])


def descendants(root: int, parents: Mapping[int, int]) -> set[int]:
    """`root` and every process below it, given pid -> parent pid."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in tree:
                tree.add(child)
                todo.append(child)
    return tree


@functools.cache
def _children_files() -> bool:
    """Whether the kernel lists a task's children in /proc (CONFIG_PROC_CHILDREN)."""
    return Path("/proc/thread-self/children").exists()


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process: the fallback when /proc lists no children."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = parse_ppid(Path(f"/proc/{entry}/stat").read_text())
            except (OSError, ValueError, IndexError):
                continue
    return parents


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                found |= {int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()}
    return found


def process_tree(root: int) -> set[int]:
    """`root` and its descendants, walking only that tree where the kernel lists children."""
    if not _children_files():
        return descendants(root, _parents())
    tree, todo = {root}, [root]
    while todo:
        for child in _children(todo.pop()) - tree:
            tree.add(child)
            todo.append(child)
    return tree


def _socket_inodes(pids: Iterable[int]) -> set[int]:
    inodes = set()
    for pid in pids:
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for name in names:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{name}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def _listening(inodes: set[int]) -> set[int]:
    """Ports of the listening sockets among `inodes` (no table is read when there is no socket)."""
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6") if inodes else ():
        try:
            text = Path(table).read_text()
        except OSError:
            continue
        ports |= {listener.port for listener in parse_proc_net_tcp(text) if listener.inode in inodes}
    return ports


def listening_ports(pid: int, wanted: Collection[int] = ()) -> set[int]:
    """TCP ports the process `pid` and its descendants listen on.

    The main process alone is looked at first: when it already listens on every port in `wanted`,
    its descendants are not searched."""
    own = _listening(_socket_inodes([pid]))
    if wanted and own >= set(wanted):
        return own
    return _listening(_socket_inodes(process_tree(pid)))
