"""The Git transport both sides use: fetch and push over file://, SSH with pinned host keys, HTTPS.

The only part of the contract package that does I/O; `knownhosts` parses and matches host keys.
"""
