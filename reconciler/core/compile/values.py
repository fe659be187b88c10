"""Values that cross the boundary of the pure core: source files in, endpoints in, resources out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SourceFile:
    """One file of the desired-state repository: its path, bytes and (from Git) its blob id."""

    path: str
    data: bytes
    blob_id: str | None = None


@dataclass(frozen=True, order=True)
class Endpoint:
    """One instance of a service as reported by its node: where it listens and whether it is ready."""

    service: str
    node: str
    address: str
    port_name: str
    port: int
    healthy: bool


@dataclass(frozen=True)
class RenderedResource:
    """One resource of one node's plan, rendered: what the host should have, and where it came from."""

    id: str
    kind: str
    service: str
    spec: Mapping[str, Any]
    after: tuple[str, ...]
    source: str  # "templates/python-web.yaml:14" — where the resource was declared
    uses_secret: bool = False

    def plan_entry(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "service": self.service,
            "spec": dict(self.spec),
            "after": list(self.after),
        }
