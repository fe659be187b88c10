"""The `file` and `directory` resources: content, mode, owner and group, written atomically.

Observe with `fsops.observe` (never through a symlink; content compared by a streamed sha256, so a
huge file at a managed path costs no memory), compare with the spec (`file_differences`, pure),
then write the whole file or fix only its attributes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.apply.resources.base import Change, Host, parse_mode, unchanged
from agent.host import fsops
from contract.crypto import unseal
from contract.errors import PermanentError
from contract.plan import PlanResource
from contract.vocabulary import Outcome


@dataclass(frozen=True)
class Wanted:
    """What a file or directory should be."""

    content: bytes | None
    mode: int
    uid: int
    gid: int

    @property
    def sha256(self) -> str | None:
        return None if self.content is None else hashlib.sha256(self.content).hexdigest()


def file_differences(want: Wanted, have: fsops.Observed, *, kind: str = "file") -> tuple[str, ...]:
    """What differs between the spec and the host, in words; empty when they match."""
    if not have.exists:
        return ("missing",)
    if have.kind != kind:
        return (f"is a {have.kind}, not a {kind}",)
    found = []
    if want.content is not None and have.fingerprint != want.sha256:
        found.append("content")
    if have.mode != want.mode:
        found.append(f"mode {have.mode:04o} instead of {want.mode:04o}")
    if want.uid != -1 and have.uid != want.uid:
        found.append(f"owner {have.uid} instead of {want.uid}")
    if want.gid != -1 and have.gid != want.gid:
        found.append(f"group {have.gid} instead of {want.gid}")
    return tuple(found)


def file_content(resource: PlanResource, host: Host) -> bytes:
    """The plaintext a file resource should hold, opening sealed content with the node's key."""
    spec = resource.spec
    if "content" in spec:
        return str(spec["content"]).encode()
    if host.sealing_key is None:
        raise PermanentError(f"{resource.id}: content is sealed but this agent has no sealing key")
    return unseal(spec["sealed"], host.sealing_key, context=f"{host.node}|{resource.id}")


def wanted(spec: Mapping[str, Any], content: bytes | None) -> Wanted:
    uid, gid = fsops.owner_ids(spec.get("owner"), spec.get("group"))
    return Wanted(content, parse_mode(spec["mode"]), uid, gid)


def ensure_file(
    host: Host, path: str, want: Wanted, *, sealed: bool = False, keep_previous: bool = False
) -> Change:
    """Converge one file to `want`; the building block of file, unit, nginx and certificate resources.

    `keep_previous` reads the old content before a rewrite, for the callers that may revert it
    (units, nginx sites); otherwise the file is only ever streamed through sha256."""
    parts = host.confinement.parts(path)
    have = fsops.observe(host.root, parts, read=False, digest=True)
    differences = file_differences(want, have)
    if not differences:
        return unchanged(f"{path} already has this content, mode and owners")
    assert want.content is not None
    if have.exists and have.fingerprint == want.sha256:
        fsops.set_attributes(host.root, parts, mode=want.mode, uid=want.uid, gid=want.gid)
        return Change(Outcome.CHANGED, f"{path}: fixed {', '.join(differences)}", differences, (path,))
    previous = {path: fsops.observe(host.root, parts).content} if keep_previous else {}
    fsops.write_file(host.root, parts, want.content, mode=want.mode, uid=want.uid, gid=want.gid)
    verb = "created" if not have.exists else ("rewrote (sealed content changed)" if sealed else "rewrote")
    created = () if have.exists else (path,)
    return Change(Outcome.CHANGED, f"{path}: {verb}", differences, (path,), created, previous)


def converge_file(resource: PlanResource, host: Host) -> Change:
    """The `file` resource."""
    spec = resource.spec
    return ensure_file(
        host, spec["path"], wanted(spec, file_content(resource, host)), sealed="sealed" in spec
    )


def converge_directory(resource: PlanResource, host: Host) -> Change:
    """The `directory` resource: exists, with this mode and owners (its content is not managed)."""
    spec = resource.spec
    path = spec["path"]
    parts = host.confinement.parts(path)
    want = wanted(spec, None)
    have = fsops.observe(host.root, parts, read=False)
    differences = file_differences(want, have, kind="directory")
    if not differences:
        return unchanged(f"{path} already exists with this mode and owners")
    if have.exists and have.kind != "directory":
        raise PermanentError(f"{path} {differences[0]}; refusing to replace it")
    if not have.exists:
        fsops.make_directory(host.root, parts, mode=want.mode)
    fsops.set_attributes(host.root, parts, mode=want.mode, uid=want.uid, gid=want.gid)
    created = () if have.exists else (path,)
    return Change(
        Outcome.CHANGED, f"{path}: {'created' if created else 'fixed'}", differences, (path,), created
    )
