"""What crosses the wire between the reconciler and the agent; both import it, it imports neither.

- `documents`  canonical JSON, digests, signing and verifying documents, size-limited parsing
- `plan`       the typed, verified node plan (`verify_plan`)
- `crypto`     Ed25519 signing keys, X25519 sealing of secrets to a node
- `errors`     the one `PlumbError` hierarchy, split by whether a retry can help
- `transport/` the Git remote both sides fetch and push through (file://, SSH with pinned keys, HTTPS)
"""

__version__ = "0.1.0"  # the one version of Plumb: the wheel, both scripts and every report carry it
