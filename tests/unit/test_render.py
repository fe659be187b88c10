"""The sandboxed renderer: typed single expressions, strict undefined names, endpoints()."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.render import Calls, Lookups, RenderError, functions, render_string
from reconciler.values import Endpoint

CONTEXT: dict[str, Any] = {
    "params": {"port": 8080, "name": "api", "tags": ["a", "b"], "on": True},
    "service": {"name": "api"},
}

ROWS = [
    ("plain text", "plain text"),
    ("{{ params.port }}", 8080),
    ("{{params.port}}", 8080),
    ("{{ params.port + 1 }}", 8081),
    ("{{ params.on }}", True),
    ("{{ params.tags }}", ["a", "b"]),
    ("port {{ params.port }}", "port 8080"),
    ("{{ params.port }}{{ params.port }}", "80808080"),
    ("{{ params.name | upper }}", "API"),
    ("{% if params.on %}yes{% endif %}", "yes"),
    ("{{ params.port }}\n", "8080\n"),
    ("{{ '%05d' % params.port }}", "08080"),
]


@pytest.mark.parametrize(("source", "expected"), ROWS, ids=[r[0] for r in ROWS])
def test_render_string(source: str, expected: Any) -> None:
    """A lone expression keeps its type; anything else renders to text."""
    assert render_string(source, CONTEXT) == expected


ERRORS = [
    ("{{ params.missing }}", "missing", 1),
    ("a\nb\n{{ nothing }}", "nothing", 3),
    ("{% for x in %}", "syntax", 1),
    ("{{ ''.__class__ }}", "sandbox", 1),
    ("{{ params.port.__class__.__bases__ }}", "sandbox", 1),
    ("{{ params.tags.append(1) }}", "sandbox", 1),
    ("{{ 'a' * 100000000 }}", "sandbox", 1),
    ("{{ 2 ** 100000 }}", "sandbox", 1),
    ("{% include 'x' %}", "loader", 1),
    ("{{ 1 / 0 }}", "ZeroDivisionError", 1),
]


@pytest.mark.parametrize(("source", "needle", "line"), ERRORS, ids=[r[0] for r in ERRORS])
def test_render_errors(source: str, needle: str, line: int) -> None:
    """Every failure is a RenderError naming the problem and the line inside the string."""
    with pytest.raises(RenderError) as caught:
        render_string(source, CONTEXT)
    assert needle in caught.value.message
    assert caught.value.line_in_text == line


def _endpoint(address: str, port: int, healthy: bool = True, name: str = "http") -> Endpoint:
    return Endpoint("api", "node", address, name, port, healthy)


def test_endpoints_are_healthy_sorted_and_recorded() -> None:
    """endpoints() lists healthy instances of one port, sorted by (address, port), and records the read."""
    lookups = Lookups(
        {
            "api": [
                _endpoint("10.0.0.9", 80),
                _endpoint("10.0.0.10", 81),
                _endpoint("10.0.0.10", 80),
                _endpoint("10.0.0.2", 80, healthy=False),
                _endpoint("10.0.0.3", 9, name="metrics"),
            ]
        },
        {},
        {},
    )
    calls = Calls()
    context = CONTEXT | functions(lookups, calls)
    text = render_string(
        "{% for e in endpoints('api', 'http') %}{{ e.address }}:{{ e.port }} {% endfor %}", context
    )
    assert text == "10.0.0.10:80 10.0.0.10:81 10.0.0.9:80 "
    assert list(calls.endpoints) == [("api", "http")]
    assert render_string("{{ endpoints('nothing', 'http') }}", context) == []


def test_secret_renders_a_placeholder_and_counts() -> None:
    """secret() never puts the sealed value in rendered text; it marks the resource as secret-bearing."""
    calls = Calls()
    context = CONTEXT | functions(Lookups({}, {"db": {"pw": "plumb:sealed:v1:xyz"}}, {}), calls)
    text = render_string("password={{ secret('db', 'pw') }}", context)
    assert "plumb:sealed" not in text and "db/pw" in text
    assert calls.secret_reads == 1
    with pytest.raises(RenderError):
        render_string("{{ secret('db', 'nope') }}", context)
