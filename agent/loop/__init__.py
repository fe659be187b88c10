"""The agent's loop: fetch the state branch, verify the plan, apply it, observe instances, report.

- `runner`     one cycle and the daemon loop around it
- `sync`       fetching plans and pushing reports through the Git transport
- `state`      the agent's state directory (keys, applied plan, ledger, journal, lock)
- `instances`  what runs: unit state, ports, readiness from probes
- `report`     the signed report built from an apply and the instances
"""
