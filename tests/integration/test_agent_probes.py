"""Health probes against real sockets, an HTTP server and commands."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agent.host.probes import run_probe
from contract.plan import parse_probe

pytestmark = pytest.mark.integration
NODE_ADDRESS = "127.0.0.2"  # a loopback address that is not 127.0.0.1


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        """Quiet."""


def _serve(address: str) -> Iterator[int]:
    httpd = http.server.HTTPServer((address, 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    yield from _serve("127.0.0.1")


@pytest.fixture(scope="module")
def node_server() -> Iterator[int]:
    """A server bound to the node's address only, as `examples/minimal` binds its service."""
    yield from _serve(NODE_ADDRESS)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


PROBES: list[tuple[str, Any, bool, bool]] = [
    # (name, probe (callable of the server port), unit active, expected ok)
    ("http ok", lambda port: {"http": {"port": "web", "path": "/healthz"}}, True, True),
    ("http 503", lambda port: {"http": {"port": port, "path": "/other"}}, True, False),
    ("http closed", lambda port: {"http": {"port": _closed_port()}, "timeout": 1}, True, False),
    ("tcp ok", lambda port: {"tcp": {"port": port}}, True, True),
    ("tcp closed", lambda port: {"tcp": {"port": _closed_port()}}, True, False),
    ("exec ok", lambda port: {"exec": {"command": ["true"]}}, True, True),
    ("exec fails", lambda port: {"exec": {"command": ["false"]}}, True, False),
    ("exec missing", lambda port: {"exec": {"command": ["/nonexistent/check"]}}, True, False),
    ("process up", lambda port: {"process": {}}, True, True),
    ("process down", lambda port: {"process": {}}, False, False),
]


@pytest.mark.parametrize(("name", "probe", "active", "ok"), PROBES, ids=[p[0] for p in PROBES])
def test_probe(server: int, name: str, probe: Any, active: bool, ok: bool) -> None:
    """Each kind of probe passes and fails for the right reason."""
    result = run_probe(parse_probe(probe(server)), ports={"web": server}, unit_active=active)
    assert result.ok is ok, result.message


ADDRESSED: list[tuple[str, Any, str, bool, str]] = [
    # (name, probe (callable of the port), node address, expected ok, expected message)
    (
        "http knocks on the node address",
        lambda port: {"http": {"port": port, "path": "/healthz"}},
        NODE_ADDRESS,
        True,
        "GET http://127.0.0.2:{port}/healthz -> 200",
    ),
    (
        "tcp knocks on the node address",
        lambda port: {"tcp": {"port": port}},
        NODE_ADDRESS,
        True,
        "tcp 127.0.0.2:{port} accepts connections",
    ),
    (
        "default 127.0.0.1 misses a server bound to the node address",
        lambda port: {"tcp": {"port": port}},
        "127.0.0.1",
        False,
        "tcp 127.0.0.1:{port}: Connection refused",
    ),
    (
        "an explicit host wins over the node address",
        lambda port: {"http": {"port": port, "path": "/healthz", "host": NODE_ADDRESS}},
        "127.0.0.1",
        True,
        "GET http://127.0.0.2:{port}/healthz -> 200",
    ),
]


@pytest.mark.parametrize(
    ("name", "probe", "address", "ok", "message"), ADDRESSED, ids=[a[0] for a in ADDRESSED]
)
def test_probe_without_host_targets_the_node_address(
    node_server: int, name: str, probe: Any, address: str, ok: bool, message: str
) -> None:
    """A probe without a host goes to the node's address, and its message names where it knocked."""
    result = run_probe(parse_probe(probe(node_server)), ports={}, unit_active=True, address=address)
    assert (result.ok, result.message) == (ok, message.format(port=node_server))
