"""The agent against a real bare repository over file://: apply, idempotence, drift, refusals, prune."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from contract.crypto import SealingKey, SigningKey, VerifyKey, seal
from contract.documents import verify_document
from tests.support import AgentWorld, resource

pytestmark = pytest.mark.integration


@pytest.fixture
def world(tmp_path: Path) -> Iterator[AgentWorld]:
    node = AgentWorld(tmp_path)
    try:
        yield node
    finally:
        node.stop_units()


def files(count: int = 3, *, text: str = "v1") -> list[dict[str, Any]]:
    entries = [resource("directory", {"path": "/etc/plumb/app", "mode": "0755"})]
    for index in range(count):
        spec = {"path": f"/etc/plumb/app/f{index}.conf", "mode": "0640", "content": f"{text} {index}\n"}
        entries.append(resource("file", spec, after=["directory:/etc/plumb/app"]))
    return entries


def outcomes(report: dict[str, Any]) -> dict[str, str]:
    return {entry["id"]: entry["outcome"] for entry in report["resources"]}


def test_apply_writes_files_and_pushes_a_signed_report(world: AgentWorld) -> None:
    """A first apply creates every file with its mode; the pushed report is signed by the node key."""
    world.publish(files())
    outcome = world.agent().run(once=True)
    assert outcome.ok
    assert world.path("/etc/plumb/app/f1.conf").read_text() == "v1 1\n"
    assert oct(world.path("/etc/plumb/app/f1.conf").stat().st_mode & 0o777) == "0o640"
    report = world.report()
    verify_document(report, VerifyKey.from_b64(world.node_signing), what="report")
    assert report["applied"]["serial"] == 1
    assert set(outcomes(report).values()) == {"changed"}


def test_second_apply_changes_nothing_and_says_so(world: AgentWorld) -> None:
    """Applying the same plan again leaves every resource unchanged, with a reason each."""
    world.publish(files())
    world.agent().run(once=True)
    before = world.path("/etc/plumb/app/f0.conf").stat().st_ino
    world.agent().run(once=True)
    report = world.report()
    assert set(outcomes(report).values()) == {"unchanged"}
    assert all(entry["reason"] for entry in report["resources"])
    assert world.path("/etc/plumb/app/f0.conf").stat().st_ino == before


def test_drift_is_found_and_corrected(world: AgentWorld) -> None:
    """A file edited and chmod-ed on the host is put back and reported as drift."""
    world.publish(files())
    world.agent().run(once=True)
    target = world.path("/etc/plumb/app/f2.conf")
    target.write_text("edited by hand\n")
    os.chmod(target, 0o666)
    world.agent().run(once=True)
    report = world.report()
    assert target.read_text() == "v1 2\n"
    assert oct(target.stat().st_mode & 0o777) == "0o640"
    assert report["drift"] == [
        {"id": "file:/etc/plumb/app/f2.conf", "what": "content, mode 0666 instead of 0640", "corrected": True}
    ]


def _bad_signature(world: AgentWorld) -> None:
    world.publish(files(text="evil"), key=SigningKey.generate())


def _wrong_node(world: AgentWorld) -> None:
    from tests.support import make_plan

    world.publish_raw(make_plan("web-2", files(text="evil"), serial=5, key=world.reconciler_key))


def _bad_digest(world: AgentWorld) -> None:
    from contract.documents import sign_document
    from tests.support import make_plan

    plan = make_plan(world.node, files(text="evil"), serial=5, key=None)
    plan["digest"] = "sha256:" + "0" * 64
    world.publish_raw(sign_document(plan, world.reconciler_key))


def _tampered_resource(world: AgentWorld) -> None:
    from contract.documents import resources_digest, sign_document
    from tests.support import make_plan

    plan = make_plan(world.node, files(), serial=5, key=None)
    plan["resources"][1]["spec"]["content"] = "evil\n"
    plan["digest"] = resources_digest(plan["resources"])
    world.publish_raw(sign_document(plan, world.reconciler_key))


def _lower_serial(world: AgentWorld) -> None:
    world.publish(files(text="evil"), serial=1)


def _expired(world: AgentWorld) -> None:
    world.publish(files(text="evil"), expires=datetime.now(UTC) - timedelta(minutes=1))


def _outside_allowed(world: AgentWorld) -> None:
    world.publish(
        [*files(text="evil"), resource("file", {"path": "/etc/passwd", "mode": "0644", "content": "x"})]
    )


def _dot_dot(world: AgentWorld) -> None:
    spec = {"path": "/etc/plumb/../shadow", "mode": "0644", "content": "x"}
    world.publish([*files(text="evil"), resource("file", spec)])


REJECTIONS: list[tuple[str, Callable[[AgentWorld], None], str]] = [
    ("signature", _bad_signature, "not by the pinned key"),
    ("node", _wrong_node, "is for node 'web-2'"),
    ("digest", _bad_digest, "plan digest does not match"),
    ("resource digest", _tampered_resource, "does not match its spec"),
    ("serial", _lower_serial, "lower than the applied 2"),
    ("expiry", _expired, "plan expired"),
    ("allowedPaths", _outside_allowed, "outside allowedPaths"),
    ("dot-dot", _dot_dot, "uses '..'"),
]


@pytest.mark.parametrize(("name", "publish_bad", "reason"), REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_bad_plans_are_not_applied_at_all(
    world: AgentWorld, name: str, publish_bad: Callable[[AgentWorld], None], reason: str
) -> None:
    """A plan failing any check changes nothing on the host, and the report says why."""
    world.publish(files(), serial=2)
    world.agent().run(once=True)
    publish_bad(world)
    outcome = world.agent().run(once=True)
    report = world.report()
    assert not outcome.ok
    assert reason in report["rejected"]["reason"]
    assert report["applied"]["serial"] == 2
    assert world.path("/etc/plumb/app/f0.conf").read_text() == "v1 0\n"
    assert not world.path("/etc/passwd").exists()


def test_symlink_planted_on_the_path_is_refused(world: AgentWorld, tmp_path: Path) -> None:
    """A directory replaced by a symlink is not followed: the entry fails and nothing outside is written."""
    outside = tmp_path / "outside"
    outside.mkdir()
    world.path("/etc/plumb").mkdir(parents=True)
    os.symlink(outside, world.path("/etc/plumb/app"))
    spec = {"path": "/etc/plumb/app/x.conf", "mode": "0644", "content": "x"}
    world.publish(
        [resource("file", spec), resource("file", {"path": "/srv/ok", "mode": "0644", "content": "ok"})]
    )
    outcome = world.agent().run(once=True)
    report = world.report()
    assert not outcome.ok
    assert outcomes(report) == {"file:/etc/plumb/app/x.conf": "failed", "file:/srv/ok": "changed"}
    assert "symlink" in report["resources"][0]["error"]
    assert list(outside.iterdir()) == []


def test_symlinked_file_is_not_followed(world: AgentWorld, tmp_path: Path) -> None:
    """A file replaced by a symlink to somewhere else is refused, and its target is untouched."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    world.path("/etc/plumb").mkdir(parents=True)
    os.symlink(victim, world.path("/etc/plumb/x.conf"))
    world.publish([resource("file", {"path": "/etc/plumb/x.conf", "mode": "0644", "content": "x"})])
    world.agent().run(once=True)
    assert victim.read_text() == "precious\n"
    assert world.report()["resources"][0]["outcome"] == "failed"


def test_prune_removes_only_what_the_agent_created(world: AgentWorld) -> None:
    """A resource dropped from the plan is removed if the agent created it, kept if it was there before."""
    world.path("/etc/plumb").mkdir(parents=True)
    world.path("/etc/plumb/preexisting.conf").write_text("mine\n")
    kept = resource("file", {"path": "/etc/plumb/preexisting.conf", "mode": "0644", "content": "managed\n"})
    created = resource("file", {"path": "/etc/plumb/created.conf", "mode": "0644", "content": "new\n"})
    world.publish([kept, created])
    world.agent().run(once=True)
    world.publish([resource("file", {"path": "/etc/plumb/other.conf", "mode": "0644", "content": "o\n"})])
    world.agent().run(once=True)
    assert not world.path("/etc/plumb/created.conf").exists()
    assert world.path("/etc/plumb/preexisting.conf").read_text() == "managed\n"
    assert world.path("/etc/plumb/other.conf").exists()


def test_unreachable_remote_prunes_nothing_and_reports_when_back(world: AgentWorld) -> None:
    """With the remote gone the last plan stays applied; the report goes out once it is back."""
    world.publish(files())
    world.agent().run(once=True)
    hidden = world.origin_path.with_name("hidden.git")
    world.origin_path.rename(hidden)
    agent = world.agent()
    outcome = agent.cycle()
    assert not outcome.fetched and not outcome.pushed
    assert world.path("/etc/plumb/app/f0.conf").exists()
    hidden.rename(world.origin_path)
    assert agent.cycle().pushed


def test_sealed_file_is_opened_with_the_node_key(world: AgentWorld) -> None:
    """A sealed file is written in clear (0600) and its content never appears in the report."""
    spec = {"path": "/etc/plumb/secret", "mode": "0600"}
    sealed = seal(b"hunter2\n", world.node_sealing, context=f"{world.node}|file:/etc/plumb/secret")
    world.publish([resource("file", spec | {"sealed": sealed})])
    world.agent().run(once=True)
    assert world.path("/etc/plumb/secret").read_bytes() == b"hunter2\n"
    assert "hunter2" not in str(world.report())
    assert isinstance(SealingKey.load(world.state_dir / "sealing.key"), SealingKey)


def test_owner_and_group_are_set_and_kept(world: AgentWorld) -> None:
    """Files and directories get their owner and group by name; a chown behind the agent's back is drift."""
    import grp
    import pwd

    nobody, nogroup = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    world.publish(
        [
            resource(
                "directory", {"path": "/srv/data", "mode": "0750", "owner": "nobody", "group": "nogroup"}
            ),
            resource(
                "file",
                {"path": "/srv/data/a", "mode": "0640", "content": "a", "owner": "nobody", "group": "0"},
            ),
        ]
    )
    world.agent().run(once=True)
    directory, file = world.path("/srv/data").stat(), world.path("/srv/data/a").stat()
    assert (directory.st_uid, directory.st_gid, file.st_uid, file.st_gid) == (nobody, nogroup, nobody, 0)
    os.chown(world.path("/srv/data/a"), 0, 0)
    world.agent().run(once=True)
    assert world.path("/srv/data/a").stat().st_uid == nobody
    assert world.report()["drift"][0]["what"] == f"owner 0 instead of {nobody}"
