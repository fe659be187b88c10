"""The supervisor's restart back-off (pure)."""

from __future__ import annotations

import pytest

from agent.apply.runtimes.supervise import MAX_BACKOFF, backoff

CASES = [
    # (current wait, RestartSec, seconds the process ran, expected (wait now, next wait))
    (0.1, 0.1, 0.5, (0.1, 0.2)),
    (0.2, 0.1, 0.5, (0.2, 0.4)),
    (1.0, 1.0, 0.0, (1.0, 2.0)),
    (20.0, 1.0, 0.5, (20.0, MAX_BACKOFF)),
    (MAX_BACKOFF, 1.0, 0.5, (MAX_BACKOFF, MAX_BACKOFF)),
    (16.0, 1.0, 60.0, (1.0, 2.0)),
    (0.0, 0.0, 0.0, (0.0, 0.1)),
]


@pytest.mark.parametrize(("current", "base", "ran_for", "expected"), CASES)
def test_backoff(current: float, base: float, ran_for: float, expected: tuple[float, float]) -> None:
    """Waits double up to the cap, and start over after a healthy run."""
    assert backoff(current, base=base, ran_for=ran_for) == expected
