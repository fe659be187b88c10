"""The reconciler's pure core: values in, values out — no Git, processes, network or clock.

- `compile/`  turn a desired commit's files into a validated model and every node's resources
- `decide/`   decide from that model and the nodes' reports: plans, rollouts, discovery, review, status
- `findings`  the `path:line:col: field: message [code]` value both halves report through
"""
