"""What a change would do on each node (actions with reasons, content diffs), and how it rolls out."""

from __future__ import annotations

import difflib
import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from contract.vocabulary import DesiredState, ResourceKind
from reconciler.core.compile.desired import RenderedResource
from reconciler.core.compile.model import Model
from reconciler.core.decide.planner import plan_entry
from reconciler.core.decide.rollout import RolloutSettings, cut, order
from reconciler.core.findings import Finding

Entry = Mapping[str, Any]


class ActionKind(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    RESTART = "restart"
    RELOAD = "reload"
    START = "start"
    STOP = "stop"


@dataclass(frozen=True, order=True)
class Action:
    """One thing an agent would do: `kind` on `target` (a resource id, unit, service or `nginx`)."""

    kind: ActionKind
    target: str
    reason: str

    def as_json(self) -> dict[str, str]:
        return {"action": self.kind.value, "target": self.target, "reason": self.reason}

    def __str__(self) -> str:
        return f"{self.kind.value} {self.target}: {self.reason}"


_ORDER = {kind: index for index, kind in enumerate(ActionKind)}


def diff_entries(old: Sequence[Entry], new: Sequence[Entry]) -> tuple[Action, ...]:
    """The actions an agent would take going from plan entries `old` to `new`.

    `old` and `new` are the base and head of a pull request, or what a node applied and what its
    plan now asks. Resource actions come first (in the new plan's order, deletions last), then
    handlers: units restarted, nginx reloaded, services started or stopped. Secret-bearing content
    is never shown, only that it changed (by digest).
    """
    before = {e["id"]: e for e in old}
    after = {e["id"]: e for e in new}
    changes = [_resource_change(before.get(e["id"]), e) for e in new]
    resource_actions = [a for a in changes if a is not None]
    resource_actions += [
        Action(ActionKind.DELETE, i, "no longer in the plan") for i in before if i not in after
    ]
    return tuple(resource_actions) + _handlers(before, after)


def _resource_change(old: Entry | None, new: Entry) -> Action | None:
    if old is None:
        return Action(ActionKind.CREATE, new["id"], "new in the plan")
    if old.get("digest") == new.get("digest"):
        return None
    return Action(ActionKind.UPDATE, new["id"], f"{_changed_fields(old, new)} changed")


def _changed_fields(old: Entry, new: Entry) -> str:
    if old.get("partial"):  # rebuilt from a digest (status baselines): which fields is unknown
        return "spec"
    a, b = old.get("spec", {}), new.get("spec", {})
    fields = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(fields) if fields else "spec"


def _handlers(before: Mapping[str, Entry], after: Mapping[str, Entry]) -> tuple[Action, ...]:
    touched = {i for i in set(before) | set(after) if _digest(before.get(i)) != _digest(after.get(i))}
    actions: set[Action] = set()
    dependants = _Dependants.index(after) if touched else _Dependants({}, {})
    for ident in sorted(touched):
        actions.update(_handler_actions(ident, before.get(ident), after.get(ident), dependants))
    started = {a.target for a in actions if a.kind is ActionKind.START}
    actions = {a for a in actions if not (a.kind is ActionKind.RESTART and a.target in started)}
    return tuple(sorted(actions, key=lambda a: (_ORDER[a.kind], a.target)))


def _digest(entry: Entry | None) -> str | None:
    return None if entry is None else str(entry.get("digest"))


def _handler_actions(
    ident: str, old: Entry | None, new: Entry | None, dependants: _Dependants
) -> list[Action]:
    entry = new if new is not None else old
    assert entry is not None
    kind = entry.get("kind")
    if kind == ResourceKind.NGINX:
        return [Action(ActionKind.RELOAD, "nginx", f"site {entry['spec'].get('site')} changed")]
    if kind == ResourceKind.UNIT:
        return _unit_actions(ident, old, new)
    if kind == ResourceKind.SERVICE:
        return _service_actions(old, new)
    if kind in (ResourceKind.FILE, ResourceKind.ARTIFACT, ResourceKind.CERTIFICATE) and new is not None:
        return _restart_dependants(ident, new, dependants)
    return []


def _unit_actions(ident: str, old: Entry | None, new: Entry | None) -> list[Action]:
    spec = (new or old or {}).get("spec", {})
    unit = str(spec.get("name"))
    if new is None:
        what = "drop-in removed" if spec.get("dropIn") else "unit removed"
        return [Action(ActionKind.RESTART if spec.get("dropIn") else ActionKind.STOP, unit, what)]
    if spec.get("state") == DesiredState.STOPPED:
        return []
    if old is None and not spec.get("dropIn"):
        return [Action(ActionKind.START, unit, "new unit")]
    return [Action(ActionKind.RESTART, unit, f"{ident} changed")]


def _service_actions(old: Entry | None, new: Entry | None) -> list[Action]:
    was = (old or {}).get("spec", {}).get("state") if old else "absent"
    now = (new or {}).get("spec", {}).get("state") if new else "absent"
    name = str((new or old or {}).get("spec", {}).get("name"))
    if was != DesiredState.RUNNING and now == DesiredState.RUNNING:
        return [Action(ActionKind.START, name, f"desired state {now} (was {was})")]
    if was == DesiredState.RUNNING and now != DesiredState.RUNNING:
        return [Action(ActionKind.STOP, name, f"desired state {now} (was {was})")]
    return []


@dataclass(frozen=True)
class _Dependants:
    """Which units restart when a file changes (restartOn), and which units run each service."""

    on_path: Mapping[str, tuple[str, ...]]
    of_service: Mapping[str, tuple[str, ...]]

    @classmethod
    def index(cls, after: Mapping[str, Entry]) -> _Dependants:
        on_path: dict[str, list[str]] = {}
        of_service: dict[str, list[str]] = {}
        for entry in after.values():
            spec = entry.get("spec", {})
            if entry.get("kind") == ResourceKind.UNIT and spec.get("state") != DesiredState.STOPPED:
                for path in spec.get("restartOn", ()):
                    on_path.setdefault(path, []).append(str(spec["name"]))
            if (
                entry.get("kind") == ResourceKind.SERVICE
                and spec.get("unit")
                and spec.get("state") == DesiredState.RUNNING
            ):
                of_service.setdefault(str(entry.get("service")), []).append(str(spec["unit"]))
        return cls({k: tuple(v) for k, v in on_path.items()}, {k: tuple(v) for k, v in of_service.items()})


def _restart_dependants(ident: str, new: Entry, dependants: _Dependants) -> list[Action]:
    """Units that name the changed file in restartOn, or run the service whose artifact changed."""
    units = list(dependants.on_path.get(new["spec"].get("path"), ()))
    if new.get("kind") == ResourceKind.ARTIFACT:
        units += dependants.of_service.get(str(new.get("service")), ())
    return [Action(ActionKind.RESTART, unit, f"{ident} changed") for unit in units]


def rendered_text(entry: Entry | None, *, secret: bool = False) -> list[str]:
    """The rendered content of a resource as lines, for a unified diff; secrets show only a digest."""
    if entry is None:
        return []
    spec = dict(entry.get("spec", {}))
    if secret or "sealed" in spec or "sealedKey" in spec:
        return [f"(secret content, {entry.get('digest')})\n"]
    content = spec.pop("content", None)
    if isinstance(content, str):  # a one-line header of the other fields, then the content itself
        lines = ([json.dumps(spec, sort_keys=True) + "\n"] if spec else []) + content.splitlines(
            keepends=True
        )
    else:  # a spec without content (service, artifact, directory) diffs best one field per line
        lines = json.dumps(spec, sort_keys=True, indent=2).splitlines(keepends=True)
    return [line if line.endswith("\n") else line + "\n" for line in lines]


def unified_diff(ident: str, old: Entry | None, new: Entry | None, *, secret: bool = False) -> str:
    """A unified diff of a resource's rendered content between two plans ('' when unchanged)."""
    a = rendered_text(old, secret=secret)
    b = rendered_text(new, secret=secret)
    name_a = f"a/{ident}" if old is not None else "/dev/null"
    name_b = f"b/{ident}" if new is not None else "/dev/null"
    return "".join(difflib.unified_diff(a, b, fromfile=name_a, tofile=name_b))


@dataclass(frozen=True)
class NodeReview:
    """What the head would change on one node: actions, and a unified diff per changed resource."""

    node: str
    actions: tuple[Action, ...]
    diffs: tuple[tuple[str, str], ...]

    def counts(self) -> dict[str, int]:
        counted: dict[str, int] = {}
        for action in self.actions:
            counted[action.kind.value] = counted.get(action.kind.value, 0) + 1
        return counted

    def summary(self) -> str:
        """`2 updates, 1 restart`."""
        return ", ".join(f"{n} {kind}{'s' if n > 1 else ''}" for kind, n in self.counts().items())


@dataclass(frozen=True)
class RolloutPreview:
    """How a release pull request would roll out: the batches and which nodes fall in each.

    Computed as if every node were online; at run time an offline node is skipped and picked up
    by a later batch. Cordoned nodes are `held` on the version they run.
    """

    service: str
    from_version: str | None
    to_version: str
    batches: tuple[tuple[str, ...], ...]
    held: tuple[str, ...] = ()
    settings: RolloutSettings = field(default_factory=RolloutSettings)

    def describe(self) -> str:
        """`web 1.0.0 -> 1.1.0 in 3 batches (healthyFor 30s, timeout 10m, onFailure rollback)`."""
        if self.from_version is None:
            return f"{self.service} {self.to_version}: first deployment, every node at once"
        s = self.settings
        window = f", window {s.window}" if s.window is not None else ""
        rules = (
            f"healthyFor {_span(s.healthy_for.total_seconds())}, timeout {_span(s.timeout.total_seconds())}"
        )
        count = f"{len(self.batches)} batch{'es' if len(self.batches) != 1 else ''}"
        return (
            f"{self.service} {self.from_version} -> {self.to_version} in {count} "
            f"({rules}, onFailure {s.on_failure.value}{window})"
        )

    def as_json(self) -> dict[str, Any]:
        s = self.settings
        return {
            "service": self.service,
            "from": self.from_version,
            "to": self.to_version,
            "batches": [list(b) for b in self.batches],
            "held": list(self.held),
            "healthyFor": int(s.healthy_for.total_seconds()),
            "timeout": int(s.timeout.total_seconds()),
            "onFailure": s.on_failure.value,
            "window": str(s.window) if s.window is not None else None,
        }


def _span(total: float) -> str:
    whole = int(total)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def preview_rollouts(base: Model | None, head: Model) -> tuple[RolloutPreview, ...]:
    """The rollouts merging head would start: services whose resolved Release version changes."""
    previews = []
    for name in sorted(head.services):
        release = head.versions.get(name)
        old = base.versions.get(name) if base is not None else None
        if release is not None and (old is None or old.version != release.version):
            previews.append(_preview(head, name, old.version if old is not None else None, release.version))
    return tuple(previews)


def _preview(head: Model, service: str, old: str | None, new: str) -> RolloutPreview:
    release = head.versions[service]
    settings = RolloutSettings.from_spec(release.rollout if release is not None else None)
    nodes = head.placement.get(service, ())
    if old is None:  # a first deployment reaches every node at once, cordoned or not
        return RolloutPreview(service, None, new, (tuple(sorted(nodes)),), (), settings)
    held = tuple(sorted(n for n in nodes if head.nodes[n].cordoned))
    eligible = [n for n in order(service, new, nodes) if n not in held]
    return RolloutPreview(service, old, new, batch_cuts(eligible, settings.batches), held, settings)


def batch_cuts(nodes: Sequence[str], batches: Sequence[int | str]) -> tuple[tuple[str, ...], ...]:
    """`nodes` (in rollout order) cut into the release's cumulative batches; empty batches left out."""
    cuts: list[tuple[str, ...]] = []
    done = 0
    for index, share in enumerate(batches):
        target = len(nodes) if index == len(batches) - 1 else cut(share, len(nodes))
        if target > done:
            cuts.append(tuple(nodes[done:target]))
            done = target
    return tuple(cuts)


@dataclass(frozen=True)
class Review:
    """`plumb plan`: per node, what the head commit would change against the base, and the rollouts."""

    base: str
    head: str
    nodes: tuple[NodeReview, ...]
    findings: tuple[Finding, ...] = ()
    ok: bool = True
    rollouts: tuple[RolloutPreview, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.nodes)


def review(
    *,
    base: Mapping[str, Sequence[RenderedResource]],
    head: Mapping[str, Sequence[RenderedResource]],
    base_commit: str,
    head_commit: str,
    rollouts: Sequence[RolloutPreview] = (),
) -> Review:
    """Compare the rendered resources of two desired states node by node (nodes with changes only)."""
    nodes = []
    for node in sorted(set(base) | set(head)):
        old, new = list(base.get(node, ())), list(head.get(node, ()))
        old_entries, new_entries = [plan_entry(r) for r in old], [plan_entry(r) for r in new]
        actions = diff_entries(old_entries, new_entries)
        if actions:
            secret = {r.id for r in old + new if r.uses_secret}
            diffs = _diffs(old_entries, new_entries, secret)
            nodes.append(NodeReview(node=node, actions=actions, diffs=diffs))
    return Review(base=base_commit, head=head_commit, nodes=tuple(nodes), rollouts=tuple(rollouts))


def _diffs(old: Sequence[Entry], new: Sequence[Entry], secret: set[str]) -> tuple[tuple[str, str], ...]:
    before, after = {e["id"]: e for e in old}, {e["id"]: e for e in new}
    out = []
    for ident in list(after) + [i for i in before if i not in after]:
        a, b = before.get(ident), after.get(ident)
        if _digest(a) != _digest(b):
            out.append((ident, unified_diff(ident, a, b, secret=ident in secret)))
    return tuple(out)


def invalid_review(*, base_commit: str, head_commit: str, findings: Sequence[Finding]) -> Review:
    """The head does not compile: no node changes, only its findings."""
    return Review(base=base_commit, head=head_commit, nodes=(), findings=tuple(findings), ok=False)
