"""Property: applying any plan of files and directories twice changes nothing the second time."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.apply.converge import apply_plan
from agent.apply.resources.base import Host
from agent.apply.runtimes.process import ProcessRuntime
from agent.host.paths import Confinement
from contract.plan import Plan, PlanResource
from contract.vocabulary import Outcome
from tests.support import resource

pytestmark = pytest.mark.integration

names = st.text(alphabet="abcdefgh", min_size=1, max_size=4)
modes = st.sampled_from(["0600", "0640", "0644", "0755"])
files = st.dictionaries(
    st.tuples(st.sampled_from(["/etc/plumb", "/srv/a", "/srv/a/b"]), names),
    st.tuples(st.text(max_size=200), modes),
    max_size=12,
)


def plan_of(entries: dict[tuple[str, str], tuple[str, str]]) -> Plan:
    made: list[dict[str, Any]] = []
    for (directory, name), (content, mode) in sorted(entries.items()):
        made.append(resource("file", {"path": f"{directory}/f-{name}", "mode": mode, "content": content}))
    made += [resource("directory", {"path": d, "mode": "0755"}) for d in sorted({d for d, _ in entries})]
    parsed = tuple(PlanResource(r["id"], r["kind"], r["service"], r["spec"], r["digest"]) for r in made)
    return Plan("web-1", 1, "a" * 40, datetime.now(UTC), ("/etc/plumb", "/srv"), 30, parsed, "", {})


@settings(max_examples=30, deadline=None)
@given(first=files, second=files)
def test_second_apply_is_a_no_op(first: dict[Any, Any], second: dict[Any, Any]) -> None:
    """Whatever was there before, applying a plan twice leaves the second apply without a change."""
    with tempfile.TemporaryDirectory() as base:
        root = Path(base)
        confinement = Confinement.create(root=root, allowed=["/etc/plumb", "/srv"])
        host = Host(
            "web-1",
            confinement,
            root / "state",
            ProcessRuntime(confinement=confinement, state_dir=root / "state"),
        )
        ledger: dict[str, Any] = {}
        for plan in (plan_of(first), plan_of(second)):
            ledger = apply_plan(plan, host, ledger=ledger, hooks_state={}).ledger
        again = apply_plan(plan_of(second), host, ledger=ledger, hooks_state={})
        assert {r.change.outcome for r in again.resources} <= {Outcome.UNCHANGED}
        assert again.pruned == ()
