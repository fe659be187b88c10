"""A hostile or broken host: a user racing an artifact install, bad archives, full and read-only disks, damaged state.

Each case checks the one line the agent says, that no temporary file is left, and that the agent
converges once the cause is gone. Mounting tmpfs and switching to `nobody` need root.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.apply.resources import artifacts
from contract.errors import PermanentError
from tests.support import AgentWorld, resource

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mounts tmpfs and runs a swapper as nobody"),
]
NOBODY = 65534
GOOD = b"#!/bin/sh\necho good\n"
EVIL = b"#!/bin/sh\necho EVIL\n"


def plumb_agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=120)


def tar_bytes(members: dict[str, bytes], *, links: dict[str, tuple[bytes, str]] | None = None) -> bytes:
    """A tar.gz of regular `members` and `links` (name -> (tar type, link target))."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    return raw.getvalue()


def artifact_spec(url: str, data: bytes, *, version: str = "1.0", path: str = "/opt/api") -> dict[str, Any]:
    spec = {"url": url, "sha256": hashlib.sha256(data).hexdigest(), "unpack": "tar.gz"}
    return resource("artifact", spec | {"path": path, "version": version}, service="api")


def leftovers(*places: Path) -> list[str]:
    """Temporary files, staging directories or downloads left anywhere under `places`."""
    found = []
    for place in places:
        for path in place.rglob("*"):
            name = path.name
            if name.endswith(".plumb-tmp") or name.endswith(".tmp") or ".download-" in name:
                found.append(str(path))
        downloads = place / "downloads"
        if downloads.is_dir():
            found += [str(p) for p in downloads.iterdir()]
    return found


@contextlib.contextmanager
def tmpfs(path: Path, *, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


def fill(directory: Path) -> Path:
    """Fill the filesystem of `directory` to the last byte with one file; return it."""
    filler = directory / "filler"
    handle = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while os.write(handle, b"\0" * 4096):
                pass
    finally:
        os.close(handle)
    return filler


# -- the artifact race --------------------------------------------------------------------------


class SlowServer:
    """Serves one artifact over loopback HTTP: half, then (after marking `midway`) a pause, the rest."""

    def __init__(self, data: bytes, midway: Path) -> None:
        self.data = data
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.data)))
                self.end_headers()
                half = len(server.data) // 2
                self.wfile.write(server.data[:half])
                self.wfile.flush()
                midway.touch()
                time.sleep(0.3)  # the swapper swaps during this part of the download
                self.wfile.write(server.data[half:])

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/api-1.0.tar.gz"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def swapper(opt: Path, evil: Path, evil_tar: bytes, midway: Path) -> int:
    """Fork a child that, as `nobody`, waits for the download to be under way, plants its tarball in
    its own directory under every name it sees in /opt/api, then swaps /opt/api for a symlink to
    that directory (the attack of issue 10); return its pid."""
    pid = os.fork()
    if pid:
        return pid
    try:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        api = opt / "api"
        while not midway.exists():
            with contextlib.suppress(OSError):
                if any(".download-" in name for name in os.listdir(api)):
                    break
            time.sleep(0.001)
        with contextlib.suppress(OSError):
            for name in os.listdir(api):
                (evil / name).write_bytes(evil_tar)
        with contextlib.suppress(OSError):
            os.rename(api, opt / "api.real")
            os.symlink(evil, api)
    finally:
        os._exit(0)


def evil_extracted(*places: Path) -> list[str]:
    """Files the attacker's tarball would have put down, found anywhere under `places`."""
    found = []
    for place in places:
        for path in place.rglob("server"):
            if path.is_file() and not path.is_symlink() and path.read_bytes() == EVIL:
                found.append(str(path))
    return found


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary directory `nobody` may cross (pytest's own is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="plumb-race-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("attacker_owns", ["/opt", "/opt/api", "nothing"])
def test_a_user_swapping_the_artifact_directory_never_gets_a_tarball_unpacked(
    shared_tmp: Path, attacker_owns: str
) -> None:
    """20 tries, `nobody` swapping the directory for a symlink to its own during a slow download:
    each ends in a correct install into the real directory or a one-line refusal, and nothing of
    the attacker's is ever unpacked; no temporary file stays."""
    good, evil_tar = tar_bytes({"bin/server": GOOD}), tar_bytes({"bin/server": EVIL})
    midway = shared_tmp / "midway"
    server = SlowServer(good, midway)
    outcomes = []
    try:
        for attempt in range(20):
            midway.unlink(missing_ok=True)
            world = AgentWorld(shared_tmp / f"try-{attempt}")
            opt, evil = world.path("/opt"), world.path("/opt/evil")
            opt.mkdir(parents=True)
            evil.mkdir()
            os.chown(evil, NOBODY, NOBODY)
            if attacker_owns == "/opt":
                os.chown(opt, NOBODY, NOBODY)
            elif attacker_owns == "/opt/api":
                world.path("/opt/api").mkdir()
                os.chown(world.path("/opt/api"), NOBODY, NOBODY)
            world.publish([artifact_spec(server.url, good)])
            pid = swapper(opt, evil, evil_tar, midway)
            try:
                outcome = world.agent().run(once=True)
            finally:
                midway.touch()
                os.waitpid(pid, 0)
            change = outcome.result.resources[0].change
            assert evil_extracted(world.root, world.state_dir) == []
            assert not [p for p in evil.rglob("*") if p.lstat().st_uid == 0], "the agent wrote there"
            assert [p for p in leftovers(world.root, world.state_dir) if not p.startswith(str(evil))] == []
            if change.outcome == "changed":
                real = world.path("/opt/api.real" if world.path("/opt/api").is_symlink() else "/opt/api")
                assert (real / "current/bin/server").read_bytes() == GOOD
                assert real.lstat().st_uid == 0
            else:
                assert "refusing" in change.error and "\n" not in change.error, change.error
            outcomes.append(change.outcome)
    finally:
        server.close()
    if attacker_owns == "nothing":
        assert set(outcomes) == {"changed"} and server.requests == 20
    else:
        assert set(outcomes) == {"failed"}


def test_a_download_cut_short_is_a_temporary_failure_that_leaves_nothing(tmp_path: Path) -> None:
    """A body shorter than its Content-Length fails the resource in one line; nothing is unpacked."""
    good = tar_bytes({"bin/server": GOOD})

    class Short(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(good)))
            self.end_headers()
            self.wfile.write(good[: len(good) // 2])

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Short)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        world = AgentWorld(tmp_path / "node")
        world.publish([artifact_spec(f"http://127.0.0.1:{httpd.server_address[1]}/a.tar.gz", good)])
        error = world.agent().run(once=True).result.resources[0].change.error
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert "download failed" in error and "\n" not in error, error
    assert list(world.path("/opt/api").iterdir()) == []
    assert leftovers(world.root, world.state_dir) == []


# -- archives that break a limit or leave the target --------------------------------------------


def huge_member() -> bytes:
    """A tar.gz whose one member claims more than the per-member limit (only its header is real)."""
    info = tarfile.TarInfo("bin/huge")
    info.size = artifacts.LIMITS.member_bytes + 1
    return gzip.compress(info.tobuf() + b"\0" * 1024)


BAD_ARCHIVES = {
    "member too large": (
        huge_member,
        f"more than {artifacts.LIMITS.member_bytes} bytes in member 'bin/huge'",
    ),
    "symlink out": (lambda: tar_bytes({}, links={"etc": (tarfile.SYMTYPE, "/etc")}), "cannot unpack"),
    "symlink up": (lambda: tar_bytes({}, links={"up": (tarfile.SYMTYPE, "../../x")}), "cannot unpack"),
    "hardlink out": (lambda: tar_bytes({}, links={"pw": (tarfile.LNKTYPE, "/etc/passwd")}), "cannot unpack"),
    "member up": (lambda: tar_bytes({"../escaped": b"x"}), "cannot unpack"),
    "device": (lambda: tar_bytes({}, links={"null": (tarfile.CHRTYPE, "")}), "cannot unpack"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARCHIVES))
def test_an_archive_breaking_a_limit_or_leaving_the_target_is_refused(tmp_path: Path, case: str) -> None:
    """The error names the artifact and what it broke; `current` stays, nothing else is left."""
    build, message = BAD_ARCHIVES[case]
    world = AgentWorld(tmp_path / "node", local_artifacts=tmp_path)
    first = tmp_path / "good.tar.gz"
    first.write_bytes(tar_bytes({"bin/server": GOOD}))
    world.publish([artifact_spec(first.as_uri(), first.read_bytes())])
    assert world.agent().run(once=True).ok
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(build())
    world.publish([artifact_spec(bad.as_uri(), bad.read_bytes(), version="2.0")])
    outcome = world.agent().run(once=True)
    error = outcome.result.resources[0].change.error
    assert message in error and "/opt/api 2.0" in error, error
    assert sorted(p.name for p in world.path("/opt/api").iterdir()) == ["1.0", "current"]
    assert not world.path("/opt/escaped").exists() and not world.path("/x").exists()
    assert leftovers(world.root, world.state_dir) == []


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (artifacts.Limits(members=3), "more than 3 members"),
        (artifacts.Limits(unpacked_bytes=100), "more than 100 unpacked bytes"),
    ],
)
def test_unpack_counts_members_and_bytes(tmp_path: Path, limits: artifacts.Limits, message: str) -> None:
    """The member count and the total size are checked member by member, before each is written."""
    data = tar_bytes({f"f{index}": b"x" * 60 for index in range(4)})
    staging = tmp_path / "staging"
    staging.mkdir()
    fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(PermanentError, match=message):
            artifacts.unpack(io.BytesIO(data), "tar.gz", fd, name="/opt/api 1.0", limits=limits)
    finally:
        os.close(fd)
    assert len(list(staging.iterdir())) < 4


@pytest.mark.parametrize(
    ("url", "local", "message"),
    [
        ("file:///etc/shadow", False, "file:// artifacts are refused"),
        ("file:///etc/shadow", True, "not a file below --local-artifacts"),
        ("ftp://127.0.0.1/a.tar.gz", False, "over http or https only"),
    ],
)
def test_artifact_urls_other_than_http_are_refused(
    tmp_path: Path, url: str, local: bool, message: str
) -> None:
    """No plan makes the agent read and hash a local file, unless --local-artifacts allows that directory."""
    world = AgentWorld(tmp_path / "node", local_artifacts=(tmp_path / "artifacts") if local else None)
    world.publish([artifact_spec(url, b"")])
    error = world.agent().run(once=True).result.resources[0].change.error
    assert message in error and "sha256 is" not in error


# -- full and read-only disks, damaged state, through the real command --------------------------


def file_plan(world: AgentWorld, content: str, *, path: str = "/srv/big.txt") -> None:
    world.publish([resource("file", {"path": path, "mode": "0644", "content": content})])


def test_a_full_root_is_one_line_and_recovers(tmp_path: Path) -> None:
    """A write that runs out of space fails its resource in one line and leaves no temp file;
    once there is room, the next run converges."""
    world = AgentWorld(tmp_path / "node")
    with tmpfs(world.root, size="256k"):
        file_plan(world, "x" * 400_000)
        result = plumb_agent(*world.cli_args(), "--once")
        assert result.returncode == 2
        assert "/srv/big.txt: no space left on device while writing" in result.stdout
        assert leftovers(world.root) == []
        remount(world.root, "size=2m")
        again = plumb_agent(*world.cli_args(), "--once")
        assert again.returncode == 0, again.stdout + again.stderr
        assert world.path("/srv/big.txt").read_text() == "x" * 400_000


def test_a_read_only_root_is_one_line_and_recovers(tmp_path: Path) -> None:
    world = AgentWorld(tmp_path / "node")
    with tmpfs(world.root, size="1m"):
        world.path("/srv").mkdir()
        remount(world.root, "ro")
        file_plan(world, "hello\n")
        result = plumb_agent(*world.cli_args(), "--once")
        assert result.returncode == 2
        assert "/srv/big.txt: read-only file system while writing" in result.stdout
        remount(world.root, "rw")
        assert leftovers(world.root) == []
        again = plumb_agent(*world.cli_args(), "--once")
        assert again.returncode == 0, again.stdout + again.stderr
        assert world.path("/srv/big.txt").read_text() == "hello\n"


def state_world(tmp_path: Path) -> AgentWorld:
    """A world whose state directory is a (mounted) tmpfs; the caller mounts it first."""
    return AgentWorld(tmp_path / "node")


def test_a_full_state_directory_is_one_line_and_recovers(tmp_path: Path) -> None:
    """The run says which state file could not be written, in one line, and leaves no temp file."""
    with tmpfs(tmp_path / "node" / "state", size="2m") as state:
        world = state_world(tmp_path)
        file_plan(world, "one\n", path="/srv/a.txt")
        assert plumb_agent(*world.cli_args(), "--once").returncode == 0
        filler = fill(state)
        file_plan(world, "two\n", path="/srv/a.txt")
        result = plumb_agent(*world.cli_args(), "--once")
        assert result.returncode != 0
        said = [line for line in result.stderr.splitlines() if line.startswith("plumb-agent: ")]
        assert len(said) == 1 and "no space left on device while writing" in said[0], result.stderr
        assert leftovers(state) == []
        filler.unlink()
        again = plumb_agent(*world.cli_args(), "--once")
        assert again.returncode == 0, again.stdout + again.stderr
        assert world.path("/srv/a.txt").read_text() == "two\n"
        assert json.loads((state / "applied.json").read_text())["serial"] == 2


def test_a_read_only_state_directory_keeps_the_daemon_running_until_it_is_writable(tmp_path: Path) -> None:
    """Each cycle says in one line that the state cannot be written; the daemon keeps going and
    applies the waiting plan once the directory is writable again."""
    with tmpfs(tmp_path / "node" / "state", size="4m") as state:
        world = state_world(tmp_path)
        file_plan(world, "one\n", path="/srv/a.txt")
        assert plumb_agent(*world.cli_args(), "--once").returncode == 0
        remount(state, "ro")
        file_plan(world, "two\n", path="/srv/a.txt")
        log = (tmp_path / "agent.log").open("w+")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "agent", *world.cli_args(), "--interval", "0.2s"], stderr=log, stdout=log
        )
        try:
            failed = wait_for(lambda: cycle_failures(tmp_path / "agent.log"), at_least=2)
            assert all("read-only file system" in line for line in failed), failed
            assert daemon.poll() is None
            remount(state, "rw")
            wait_for(lambda: applied_serial(state) == 2)
            assert world.path("/srv/a.txt").read_text() == "two\n"
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
            log.close()
        assert leftovers(state) == []


def cycle_failures(log: Path) -> list[str]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line["reason"] for line in lines if line.get("event") == "cycle failed; will retry"]


def applied_serial(state: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(json.loads((state / "applied.json").read_text())["serial"])
    return None


def wait_for(check: Any, *, at_least: int = 1, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found and (not isinstance(found, list) or len(found) >= at_least):
            return found
        time.sleep(0.05)
    raise AssertionError(f"not reached within {timeout}s: {check}")


DAMAGE = {
    "corrupt applied": ("applied.json", lambda p: p.write_text('{"serial": 1, ')),
    "corrupt ledger": ("ledger.json", lambda p: p.write_bytes(b"\xff\xfe garbage")),
    "plan not an object": ("plan.json", lambda p: p.write_text("[1, 2]")),
    "directory as plan": ("plan.json", lambda p: (p.unlink(), p.mkdir(), (p / "x").write_text("x"))),
    "directory as report": ("report.json", lambda p: (p.unlink(), p.mkdir())),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_state_file_is_one_line_moved_aside_and_the_agent_converges(
    tmp_path: Path, case: str
) -> None:
    """One warning naming the file and what is wrong, the file kept aside for a look, the run
    converges; the next run says nothing more."""
    name, damage = DAMAGE[case]
    world = AgentWorld(tmp_path / "node")
    file_plan(world, "one\n", path="/srv/a.txt")
    assert plumb_agent(*world.cli_args(), "--once").returncode == 0
    damage(world.state_dir / name)
    file_plan(world, "two\n", path="/srv/a.txt")
    result = plumb_agent(*world.cli_args(), "--once")
    assert result.returncode == 0, result.stdout + result.stderr
    warned = [json.loads(line) for line in result.stderr.splitlines() if "damaged state file" in line]
    assert len(warned) == 1 and warned[0]["problem"].startswith(str(world.state_dir / name)), result.stderr
    assert len(list(world.state_dir.glob(f"{name}.damaged-*"))) == 1
    assert world.path("/srv/a.txt").read_text() == "two\n"
    again = plumb_agent(*world.cli_args(), "--once")
    assert again.returncode == 0 and "damaged" not in again.stderr


def test_a_damaged_applied_record_still_refuses_an_older_plan(tmp_path: Path) -> None:
    """The serial floor survives applied.json: the stored plan's serial counts too."""
    world = AgentWorld(tmp_path / "node")
    for serial in (1, 2, 3):
        file_plan(world, f"{serial}\n", path="/srv/a.txt")
        assert plumb_agent(*world.cli_args(), "--once").returncode == 0
    (world.state_dir / "applied.json").write_text("not json")
    world.publish([resource("file", {"path": "/srv/a.txt", "mode": "0644", "content": "old\n"})], serial=2)
    result = plumb_agent(*world.cli_args(), "--once")
    assert result.returncode == 2 and "plan serial 2 is lower than" in result.stdout
    assert world.path("/srv/a.txt").read_text() == "3\n"
