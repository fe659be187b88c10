"""The `nginx` resource: one site file in nginx's conf.d; tested with `nginx -t` before any reload.

Phase one writes the site like any file. Phase two (`settle_sites`) runs `nginx -t`: when it
fails, the sites nginx blames (or, if it names none of them, every site changed in this apply) are
put back as they were and reported failed, and the test runs again; the running nginx is only
reloaded once the test passes, so it never sees a broken config.

What a site held before it was first rewritten is kept in `<state-dir>/nginx-backups/` until the
test and reload are done, so an agent killed in between still tests, and if need be reverts,
that site when it finishes the apply on its next start.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from agent.apply.resources.base import Change, Host
from agent.apply.resources.files import Wanted, ensure_file
from agent.apply.resources.units import restore
from agent.host import fsops
from agent.host.nginxctl import SITE_DIR, Nginx
from contract.errors import PermanentError, PlumbError, TemporaryError
from contract.plan import PlanResource
from contract.vocabulary import Outcome

BACKUP_DIR = "nginx-backups"
log = structlog.get_logger("plumb.agent")


def site_path(site: str, site_dir: str = SITE_DIR) -> str:
    return f"{site_dir}/{site}.conf"


def _backup(host: Host, site: str) -> Path:
    return host.state_dir / BACKUP_DIR / f"{site}.json"


def keep_backup(host: Host, site: str, previous: bytes | None) -> None:
    """Remember what a site held before this apply (the first time only: that is what nginx runs)."""
    path = _backup(host, site)
    if not path.exists():
        fsops.write_json(
            path, {"previous": None if previous is None else previous.decode(errors="surrogateescape")}
        )


def backup_of(host: Host, site: str) -> tuple[bool, bytes | None]:
    """(found, what the site held before an unfinished apply); a damaged backup is dropped with one
    line (the site keeps what it holds: nothing is known to revert it to)."""
    path = _backup(host, site)
    try:
        record = fsops.read_json(path)
        previous = record["previous"] if record is not None else None
    except (fsops.DamagedState, KeyError, TypeError) as exc:
        log.warning("damaged nginx backup dropped", path=str(path), problem=str(exc))
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        return False, None
    if record is None:
        return False, None
    return True, None if previous is None else str(previous).encode(errors="surrogateescape")


def drop_backups(host: Host) -> None:
    shutil.rmtree(host.state_dir / BACKUP_DIR, ignore_errors=True)


def converge_site(resource: PlanResource, host: Host) -> Change:
    """Phase one: write the site file (mode 0644), after keeping what it held for a revert."""
    site_dir = host.nginx.site_dir if host.nginx is not None else SITE_DIR
    path = site_path(resource.spec["site"], site_dir)
    content = resource.spec["content"].encode()
    have = fsops.observe(host.root, host.confinement.parts(path))
    if have.content != content:
        keep_backup(host, resource.spec["site"], have.content)
    return ensure_file(host, path, Wanted(content, 0o644, -1, -1), keep_previous=True)


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
