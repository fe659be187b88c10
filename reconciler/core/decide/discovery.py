"""Which dependencies of each service have no ready instance on any reachable node, from the reports."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from reconciler.core.compile.model import Model
from reconciler.core.decide.status import ReceivedReport


def ready_services(reports: Mapping[str, ReceivedReport], *, reachable: Collection[str]) -> frozenset[str]:
    """Services with at least one instance reported ready by a node that is not offline."""
    return frozenset(
        instance.service
        for node, report in reports.items()
        if node in reachable
        for instance in report.instances
        if instance.ready
    )


def waiting_for(
    model: Model, reports: Mapping[str, ReceivedReport], *, reachable: Collection[str]
) -> dict[str, list[str]]:
    """Per service, its dependencies (in `dependsOn` order) that nothing serves yet; others are left out.

    A dependency counts as served once any reachable node reports an instance of it ready, wherever
    it runs: the dependant's own node may well be the one that will run it, which is why it waits
    there (its unit is kept down) instead of starting and crash-looping.
    """
    ready = ready_services(reports, reachable=reachable)
    waiting: dict[str, list[str]] = {}
    for name in sorted(model.services):
        missing = [dep for dep in model.services[name].depends_on if dep not in ready]
        if missing:
            waiting[name] = missing
    return waiting
