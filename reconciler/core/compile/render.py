"""Render templates and traits into concrete resources, in a sandbox that cannot reach the host.

Every string of a template's or trait's resources is a Jinja2 template rendered in an immutable
sandbox with `StrictUndefined` and no loader: nothing in a repository can read files, import
modules or reach Python internals on the reconciler. A string that is exactly one `{{ expression }}`
keeps the expression's type, so `port: "{{ params.port }}"` stays an integer.

Compiled templates are cached by source text, so 2,000 services made from five templates
compile each string once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, Undefined, meta
from jinja2.exceptions import SecurityError
from jinja2.nativetypes import NativeCodeGenerator
from jinja2.sandbox import ImmutableSandboxedEnvironment

from reconciler.core.compile.load import Document, PathKey
from reconciler.core.compile.schemas import dotted
from reconciler.core.compile.values import Endpoint
from reconciler.core.findings import Finding

_EXPRESSION = re.compile(r"\A\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\Z", re.DOTALL)
_MARKERS = ("{{", "{%", "{#")
MAX_OUTPUT = 1024 * 1024
MAX_ITERATIONS = 100_000  # range() steps per service render, summed: nested loops cannot multiply
SECRET_PLACEHOLDER = "<sealed:{name}/{key}>"


class RenderError(Exception):
    """A template string that failed: where in the string, and why."""

    def __init__(self, message: str, line_in_text: int = 1) -> None:
        super().__init__(message)
        self.message, self.line_in_text = message, line_in_text


class _Environment(ImmutableSandboxedEnvironment):
    """The one sandbox every repository string is rendered in.

    Besides Jinja2's own sandbox (no attribute starting with `_`, no mutation, `range` capped),
    `*` and `**` are checked so that `{{ "x" * 10**9 }}` or `{{ 9**9**9 }}` cannot exhaust memory
    or CPU on the reconciler.
    """

    intercepted_binops = frozenset(["*", "**"])

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > 1000:
            raise SecurityError(f"exponent {right} is too large")
        if operator == "*" and _sized(left, right) > MAX_OUTPUT:
            raise SecurityError(f"repetition would be longer than {MAX_OUTPUT}")
        return super().call_binop(context, operator, left, right)


def _sized(left: Any, right: Any) -> int:
    """The length a sequence repetition would have (0 for plain numbers)."""
    for sequence, count in ((left, right), (right, left)):
        if isinstance(sequence, str | list | tuple) and isinstance(count, int):
            return len(sequence) * count
    return 0


class _NativeEnvironment(_Environment):
    code_generator_class = NativeCodeGenerator


ENV = _Environment()
NATIVE_ENV = _NativeEnvironment()


@lru_cache(maxsize=8192)
def _compiled(source: str) -> Any:
    return ENV.from_string(source)


@lru_cache(maxsize=8192)
def _compiled_expression(source: str) -> Any:
    return NATIVE_ENV.compile_expression(source, undefined_to_none=False)


@lru_cache(maxsize=8192)
def references(source: str) -> frozenset[str]:
    """The top-level names a template string reads (`node`, `params`, ...); empty for plain text."""
    if not any(marker in source for marker in _MARKERS):
        return frozenset()
    try:
        return frozenset(meta.find_undeclared_variables(ENV.parse(source)))
    except TemplateSyntaxError:
        return frozenset({"node"})  # unknown: render per node, where the error will be reported


def render_string(source: str, context: Mapping[str, Any]) -> Any:
    """Render one string; a lone `{{ expression }}` keeps its type. Raises RenderError."""
    if not any(marker in source for marker in _MARKERS):
        return source
    quick = _substitute(source, context)
    if quick is not _SLOW:
        return quick
    match = _EXPRESSION.match(source)
    if match and not any(marker in match.group("expr") for marker in _MARKERS):
        expression = match.group("expr")
        return _plain(_translated(lambda: _evaluate(expression, context), single_line=True))
    text: str = _translated(lambda: _compiled(source).render(**context), single_line=False)
    if len(text) > MAX_OUTPUT:
        raise RenderError(f"output is {len(text)} characters, more than the limit of {MAX_OUTPUT}")
    return text


_SLOW = object()
_PLAIN = frozenset({str, int, float, bool})  # exact types: a subclass may render differently
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*)\s*\}\}")


@lru_cache(maxsize=8192)
def _split(source: str) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]] | None:
    """Text pieces and dotted names of a string made only of text and `{{ a.b.c }}`; else None."""
    if "\r" in source:
        return None  # Jinja2 normalises line endings; leave that to it
    texts, names, last = [], [], 0
    for match in _PLACEHOLDER.finditer(source):
        texts.append(source[last : match.start()])
        names.append(tuple(match.group(1).split(".")))
        last = match.end()
    texts.append(source[last:])
    if any(marker in text for text in texts for marker in _MARKERS):
        return None
    return tuple(texts), tuple(names)


def _lookup(context: Mapping[str, Any], name: tuple[str, ...]) -> Any:
    """`a.b.c` through plain dicts only, where Jinja2 would give the same answer; else _SLOW."""
    value: Any = context
    for part in name:
        if not isinstance(value, dict) or part not in value or hasattr(dict, part):
            return _SLOW
        value = value[part]
    return value


def _substitute(source: str, context: Mapping[str, Any]) -> Any:
    """The common case without Jinja2: text and dotted names looked up in plain data.

    It answers only when the result is certain to equal Jinja2's (a dict key that is not also a
    dict attribute, a plain value); anything else returns _SLOW and goes through the sandbox,
    which also produces every error message.
    """
    split = _split(source)
    if split is None:
        return _SLOW
    texts, names = split
    if len(names) == 1 and texts == ("", ""):
        value = _lookup(context, names[0])
        return value if type(value) in _PLAIN else _SLOW
    out = [texts[0]]
    for name, text in zip(names, texts[1:], strict=True):
        value = _lookup(context, name)
        if type(value) not in _PLAIN:
            return _SLOW
        out.append(str(value))
        out.append(text)
    return "".join(out)


def _evaluate(expression: str, context: Mapping[str, Any]) -> Any:
    value = _compiled_expression(expression)(**context)
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises here with the missing name
    return value


def _translated(run: Callable[[], Any], *, single_line: bool) -> Any:
    """Run a render, turning every failure into a RenderError with the line it happened on."""

    def line(exc: BaseException) -> int:
        return 1 if single_line else _error_line(exc)

    try:
        return run()
    except RenderError as exc:
        raise RenderError(exc.message, line(exc)) from exc
    except TemplateSyntaxError as exc:
        raise RenderError(f"template syntax error: {exc.message}", exc.lineno) from exc
    except SecurityError as exc:
        raise RenderError(f"refused by the sandbox: {exc}") from exc
    except TemplateError as exc:
        raise RenderError(exc.message or type(exc).__name__, line(exc)) from exc
    except (ArithmeticError, LookupError, TypeError, ValueError, AttributeError) as exc:
        raise RenderError(f"{type(exc).__name__}: {exc}", line(exc)) from exc


def _error_line(exc: BaseException) -> int:
    """The template line an error was raised from, found in the traceback Jinja2 rewrites."""
    tb = exc.__traceback__
    line = 1
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _plain(value: Any) -> Any:
    """Only JSON values leave the sandbox."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


@dataclass
class Calls:
    """What a render read besides its documents: endpoints, secrets and certificates."""

    endpoints: dict[tuple[str, str], tuple[Endpoint, ...]] = field(default_factory=dict)
    secrets: set[tuple[str, str]] = field(default_factory=set)
    secret_reads: int = 0
    iterations: int = 0
    certificates: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Lookups:
    """The data the template functions read, passed in so rendering stays pure."""

    endpoints: Mapping[str, Sequence[Endpoint]]
    secrets: Mapping[str, Mapping[str, str]]
    certificates: Mapping[str, Mapping[str, str]]


def functions(lookups: Lookups, calls: Calls) -> dict[str, Callable[..., Any]]:
    """The functions templates may call, recording each call in `calls`."""

    def endpoints(service: str, port_name: str) -> list[dict[str, Any]]:
        found = healthy_endpoints(lookups.endpoints.get(str(service), ()), str(port_name))
        calls.endpoints[(str(service), str(port_name))] = found
        return [{"address": e.address, "port": e.port, "node": e.node} for e in found]

    def secret(name: str, key: str) -> str:
        data = lookups.secrets.get(str(name))
        if data is None or str(key) not in data:
            raise RenderError(f"secret({name!r}, {key!r}): no such secret or key")
        calls.secrets.add((str(name), str(key)))
        calls.secret_reads += 1
        return SECRET_PLACEHOLDER.format(name=name, key=key)

    def certificate(name: str) -> dict[str, str]:
        found = lookups.certificates.get(str(name))
        if found is None:
            raise RenderError(f"certificate({name!r}): no such Certificate")
        calls.certificates.add(str(name))
        return dict(found)

    def bounded_range(*args: int) -> range:
        steps = range(*args)
        calls.iterations += len(steps)
        if calls.iterations > MAX_ITERATIONS:
            raise RenderError(f"range() calls add up to more than {MAX_ITERATIONS} steps")
        return steps

    return {"endpoints": endpoints, "secret": secret, "certificate": certificate, "range": bounded_range}


def healthy_endpoints(endpoints: Sequence[Endpoint], port_name: str) -> tuple[Endpoint, ...]:
    """The healthy endpoints of one port, sorted by (address, port), without duplicates."""
    chosen = {(e.address, e.port): e for e in endpoints if e.healthy and e.port_name == port_name}
    return tuple(chosen[key] for key in sorted(chosen))


def render_value(
    value: Any, context: Mapping[str, Any], doc: Document, at: PathKey
) -> tuple[Any, list[Finding]]:
    """Render every string inside `value` (found at `at` in `doc`); collect one finding per failure."""
    findings: list[Finding] = []

    def walk(item: Any, path: PathKey) -> Any:
        if isinstance(item, str):
            try:
                return render_string(item, context)
            except RenderError as exc:
                line = doc.text_line(path, exc.line_in_text)
                column = 1 if path in doc.block_scalars else doc.where(path)[1]
                findings.append(Finding(doc.path, line, column, dotted(path), exc.message, "render"))
                return item
        if isinstance(item, dict):
            return {key: walk(sub, (*path, key)) for key, sub in item.items()}
        if isinstance(item, list):
            return [walk(sub, (*path, index)) for index, sub in enumerate(item)]
        return item

    return walk(value, at), findings


def reads_node(value: Any) -> bool:
    """Whether any template string inside `value` reads `node` (so it must be rendered per node)."""
    if isinstance(value, str):
        return "node" in references(value)
    if isinstance(value, dict):
        return any(reads_node(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(reads_node(v) for v in value)
    return False
