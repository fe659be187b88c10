"""Run every benchmark section in turn and print its figures (`make bench`)."""

from __future__ import annotations

import importlib
import sys

# Each module has `main() -> None` and prints its own lines; `make bench BENCH_ARGS=agent` runs one.
SECTIONS = ["bench.foundation", "bench.reconcile", "bench.agent", "bench.loop"]


def main() -> None:
    wanted = sys.argv[1:]
    for name in SECTIONS:
        if wanted and name.split(".")[-1] not in wanted:
            continue
        importlib.import_module(name).main()


if __name__ == "__main__":
    main()
