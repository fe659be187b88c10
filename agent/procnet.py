"""Which TCP ports a process tree listens on, read from /proc (parsers pure, table-tested)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
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


def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = parse_ppid(Path(f"/proc/{entry}/stat").read_text())
            except (OSError, ValueError, IndexError):
                continue
    return parents


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


def listening_ports(pid: int) -> set[int]:
    """TCP ports the process `pid` and its descendants listen on."""
    inodes = _socket_inodes(descendants(pid, _parents()))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            text = Path(table).read_text()
        except OSError:
            continue
        ports |= {listener.port for listener in parse_proc_net_tcp(text) if listener.inode in inodes}
    return ports
