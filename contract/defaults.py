"""What both sides must agree on without saying it each time: branch names, document kinds, size limits.

The reconciler writes plans to `STATE_BRANCH` and reads reports from `REPORTS_PREFIX<node>`; the
agent fetches and pushes the same names. A repository may choose others (`plumb.yaml`:
`stateBranch`, `reportsPrefix`; the agent's `--state-branch`, `--reports-prefix`), these are the
defaults of both.
"""

from __future__ import annotations

API_VERSION = "plumb/v1"  # `apiVersion` of every document Plumb reads or writes
PLAN_KIND = "NodePlan"
REPORT_KIND = "NodeReport"

STATE_BRANCH = "plumb/state"  # plans and status documents, written by the reconciler
REPORTS_PREFIX = "plumb/reports/"  # one branch per node, `<prefix><node>`, written by its agent

MAX_PLAN_BYTES = 32 * 1024 * 1024  # a plan (or state-branch document) larger than this is refused
MAX_REPORT_BYTES = 8 * 1024 * 1024  # a report larger than this is refused
