"""Compile the desired state: files in, a validated model and every node's rendered resources out.

`load` (YAML with positions) → `schemas` → `model` → `validate` (with `graph`, `placement`,
`versions`) → `render` and `compose` (templates, traits, endpoints) → `desired` (the whole
compilation, cached per input); `values` holds the small value types they share.
"""
