"""The local demo fleet behind `plumb demo` (a `plumb.commands` plug-in; the reconciler never imports it).

- `fleet`      a bare repository, a reconciler, one agent per node and a private nginx per edge
- `command`    the `plumb demo` command: start the fleet, push a change, time it, curl through the edge
- `programs/`  the programs the demo writes into its fleet (the shop's API server, a Redis stand-in)
"""
