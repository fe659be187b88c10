"""Decide from the compiled desired state and the reports.

- `planner`    one signed-to-be plan per node, stable while the node's work is unchanged
- `rollout`    the batch-by-batch release state machine
- `discovery`  which endpoints are healthy and what is waiting for a dependency
- `review`     what a change would do, per node (`plumb plan`)
- `status`     node, service and application status documents
"""
