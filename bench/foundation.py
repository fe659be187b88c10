"""Benchmark the foundation: cold `validate` and `render` of every node on a generated fleet.

Each measurement runs in a fresh Python process, so "cold" means cold: nothing parsed, compiled
or cached beforehand. Peak memory is that process's maximum resident set size.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.generate import generate

NODES, SERVICES = 1000, 2000

_VALIDATE = """
import json, resource, sys, time
from pathlib import Path
start = time.perf_counter()
from reconciler.core.compile.desired import compile_desired
from reconciler.drivers.desired_source import read_worktree_files
desired = compile_desired(read_worktree_files(Path(sys.argv[1])))
errors = sum(f.is_error for f in desired.findings)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "errors": errors, "resources": sum(len(r) for r in desired.nodes.values())}))
"""

_RENDER = """
import json, resource, sys, time
from pathlib import Path
start = time.perf_counter()
from reconciler.core.compile.desired import compile_desired
from reconciler.drivers.desired_source import read_worktree_files
desired = compile_desired(read_worktree_files(Path(sys.argv[1])))
size = 0
for node, resources in desired.nodes.items():
    size += len(json.dumps({"node": node, "resources": [r.plan_entry() for r in resources]}, sort_keys=True))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "bytes": size, "nodes": len(desired.nodes)}))
"""


def _run(script: str, root: Path) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, "-c", script, str(root)], check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, float] = json.loads(output)
    return result


def _best(script: str, root: Path, runs: int = 3) -> dict[str, float]:
    results = [_run(script, root) for _ in range(runs)]
    return min(results, key=lambda r: r["seconds"])


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="plumb-bench-") as tmp:
        root = Path(tmp) / "fleet"
        started = time.perf_counter()
        generate(root, nodes=NODES, services=SERVICES)
        took = time.perf_counter() - started
        print(f"foundation: generated {NODES} nodes, {SERVICES} services in {took:.1f} s")
        validate = _best(_VALIDATE, root)
        assert validate["errors"] == 0, "the generated fleet must be valid"
        print(
            f"foundation: cold validate          {validate['seconds']:6.2f} s  "
            f"peak {validate['rss_kib'] / 1024:6.0f} MiB  ({validate['resources']:.0f} resources; best of 3)"
        )
        render = _best(_RENDER, root)
        print(
            f"foundation: cold render, all nodes {render['seconds']:6.2f} s  "
            f"peak {render['rss_kib'] / 1024:6.0f} MiB  ({render['nodes']:.0f} nodes, "
            f"{render['bytes'] / 1e6:.1f} MB of JSON; best of 3)"
        )


if __name__ == "__main__":
    main()
