"""The agent's error hierarchy.

PlumbError                  base of every error the agent raises on purpose
├── PermanentError          retrying the same input cannot help (bad plan, bad key, bad path)
│   ├── ContractError       a plan or report breaks the contract (shape, digest, signature)
│   └── PathError           a path escapes allowedPaths, uses `..`, or crosses a symlink
└── TemporaryError          may succeed later (remote unreachable, a command timed out)
"""


class PlumbError(Exception):
    """Base of every error the agent raises on purpose."""

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
