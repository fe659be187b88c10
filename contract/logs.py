"""How both scripts log: structured (structlog), to stderr, JSON when stderr is not a terminal."""

from __future__ import annotations

import sys
from typing import Any

import structlog


def configure_logging() -> None:
    """Logs go to stderr: readable on a terminal, one JSON object a line for journald and collectors."""
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if sys.stderr.isatty() else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
