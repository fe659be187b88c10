"""What a node's Git credentials can put on the state branch or a report branch is read with bounds:
size from the object header first, then depth, integers and NaN. The agent and the reconciler refuse it
in one line and go on; nothing crashes, nothing is applied."""

from __future__ import annotations

import resource as rlimit
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pygit2
import pytest

from contract.crypto import SigningKey
from contract.defaults import MAX_PLAN_BYTES, MAX_REPORT_BYTES
from contract.documents import sign_document, to_file_json
from reconciler.drivers.reports import read_report
from tests.support import AgentWorld, resource

pytestmark = pytest.mark.integration
SIGNATURE = pygit2.Signature("attacker", "attacker@plumb.invalid")

# name -> (what the file holds: bytes, or a (filemode, object) entry), words the refusal must contain
Entry = Callable[[pygit2.Repository, int], tuple[int, pygit2.Oid]]


def _blob(data: bytes) -> Entry:
    return lambda repo, _limit: (pygit2.GIT_FILEMODE_BLOB, repo.create_blob(data))


def _spaces_past(repo: pygit2.Repository, limit: int) -> tuple[int, pygit2.Oid]:
    """A blob just over the limit: compresses to almost nothing, refused before it is inflated."""
    return pygit2.GIT_FILEMODE_BLOB, repo.create_blob(b"{" + b" " * limit + b"}")


def _gitlink(repo: pygit2.Repository, _limit: int) -> tuple[int, pygit2.Oid]:
    return pygit2.GIT_FILEMODE_COMMIT, pygit2.Oid(hex="1" * 40)


def _symlink(repo: pygit2.Repository, _limit: int) -> tuple[int, pygit2.Oid]:
    return pygit2.GIT_FILEMODE_LINK, repo.create_blob(b"/etc/shadow")


def _directory(repo: pygit2.Repository, _limit: int) -> tuple[int, pygit2.Oid]:
    builder = repo.TreeBuilder()
    builder.insert("x", repo.create_blob(b"{}"), pygit2.GIT_FILEMODE_BLOB)
    return pygit2.GIT_FILEMODE_TREE, builder.write()


HOSTILE: list[tuple[str, Entry, str]] = [
    ("deep array", _blob(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), "nests deeper than 64"),
    ("deep but parseable", _blob(b'{"a": ' + b"[" * 500 + b"]" * 500 + b"}"), "nests deeper than 64"),
    ("5,000-digit integer", _blob(b'{"serial": 1' + b"0" * 5000 + b"}"), "does not fit 64 bits"),
    ("integer past 64 bits", _blob(b'{"serial": 18446744073709551616}'), "does not fit 64 bits"),
    ("NaN", _blob(b'{"serial": NaN}'), "NaN is not a JSON value"),
    ("infinity", _blob(b'{"serial": 1e999}'), "is not finite"),
    ("not UTF-8", _blob(b'{"a": "\xff"}'), "not valid JSON"),
    ("a list", _blob(b"[]"), "not a JSON object"),
    ("huge when inflated", _spaces_past, "more than the limit"),
    ("gitlink", _gitlink, "a submodule (gitlink), not a file"),
    ("symbolic link", _symlink, "a symbolic link, not a file"),
    ("directory", _directory, "a directory, not a file"),
]
IDS = [name for name, _, _ in HOSTILE]


def _commit_entry(repo: pygit2.Repository, branch: str, path: str, entry: tuple[int, pygit2.Oid]) -> str:
    """A commit on `branch` whose tree holds `entry` at `path` (one directory level at most)."""
    directory, _, name = path.rpartition("/")
    inner = repo.TreeBuilder()
    inner.insert(name, entry[1], entry[0])
    tree = inner.write()
    if directory:
        outer = repo.TreeBuilder()
        outer.insert(directory, tree, pygit2.GIT_FILEMODE_TREE)
        tree = outer.write()
    ref = repo.references.get(f"refs/heads/{branch}")
    parents = [ref.target] if ref is not None else []
    oid = repo.create_commit(None, SIGNATURE, SIGNATURE, "hostile", tree, parents)
    repo.references.create(f"refs/heads/{branch}", oid, force=True)
    return str(oid)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[AgentWorld]:
    built = AgentWorld(tmp_path)
    yield built
    built.stop_units()


class TestAgent:
    """A running agent fetches a hostile plan file."""

    @pytest.mark.parametrize(("name", "entry", "words"), HOSTILE, ids=IDS)
    def test_refused_in_the_report_and_the_last_plan_kept(
        self, world: AgentWorld, name: str, entry: Entry, words: str
    ) -> None:
        """The cycle ends normally, the report names the refusal, the verified plan stays applied."""
        spec = {"path": "/etc/plumb/kept", "mode": "0644", "content": "kept\n"}
        world.publish([resource("file", spec)])
        agent = world.agent()
        assert agent.cycle().ok
        _commit_entry(
            world.origin, "plumb/state", f"plans/{world.node}.json", entry(world.origin, MAX_PLAN_BYTES)
        )
        world.path("/etc/plumb/kept").write_text("drifted\n")
        outcome = agent.cycle()
        report = world.report()
        assert not outcome.ok and words in report["rejected"]["reason"]
        assert report["applied"]["serial"] == 1
        assert world.path("/etc/plumb/kept").read_text() == "kept\n"  # still converging the last plan


class TestReconciler:
    """The reconciler reads a hostile report branch."""

    @pytest.mark.parametrize(("name", "entry", "words"), HOSTILE, ids=IDS)
    def test_refused_as_that_node_s_problem(
        self, tmp_path: Path, name: str, entry: Entry, words: str
    ) -> None:
        """The report is absent with its reason; reading it neither raises nor inflates the blob."""
        repo = pygit2.init_repository(str(tmp_path / "fleet.git"), bare=True)
        tip = _commit_entry(repo, "plumb/reports/web-1", "report.json", entry(repo, MAX_REPORT_BYTES))
        before = rlimit.getrusage(rlimit.RUSAGE_SELF).ru_maxrss
        received = read_report(repo, node="web-1", tip=tip, signing_key=SigningKey.generate().public_b64())
        grown_kib = rlimit.getrusage(rlimit.RUSAGE_SELF).ru_maxrss - before
        assert received.report is None and received.problem is not None and words in received.problem
        assert grown_kib < MAX_REPORT_BYTES // 1024  # the oversized blob was never inflated

    def test_a_signed_report_within_bounds_still_reads(self, tmp_path: Path) -> None:
        """The bounds refuse only what no agent writes: a real signed report is read and verified."""
        key = SigningKey.generate()
        document: dict[str, Any] = {
            "apiVersion": "plumb/v1", "kind": "NodeReport", "node": "web-1", "time": "2030-01-01T00:00:00Z",
            "agentVersion": "test", "applied": None, "resources": [], "drift": [], "instances": [],
            "capabilities": [],
        }  # fmt: skip
        repo = pygit2.init_repository(str(tmp_path / "fleet.git"), bare=True)
        data = to_file_json(sign_document(document, key))
        tip = _commit_entry(repo, "plumb/reports/web-1", "report.json", _blob(data)(repo, 0))
        received = read_report(repo, node="web-1", tip=tip, signing_key=key.public_b64())
        assert received.problem is None and received.verified and received.report is not None
