"""The plan and report contract shared by reconciler and agent: canonical JSON, digests, signatures.

A plan (`schemas/plan.schema.json`) and a report (`schemas/report.schema.json`) are JSON objects.
What is signed is the canonical JSON (sorted keys, no insignificant whitespace, UTF-8) of the
document without its `signature` member. Files on the state branch are written indented
(`to_file_json`) so that Git diffs stay readable; the signature does not depend on the layout.

Digests:
- a resource's `digest` is `sha256:` over the canonical JSON of `{"kind", "spec"}`: what the host
  should look like, independent of ordering and ownership;
- a plan's `digest` is `sha256:` over the canonical JSON of its `resources` list (entries with
  their digests, in apply order).

Everything read from Git is hostile until verified, so `parse_json_document` is bounded before any
signature is checked: size, nesting depth (`MAX_DEPTH`), integers that fit 64 bits, and no NaN or
infinity; each refusal is one `ContractError` naming what was wrong, never a crash.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from contract.crypto import SigningKey, VerifyKey
from contract.errors import ContractError

JsonObject = dict[str, Any]
MAX_DEPTH = 64  # nesting of objects and arrays; plans and reports need a dozen
_MAX_INT_DIGITS = 19  # what fits a signed 64-bit integer, as every JSON reader agrees on


class _Refused(ValueError):
    """A value the bounded parser will not build."""


def canonical_json(value: Any) -> bytes:
    """Serialise `value` canonically: sorted keys, no whitespace, UTF-8, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def to_file_json(value: Any) -> bytes:
    """Serialise `value` for a file in Git: indented, sorted, one trailing newline."""
    return (json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def resource_digest(kind: str, spec: Mapping[str, Any]) -> str:
    """The digest of one resource: what the host should look like."""
    return sha256_digest(canonical_json({"kind": kind, "spec": spec}))


def resources_digest(resources: Sequence[Mapping[str, Any]]) -> str:
    """The digest of a plan: over all its resources, in apply order."""
    return sha256_digest(canonical_json(list(resources)))


def signed_payload(document: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the canonical document without `signature`."""
    return canonical_json({k: v for k, v in document.items() if k != "signature"})


def sign_document(document: Mapping[str, Any], key: SigningKey) -> JsonObject:
    """Return a copy of `document` with a fresh `signature` member."""
    signed = {k: v for k, v in document.items() if k != "signature"}
    signed["signature"] = {"key": key.public_b64(), "ed25519": key.sign_b64(signed_payload(signed))}
    return signed


def verify_document(document: Mapping[str, Any], pinned: VerifyKey, *, what: str) -> None:
    """Raise ContractError unless `document` carries a valid signature by the `pinned` key."""
    signature = document.get("signature")
    if not isinstance(signature, Mapping) or not isinstance(signature.get("ed25519"), str):
        raise ContractError(f"{what} is not signed")
    if signature.get("key") != pinned.public_b64():
        raise ContractError(f"{what} is signed by {signature.get('key')!r}, not by the pinned key")
    if not pinned.verify_b64(signed_payload(document), signature["ed25519"]):
        raise ContractError(f"{what} has an invalid signature")


def parse_json_document(data: bytes, *, what: str, limit: int) -> JsonObject:
    """Parse a plan, report or state document, refusing input no honest writer produces.

    Oversized, too deeply nested, non-UTF-8, non-object input, integers beyond 64 bits and
    NaN/Infinity are each a ContractError saying which.
    """
    if len(data) > limit:
        raise ContractError(f"{what} is {len(data)} bytes, more than the limit of {limit}")
    try:
        value = json.loads(data, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_constant)
    except _Refused as exc:
        raise ContractError(f"{what} is refused: {exc}") from exc
    except RecursionError as exc:  # the C decoder's own guard, long before the stack is at risk
        raise ContractError(f"{what} nests deeper than {MAX_DEPTH} levels") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ContractError(f"{what} is not a JSON object")
    if _depth_exceeds(value, MAX_DEPTH):
        raise ContractError(f"{what} nests deeper than {MAX_DEPTH} levels")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS or not -(2**63) <= (number := int(text)) < 2**63:
        raise _Refused(f"the integer {text[:24]}{'…' if len(text) > 24 else ''} does not fit 64 bits")
    return number


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _Refused(f"the number {text[:24]} is not finite")
    return number


def _constant(text: str) -> Any:
    raise _Refused(f"{text} is not a JSON value")


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether containers nest deeper than `limit`, walked without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        children = current.values() if isinstance(current, dict) else current
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False
