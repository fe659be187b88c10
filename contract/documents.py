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
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from contract.crypto import SigningKey, VerifyKey
from contract.errors import ContractError

JsonObject = dict[str, Any]


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
    """Parse a plan or report file, refusing oversized or non-object input."""
    if len(data) > limit:
        raise ContractError(f"{what} is {len(data)} bytes, more than the limit of {limit}")
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ContractError(f"{what} is not a JSON object")
    return value
