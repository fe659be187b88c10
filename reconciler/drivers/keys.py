"""The reconciler's Ed25519 signing key: where it lives, making it once, loading it, sealing with it.

The same key also yields the reconciler's X25519 *secrets* key (derived with HKDF, so there is
one file to keep safe): developers seal Secret values to its public half with `plumb seal`, and
only the reconciler can open them — to seal them again, per node, into the plans that need them.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from contract.crypto import SEALED_PREFIX, SealingKey, SigningKey, seal, unseal
from contract.errors import PermanentError, PlumbError, UsageError

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
    return SigningKey.load(path)


def _inside_git_worktree(path: Path) -> bool:
    return any((parent / ".git").exists() for parent in path.absolute().parents)


@dataclass(frozen=True)
class Sealer:
    """Seals a node's secret-bearing content to its X25519 key, deterministically.

    The ephemeral key and nonce are derived (HKDF) from a secret of the reconciler key, the
    recipient, the context and the plaintext, so the same content sealed again gives the same text:
    plans stay byte-identical across passes and processes, and change when the content or the node's
    sealing key does. The format is `contract.crypto.seal`'s, so `contract.crypto.unseal` opens it.
    """

    secret: bytes = field(repr=False)
    recipient: str

    @classmethod
    def for_node(cls, key: SigningKey, recipient: str) -> Sealer:
        raw = key.key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return cls(secret=_hkdf(raw, b"plumb-reconciler-seal-v1", 32), recipient=recipient)

    def __call__(self, plaintext: bytes, *, context: str) -> str:
        recipient = X25519PublicKey.from_public_bytes(base64.b64decode(self.recipient, validate=True))
        material = (
            self.recipient.encode() + b"\0" + context.encode() + b"\0" + hashlib.sha256(plaintext).digest()
        )
        derived = _hkdf(self.secret, b"plumb-seal-derive-v1" + material, 44)
        ephemeral = X25519PrivateKey.from_private_bytes(derived[:32])
        epk = ephemeral.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        key = _hkdf(ephemeral.exchange(recipient), b"plumb-seal-v1" + context.encode(), 32)
        ciphertext = ChaCha20Poly1305(key).encrypt(derived[32:], plaintext, epk + context.encode())
        return SEALED_PREFIX + base64.b64encode(epk + derived[32:] + ciphertext).decode()


SECRET_PLACEHOLDER = re.compile(r"<sealed:([a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?)/([A-Za-z0-9_.-]+)>")


_PLACEHOLDER_BYTES = re.compile(SECRET_PLACEHOLDER.pattern.encode())


def secrets_key(key: SigningKey) -> SealingKey:
    """The reconciler's X25519 key for Secret values, derived from its signing key."""
    raw = key.key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return SealingKey(X25519PrivateKey.from_private_bytes(_hkdf(raw, b"plumb-reconciler-secrets-v1", 32)))


def secret_context(name: str, field: str) -> str:
    """What a Secret value is bound to: it opens only as that field of that Secret."""
    return f"secret:{name}/{field}"


def seal_secret(value: bytes, recipient: str, *, name: str, field: str) -> str:
    """Seal one Secret value to the reconciler's secrets key (what `plumb seal` prints)."""
    try:
        return seal(value, recipient, context=secret_context(name, field))
    except (PlumbError, ValueError) as exc:
        raise UsageError(f"cannot seal to {recipient!r}: {exc}") from exc


@dataclass(frozen=True)
class SecretValues:
    """Opens the `<sealed:NAME/FIELD>` placeholders rendering leaves in secret-bearing content."""

    key: SealingKey = field(repr=False, compare=False)
    sealed: tuple[tuple[str, str, str], ...]  # (secret, field, sealed text), the desired state's

    def fill(self, content: bytes) -> bytes:
        """`content` with every placeholder replaced by its value; PermanentError if one cannot open."""
        table = {(name, f): text for name, f, text in self.sealed}

        def value(match: re.Match[bytes]) -> bytes:
            name, f = match.group(1).decode(), match.group(3).decode()
            text = table.get((name, f))
            if text is None:
                raise PermanentError(f"secret {name}/{f} is not defined")
            try:
                return unseal(text, self.key, context=secret_context(name, f))
            except PlumbError as exc:
                raise PermanentError(f"secret {name}/{f} was not sealed to this reconciler: {exc}") from exc

        return _PLACEHOLDER_BYTES.sub(value, content)

    def stamp(self, content: bytes) -> bytes:
        """What identifies the secrets `content` uses without revealing them: their sealed texts."""
        table = {(name, f): text for name, f, text in self.sealed}
        used = sorted(
            {(m.group(1).decode(), m.group(3).decode()) for m in _PLACEHOLDER_BYTES.finditer(content)}
        )
        return "\n".join(table.get(pair, "") for pair in used).encode()


def _hkdf(secret: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)
