"""Pure parsers of tool output: `nginx -t`, /proc/net/tcp and /proc/<pid>/stat."""

from __future__ import annotations

import pytest

from agent.host.nginxctl import NginxMessage, parse_test_output
from agent.host.procnet import Listener, descendants, parse_ppid, parse_proc_net_tcp

NGINX_OUTPUTS = [
    # (stderr, exit status, ok, messages, blamed files)
    (
        "nginx: the configuration file /etc/nginx/nginx.conf syntax is ok\n"
        "nginx: configuration file /etc/nginx/nginx.conf test is successful\n",
        0,
        True,
        (),
        frozenset(),
    ),
    (
        'nginx: [emerg] unknown directive "bogus" in /etc/nginx/conf.d/shop.conf:3\n'
        "nginx: configuration file /etc/nginx/nginx.conf test failed\n",
        1,
        False,
        (NginxMessage("emerg", 'unknown directive "bogus"', "/etc/nginx/conf.d/shop.conf", 3),),
        frozenset({"/etc/nginx/conf.d/shop.conf"}),
    ),
    (
        '2026/11/22 07:17:32 [emerg] 7773#7773: open() "/nonexist" failed (2: No such file or directory)\n',
        1,
        False,
        (NginxMessage("emerg", 'open() "/nonexist" failed (2: No such file or directory)'),),
        frozenset(),
    ),
    (
        'nginx: [warn] conflicting server name "a" on 0.0.0.0:80, ignored\n',
        0,
        True,
        (NginxMessage("warn", 'conflicting server name "a" on 0.0.0.0:80, ignored'),),
        frozenset(),
    ),
]


@pytest.mark.parametrize(("output", "status", "ok", "messages", "files"), NGINX_OUTPUTS)
def test_nginx_test_output(
    output: str, status: int, ok: bool, messages: tuple[NginxMessage, ...], files: frozenset[str]
) -> None:
    """Levels, messages, and the file and line nginx blames."""
    result = parse_test_output(output, returncode=status)
    assert (result.ok, result.messages, result.files()) == (ok, messages, files)


TCP = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0\n"
    "   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4243 1 0\n"
    "   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1 0\n"
)
TCP6 = (
    "  sl  local_address                         remote_address                        st tx_queue rx_queue\n"
    "   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 "
    "00:00000000 00000000     0        0 777 1 0\n"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [(TCP, (Listener(8080, 4242), Listener(22, 99))), (TCP6, (Listener(80, 777),)), ("header only\n", ())],
)
def test_proc_net_tcp(text: str, expected: tuple[Listener, ...]) -> None:
    """Only sockets in LISTEN (0A), with their port and inode."""
    assert parse_proc_net_tcp(text) == expected


@pytest.mark.parametrize(
    ("stat", "ppid"),
    [("12 (python3) S 1 12 12 0", 1), ("40 (my (weird) cmd) R 39 40 40", 39)],
)
def test_parse_ppid(stat: str, ppid: int) -> None:
    """The parent pid, even when the command name has spaces and parentheses."""
    assert parse_ppid(stat) == ppid


def test_descendants() -> None:
    """A process and everything below it, and nothing else."""
    parents = {10: 1, 11: 10, 12: 11, 13: 1, 14: 12}
    assert descendants(10, parents) == {10, 11, 12, 14}
