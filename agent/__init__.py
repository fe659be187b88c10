"""Plumb's node agent: pulls its node's signed plan, converges the host, reports back.

- `cli`     `plumb-agent enroll | run | status`
- `loop/`   fetch, verify, apply, observe, report
- `apply/`  converge a verified plan: `resources/` (one module per kind) and `runtimes/`
- `host/`   host primitives: file operations, paths, /proc, unit files, nginx, probes

It imports the shared `contract` package, never the reconciler.
"""

from contract import __version__

__all__ = ["__version__"]
