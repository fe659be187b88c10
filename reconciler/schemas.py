"""Check documents against the JSON Schemas in `schemas/` and turn every error into a finding."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError, best_match

from reconciler.findings import Finding
from reconciler.load import Document

KINDS = ("Repository", "Node", "Template", "Trait", "Service", "Release", "Certificate", "Secret")
API_VERSION = "plumb/v1"
_MAX_SHOWN = 60


@cache
def schema(name: str) -> dict[str, Any]:
    """Load `schemas/<name>.schema.json` (installed as the `plumb_schemas` package)."""
    text = resources.files("plumb_schemas").joinpath(f"{name}.schema.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(schema(name), format_checker=Draft202012Validator.FORMAT_CHECKER)


def document_findings(doc: Document) -> list[Finding]:
    """Schema findings of one document: its kind first, then every schema error."""
    kind = doc.body.get("kind")
    if kind not in KINDS:
        line, column = doc.where(("kind",))
        shown = "no kind" if kind is None else f"unknown kind {_short(kind)}"
        message = f"{shown}; expected one of {', '.join(KINDS)}"
        return [Finding(doc.path, line, column, "kind", message, "unknown-kind")]
    errors = validator(kind.lower()).iter_errors(doc.body)
    return sorted(_finding(doc, error) for error in _leaves(errors))


def parameter_schema_findings(doc: Document, at: tuple[str | int, ...], value: Any) -> list[Finding]:
    """Findings for a user-written parameter schema that is not itself a valid JSON Schema."""
    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as exc:
        path = (*at, *exc.path)
        line, column = doc.where(path)
        message = f"not a valid JSON Schema: {_trim(exc.message)}"
        return [Finding(doc.path, line, column, dotted(path), message, "bad-parameter-schema")]
    return []


def instance_findings(
    doc: Document, at: tuple[str | int, ...], value: Any, against: Mapping[str, Any], code: str
) -> list[Finding]:
    """Findings for `value` (found at path `at` of `doc`) against a user-written schema."""
    errors = Draft202012Validator(against).iter_errors(value)
    return sorted(_finding(doc, error, prefix=at, code=code) for error in _leaves(errors))


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
