"""The planner: serials rise only when a node's work changes; expiry is renewed in place."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.crypto import SealingKey, SigningKey, unseal
from contract.documents import canonical_json, resource_digest, resources_digest, signed_payload
from reconciler.core.compile.desired import RenderedResource
from reconciler.core.decide.planner import (
    NodePlan,
    PlanCache,
    PlanSettings,
    encode_entry,
    format_time,
    plan_entry,
    plan_fleet,
    plan_node,
    plan_payload,
)
from reconciler.drivers.keys import Sealer

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = 86400
SETTINGS = PlanSettings(allowed_paths=("/etc", "/srv"), heartbeat=30, plan_expiry=7 * DAY)
C1, C2 = "1" * 40, "2" * 40


def res(name: str, content: str = "x", after: tuple[str, ...] = ()) -> RenderedResource:
    spec = {"path": f"/etc/{name}", "mode": "0644", "content": content}
    return RenderedResource(f"file:/etc/{name}", "file", "api", spec, after, "templates/t.yaml:1")


def first(
    resources: list[RenderedResource], now: datetime = T0, settings: PlanSettings = SETTINGS
) -> NodePlan:
    entries = [plan_entry(r) for r in resources]
    return plan_node(node="web-1", entries=entries, previous=None, settings=settings, commit=C1, now=now)


# name, previous resources, next resources, settings, now, expected serial, commit, expires
CASES = [
    ("first plan", None, [res("a")], SETTINGS, T0, 1, C1, T0 + timedelta(days=7)),
    (
        "unchanged work keeps everything",
        [res("a")],
        [res("a")],
        SETTINGS,
        T0 + timedelta(days=1),
        1,
        C1,
        T0 + timedelta(days=7),
    ),
    (
        "changed content raises serial",
        [res("a")],
        [res("a", "y")],
        SETTINGS,
        T0 + timedelta(days=1),
        2,
        C2,
        T0 + timedelta(days=8),
    ),
    (
        "added resource raises serial",
        [res("a")],
        [res("a"), res("b")],
        SETTINGS,
        T0,
        2,
        C2,
        T0 + timedelta(days=7),
    ),
    (
        "removed resource raises serial",
        [res("a"), res("b")],
        [res("a")],
        SETTINGS,
        T0,
        2,
        C2,
        T0 + timedelta(days=7),
    ),
    (
        "reordered resources raise serial",
        [res("a"), res("b")],
        [res("b"), res("a")],
        SETTINGS,
        T0,
        2,
        C2,
        T0 + timedelta(days=7),
    ),
    (
        "heartbeat change raises serial",
        [res("a")],
        [res("a")],
        PlanSettings(("/etc", "/srv"), 60, 7 * DAY),
        T0,
        2,
        C2,
        T0 + timedelta(days=7),
    ),
    (
        "allowedPaths change raises serial",
        [res("a")],
        [res("a")],
        PlanSettings(("/etc",), 30, 7 * DAY),
        T0,
        2,
        C2,
        T0 + timedelta(days=7),
    ),
    (
        "half expiry left: renewed, same serial",
        [res("a")],
        [res("a")],
        SETTINGS,
        T0 + timedelta(days=4),
        1,
        C1,
        T0 + timedelta(days=11),
    ),
    (
        "exactly more than half left: kept",
        [res("a")],
        [res("a")],
        SETTINGS,
        T0 + timedelta(days=3),
        1,
        C1,
        T0 + timedelta(days=7),
    ),
    (
        "expiry setting change alone is no new work",
        [res("a")],
        [res("a")],
        PlanSettings(("/etc", "/srv"), 30, DAY),
        T0 + timedelta(hours=13),
        1,
        C1,
        T0 + timedelta(days=1, hours=13),
    ),
]


@pytest.mark.parametrize(
    ("name", "before", "after", "settings", "now", "serial", "commit", "expires"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_plan_node(name, before, after, settings, now, serial, commit, expires) -> None:
    """The next plan keeps serial and commit unless the node's work changed."""
    previous = first(before) if before is not None else None
    entries = [plan_entry(r) for r in after]
    plan = plan_node(
        node="web-1",
        entries=entries,
        previous=previous,
        settings=settings,
        commit=C2 if previous else C1,
        now=now,
    )
    assert (plan.serial, plan.commit, plan.expires) == (serial, commit, format_time(expires))
    assert plan.digest == resources_digest(entries)


def test_plan_document_round_trips_and_has_digests() -> None:
    """A plan document reads back into the same NodePlan; every entry carries its digest."""
    plan = first([res("a", after=("dir:/etc",)), res("b")])
    document = plan.document()
    assert NodePlan.from_document(document) == plan
    assert document["resources"][0]["digest"] == resource_digest("file", document["resources"][0]["spec"])
    assert document["resources"][0]["after"] == ["dir:/etc"]
    assert set(document) == {
        "apiVersion",
        "kind",
        "node",
        "serial",
        "source",
        "expires",
        "allowedPaths",
        "heartbeat",
        "resources",
        "digest",
    }


def test_plan_fleet_reports_changed_and_removed_nodes() -> None:
    """Only nodes whose plan differs are `changed`; nodes that left the fleet are `removed`."""
    cache = PlanCache()
    a, b = res("a"), res("b")
    one = plan_fleet(
        nodes={"n1": (a,), "n2": (b,), "n3": ()},
        previous={},
        settings=SETTINGS,
        commit=C1,
        now=T0,
        cache=cache,
    )
    assert one.changed == {"n1", "n2", "n3"}
    two = plan_fleet(
        nodes={"n1": (a,), "n2": (res("b", "new"),)},
        previous=one.plans,
        settings=SETTINGS,
        commit=C2,
        now=T0,
        cache=cache,
    )
    assert (two.changed, two.removed) == ({"n2"}, {"n3"})
    assert two.plans["n1"] is one.plans["n1"]
    assert (two.plans["n2"].serial, two.plans["n2"].commit) == (2, C2)


def test_plan_fleet_is_deterministic_with_or_without_cache() -> None:
    """Planning the same input twice, cached or not, gives identical documents."""
    nodes = {"n1": (res("a"), res("b")), "n2": (res("c"),)}
    cached = plan_fleet(nodes=nodes, previous={}, settings=SETTINGS, commit=C1, now=T0, cache=PlanCache())
    fresh = plan_fleet(nodes=nodes, previous={}, settings=SETTINGS, commit=C1, now=T0)
    assert {n: p.document() for n, p in cached.plans.items()} == {
        n: p.document() for n, p in fresh.plans.items()
    }


# name, resource (spec with unicode, nesting, numbers and lists)
ENCODINGS = [
    ("plain file", res("a")),
    ("unicode and newlines", res("ü", "line one\nligne deux — ✓\n")),
    (
        "nested spec",
        RenderedResource(
            "unit:api.service",
            "unit",
            "api",
            {"name": "api.service", "restartOn": ["/etc/b", "/etc/a"], "x": {"z": 1.5, "a": None}},
            ("file:/etc/a",),
            "t:1",
        ),
    ),
]


@pytest.mark.parametrize(("name", "resource"), ENCODINGS, ids=[e[0] for e in ENCODINGS])
def test_spliced_encoding_matches_the_contract(name: str, resource: RenderedResource) -> None:
    """Entry JSON, resource digest, plan digest and signed payload equal contract.documents's own."""
    entry, text = encode_entry(resource)
    assert text == canonical_json(entry).decode()
    assert entry["digest"] == resource_digest(resource.kind, resource.spec)
    cache = PlanCache()
    fleet = plan_fleet(
        nodes={"n1": (resource, res("b"))}, previous={}, settings=SETTINGS, commit=C1, now=T0, cache=cache
    )
    plan = fleet.plans["n1"]
    assert plan.digest == resources_digest([dict(e) for e in plan.resources])
    assert plan_payload(plan, cache)[0] == signed_payload(plan.document())


NODE_KEY = SealingKey.generate()
RECONCILER_KEY = SigningKey.generate()
SECRET_FILE = RenderedResource(
    "file:/etc/db",
    "file",
    "api",
    {"path": "/etc/db", "mode": "0600", "content": "pw=1\n"},
    (),
    "t:1",
    uses_secret=True,
)
SECRET_UNIT = RenderedResource(
    "unit:db.service", "unit", "api", {"name": "db.service", "content": "pw=1"}, (), "t:2", uses_secret=True
)

# name, resources, node has a sealing key, expected ids in the plan, expected withheld ids
SEALING = [
    ("secret file is sealed", (res("a"), SECRET_FILE), True, ["file:/etc/a", "file:/etc/db"], ()),
    ("no sealing key: withheld", (res("a"), SECRET_FILE), False, ["file:/etc/a"], ("file:/etc/db",)),
    ("secret in a unit cannot be sealed: withheld", (SECRET_UNIT,), True, [], ("unit:db.service",)),
]


@pytest.mark.parametrize(
    ("name", "resources", "keyed", "ids", "withheld"), SEALING, ids=[s[0] for s in SEALING]
)
def test_secret_bearing_resources_are_sealed_or_withheld(
    name: str, resources: tuple[RenderedResource, ...], keyed: bool, ids: list[str], withheld: tuple[str, ...]
) -> None:
    """No secret reaches a plan in clear: sealed to the node and bound to the resource, or left out."""
    sealers = {"n1": Sealer.for_node(RECONCILER_KEY, NODE_KEY.public_b64())} if keyed else {}
    fleet = plan_fleet(
        nodes={"n1": resources}, previous={}, settings=SETTINGS, commit=C1, now=T0, sealers=sealers
    )
    plan = fleet.plans["n1"]
    assert [e["id"] for e in plan.resources] == ids
    assert fleet.withheld.get("n1", ()) == withheld
    assert "pw=1" not in canonical_json(plan.document()).decode()
    for entry in plan.resources:
        if entry["id"] == "file:/etc/db":
            assert unseal(entry["spec"]["sealed"], NODE_KEY, context="n1|file:/etc/db") == b"pw=1\n"
            assert "content" not in entry["spec"]


def test_sealed_plans_are_stable_and_follow_the_node_key() -> None:
    """Sealing again gives the same plan; a new node sealing key gives a new serial."""
    sealer = Sealer.for_node(RECONCILER_KEY, NODE_KEY.public_b64())
    one = plan_fleet(
        nodes={"n1": (SECRET_FILE,)},
        previous={},
        settings=SETTINGS,
        commit=C1,
        now=T0,
        sealers={"n1": sealer},
    )
    again = plan_fleet(
        nodes={"n1": (SECRET_FILE,)},
        previous=one.plans,
        settings=SETTINGS,
        commit=C2,
        now=T0,
        sealers={"n1": Sealer.for_node(RECONCILER_KEY, NODE_KEY.public_b64())},
    )
    assert again.changed == frozenset() and again.plans["n1"] is one.plans["n1"]
    other = Sealer.for_node(RECONCILER_KEY, SealingKey.generate().public_b64())
    moved = plan_fleet(
        nodes={"n1": (SECRET_FILE,)},
        previous=one.plans,
        settings=SETTINGS,
        commit=C2,
        now=T0,
        sealers={"n1": other},
    )
    assert moved.plans["n1"].serial == 2


contents = st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.text(max_size=20), max_size=4)
fleets = st.dictionaries(st.sampled_from(["n1", "n2", "n3"]), contents, max_size=3)


@given(before=fleets, after=fleets)
def test_replanning_is_idempotent_and_serials_only_rise(
    before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]
) -> None:
    """Planning the same fleet again changes nothing; a change raises serials by exactly one."""
    nodes = {n: tuple(res(name, text) for name, text in sorted(files.items())) for n, files in before.items()}
    first = plan_fleet(nodes=nodes, previous={}, settings=SETTINGS, commit=C1, now=T0)
    again = plan_fleet(nodes=nodes, previous=first.plans, settings=SETTINGS, commit=C2, now=T0)
    assert again.changed == frozenset() and again.removed == frozenset()
    moved = {n: tuple(res(name, text) for name, text in sorted(files.items())) for n, files in after.items()}
    second = plan_fleet(nodes=moved, previous=first.plans, settings=SETTINGS, commit=C2, now=T0)
    for node, plan in second.plans.items():
        old = first.plans.get(node)
        assert plan.serial == (old.serial + (node in second.changed) if old else 1)
    assert second.removed == frozenset(before) - frozenset(after)


ADDRESS_CASES = [
    # (name, previous address (None: no previous plan), address now, serial, address in the document)
    ("first plan carries the address", None, "10.0.0.5", 1, "10.0.0.5"),
    ("same address: plan kept", "10.0.0.5", "10.0.0.5", 1, "10.0.0.5"),
    ("address changed: new serial", "10.0.0.5", "10.0.0.6", 2, "10.0.0.6"),
    ("older plan without an address gets one", "", "10.0.0.5", 2, "10.0.0.5"),
]


@pytest.mark.parametrize(
    ("name", "before", "now_address", "serial", "shown"), ADDRESS_CASES, ids=[c[0] for c in ADDRESS_CASES]
)
def test_plan_carries_the_node_address(
    name: str, before: str | None, now_address: str, serial: int, shown: str
) -> None:
    """The node's address is in its plan; the plan changes only when the address does."""
    nodes = {"n1": (res("a"),)}
    previous = {}
    if before is not None:
        earlier = plan_fleet(
            nodes=nodes, previous={}, settings=SETTINGS, commit=C1, now=T0, addresses={"n1": before}
        )
        previous = {"n1": replace(earlier.plans["n1"], address=before or None)}
    fleet = plan_fleet(
        nodes=nodes, previous=previous, settings=SETTINGS, commit=C2, now=T0, addresses={"n1": now_address}
    )
    plan = fleet.plans["n1"]
    assert (plan.serial, plan.document()["address"]) == (serial, shown)
    assert NodePlan.from_document(plan.document()) == plan
