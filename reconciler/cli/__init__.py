"""The `plumb` command line: `main` is a thin click group, `commands/` one module per command, `views/`
what they show.

Each command parses its options, calls the core or the pass, and prints for people (tables, colour
on a TTY) or machines (`--format json`).
"""
