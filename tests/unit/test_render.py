"""The sandboxed renderer: typed single expressions, strict undefined names, endpoints()."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.compile.render import (
    ENV,
    NATIVE_ENV,
    Calls,
    Lookups,
    RenderError,
    functions,
    render_string,
)
from reconciler.core.compile.values import Endpoint

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


_names = st.sampled_from(
    [
        "params.port",
        "params.name",
        "service.name",
        "params.on",
        "params.items",
        "params.tags",
        "params.nested.deep",
        "params.none",
        "missing",
        "params.float",
    ]
)
_texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8).filter(
    lambda t: not any(m in t for m in ("{", "}", "%", "#", "\r"))
)


@settings(max_examples=500, deadline=None)
@given(parts=st.lists(st.tuples(_texts, _names), max_size=4), tail=_texts)
def test_fast_substitution_equals_jinja(parts: list[tuple[str, str]], tail: str) -> None:
    """The no-Jinja path for `text {{ a.b }} text` gives exactly what the sandbox gives, errors included.

    (Carriage returns are left out: plain text without markers is kept byte for byte, while Jinja2
    normalises the line endings of a template; strings with both go through Jinja2.)"""
    context = {
        "params": {
            "port": 8080,
            "name": "api",
            "on": True,
            "items": "shadowed",
            "tags": ["a"],
            "nested": {"deep": 1.5},
            "none": None,
            "float": 0.1,
        },
        "service": {"name": "api"},
    }
    source = "".join(f"{text}{{{{ {name} }}}}" for text, name in parts) + tail
    try:
        expected: Any = ENV.from_string(source).render(**context)
    except Exception:
        with pytest.raises(RenderError):
            render_string(source, context)
        return
    got = render_string(source, context)
    if len(parts) == 1 and parts[0][0] == "" and tail == "":
        assert str(got) == expected or got == NATIVE_ENV.compile_expression(parts[0][1])(**context)
    else:
        assert got == expected
