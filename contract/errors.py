"""Plumb's one error hierarchy, shared by the reconciler and the agent.

Every error Plumb raises on purpose derives from `PlumbError`; third-party errors (YAML,
jsonschema, Jinja2, pygit2, acme) are translated where they enter. Whether a retry can help is
part of the type, so a loop can decide without reading messages.

PlumbError                  base of every error Plumb raises on purpose
├── PermanentError          retrying the same input cannot help
│   ├── ContractError       a plan or report breaks the contract (shape, digest, node, serial, signature)
│   ├── PathError           a path escapes allowedPaths, uses `..`, or crosses a symlink
│   ├── RewindRefused       the desired branch moved backwards from the last reconciled commit
│   └── UsageError          a command line or argument the user must fix
└── TemporaryError          may succeed later: a remote unreachable, a command timed out
    └── PushRejected        the remote refused a compare-and-swap push; re-read and retry
"""


class PlumbError(Exception):
    """Base of every error Plumb raises on purpose."""

    retryable = False


class PermanentError(PlumbError):
    """Retrying the same input cannot help."""


class TemporaryError(PlumbError):
    """The same call may succeed later."""

    retryable = True


class ContractError(PermanentError):
    """A plan or report breaks the contract: shape, digest, node, serial, expiry or signature."""


class PathError(PermanentError):
    """A path escapes allowedPaths, uses `..`, or crosses a symlink."""


class UsageError(PermanentError):
    """A command line or argument the user must fix."""


class RewindRefused(PermanentError):
    """The desired branch moved backwards from the last reconciled commit."""


class PushRejected(TemporaryError):
    """The remote refused a compare-and-swap push; re-read and retry."""
