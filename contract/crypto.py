"""Keys, signatures and sealing: Ed25519 for plans and reports, X25519 sealing for secrets.

Sealed values (`seal` / `unseal`) use X25519 key agreement with an ephemeral key, HKDF-SHA256
and ChaCha20-Poly1305, with the recipient and a context string (node and resource id) bound in
as associated data, so a sealed value cannot be moved to another node or resource unnoticed.
The text form is `plumb:sealed:v1:<base64 of ephemeral public key | nonce | ciphertext>`.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from contract.errors import ContractError, PermanentError
from contract.files import replace_file

SEALED_PREFIX = "plumb:sealed:v1:"
_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str, *, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ContractError(f"{what} is not valid base64") from exc


@dataclass(frozen=True)
class VerifyKey:
    """An Ed25519 public key, as pinned by agents (reconciler key) or listed in nodes/*.yaml."""

    key: Ed25519PublicKey

    @classmethod
    def from_b64(cls, text: str) -> VerifyKey:
        raw = _unb64(text.strip(), what="public key")
        if len(raw) != 32:
            raise ContractError(f"public key must be 32 bytes, got {len(raw)}")
        return cls(Ed25519PublicKey.from_public_bytes(raw))

    @classmethod
    def from_text_or_file(cls, value: str) -> VerifyKey:
        """A key given on a command line: base64, or a file holding it (last word of its text)."""
        path = Path(value)
        try:
            text = path.read_text().strip() if path.is_file() else value
        except (OSError, UnicodeDecodeError) as exc:
            raise ContractError(f"{value}: cannot read the public key: {exc}") from exc
        return cls.from_b64(text.split()[-1] if text.split() else "")

    def public_b64(self) -> str:
        return _b64(self.key.public_bytes(*_RAW))

    def verify_b64(self, payload: bytes, signature: str) -> bool:
        try:
            self.key.verify(_unb64(signature, what="signature"), payload)
        except (InvalidSignature, ContractError):
            return False
        return True


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key: the reconciler's (plans) or a node's (reports)."""

    key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        raw = _read_private(path, 32)
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def save(self, path: Path) -> None:
        raw = self.key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        write_private(path, _b64(raw) + "\n")

    def verify_key(self) -> VerifyKey:
        return VerifyKey(self.key.public_key())

    def public_b64(self) -> str:
        return self.verify_key().public_b64()

    def sign_b64(self, payload: bytes) -> str:
        return _b64(self.key.sign(payload))


@dataclass(frozen=True)
class SealingKey:
    """An X25519 private key that opens values sealed to its public half."""

    key: X25519PrivateKey

    @classmethod
    def generate(cls) -> SealingKey:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> SealingKey:
        return cls(X25519PrivateKey.from_private_bytes(_read_private(path, 32)))

    def save(self, path: Path) -> None:
        raw = self.key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        write_private(path, _b64(raw) + "\n")

    def public_b64(self) -> str:
        return _b64(self.key.public_key().public_bytes(*_RAW))


def write_private(path: Path, text: str) -> None:
    """Write a private key file with mode 0600 from the start (never readable by others), through a
    temporary file created exclusively with a random name (`contract.files.replace_file`)."""
    replace_file(path, text)


def _read_private(path: Path, size: int) -> bytes:
    try:
        text = path.read_text()
    except OSError as exc:
        raise PermanentError(f"{path}: cannot read key: {exc.strerror}") from exc
    raw = _unb64(text.strip(), what=f"key file {path}")
    if len(raw) != size:
        raise PermanentError(f"{path}: key must be {size} bytes, got {len(raw)}")
    return raw


def _derive(shared: bytes, context: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"plumb-seal-v1" + context).derive(
        shared
    )


def seal(plaintext: bytes, recipient_b64: str, *, context: str) -> str:
    """Seal `plaintext` to an X25519 public key, bound to `context` (e.g. "web-1|file:/etc/x")."""
    recipient = X25519PublicKey.from_public_bytes(_unb64(recipient_b64, what="sealing key"))
    ephemeral = X25519PrivateKey.generate()
    epk = ephemeral.public_key().public_bytes(*_RAW)
    key = _derive(ephemeral.exchange(recipient), context.encode())
    nonce = os.urandom(12)
    ciphertext = ChaCha20Poly1305(key).encrypt(nonce, plaintext, epk + context.encode())
    return SEALED_PREFIX + _b64(epk + nonce + ciphertext)


def unseal(sealed: str, key: SealingKey, *, context: str) -> bytes:
    """Open a value sealed by `seal`; ContractError if it was not sealed to `key` and `context`."""
    if not sealed.startswith(SEALED_PREFIX):
        raise ContractError("value is not sealed (missing plumb:sealed:v1: prefix)")
    blob = _unb64(sealed[len(SEALED_PREFIX) :], what="sealed value")
    if len(blob) < 32 + 12 + 16:
        raise ContractError("sealed value is truncated")
    epk, nonce, ciphertext = blob[:32], blob[32:44], blob[44:]
    shared = key.key.exchange(X25519PublicKey.from_public_bytes(epk))
    try:
        return ChaCha20Poly1305(_derive(shared, context.encode())).decrypt(
            nonce, ciphertext, epk + context.encode()
        )
    except InvalidTag as exc:
        raise ContractError(f"sealed value cannot be opened for {context!r}") from exc
