"""The reconciler's I/O at the edges; the core never imports them, the pass wires them in.

- `desired_source`  read a desired commit or working tree through pygit2 (no checkout)
- `statestore`      read and compare-and-swap the state branch, locally or through a remote
- `reports`         read each node's report branch, verified by the node's key
- `snapshot`        the state and report branches at one moment, for `plumb status`
- `watch`           wake on ref changes, signals and deadlines
- `keys`            the reconciler's signing key and the Secret sealing key derived from it
"""
