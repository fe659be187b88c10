"""`make hosts-bench`: what test hosts cost on this machine: base lookup, boot to `running`, memory, restart."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.hosts.base import cached_base
from tests.hosts.harness import HostLab, unavailable_reason

NODES = 3


def _timed(step: Callable[[], object]) -> float:
    started = time.monotonic()
    step()
    return time.monotonic() - started


def main() -> None:
    reason = unavailable_reason()
    if reason is not None:
        print(f"hosts-bench: skipped: {reason}")
        return
    count = int(sys.argv[1]) if len(sys.argv) > 1 else NODES
    lookup = _timed(cached_base)
    with tempfile.TemporaryDirectory(prefix="plumb-hosts-bench-") as directory:
        lab = HostLab(Path(directory))
        try:
            boots = []
            for index in range(count):
                started = time.monotonic()
                node = lab.boot(f"bench-{index}")
                node.wait_running()
                boots.append(time.monotonic() - started)
            time.sleep(2)  # let boot-time work settle before measuring memory
            memory = [node.memory() / 2**20 for node in lab.hosts.values()]
            first = next(iter(lab.hosts.values()))

            def reboot() -> None:
                first.restart()
                first.wait_running()

            restart = _timed(reboot)
        finally:
            close = _timed(lab.close)
    print(f"hosts-bench: cached base found in {lookup * 1000:.1f} ms")
    print(f"hosts-bench: boot to running, {count} nodes: " + ", ".join(f"{s:.2f} s" for s in boots))
    listed = ", ".join(f"{mib:.0f} MiB" for mib in memory)
    print(f"hosts-bench: memory per idle node (PSS): {listed} (median {statistics.median(memory):.0f} MiB)")
    print(f"hosts-bench: restart to running {restart:.2f} s; close of the lab {close:.2f} s")


if __name__ == "__main__":
    main()
