"""The reconciler's Ed25519 signing key: where it lives, making it once, loading it."""

from __future__ import annotations

import os
from pathlib import Path

from agent.crypto import SigningKey
from agent.errors import PlumbError as AgentError
from reconciler.errors import PermanentError, UsageError

KEY_ENV = "PLUMB_KEY_FILE"


def default_key_path() -> Path:
    """$PLUMB_KEY_FILE, else ~/.config/plumb/reconciler.key (outside any repository)."""
    configured = os.environ.get(KEY_ENV)
    if configured:
        return Path(configured)
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "plumb" / "reconciler.key"


def init_key(path: Path, *, force: bool = False) -> SigningKey:
    """Make a new key at `path` (mode 0600); refuse to overwrite one unless `force`."""
    if path.exists() and not force:
        raise UsageError(f"{path} already exists; use --force to replace it (agents pin the old key)")
    if _inside_git_worktree(path):
        raise UsageError(f"{path} is inside a Git repository; keep the private key outside it")
    key = SigningKey.generate()
    key.save(path)
    return key


def load_key(path: Path) -> SigningKey:
    """Load the key made by `plumb keys init`, translating the agent's error."""
    if not path.exists():
        raise UsageError(f"{path}: no reconciler key; run `plumb keys init` first")
    try:
        return SigningKey.load(path)
    except AgentError as exc:
        raise PermanentError(str(exc)) from exc


def _inside_git_worktree(path: Path) -> bool:
    return any((parent / ".git").exists() for parent in path.absolute().parents)
