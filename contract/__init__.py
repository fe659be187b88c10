"""What crosses the wire between the reconciler and the agent; both import it, it imports neither.

- `defaults`   what both sides agree on: branch names, apiVersion and document kinds, size limits
- `vocabulary` the `str` enums of resource kinds, states, outcomes and rollout phases
- `documents`  canonical JSON, digests, signing and verifying documents, size-limited parsing
- `plan`       the typed, verified node plan (`verify_plan`), its service entries typed too
- `report`     the typed node report: built by the agent, parsed once by the reconciler (`parse_report`)
- `crypto`     Ed25519 signing keys, X25519 sealing of secrets to a node
- `errors`     the one `PlumbError` hierarchy, split by whether a retry can help
- `logs`       how both scripts log (structured, stderr, JSON off a terminal)
- `transport/` the Git remote both sides fetch and push through (file://, SSH with pinned keys, HTTPS)
"""

__version__ = "0.1.0"  # the one version of Plumb: the wheel, both scripts and every report carry it
