"""Files replaced whole: written to a fresh private temporary file beside them, then renamed over them."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def replace_file(path: Path, text: str, *, durable: bool = True) -> None:
    """Replace `path` with `text` atomically, never through a file someone else could have planted.

    The temporary file has a random name and is created exclusively (`mkstemp`: O_EXCL, mode 0600,
    kept on the result); it is fsynced unless not `durable`, and removed on any failure.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
            out.flush()
            if durable:
                os.fsync(out.fileno())
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise
