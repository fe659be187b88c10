"""compile_desired as the reconciler uses it: caching, endpoints, rollout pins, waiting services."""

from __future__ import annotations

from reconciler.core.compile.desired import CompileCache, Endpoint, SourceFile, compile_desired
from tests.unit.test_validate_cases import BASE, doc


def _files(overrides: dict[str, str] | None = None) -> list[SourceFile]:
    merged = {**BASE, **(overrides or {})}
    return [SourceFile(path, text.encode()) for path, text in merged.items()]


RELEASE_11 = doc(
    "Release",
    "api-1-1-0",
    'service: api\nversion: 1.1.0\nartifact: {url: "https://example.com/api-1.1.tgz", sha256: "%s"}'
    % ("1" * 64),
)
WITH_ARTIFACT = BASE["templates/web.yaml"] + "    - artifact: {path: /opt/api}\n"


def _spec(desired, node: str, rid: str) -> dict:  # type: ignore[no-untyped-def]
    return next(dict(r.spec) for r in desired.nodes[node] if r.id == rid)


def test_unchanged_services_are_not_rendered_again() -> None:
    """A second compile with one service changed renders only that service's groups."""
    cache = CompileCache()
    extra = {
        f"services/s{i}.yaml": doc("Service", f"s{i}", f"template: web\nparams: {{port: {9000 + i}}}")
        for i in range(20)
    }
    compile_desired(_files(extra), cache=cache)
    before = cache.misses
    changed = dict(extra)
    changed["services/s7.yaml"] = changed["services/s7.yaml"].replace("9007", "9107")
    desired = compile_desired(_files(changed), cache=cache)
    assert desired.ok
    assert cache.misses - before == 1  # s7's template group, rendered once and shared by its nodes
    assert "9107" in _spec(desired, "app-1", "unit:s7.service")["content"]


UPSTREAM = BASE["traits/ingress.yaml"].replace(
    'content: "server_name {{ params.host }};\\n"',
    "content: \"{% for e in endpoints(service.name, 'http') %}server {{ e.address }}:{{ e.port }};{% endfor %}\"",
)


def test_upstream_changes_only_when_the_healthy_set_changes() -> None:
    """The ingress site is re-rendered when a healthy endpoint comes or goes, not otherwise."""
    assert BASE["traits/ingress.yaml"] != UPSTREAM
    cache = CompileCache()
    healthy = [Endpoint("api", "app-1", "10.0.0.1", "http", 8080, True)]
    files = _files({"traits/ingress.yaml": UPSTREAM})
    first = compile_desired(files, endpoints={"api": healthy}, cache=cache)
    assert _spec(first, "edge-1", "nginx:api")["content"] == "server 10.0.0.1:8080;"
    site = _spec(first, "edge-1", "nginx:api")
    misses = cache.misses
    noisy = [*healthy, Endpoint("api", "app-2", "10.0.0.2", "http", 8080, False)]
    second = compile_desired(files, endpoints={"api": noisy}, cache=cache)
    assert _spec(second, "edge-1", "nginx:api") == site
    assert cache.misses == misses
    both = [*healthy, Endpoint("api", "app-2", "10.0.0.2", "http", 8080, True)]
    third = compile_desired(files, endpoints={"api": both}, cache=cache)
    assert cache.misses == misses + 1
    assert third.nodes["edge-1"] != second.nodes["edge-1"]


def test_pins_hold_listed_nodes_on_another_release() -> None:
    """During a rollout a pinned node renders the pinned release; the others the resolved one."""
    files = _files({"releases/api-1.1.0.yaml": RELEASE_11, "templates/web.yaml": WITH_ARTIFACT})
    desired = compile_desired(files, pins={"api": {"app-1": "1.0.0"}})
    assert desired.ok, desired.findings
    assert _spec(desired, "app-1", "service:api")["version"] == "1.0.0"
    assert _spec(desired, "app-2", "service:api")["version"] == "1.1.0"
    assert _spec(desired, "app-1", "artifact:/opt/api")["sha256"] == "0" * 64
    assert _spec(desired, "app-2", "artifact:/opt/api")["sha256"] == "1" * 64


def test_waiting_services_say_so_in_their_plan_entry() -> None:
    desired = compile_desired(_files(), waiting={"api": ["db"]})
    assert _spec(desired, "app-1", "service:api")["waitingFor"] == ["db"]
    assert "waitingFor" not in _spec(compile_desired(_files()), "app-1", "service:api")


def test_ignore_globs_and_dot_directories_are_skipped() -> None:
    """plumb.yaml's spec.ignore and dot-directories keep files out of the desired state."""
    plumb = BASE["plumb.yaml"] + "  ignore: [ci/**]\n"
    junk = "this: [is not a plumb document\n"
    desired = compile_desired(_files({"plumb.yaml": plumb, "ci/pipeline.yaml": junk, ".github/x.yaml": junk}))
    assert desired.findings == ()


def test_units_restart_when_their_service_files_or_artifact_change() -> None:
    """By default a unit restarts on its service's files and on a new artifact version (the path the
    agent reports as changed when it switches `current`)."""
    files = _files({"templates/web.yaml": WITH_ARTIFACT})
    unit = _spec(compile_desired(files), "app-1", "unit:api.service")
    assert unit["restartOn"] == ["/etc/app/api.conf", "/opt/api"]
