"""The Git server's side of the trust boundary: examples/git-server/update behind a real sshd.

Each key in authorized_keys runs git-shell with its Plumb role, as the README tells operators to
set it up; the hook lets a node push only its own report branch and the reconciler only the state
branch. Pushes go through the same transport the agent and the reconciler use.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest

from contract.errors import PushRejected
from contract.transport.gitremote import Remote
from tests.support.gitrepo import bare_repo, commit_files
from tests.support.sshd import SshServer, keygen, running_sshd

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
HOOK = ROOT / "examples" / "git-server" / "update"
GIT_SHELL = shutil.which("git-shell") or "/usr/bin/git-shell"
ROLES: dict[str, dict[str, str]] = {
    "app-1": {"PLUMB_ROLE": "node", "PLUMB_NODE": "app-1"},
    "app-2": {"PLUMB_ROLE": "node", "PLUMB_NODE": "app-2"},
    "reconciler": {"PLUMB_ROLE": "reconciler"},
    "alice": {},
    "odd": {"PLUMB_ROLE": "node", "PLUMB_NODE": "../app-2"},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SshServer, Path, dict[str, Path]]]:
    """A bare fleet repository with the hook, and keys for app-1, app-2, the reconciler and a person."""
    base = tmp_path_factory.mktemp("gitperm")
    origin = bare_repo(base / "fleet.git")
    commit_files(origin, "main", {"plumb.yaml": "kind: Repository\n"})
    for branch in ("plumb/state", "plumb/reports/app-1", "plumb/reports/app-2"):
        commit_files(origin, branch, {"x": branch})
    hooks = Path(origin.path) / "hooks"
    hooks.mkdir(exist_ok=True)
    shutil.copy(HOOK, hooks / "update")
    # as the hook's header shows: `env PLUMB_ROLE=... git-shell -c ...` forced per key
    roles = {name: "".join(f"{k}={v} " for k, v in env.items()) for name, env in ROLES.items()}
    with running_sshd(base / "sshd") as sshd:
        keys = {name: keygen(base / f"{name}_key") for name in roles}
        lines = [
            f'restrict,command="env {prefix}{GIT_SHELL} -c \\"$SSH_ORIGINAL_COMMAND\\"" '
            + keys[name].with_suffix(".pub").read_text().strip()
            for name, prefix in roles.items()
        ]
        (base / "sshd" / "authorized_keys").write_text("\n".join(lines) + "\n")
        yield sshd, Path(origin.path), keys


def push(server: tuple[SshServer, Path, dict[str, Path]], who: str, branch: str, tmp_path: Path) -> None:
    """Push a new commit to `branch` as `who`, over ssh."""
    sshd, origin, keys = server
    local = bare_repo(tmp_path / f"local-{who}.git")
    commit_files(local, "work", {"report.json": f"{who} on {branch}\n"}, keep=False)
    remote = Remote(sshd.url(origin), ssh_key=keys[who], known_hosts=sshd.known_hosts)
    remote.push(local, [f"+refs/heads/work:refs/heads/{branch}"])


ALLOWED = [
    ("app-1", "plumb/reports/app-1"),
    ("app-2", "plumb/reports/app-2"),
    ("reconciler", "plumb/state"),
    ("alice", "main"),
    ("alice", "feature/x"),
]
REFUSED = [
    ("app-1", "plumb/reports/app-2", "node app-1 may not push"),
    ("app-1", "plumb/state", "node app-1 may not push"),
    ("app-1", "main", "node app-1 may not push"),
    ("reconciler", "plumb/reports/app-1", "the reconciler may not push"),
    ("reconciler", "main", "the reconciler may not push"),
    ("alice", "plumb/state", "a key without a Plumb role may not push"),
    ("alice", "plumb/reports/app-1", "a key without a Plumb role may not push"),
    ("odd", "plumb/reports/app-2", "a node key without a valid PLUMB_NODE may not push"),
]


@pytest.mark.parametrize(("who", "branch"), ALLOWED, ids=[f"{w}->{b}" for w, b in ALLOWED])
def test_each_role_pushes_what_it_owns(
    server: tuple[SshServer, Path, dict[str, Path]], who: str, branch: str, tmp_path: Path
) -> None:
    push(server, who, branch, tmp_path)
    origin = pygit2.Repository(str(server[1]))
    tip = origin.references[f"refs/heads/{branch}"].peel(pygit2.Commit)
    assert tip.tree["report.json"].data.decode() == f"{who} on {branch}\n"


@pytest.mark.parametrize(("who", "branch", "message"), REFUSED, ids=[f"{w}->{b}" for w, b, _ in REFUSED])
def test_the_hook_says_who_may_not_push_what(who: str, branch: str, message: str) -> None:
    """The line the pusher sees (git prints it as `remote: ...`)."""
    env = {"PATH": "/usr/bin:/bin", **ROLES[who]}
    ref = f"refs/heads/{branch}"
    done = subprocess.run(["sh", str(HOOK), ref, "0" * 40, "1" * 40], env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr == f"plumb: {message} {ref}\n"


@pytest.mark.parametrize(("who", "branch", "_message"), REFUSED, ids=[f"{w}->{b}" for w, b, _ in REFUSED])
def test_nothing_else_is_accepted(
    server: tuple[SshServer, Path, dict[str, Path]], who: str, branch: str, _message: str, tmp_path: Path
) -> None:
    origin = pygit2.Repository(str(server[1]))
    before = origin.references.get(f"refs/heads/{branch}")
    before_target = before.target if before is not None else None
    with pytest.raises(PushRejected):
        push(server, who, branch, tmp_path)
    after = origin.references.get(f"refs/heads/{branch}")
    assert (after.target if after is not None else None) == before_target
