"""Check documents against the JSON Schemas in `schemas/` and turn every error into a finding."""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterator, Mapping
from functools import cache, lru_cache
from importlib import resources
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError, best_match

from reconciler.core.compile.load import Document
from reconciler.core.findings import Finding

KINDS = ("Repository", "Node", "Template", "Trait", "Service", "Release", "Certificate", "Secret")
_MAX_SHOWN = 60
_ANNOTATIONS = {"description", "default", "title", "examples", "$comment"}


@cache
def schema(name: str) -> dict[str, Any]:
    """Load `schemas/<name>.schema.json` (installed as the `plumb_schemas` package)."""
    text = resources.files("plumb_schemas").joinpath(f"{name}.schema.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def fast_check(name: str, definition: str | None = None) -> Callable[[Any], Any]:
    """A compiled yes/no check of a schema (or one of its `$defs`), used before the slow path.

    fastjsonschema turns the schema into Python code and is many times faster than jsonschema,
    but it stops at the first error and words it tersely; so it only answers "valid?" and
    jsonschema runs, for its complete and precise messages, on the rare document that is not.
    """
    whole = schema(name)
    target = whole if definition is None else {**whole["$defs"][definition], "$defs": whole["$defs"]}
    inlined = {k: v for k, v in inline_refs(target).items() if k not in ("$schema", "$id")}
    check: Callable[[Any], Any] = fastjsonschema.compile(inlined, use_default=False, use_formats=False)
    return check


def is_valid(name: str, instance: Any, definition: str | None = None) -> bool:
    try:
        fast_check(name, definition)(instance)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


@cache
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(inline_refs(schema(name)), format_checker=Draft202012Validator.FORMAT_CHECKER)


@cache
def definition_validator(name: str, definition: str) -> Draft202012Validator:
    """A validator for one `$defs` entry of a schema (a plan resource spec, say)."""
    whole = schema(name)
    return Draft202012Validator(inline_refs({**whole["$defs"][definition], "$defs": whole["$defs"]}))


def inline_refs(document: dict[str, Any]) -> dict[str, Any]:
    """Replace local `#/$defs/x` references by their targets (our schemas are not recursive).

    jsonschema resolves each `$ref` through a registry on every check; inlined, validating
    thousands of documents costs a fraction of the time.
    """
    definitions = document.get("$defs", {})

    def walk(node: Any, depth: int) -> Any:
        if depth > 32:
            raise ValueError("schema references nest too deeply (recursive $ref?)")
        if isinstance(node, dict):
            ref = node.get("$ref")
            rest = {k: walk(v, depth + 1) for k, v in node.items() if k not in ("$defs", "$ref")}
            if not (isinstance(ref, str) and ref.startswith("#/$defs/")):
                return rest if ref is None else {**rest, "$ref": ref}
            target = walk(definitions[ref.removeprefix("#/$defs/")], depth + 1)
            if set(rest) <= _ANNOTATIONS:
                return {**target, **rest}
            return {"allOf": [target, rest]}
        if isinstance(node, list):
            return [walk(v, depth + 1) for v in node]
        return node

    inlined: dict[str, Any] = walk(document, 0)
    return inlined


def document_findings(doc: Document) -> list[Finding]:
    """Schema findings of one document: its kind first, then every schema error."""
    kind = doc.body.get("kind")
    if kind not in KINDS:
        line, column = doc.where(("kind",))
        shown = "no kind" if kind is None else f"unknown kind {_short(kind)}"
        message = f"{shown}; expected one of {', '.join(KINDS)}"
        return [Finding(doc.path, line, column, "kind", message, "unknown-kind")]
    if is_valid(kind.lower(), doc.body) and not _format_errors(kind.lower(), doc.body):
        return []
    errors = validator(kind.lower()).iter_errors(doc.body)
    return sorted(_finding(doc, error) for error in _leaves(errors))


def _format_errors(name: str, body: Any) -> bool:
    """Formats (uri, email, ipv6) are left to jsonschema: plumb.yaml, and nodes with IPv6 addresses."""
    if name == "node":
        address = (body.get("spec") or {}).get("address")
        return isinstance(address, str) and ":" in address and not validator(name).is_valid(body)
    return name == "repository" and not validator(name).is_valid(body)


def parameter_schema_findings(doc: Document, at: tuple[str | int, ...], value: Any) -> list[Finding]:
    """Findings for a user-written parameter schema that is not itself a valid JSON Schema."""
    exc = _schema_error(json.dumps(value, sort_keys=True))
    if exc is not None:
        path = (*at, *exc.path)
        line, column = doc.where(path)
        message = f"not a valid JSON Schema: {_trim(exc.message)}"
        return [Finding(doc.path, line, column, dotted(path), message, "bad-parameter-schema")]
    return []


@lru_cache(maxsize=1024)
def _schema_error(schema_json: str) -> SchemaError | None:
    """The metaschema's verdict on one user schema, computed once per distinct schema."""
    try:
        Draft202012Validator.check_schema(json.loads(schema_json))
    except SchemaError as exc:
        return exc
    return None


def instance_findings(
    doc: Document, at: tuple[str | int, ...], value: Any, against: Mapping[str, Any], code: str
) -> list[Finding]:
    """Findings for `value` (found at path `at` of `doc`) against a user-written schema."""
    errors = _user_validator(json.dumps(against, sort_keys=True)).iter_errors(value)
    return sorted(_finding(doc, error, prefix=at, code=code) for error in _leaves(errors))


@lru_cache(maxsize=1024)
def _user_validator(schema_json: str) -> Draft202012Validator:
    """One validator per distinct user schema: a thousand services of one template share it."""
    return Draft202012Validator(json.loads(schema_json))


def _leaves(errors: Iterator[ValidationError]) -> Iterator[ValidationError]:
    """Replace each oneOf/anyOf error by its most relevant cause, so messages stay specific."""
    for error in errors:
        if error.context and error.validator in ("oneOf", "anyOf"):
            yield best_match(error.context) or error
        else:
            yield error


def _finding(
    doc: Document, error: ValidationError, *, prefix: tuple[str | int, ...] = (), code: str = "schema"
) -> Finding:
    path = (*prefix, *error.absolute_path)
    message, field_path, on_key = _describe(error, path)
    line, column = doc.where(field_path, key=on_key)
    return Finding(doc.path, line, column, dotted(field_path), message, code)


def _describe(error: ValidationError, path: tuple[str | int, ...]) -> tuple[str, tuple[str | int, ...], bool]:
    """A short message for a schema error, the path it is about, and whether to point at the key."""
    kind, expected = error.validator, error.validator_value
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(str(k) for k in error.instance if k not in allowed)
        field = extra[0] if extra else ""
        hint = difflib.get_close_matches(field, sorted(allowed), n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else f"; allowed: {', '.join(sorted(allowed))}"
        return f"unknown field {field!r}{suggestion}", (*path, field), True
    if kind == "required":
        missing = [str(r) for r in expected if isinstance(error.instance, dict) and r not in error.instance]
        return f"missing required field {missing[0] if missing else expected!r}", path, True
    if kind == "type":
        return f"{_short(error.instance)} is not of type {_types(expected)}", path, False
    if kind == "enum":
        return f"{_short(error.instance)} is not one of {', '.join(map(str, expected))}", path, False
    if kind == "const":
        return f"{_short(error.instance)} must be {expected!r}", path, False
    if kind == "pattern":
        return f"{_short(error.instance)} does not match {expected}", path, False
    if kind in ("minProperties", "maxProperties") and isinstance(error.instance, dict):
        names = ", ".join(error.schema.get("properties", {}))
        return f"must have exactly one of: {names}" if names else _trim(error.message), path, False
    return _trim(error.message), path, False


def _types(expected: Any) -> str:
    return " or ".join(map(repr, expected)) if isinstance(expected, list) else repr(expected)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _trim(message: str) -> str:
    return message if len(message) <= 200 else message[:197] + "..."


def dotted(path: tuple[str | int, ...]) -> str:
    """`("spec", "traits", 0, "type")` -> `spec.traits[0].type`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
