"""What of the state branch this reconciler can vouch for: a manifest it signs over every file it wrote.

Anyone who can push a report can usually push to `plumb/state` too, so nothing read back from it is
believed on sight. Plans carry their own signature; status documents (source, node and service
status, rollout progress, alerts) do not, so every state commit carries `status/manifest.json`:
the Git object id of each file the reconciler wrote, the highest serial it ever signed for each
node, signed with the reconciler's key. A file whose id is not the one the verified manifest lists
is treated as absent and written again; serials go on from the manifest, never from a plan.

Git object ids are what Git's own signed commits and tags rest on (libgit2 hashes with SHA-1
collision detection, or SHA-256 in a SHA-256 repository): a forged file would need a second
preimage of one the reconciler wrote.

Alerts name what did not verify (path, the state or report commit it was seen in), newest last,
kept in `status/alerts.json` so `plumb status` shows them after the reconciler has repaired the branch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from contract.crypto import SigningKey, VerifyKey
from contract.documents import sign_document, verify_document
from contract.errors import ContractError

MANIFEST_PATH = "status/manifest.json"
ALERTS_PATH = "status/alerts.json"
MANIFEST_KIND = "StateManifest"
ALERTS_KIND = "Alerts"
ALERTS_KEPT = 50
JsonObject = dict[str, Any]


@dataclass(frozen=True)
class Manifest:
    """The files of one state commit by Git object id, and the highest serial signed per node."""

    files: Mapping[str, str] = field(default_factory=dict)
    serials: Mapping[str, int] = field(default_factory=dict)

    def vouches(self, path: str, blob: str | None) -> bool:
        """Whether the reconciler wrote exactly this object at `path`."""
        return blob is not None and self.files.get(path) == blob

    def document(self) -> JsonObject:
        return {
            "apiVersion": "plumb/v1",
            "kind": MANIFEST_KIND,
            "files": [[path, self.files[path]] for path in sorted(self.files)],
            "serials": [[node, self.serials[node]] for node in sorted(self.serials)],
        }

    def signed(self, key: SigningKey) -> JsonObject:
        return sign_document(self.document(), key)


def verified_manifest(document: Mapping[str, Any] | None, key: VerifyKey) -> Manifest | None:
    """The manifest in `document` if this reconciler signed it, else None."""
    if document is None or document.get("kind") != MANIFEST_KIND:
        return None
    try:
        verify_document(document, key, what=MANIFEST_PATH)
        files = {str(p): str(b) for p, b in _pairs(document.get("files"))}
        serials = {str(n): int(s) for n, s in _pairs(document.get("serials"))}
    except (ContractError, TypeError, ValueError):
        return None
    return Manifest(files=files, serials=serials)


def _pairs(value: Any) -> Iterable[tuple[Any, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, list) and len(v) == 2 for v in value):
        raise ValueError("not a list of pairs")
    return [(v[0], v[1]) for v in value]


def next_serials(manifest: Manifest, plans: Mapping[str, int]) -> dict[str, int]:
    """The highest serial per node after this pass: never lower than what was signed before, even
    for a node that left the fleet (it may come back, and its agent remembers)."""
    serials = dict(manifest.serials)
    for node, serial in plans.items():
        serials[node] = max(serial, serials.get(node, 0))
    return serials


@dataclass(frozen=True)
class Alert:
    """Something on a branch the reconciler reads that it did not write, or that did not verify."""

    at: str
    path: str
    commit: str
    message: str

    def as_json(self) -> JsonObject:
        return {"at": self.at, "path": self.path, "commit": self.commit, "message": self.message}


def merge_alerts(stored: Mapping[str, Any] | None, new: Iterable[Alert]) -> JsonObject | None:
    """status/alerts.json with `new` appended (an alert already recorded for the same path and
    commit is not repeated), the newest `ALERTS_KEPT` kept; None when there is nothing to keep."""
    alerts = [a for a in (stored or {}).get("alerts", []) if isinstance(a, Mapping)]
    seen = {(a.get("path"), a.get("commit")) for a in alerts}
    for alert in new:
        if (alert.path, alert.commit) not in seen:
            seen.add((alert.path, alert.commit))
            alerts.append(alert.as_json())
    if not alerts:
        return None
    return {"apiVersion": "plumb/v1", "kind": ALERTS_KIND, "alerts": alerts[-ALERTS_KEPT:]}


def unvouched(manifest: Manifest | None, files: Mapping[str, str]) -> list[str]:
    """Paths of the state branch the manifest does not vouch for (all, when there is none), and
    paths it lists that are gone; the manifest itself is checked by its signature."""
    if manifest is None:
        return sorted(p for p in files if p != MANIFEST_PATH)
    wrong = [p for p, blob in files.items() if p != MANIFEST_PATH and not manifest.vouches(p, blob)]
    gone = [p for p in manifest.files if p not in files]
    return sorted(wrong + gone)
