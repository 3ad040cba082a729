"""Reading inputs with one-line errors, and writing outputs atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from toolchain.errors import InputError


def read_input_bytes(path: str | Path, expected: str = "a .tflite file") -> bytes:
    """The bytes of ``path``, or an :class:`InputError` that says why not in one line."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected {expected}") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None


def write_atomically(path: str | Path, data: bytes | str) -> Path:
    """Write through a temporary file in the same folder and rename it into place, so that no
    reader (nor a crash) ever sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path
