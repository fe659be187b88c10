"""Plumb's control plane: turns commits of a desired-state repository into signed per-node plans."""

__version__ = "0.1.0"
