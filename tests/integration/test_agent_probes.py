"""Health probes against real sockets, an HTTP server and commands."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agent.host.probes import run_probe

pytestmark = pytest.mark.integration


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        """Quiet."""


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


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
    result = run_probe(probe(server), ports={"web": server}, unit_active=active)
    assert result.ok is ok, result.message
