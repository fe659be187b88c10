"""The Git transport against real bare repositories over file:// and a real sshd on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest

from contract.errors import TemporaryError
from contract.transport.gitremote import HostKeyError, PushRejected, Remote
from tests.support.gitrepo import bare_repo, commit_files, read_file
from tests.support.sshd import SshServer, keygen, running_sshd

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def _remote_for(kind: str, path: Path, server: SshServer | None) -> Remote:
    if kind == "file":
        return Remote(f"file://{path}")
    if kind == "path":
        return Remote(str(path))
    assert server is not None
    return Remote(server.url(path), ssh_key=server.client_key, known_hosts=server.known_hosts)


@pytest.mark.parametrize("kind", ["file", "path", "ssh"])
def test_fetch_push_and_list_refs(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Fetch a branch, commit on it locally, push it back and see it listed on the remote."""
    server = request.getfixturevalue("sshd") if kind == "ssh" else None
    origin = bare_repo(tmp_path / "origin.git")
    first = commit_files(origin, "plumb/state", {"plans/web-1.json": "{}"})
    local = bare_repo(tmp_path / "local.git")
    remote = _remote_for(kind, tmp_path / "origin.git", server)
    remote.fetch(local, ["+refs/heads/plumb/state:refs/remotes/origin/plumb/state"])
    assert str(local.references["refs/remotes/origin/plumb/state"].target) == first
    local.references.create(
        "refs/heads/plumb/state", local.references["refs/remotes/origin/plumb/state"].target
    )
    second = commit_files(local, "plumb/state", {"plans/web-2.json": "[]"})
    remote.push(local, ["refs/heads/plumb/state:refs/heads/plumb/state"])
    assert remote.list_refs(local)["refs/heads/plumb/state"] == second
    assert read_file(origin, "plumb/state", "plans/web-2.json") == b"[]"


@pytest.mark.parametrize("kind", ["file", "ssh"])
def test_stale_push_is_rejected(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A push built on an old tip is refused with PushRejected and the remote keeps its tip."""
    server = request.getfixturevalue("sshd") if kind == "ssh" else None
    origin = bare_repo(tmp_path / "origin.git")
    commit_files(origin, "main", {"a": "1"})
    local = bare_repo(tmp_path / "local.git")
    remote = _remote_for(kind, tmp_path / "origin.git", server)
    remote.fetch(local, ["+refs/heads/main:refs/heads/main"])
    winner = commit_files(origin, "main", {"a": "2"}, message="someone else")
    commit_files(local, "main", {"a": "3"}, message="stale")
    with pytest.raises(PushRejected):
        remote.push(local, ["refs/heads/main:refs/heads/main"])
    assert str(origin.references["refs/heads/main"].target) == winner


def test_unknown_host_key_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    """An empty known_hosts refuses the server, naming the host and the file."""
    origin = bare_repo(tmp_path / "origin.git")
    commit_files(origin, "main", {"a": "1"})
    empty = tmp_path / "known_hosts"
    empty.write_text("# nothing pinned\n")
    remote = Remote(sshd.url(tmp_path / "origin.git"), ssh_key=sshd.client_key, known_hosts=empty)
    with pytest.raises(HostKeyError, match=rf"127\.0\.0\.1 port {sshd.port}.*is not in .*known_hosts"):
        remote.fetch(bare_repo(tmp_path / "local.git"), ["+refs/heads/main:refs/heads/main"])


def test_changed_host_key_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    """A known_hosts pinning another key for this host:port refuses the server."""
    origin = bare_repo(tmp_path / "origin.git")
    commit_files(origin, "main", {"a": "1"})
    other = keygen(tmp_path / "other_host_key")
    pinned = tmp_path / "known_hosts"
    pinned.write_text(sshd.known_hosts_line(other.with_suffix(".pub")))
    remote = Remote(sshd.url(tmp_path / "origin.git"), ssh_key=sshd.client_key, known_hosts=pinned)
    local = bare_repo(tmp_path / "local.git")
    with pytest.raises(HostKeyError, match="does not match the key pinned"):
        remote.fetch(local, ["+refs/heads/main:refs/heads/main"])
    with pytest.raises(HostKeyError):
        remote.list_refs(local)
    assert local.references.get("refs/heads/main") is None


def test_missing_known_hosts_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    """An SSH remote without any pinned known_hosts is refused, never trusted on first use."""
    origin = bare_repo(tmp_path / "origin.git")
    commit_files(origin, "main", {"a": "1"})
    remote = Remote(sshd.url(tmp_path / "origin.git"), ssh_key=sshd.client_key)
    with pytest.raises(HostKeyError, match="no known_hosts"):
        remote.list_refs(bare_repo(tmp_path / "local.git"))


def test_unreachable_remote_is_temporary(tmp_path: Path) -> None:
    """A missing repository is a TemporaryError, not a crash."""
    remote = Remote(f"file://{tmp_path}/nowhere.git")
    with pytest.raises(TemporaryError):
        remote.fetch(bare_repo(tmp_path / "local.git"), ["+refs/heads/main:refs/heads/main"])


def test_anonymous_remote_writes_no_config(tmp_path: Path) -> None:
    """Fetching leaves no [remote] section in the local repository's config."""
    origin = bare_repo(tmp_path / "origin.git")
    commit_files(origin, "main", {"a": "1"})
    local = bare_repo(tmp_path / "local.git")
    Remote(str(tmp_path / "origin.git")).fetch(local, ["+refs/heads/main:refs/heads/main"])
    assert "remote" not in (tmp_path / "local.git" / "config").read_text()
    assert isinstance(local.references["refs/heads/main"].peel(pygit2.Commit), pygit2.Commit)


def test_private_key_alone_is_enough(sshd: SshServer, tmp_path: Path) -> None:
    """Without a .pub file next to it the key still authenticates (the public half is derived)."""
    import shutil

    key = tmp_path / "only_private"
    shutil.copy(sshd.client_key, key)
    key.chmod(0o600)
    origin = bare_repo(tmp_path / "origin.git")
    commit_files(origin, "main", {"a": "1"})
    remote = Remote(sshd.url(tmp_path / "origin.git"), ssh_key=key, known_hosts=sshd.known_hosts)
    assert "refs/heads/main" in remote.list_refs(bare_repo(tmp_path / "local.git"))


def test_refused_client_key_is_a_clear_error(sshd: SshServer, tmp_path: Path) -> None:
    """A key the server does not accept fails once with a message naming it (no retry loop)."""
    from contract.errors import PermanentError

    stranger = keygen(tmp_path / "stranger")
    remote = Remote(sshd.url(tmp_path / "origin.git"), ssh_key=stranger, known_hosts=sshd.known_hosts)
    with pytest.raises(PermanentError, match=r"the server refused the SSH key .*stranger"):
        remote.list_refs(bare_repo(tmp_path / "local.git"))
