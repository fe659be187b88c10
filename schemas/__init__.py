"""Plumb's JSON Schemas (draft 2020-12): one per document kind, plus the plan and report contract."""
