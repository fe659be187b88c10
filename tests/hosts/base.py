"""The Debian root file system every test host boots from: built once with debootstrap, cached by its recipe.

The recipe is the suite, the packages and the files written after debootstrap; its hash names the cache
entry, so changing any of them builds a new base and never patches an old one. Building needs a Debian
mirror and takes a minute or two, so it happens in `make hosts-base` (this module's `main`), never inside
pytest: tests only look the base up with `cached_base()` and skip when it is missing.

The base is shared read-only (the lower layer of every node's overlay), so nothing in it may belong to one
node: SSH host keys are removed and the machine-id emptied; `tests.hosts.harness` gives each node its own.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SUITE = "bookworm"
VARIANT = "minbase"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_CACHE = Path("/var/cache/plumb-test-hosts")

# What a Plumb node needs: systemd as PID 1 (systemd-sysv gives /sbin/init), Python for the agent and its
# virtualenv, sshd to be onboarded over, nginx and git for what the agent drives, iproute2 and procps to look.
PACKAGES = (
    "ca-certificates",
    "dbus",
    "git",
    "iproute2",
    "nginx-light",
    "openssh-server",
    "procps",
    "python3",
    "python3-venv",
    "systemd",
    "systemd-sysv",
)

# Written over what debootstrap left, relative to the root. An empty resolv.conf and a hosts file keep
# name lookups local: without them Python's http.server waits >10 s on a lookup before it listens.
FILES = {
    "etc/resolv.conf": "",
    "etc/hosts": "127.0.0.1 localhost\n::1 localhost\n",
    "etc/ssh/sshd_config.d/plumb-test-hosts.conf": (
        "# Test hosts: one host key (made per node), keys only, no DNS lookups of clients.\n"
        "HostKey /etc/ssh/ssh_host_ed25519_key\nPasswordAuthentication no\nUseDNS no\n"
    ),
}
# Identity that debootstrap generated once and every node would otherwise share.
REMOVED = ("etc/ssh/ssh_host_*", "var/lib/dbus/machine-id")
EMPTIED = ("etc/machine-id", "etc/hostname")


class BaseImageError(RuntimeError):
    """The base could not be built (debootstrap failed, or the cache is not writable)."""


def cache_directory() -> Path:
    """Where bases are kept: `$PLUMB_TEST_HOSTS_CACHE`, else /var/cache/plumb-test-hosts."""
    return Path(os.environ.get("PLUMB_TEST_HOSTS_CACHE") or DEFAULT_CACHE)


def recipe() -> dict[str, object]:
    """Everything that decides the base's content, as one JSON-ready value."""
    return {
        "suite": SUITE,
        "variant": VARIANT,
        "packages": sorted(PACKAGES),
        "files": FILES,
        "removed": REMOVED,
        "emptied": EMPTIED,
    }


def recipe_key() -> str:
    """A short hash of the recipe: the name of its cache entry."""
    text = json.dumps(recipe(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _entry(key: str) -> Path:
    return cache_directory() / f"base-{key}"


def cached_base() -> Path | None:
    """The root file system built from the current recipe, or None when `make hosts-base` has not run."""
    rootfs = _entry(recipe_key()) / "rootfs"
    return rootfs if (rootfs / "sbin" / "init").exists() else None


def build_base(*, mirror: str = DEFAULT_MIRROR) -> Path:
    """The current recipe's root file system: reused from the cache, or built with debootstrap."""
    cache = cache_directory()
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / ".lock"):
        found = cached_base()
        if found is not None:
            return found
        return _build(_entry(recipe_key()), mirror)


def _build(entry: Path, mirror: str) -> Path:
    # Built aside and renamed into place: a half-built base is never found by `cached_base`.
    partial = entry.with_name(entry.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    rootfs = partial / "rootfs"
    _debootstrap(rootfs, mirror)
    _customise(rootfs)
    (partial / "recipe.json").write_text(json.dumps(recipe(), indent=2, sort_keys=True) + "\n")
    partial.rename(entry)
    return entry / "rootfs"


def _debootstrap(rootfs: Path, mirror: str) -> None:
    argv = ["debootstrap", f"--variant={VARIANT}", f"--include={','.join(sorted(PACKAGES))}"]
    argv += [SUITE, str(rootfs), mirror]
    try:
        done = subprocess.run(argv, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise BaseImageError("debootstrap is not installed (apt-get install debootstrap)") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise BaseImageError(f"debootstrap {SUITE} failed with {done.returncode}:\n{tail}")


def _customise(rootfs: Path) -> None:
    for pattern in REMOVED:
        for path in rootfs.glob(pattern):
            path.unlink()
    for relative in EMPTIED:
        (rootfs / relative).write_text("")
    for relative, text in FILES.items():
        path = rootfs / relative
        path.unlink(missing_ok=True)  # resolv.conf may be a symlink into the build host
        path.write_text(text)
    shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
    (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True)


def prune(*, keep: str) -> list[Path]:
    """Remove the cache entries of other recipes (old package lists); the removed paths."""
    with _locked(cache_directory() / ".lock"):
        stale = [path for path in cache_directory().glob("base-*") if path.name != f"base-{keep}"]
        for path in stale:
            shutil.rmtree(path)
    return stale


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Two builds at once (two checkouts running CI) wait for each other instead of racing.
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def main() -> None:
    """`make hosts-base`: build or reuse the base, prune older recipes, and say how long it took."""
    mirror = os.environ.get("PLUMB_TEST_HOSTS_MIRROR") or DEFAULT_MIRROR
    key = recipe_key()
    reused = cached_base() is not None
    started = time.monotonic()
    try:
        rootfs = build_base(mirror=mirror)
    except BaseImageError as exc:
        print(f"hosts-base: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    elapsed = time.monotonic() - started
    for path in prune(keep=key):
        print(f"hosts-base: removed {path} (an older recipe)")
    how = "reused" if reused else f"built from {mirror}"
    print(f"hosts-base: {rootfs} ({SUITE}, recipe {key}) {how} in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
