"""Converge the host to a verified plan: write every resource, run the handlers, settle units, prune.

    1. writes      each resource in plan order: observe -> compare -> act, or say why not
    2. handlers    daemon-reload if a unit file changed; `nginx -t`, revert refused sites, reload
    3. units       release hooks (preStart), start / restart / stop, hooks (postStart)
    4. prune       what the ledger says the agent created and the plan no longer has

A resource whose dependency (`after`) failed is skipped. Drift is a difference found on a
resource whose spec had already been applied (same digest in the ledger).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field, replace
from typing import Any

from agent.apply.resources.artifacts import converge_artifact
from agent.apply.resources.base import Change, Host, failed, unchanged
from agent.apply.resources.certificates import converge_certificate
from agent.apply.resources.files import converge_directory, converge_file
from agent.apply.resources.nginx import (
    SiteWrite,
    backup_of,
    converge_site,
    drop_backups,
    reverted_change,
    settle_sites,
    site_path,
)
from agent.apply.resources.services import HookRun, run_hooks
from agent.apply.resources.units import converge_unit, settle_unit, unit_path
from agent.host import fsops
from agent.host.nginxctl import SITE_DIR
from contract.errors import PlumbError
from contract.plan import Plan, PlanResource
from contract.vocabulary import DesiredState, Outcome, ResourceKind

Converger = Callable[[PlanResource, Host], Change]


def _service_recorded(resource: PlanResource, host: Host) -> Change:
    return unchanged(f"service {resource.typed_service.name}: nothing to write")


CONVERGERS: dict[str, Converger] = {
    ResourceKind.FILE: converge_file,
    ResourceKind.DIRECTORY: converge_directory,
    ResourceKind.UNIT: converge_unit,
    ResourceKind.NGINX: converge_site,
    ResourceKind.ARTIFACT: converge_artifact,
    ResourceKind.CERTIFICATE: converge_certificate,
    ResourceKind.SERVICE: _service_recorded,
}


@dataclass(frozen=True)
class ResourceOutcome:
    """How one resource ended up, for the report."""

    id: str
    kind: str
    change: Change
    drift: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApplyResult:
    """Everything one apply did."""

    resources: tuple[ResourceOutcome, ...]
    hooks: tuple[HookRun, ...]
    pruned: tuple[str, ...]
    ledger: dict[str, Any]
    failing: Mapping[str, str] = field(default_factory=dict)  # unit -> what its runtime said failed

    @property
    def ok(self) -> bool:
        return all(r.change.outcome is not Outcome.FAILED for r in self.resources)

    @property
    def changed(self) -> bool:
        return bool(self.pruned) or any(r.change.outcome is Outcome.CHANGED for r in self.resources)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")
    return str(exc)


def converge_one(resource: PlanResource, host: Host) -> Change:
    """Phase one for one resource, turning expected failures into a `failed` change."""
    converger = CONVERGERS.get(resource.kind)
    if converger is None:
        return failed(f"unknown resource kind {resource.kind!r}")
    try:
        return converger(resource, host)
    except (PlumbError, OSError, UnicodeError) as exc:
        return failed(_describe(exc))


def _blocked_by(resource: PlanResource, changes: Mapping[str, Change]) -> str | None:
    for dependency in resource.after:
        done = changes.get(dependency)
        if done is not None and done.outcome in (Outcome.FAILED, Outcome.SKIPPED) and done.error is not None:
            return dependency
    return None


def write_phase(plan: Plan, host: Host) -> dict[str, Change]:
    """Phase one: every resource, in plan order."""
    changes: dict[str, Change] = {}
    for resource in plan.resources:
        blocker = _blocked_by(resource, changes)
        if blocker is not None:
            changes[resource.id] = Change(
                Outcome.SKIPPED, f"dependency {blocker} failed", error=f"dependency {blocker} failed"
            )
            continue
        changes[resource.id] = converge_one(resource, host)
    return changes


def _changed(changes: Mapping[str, Change], resource: PlanResource) -> bool:
    return changes[resource.id].outcome is Outcome.CHANGED


@dataclass
class _Apply:
    """One apply in progress: the plan, the host, and what each phase found so far."""

    plan: Plan
    host: Host
    ledger: Mapping[str, Any]
    hooks_state: MutableMapping[str, Any]
    changes: dict[str, Change] = field(default_factory=dict)
    hooks: list[HookRun] = field(default_factory=list)
    drift: dict[str, tuple[str, ...]] = field(default_factory=dict)
    failing: dict[str, str] = field(default_factory=dict)

    def of_kind(self, kind: ResourceKind) -> list[PlanResource]:
        return [r for r in self.plan.resources if r.kind == kind]

    def amend(self, resource_id: str, extra: Change) -> None:
        """Fold a later phase's result into a resource's change."""
        first = self.changes[resource_id]
        if extra.outcome is Outcome.UNCHANGED:
            return
        if first.outcome is Outcome.UNCHANGED:
            self.changes[resource_id] = replace(extra, paths=first.paths)
            return
        worst = Outcome.FAILED if Outcome.FAILED in (first.outcome, extra.outcome) else first.outcome
        reason = f"{first.reason}; {extra.reason}"
        self.changes[resource_id] = replace(
            first, outcome=worst, reason=reason, error=first.error or extra.error
        )

    def handlers(self) -> None:
        units_changed = any(_changed(self.changes, r) for r in self.of_kind(ResourceKind.UNIT))
        if units_changed:
            self._guard(self.of_kind(ResourceKind.UNIT), self.host.runtime.reload)
        self._nginx()

    def _guard(self, resources: list[PlanResource], action: Callable[[], None]) -> None:
        try:
            action()
        except (PlumbError, OSError) as exc:
            for resource in resources:
                self.amend(resource.id, failed(_describe(exc)))

    def _nginx(self) -> None:
        sites = self.of_kind(ResourceKind.NGINX)
        writes = [  # content writes only: a fixed mode needs no nginx -t
            SiteWrite(r.id, path, previous)
            for r in sites
            if _changed(self.changes, r)
            for path, previous in self.changes[r.id].previous.items()
        ] + self._unfinished_sites(sites)
        certificates = any(_changed(self.changes, r) for r in self.of_kind(ResourceKind.CERTIFICATE))
        if not writes and not (certificates and self.host.nginx is not None):
            return
        try:
            outcome = settle_sites(writes, self.host, reload=certificates)
        except OSError as exc:  # restoring a site failed: say so, the next apply tries again
            for write in writes:
                self.changes[write.id] = failed(_describe(exc))
            return
        drop_backups(self.host)
        for write in writes:
            if write.id in outcome.reverted:
                self.changes[write.id] = reverted_change(write.path, outcome.reverted[write.id])
            elif write.id in outcome.withdrawn:
                self.changes[write.id] = Change(
                    Outcome.FAILED, f"{write.path}: previous version kept", error=outcome.error
                )

    @functools.cached_property
    def touched(self) -> set[str]:
        """Paths written in this apply, or whose spec no apply has finished yet (failed or killed midway)."""
        touched = {p for c in self.changes.values() if c.outcome is Outcome.CHANGED for p in c.paths}
        for resource in self.plan.resources:
            if self.ledger.get(resource.id, {}).get("digest") != resource.digest:
                path = identity(resource.kind, resource.spec).get("path")
                touched |= {path} if isinstance(path, str) else set()
        return touched

    def _unfinished_sites(self, sites: list[PlanResource]) -> list[SiteWrite]:
        """Sites a killed apply wrote but never tested: their content is on disk, their backup in state."""
        unfinished = []
        for resource in sites:
            if _changed(self.changes, resource) or self.changes[resource.id].outcome is Outcome.FAILED:
                continue
            found, previous = backup_of(self.host, resource.spec["site"])
            if found:
                path = site_path(
                    resource.spec["site"], self.host.nginx.site_dir if self.host.nginx else SITE_DIR
                )
                unfinished.append(SiteWrite(resource.id, path, previous))
        return unfinished

    def _unit_changes(self, unit: str) -> tuple[str, ...]:
        """What restarts `unit`: its file, a drop-in or a restartOn file changed, with no restart since."""
        mine = [r for r in self.of_kind(ResourceKind.UNIT) if r.spec["name"] == unit]
        watched = [unit_path(r.spec) for r in mine] + sorted(
            {p for r in mine for p in r.spec.get("restartOn", [])}
        )
        return tuple(path for path in watched if path in self.touched)

    def _service_for(self, unit: PlanResource) -> PlanResource | None:
        for service in self.of_kind(ResourceKind.SERVICE):
            if service.typed_service.unit == unit.spec["name"]:
                return service
        return None

    def units(self) -> None:
        """Settle each unit, wrapped in its service's release hooks; then hooks of services without a unit."""
        with_unit: set[str] = set()
        for resource in self.of_kind(ResourceKind.UNIT):
            if resource.spec.get("dropIn"):
                continue
            service = self._service_for(resource)
            with_unit |= {service.id} if service is not None else set()
            if self.changes[resource.id].outcome is not Outcome.FAILED:
                self._settle_with_hooks(resource, service)
        for service in self.of_kind(ResourceKind.SERVICE):
            if service.id not in with_unit and self._hooks(service, "pre"):
                self._hooks(service, "post")
        self._restart_for_drop_ins()

    def _restart_for_drop_ins(self) -> None:
        """A unit the plan only adds drop-ins to (a distribution's nginx.service, say) is restarted
        when one changed, if it runs: its running process must have the setting. Planned, not drift."""
        owned = {r.spec["name"] for r in self.of_kind(ResourceKind.UNIT) if not r.spec.get("dropIn")}
        drop_ins = [r for r in self.of_kind(ResourceKind.UNIT) if r.spec.get("dropIn")]
        for name in sorted({r.spec["name"] for r in drop_ins} - owned):
            changed = self._unit_changes(name)
            mine = [r for r in drop_ins if r.spec["name"] == name]
            if not changed or any(self.changes[r.id].outcome is Outcome.FAILED for r in mine):
                continue
            try:
                if not self.host.runtime.status(name).active:
                    continue
                self.host.runtime.restart(name)
                note = Change(Outcome.CHANGED, f"{name}: restart (changed: {', '.join(changed)})")
            except (PlumbError, OSError) as exc:
                note = failed(_describe(exc))
            for resource in mine:
                self.amend(resource.id, note)

    def _settle_with_hooks(self, resource: PlanResource, service: PlanResource | None) -> None:
        if service is not None and not self._hooks(service, "pre"):
            self.amend(resource.id, Change(Outcome.SKIPPED, "not started: a preStart hook failed"))
            return
        self._settle(resource, service)
        if service is not None and self.changes[resource.id].outcome is not Outcome.FAILED:
            self._hooks(service, "post")

    def _settle(self, resource: PlanResource, service: PlanResource | None) -> None:
        spec = service.typed_service if service is not None else None
        state = resource.spec.get("state") or (spec.state if spec else DesiredState.RUNNING)
        try:
            settled = settle_unit(
                resource,
                self.host,
                changed=self._unit_changes(resource.spec["name"]),
                waiting=spec.waiting_for if spec else (),
                want_running=state == DesiredState.RUNNING,
            )
        except (PlumbError, OSError) as exc:
            settled = failed(_describe(exc))
        else:
            if settled.outcome is Outcome.FAILED:  # the unit's process failed, as its runtime says
                self.failing[resource.spec["name"]] = settled.error or "failed"
        self._note_unit_drift(resource, settled)
        self.amend(resource.id, settled)

    def _note_unit_drift(self, resource: PlanResource, settled: Change) -> None:
        applied = self.ledger.get(resource.id, {}).get("digest") == resource.digest
        written = self.changes[resource.id].outcome is Outcome.CHANGED
        if applied and not written and settled.outcome is Outcome.CHANGED and settled.differences:
            self.drift[resource.id] = settled.differences

    def _hooks(self, service: PlanResource, phase: str) -> bool:
        runs = run_hooks(service, phase, self.hooks_state, cwd=str(self.host.root))
        self.hooks.extend(runs)
        if runs:
            ok = all(run.ok for run in runs)
            verb = "ran" if ok else "failed:"
            names = ", ".join(sorted({run.hook for run in runs}))
            note = Change(
                Outcome.CHANGED if ok else Outcome.FAILED,
                f"{verb} {names} hooks for {service.typed_service.version}",
            )
            self.amend(service.id, replace(note, error=None if ok else runs[-1].output or "hook failed"))
        return all(run.ok for run in runs)


def _drift(resource: PlanResource, change: Change, ledger: Mapping[str, Any]) -> tuple[str, ...]:
    if change.outcome is not Outcome.CHANGED or ledger.get(resource.id, {}).get("digest") != resource.digest:
        return ()
    return change.differences


def apply_plan(
    plan: Plan, host: Host, *, ledger: Mapping[str, Any], hooks_state: MutableMapping[str, Any]
) -> ApplyResult:
    """Converge the host to `plan` (already verified) and return what happened."""
    run = _Apply(plan, host, ledger, hooks_state)
    run.changes = write_phase(plan, host)
    drift = {r.id: _drift(r, run.changes[r.id], ledger) for r in plan.resources}
    run.handlers()
    run.units()
    drift |= run.drift
    pruned = prune(plan, host, ledger)
    outcomes = tuple(
        ResourceOutcome(r.id, r.kind, run.changes[r.id], drift.get(r.id, ())) for r in plan.resources
    )
    ledger_after = next_ledger(plan, run.changes, ledger)
    return ApplyResult(outcomes, tuple(run.hooks), pruned, ledger_after, dict(run.failing))


def next_ledger(plan: Plan, changes: Mapping[str, Change], ledger: Mapping[str, Any]) -> dict[str, Any]:
    """Pure: what the agent manages after this apply (failed resources keep their previous entry)."""
    entries: dict[str, Any] = {}
    for resource in plan.resources:
        change, before = changes[resource.id], ledger.get(resource.id, {})
        created = sorted(set(before.get("created", [])) | set(change.created))
        ok = change.outcome in (Outcome.CHANGED, Outcome.UNCHANGED)
        digest = resource.digest if ok else before.get("digest")
        entries[resource.id] = {"kind": resource.kind, "digest": digest, "created": created} | identity(
            resource.kind, resource.spec
        )
    return entries


def identity(kind: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """What the ledger records about a resource to prune it later: its unit and its paths."""
    if kind == ResourceKind.UNIT:
        return {"unit": spec["name"], "dropIn": spec.get("dropIn"), "path": unit_path(spec)}
    if kind == ResourceKind.NGINX:
        return {"path": site_path(spec["site"])}
    if kind in (ResourceKind.FILE, ResourceKind.DIRECTORY, ResourceKind.ARTIFACT):
        return {"path": spec["path"]}
    if kind == ResourceKind.CERTIFICATE:
        return {"path": spec["certPath"], "keyPath": spec["keyPath"]}
    return {}


def prune(plan: Plan, host: Host, ledger: Mapping[str, Any]) -> tuple[str, ...]:
    """Remove what the agent created for resources the (verified) plan no longer has."""
    wanted = {r.id for r in plan.resources}
    gone = [(rid, entry) for rid, entry in ledger.items() if rid not in wanted]
    removed: list[str] = []
    for rid, entry in gone:
        if entry.get("kind") == ResourceKind.UNIT and not entry.get("dropIn"):
            with contextlib.suppress(PlumbError, OSError):
                _forget_unit(host, entry["unit"])
        for path in entry.get("created", []):
            with contextlib.suppress(PlumbError, OSError):
                _remove(host, path, entry.get("kind"))
        removed.append(rid)
    kinds = {entry.get("kind") for _rid, entry in gone}
    if ResourceKind.UNIT in kinds:
        with contextlib.suppress(PlumbError, OSError):
            host.runtime.reload()
        reset_failed = getattr(host.runtime, "reset_failed", None)
        for _rid, entry in gone:
            if entry.get("kind") == ResourceKind.UNIT and not entry.get("dropIn") and callable(reset_failed):
                with contextlib.suppress(PlumbError, OSError):
                    reset_failed(entry["unit"])
    if ResourceKind.NGINX in kinds and host.nginx is not None:
        with contextlib.suppress(PlumbError, OSError):
            settle_sites([], host, reload=True)
    return tuple(removed)


def _forget_unit(host: Host, unit: str) -> None:
    forget = getattr(host.runtime, "forget", None)
    if callable(forget):
        forget(unit)
    else:
        host.runtime.stop(unit)
        host.runtime.set_enabled(unit, False)


def _remove(host: Host, path: str, kind: str | None) -> None:
    parts = host.confinement.parts(path)
    if kind == ResourceKind.ARTIFACT:
        fsops.remove_tree(host.root, parts)
        return
    fsops.remove(host.root, parts)
