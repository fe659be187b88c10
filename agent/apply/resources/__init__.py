"""One module per resource kind: observe the host, compare with the spec, act only on a difference."""
