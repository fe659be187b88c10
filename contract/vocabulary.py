"""The words both sides put in plans, reports and status documents, each defined once as a `str` enum.

A member equals its string (`ResourceKind.FILE == "file"`) and serialises as it, so documents
written with members are byte for byte those written with the strings. The schemas under
`schemas/` list the same values; `tests/unit/test_contract_vocabulary.py` keeps them in step.
"""

from __future__ import annotations

import enum


class ResourceKind(enum.StrEnum):
    """What a plan entry manages on the host (`schemas/plan.schema.json`, `resource.kind`)."""

    FILE = "file"
    DIRECTORY = "directory"
    UNIT = "unit"
    NGINX = "nginx"
    ARTIFACT = "artifact"
    CERTIFICATE = "certificate"
    SERVICE = "service"  # nothing to write: what the agent observes and reports for a service


_RESOURCE_KINDS = {kind.value: kind for kind in ResourceKind}


def resource_kind(text: str) -> ResourceKind:
    """`ResourceKind(text)` at the cost of a dict lookup: enum calls cost ~8 µs, and compiling
    a fleet converts every resource of every template (a tenth of a second at 2,000 services)."""
    kind = _RESOURCE_KINDS.get(text)
    if kind is None:
        raise ValueError(f"{text!r} is not a resource kind")
    return kind


class DesiredState(enum.StrEnum):
    """What a plan asks of a unit or a service instance (`spec.state`)."""

    RUNNING = "running"
    STOPPED = "stopped"


class InstanceState(enum.StrEnum):
    """A service instance as its node reports it (`schemas/report.schema.json`, `instances[].state`).

    The runtimes observe units in these words too; only the agent's instance view says `waiting`.
    """

    RUNNING = "running"
    STARTING = "starting"
    STOPPED = "stopped"
    FAILED = "failed"
    WAITING = "waiting"  # a dependency has no healthy endpoint anywhere: the unit is kept down
    UNKNOWN = "unknown"


class Outcome(enum.StrEnum):
    """How converging one resource went (`schemas/report.schema.json`, `resources[].outcome`)."""

    UNCHANGED = "unchanged"
    CHANGED = "changed"
    FAILED = "failed"
    SKIPPED = "skipped"


class NodeState(enum.StrEnum):
    """A node's liveness in `status/nodes/<node>.json`."""

    ONLINE = "online"
    OFFLINE = "offline"
    CORDONED = "cordoned"


class ServiceState(enum.StrEnum):
    """A service's observed state in `status/services/<service>.json`."""

    PENDING = "pending"  # placed nowhere yet, or no node has reported an instance
    DEPLOYING = "deploying"  # instances starting, on an older version, or a rollout under way
    RUNNING = "running"  # every placed instance ready on the desired version
    DEGRADED = "degraded"  # some instances ready, some unhealthy, failed or on offline nodes
    FAILED = "failed"  # no instance ready and none on its way, or the rollout failed
    STOPPED = "stopped"  # desired stopped, and stopped everywhere


class AppState(enum.StrEnum):
    """The services sharing an `app` label, rolled up in `status/apps/<app>.json`."""

    PENDING = "pending"
    DEPLOYING = "deploying"
    RUNNING = "running"
    PARTIALLY_DEGRADED = "partially-degraded"
    FAILED = "failed"


class Phase(enum.StrEnum):
    """A rollout's phase in `status/releases/<service>.json` (see `reconciler.core.decide.rollout`)."""

    PENDING = "pending"  # a rollout with no node to start on yet (all offline or cordoned)
    PROGRESSING = "progressing"  # a batch is running
    PAUSED = "paused"  # held by spec.paused
    WAITING_WINDOW = "waiting-window"  # the next batch waits for the release window
    WAITING_DEPENDENCY = "waiting-dependency"  # the next batch waits for a dependency to be healthy
    SUCCEEDED = "succeeded"  # every batch passed (or nothing to roll out)
    FAILED = "failed"  # a batch failed with onFailure: pause; nodes hold where they are
    ROLLING_BACK = "rolling-back"  # a batch failed with onFailure: rollback; all nodes pinned back
    ROLLED_BACK = "rolled-back"  # every moved node reports from_version again
