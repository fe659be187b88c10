"""The Git transport both sides use: fetch and push over file://, SSH with pinned host keys, HTTPS.

The only part of the contract package that does I/O:
- `gitremote`   fetch and push, errors translated to the contract's own
- `knownhosts`  parse and match SSH host keys
- `gitread`     read one fetched file as hostile input: a plain blob, size checked from its header
"""
