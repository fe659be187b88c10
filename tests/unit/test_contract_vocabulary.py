"""The shared vocabulary: each enum lists exactly what the schemas allow, and serialises as its string."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any

import pytest

from contract.defaults import API_VERSION, PLAN_KIND, REPORT_KIND, REPORTS_PREFIX, STATE_BRANCH
from contract.documents import canonical_json
from contract.vocabulary import DesiredState, InstanceState, Outcome, ResourceKind

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def _schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return loaded


PLAN = _schema("plan")
REPORT = _schema("report")


@pytest.mark.parametrize(
    ("vocabulary", "allowed"),
    [
        (ResourceKind, PLAN["$defs"]["resource"]["properties"]["kind"]["enum"]),
        (DesiredState, PLAN["$defs"]["service"]["properties"]["state"]["enum"]),
        (DesiredState, PLAN["$defs"]["unit"]["properties"]["state"]["enum"]),
        (InstanceState, REPORT["properties"]["instances"]["items"]["properties"]["state"]["enum"]),
        (Outcome, REPORT["properties"]["resources"]["items"]["properties"]["outcome"]["enum"]),
    ],
    ids=["resource kinds", "service states", "unit states", "instance states", "outcomes"],
)
def test_enum_matches_schema(vocabulary: type[enum.StrEnum], allowed: list[str]) -> None:
    """Every value the schema allows has a member, and every member is allowed."""
    assert sorted(m.value for m in vocabulary) == sorted(allowed)


def test_members_serialise_as_their_strings() -> None:
    """A document built with members is byte for byte the one built with strings."""
    with_members = {"kind": ResourceKind.FILE, "state": InstanceState.RUNNING, ResourceKind.UNIT: 1}
    assert canonical_json(with_members) == canonical_json({"kind": "file", "state": "running", "unit": 1})
    assert f"{ResourceKind.NGINX}:api" == "nginx:api"


@pytest.mark.parametrize(
    ("schema", "kind"), [(PLAN, PLAN_KIND), (REPORT, REPORT_KIND)], ids=["plan", "report"]
)
def test_defaults_match_schemas(schema: dict[str, Any], kind: str) -> None:
    """The apiVersion and document kinds both sides write are the ones the schemas require."""
    assert schema["properties"]["apiVersion"]["const"] == API_VERSION
    assert schema["properties"]["kind"]["const"] == kind


def test_both_sides_default_to_the_same_branches() -> None:
    """The agent pushes and fetches where the reconciler reads and writes, unless told otherwise."""
    from agent.loop.runner import AgentOptions
    from reconciler.core.compile.model import Repository

    agent = AgentOptions.__dataclass_fields__
    repository = Repository.__dataclass_fields__
    assert agent["state_branch"].default == repository["state_branch"].default == STATE_BRANCH
    assert agent["reports_prefix"].default == repository["reports_prefix"].default == REPORTS_PREFIX
