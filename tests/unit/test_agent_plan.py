"""Plan verification: every check that keeps a plan from being applied (pure, clock passed in)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contract.crypto import SigningKey
from contract.documents import resources_digest, sign_document
from contract.errors import ContractError
from contract.plan import verify_plan
from tests.support import make_plan, resource

KEY = SigningKey.generate()
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
FILE = resource("file", {"path": "/etc/plumb/a", "mode": "0644", "content": "a"})


def base() -> dict[str, Any]:
    return make_plan("web-1", [copy.deepcopy(FILE)], serial=5, key=None, expires=NOW + timedelta(days=1))


def _resign(mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    plan = base()
    mutate(plan)
    return sign_document(plan, KEY)


def _tamper_content(plan: dict[str, Any]) -> None:
    plan["resources"][0]["spec"]["content"] = "b"
    plan["digest"] = resources_digest(plan["resources"])


MUTATIONS: list[tuple[str, dict[str, Any], str]] = [
    ("unsigned", base(), "not signed"),
    ("other key", sign_document(base(), SigningKey.generate()), "not by the pinned key"),
    ("changed after signing", {**sign_document(base(), KEY), "serial": 6}, "invalid signature"),
    ("other node", _resign(lambda p: p.update(node="web-2")), "is for node 'web-2'"),
    ("plan digest", _resign(lambda p: p.update(digest="sha256:" + "0" * 64)), "plan digest"),
    ("resource digest", _resign(_tamper_content), "does not match its spec"),
    ("expired", _resign(lambda p: p.update(expires="2026-11-22T11:59:59Z")), "expired"),
    ("schema", _resign(lambda p: p.update(heartbeat=0)), "schema at heartbeat"),
    ("unknown kind", _resign(lambda p: p["resources"][0].update(kind="cron")), "schema"),
]


@pytest.mark.parametrize(("name", "document", "message"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_refused(name: str, document: dict[str, Any], message: str) -> None:
    """Each broken plan is refused with a reason naming the check."""
    with pytest.raises(ContractError, match=message):
        verify_plan(document, key=KEY.verify_key(), node="web-1", last_serial=None, now=NOW)


@pytest.mark.parametrize(("last", "accepted"), [(None, True), (4, True), (5, True), (6, False)])
def test_serial_never_goes_back(last: int | None, accepted: bool) -> None:
    """A serial lower than the last applied one is a rollback attack and is refused."""
    document = sign_document(base(), KEY)
    if accepted:
        assert (
            verify_plan(document, key=KEY.verify_key(), node="web-1", last_serial=last, now=NOW).serial == 5
        )
    else:
        with pytest.raises(ContractError, match="lower than the applied 6"):
            verify_plan(document, key=KEY.verify_key(), node="web-1", last_serial=last, now=NOW)


def test_verified_plan_carries_its_resources() -> None:
    """A good plan comes back as values: serial, commit, allowed paths, resources in order."""
    plan = verify_plan(
        sign_document(base(), KEY), key=KEY.verify_key(), node="web-1", last_serial=None, now=NOW
    )
    assert (plan.serial, plan.commit, plan.heartbeat) == (5, "a" * 40, 30)
    assert [r.id for r in plan.resources] == ["file:/etc/plumb/a"]


@pytest.mark.parametrize(
    ("address", "expected"), [(None, "127.0.0.1"), ("10.0.0.5", "10.0.0.5"), ("::1", "::1")]
)
def test_probe_address_defaults_to_loopback(address: str | None, expected: str) -> None:
    """The plan's `address` is where probes without a host knock; a plan without one means 127.0.0.1."""
    document = make_plan("web-1", [FILE], serial=5, key=KEY, expires=NOW + timedelta(days=1), address=address)
    plan = verify_plan(document, key=KEY.verify_key(), node="web-1", last_serial=None, now=NOW)
    assert plan.address == expected
