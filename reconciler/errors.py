"""The reconciler's error hierarchy; third-party errors are translated where they enter.

PlumbError                   base of every error the reconciler raises on purpose
├── PermanentError           retrying the same input cannot help
│   ├── InvalidDesiredState  the desired commit has error findings (carries them)
│   ├── RewindRefused        the desired branch moved backwards from the last reconciled commit
│   └── UsageError           a command line or argument the user must fix
└── TemporaryError           may succeed later: a remote unreachable, a push race lost
    └── PushRejected         the remote refused a compare-and-swap push; re-read and retry
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.findings import Finding


class PlumbError(Exception):
    """Base of every error the reconciler raises on purpose."""

    retryable = False


class PermanentError(PlumbError):
    """Retrying the same input cannot help."""


class TemporaryError(PlumbError):
    """The same call may succeed later."""

    retryable = True


class UsageError(PermanentError):
    """A command line or argument the user must fix."""


class RewindRefused(PermanentError):
    """The desired branch moved backwards from the last reconciled commit."""


class InvalidDesiredState(PermanentError):
    """The desired state has error findings; they are in `findings`."""

    def __init__(self, findings: tuple[Finding, ...]) -> None:
        self.findings = findings
        super().__init__(f"desired state is invalid: {len(findings)} finding(s)")


class PushRejected(TemporaryError):
    """The remote refused a compare-and-swap push; re-read and retry."""
