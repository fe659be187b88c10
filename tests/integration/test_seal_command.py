"""`plumb seal` and `plumb keys show --secrets`, run as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from contract.crypto import SigningKey, unseal
from contract.errors import ContractError
from reconciler.drivers.keys import secret_context, secrets_key

pytestmark = pytest.mark.integration
PLUMB = str(Path(sys.executable).parent / "plumb")


def plumb(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([PLUMB, *args], input=stdin, capture_output=True, timeout=60)


def test_sealed_value_opens_only_as_that_field_for_this_reconciler(tmp_path: Path) -> None:
    """What `plumb seal` prints opens with the reconciler's secrets key, for that secret and field only."""
    key_file = tmp_path / "reconciler.key"
    assert plumb("keys", "init", "--key-file", str(key_file)).returncode == 0
    recipient = plumb("keys", "show", "--secrets", "--key-file", str(key_file)).stdout.decode().strip()
    key = SigningKey.load(key_file)
    assert recipient == secrets_key(key).public_b64()
    sealed = plumb("seal", "db", "password", "--recipient", recipient, stdin=b"hunter2\n")
    assert sealed.returncode == 0, sealed.stderr
    text = sealed.stdout.decode().strip()
    assert text.startswith("plumb:sealed:v1:") and "hunter2" not in text
    assert unseal(text, secrets_key(key), context=secret_context("db", "password")) == b"hunter2"
    with pytest.raises(ContractError):
        unseal(text, secrets_key(key), context=secret_context("db", "user"))
    with_key = plumb("seal", "db", "password", "--key-file", str(key_file), stdin=b"x")
    assert (
        unseal(with_key.stdout.decode().strip(), secrets_key(key), context=secret_context("db", "password"))
        == b"x"
    )


def test_nothing_to_seal_is_one_clear_line() -> None:
    result = plumb("seal", "db", "password", "--recipient", "AAAA")
    assert result.returncode == 1
    assert result.stderr.decode().strip() == "plumb: nothing to seal: give the value on standard input"
