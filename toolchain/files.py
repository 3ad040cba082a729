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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def output_target(path: str | Path) -> Path:
    """Where writing ``path`` lands: a symlink's target (written through, never replaced), and an
    :class:`InputError` if something other than a regular file is there (a device, a FIFO, a folder)."""
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if path.exists() and not path.is_file():
        raise InputError(f"{path}: exists and is not a regular file; refusing to replace it")
    return path


@contextlib.contextmanager
def atomic_output(path: str | Path):
    """Yield a temporary path beside ``path``; when the block ends without an exception, give it
    the mode a new file gets (``0666 & ~umask``, or the replaced file's mode) and rename it into
    place, so that no reader (nor a crash) ever sees a half-written file. On an exception the
    temporary file is removed. The one way moofa writes an output file."""
    path = output_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_atomically(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through :func:`atomic_output`."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return output_target(path)
