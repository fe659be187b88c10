"""Converge a verified plan on the host, resource by resource, then run the handlers.

- `converge`    the apply pass: order, journal, handlers (daemon-reload, restarts, nginx), pruning
- `resources/`  one module per resource kind: observe the host, compare with the spec, act on a difference
- `runtimes/`   how units run: `systemd` through systemctl, `process` through a built-in supervisor
"""
