"""The `nginx` resource: one site file in nginx's conf.d; tested with `nginx -t` before any reload.

Phase one writes the site like any file. Phase two (`settle_sites`) runs `nginx -t`: when it
fails, the sites nginx blames (or, if it names none of them, every site changed in this apply) are
put back as they were and reported failed, and the test runs again; the running nginx is only
reloaded once the test passes, so it never sees a broken config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent.errors import PermanentError, PlumbError, TemporaryError
from agent.nginxctl import SITE_DIR, Nginx
from agent.plan import PlanResource
from agent.resources.base import Change, Host, Outcome
from agent.resources.files import Wanted, ensure_file
from agent.resources.units import restore


def site_path(site: str, site_dir: str = SITE_DIR) -> str:
    return f"{site_dir}/{site}.conf"


def converge_site(resource: PlanResource, host: Host) -> Change:
    """Phase one: write the site file (mode 0644)."""
    site_dir = host.nginx.site_dir if host.nginx is not None else SITE_DIR
    return ensure_file(
        host,
        site_path(resource.spec["site"], site_dir),
        Wanted(resource.spec["content"].encode(), 0o644, -1, -1),
    )


@dataclass(frozen=True)
class SiteWrite:
    """A site file written in this apply, and what it held before."""

    id: str
    path: str
    previous: bytes | None


@dataclass(frozen=True)
class SitesOutcome:
    """After `nginx -t`: which written sites were reverted and why, and whether nginx reloaded.

    `error` is set when nginx could not test or reload at all; every site written in this apply
    was then put back (`withdrawn`), so the next apply writes, tests and reloads them again.
    """

    reverted: Mapping[str, str]  # resource id -> nginx's complaint about that site
    reloaded: bool
    error: str | None = None
    withdrawn: tuple[str, ...] = ()


def _culprits(writes: Sequence[SiteWrite], host: Host, blamed: frozenset[str]) -> list[SiteWrite]:
    named = [w for w in writes if str(host.confinement.host(w.path)) in blamed or w.path in blamed]
    return named or list(writes)


def _test_and_reload(
    nginx: Nginx | None, pending: list[SiteWrite], host: Host, *, reload: bool
) -> dict[str, str]:
    """Revert what `nginx -t` blames until it passes, then reload; PlumbError if nginx cannot be driven."""
    if nginx is None:
        raise PermanentError("nginx resources need an nginx to drive (--nginx-binary, --nginx-config)")
    reverted: dict[str, str] = {}
    result = nginx.test()
    while not result.ok and pending:
        for write in _culprits(pending, host, result.files()):
            restore(host, write.path, write.previous)
            reverted[write.id] = result.summary()
            pending.remove(write)
        result = nginx.test()
    if not result.ok:
        raise TemporaryError(f"nginx -t fails even without this apply's sites: {result.summary()}")
    if pending or reload:
        nginx.reload()
    return reverted


def settle_sites(writes: Sequence[SiteWrite], host: Host, *, reload: bool) -> SitesOutcome:
    """Test the written sites, revert the ones nginx refuses, then reload if anything is left to load."""
    pending = list(writes)
    try:
        reverted = _test_and_reload(host.nginx, pending, host, reload=reload)
    except PlumbError as exc:
        for write in pending:
            restore(host, write.path, write.previous)
        return SitesOutcome({}, False, str(exc), tuple(w.id for w in pending))
    return SitesOutcome(reverted, bool(pending or reload))


def reverted_change(path: str, complaint: str) -> Change:
    return Change(Outcome.FAILED, f"{path}: refused by nginx -t, previous version kept", error=complaint)
