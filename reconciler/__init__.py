"""Plumb's control plane: turns commits of a desired-state repository into signed per-node plans.

- `core/`      the pure core: `compile/` the desired state, `decide/` plans, rollouts, status
- `drivers/`   I/O at the edges: desired source, state store, reports, watching, keys
- `reconcile`  one reconcile pass, wiring the drivers to the core, and its memoisation
- `cli/`       the `plumb` command line

It imports the shared `contract` package, never the agent.
"""

from contract import __version__

__all__ = ["__version__"]
