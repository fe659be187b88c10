"""The `certificate` resource: the full chain (0644) and the private key opened from its seal (0600)."""

from __future__ import annotations

from agent.apply.resources.base import Change, Host, unchanged
from agent.apply.resources.files import Wanted, ensure_file
from contract.crypto import unseal
from contract.errors import PermanentError
from contract.plan import PlanResource
from contract.vocabulary import Outcome


def converge_certificate(resource: PlanResource, host: Host) -> Change:
    """Write the chain and the key; the key's content never appears in a reason or error."""
    spec = resource.spec
    if host.sealing_key is None:
        raise PermanentError(f"{resource.id}: the private key is sealed but this agent has no sealing key")
    key = unseal(spec["sealedKey"], host.sealing_key, context=f"{host.node}|{resource.id}")
    chain = ensure_file(host, spec["certPath"], Wanted(spec["fullchain"].encode(), 0o644, -1, -1))
    private = ensure_file(host, spec["keyPath"], Wanted(key, 0o600, -1, -1), sealed=True)
    changes = [c for c in (chain, private) if c.outcome is Outcome.CHANGED]
    if not changes:
        return unchanged(f"certificate {spec['name']} already installed")
    return Change(
        Outcome.CHANGED,
        "; ".join(c.reason for c in changes),
        tuple(d for c in changes for d in c.differences),
        tuple(p for c in changes for p in c.paths),
        tuple(p for c in changes for p in c.created),
    )
