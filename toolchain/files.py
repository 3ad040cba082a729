"""The one input and output layer: inputs read with one-line errors and a size bound, outputs
written atomically with the usual modes, never over a device, a FIFO, a folder or an input.

What every command guarantees about its outputs (docs/ARCHITECTURE.md, "Contracts"): a file
moofa writes appears whole or not at all, with mode ``0666 & ~umask`` (or the mode of the file it
replaces); a symlink is written through, never replaced; anything that is not a regular file is
refused, and so is a path that is also one of the command's inputs. ``moofa-deploy --out DIR``
is written as a whole folder (:func:`staged_folder`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

from toolchain.errors import InputError

#: The largest input file moofa reads (a model, checkpoint, predictor, calibration array):
#: far above any microcontroller model, small enough that a wrong path fails fast.
MAX_INPUT_BYTES = 2 << 30


def check_input_file(path: str | Path, expected: str = "a .tflite file", max_bytes: int = MAX_INPUT_BYTES) -> Path:
    """``path`` if it is a regular file of at most ``max_bytes``, else an :class:`InputError`.

    Checked with ``stat`` before anything opens it, so a FIFO or a device never blocks a read."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path}: is a directory, expected {expected}")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{path}: is not a regular file (a device, FIFO or socket), expected {expected}")
    if st.st_size > max_bytes:
        raise InputError(f"{path}: {st.st_size:,} bytes, more than the {max_bytes:,} an input may have")
    return path


def read_input_bytes(path: str | Path, expected: str = "a .tflite file") -> bytes:
    """The bytes of ``path``, or an :class:`InputError` that says why not in one line."""
    path = check_input_file(path, expected)
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None


def check_outputs_are_not_inputs(outputs, inputs) -> None:
    """Refuse an output path that names one of the inputs (the same file by any name)."""
    for out in outputs:
        if out is None:
            continue
        for inp in inputs:
            if inp is None:
                continue
            same = os.path.realpath(out) == os.path.realpath(inp)
            with contextlib.suppress(OSError):
                same = same or os.path.samefile(out, inp)
            if same:
                raise InputError(f"{out}: is also an input of this command; refusing to overwrite it")


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
    """Write ``data`` to ``path`` through :func:`atomic_output`; returns where it landed."""
    target = output_target(path)
    with atomic_output(target) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return target


@contextlib.contextmanager
def staged_folder(out: str | Path, allowed_names: frozenset[str]):
    """Yield a fresh staging folder beside ``out``; when the block succeeds, it replaces ``out``
    whole (the old folder is renamed aside, then removed). On any exception, ``out`` is left as it
    was and the staging folder is removed. Held under an exclusive lock beside ``out``, so two
    writers of one folder cannot interleave (the second is refused in one line).

    ``out`` must be absent, or a folder holding only ``allowed_names`` (what an earlier run of the
    same command wrote): a user's other files are never deleted."""
    import fcntl

    out = Path(out)
    if out.is_symlink():
        out = Path(os.path.realpath(out))
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in allowed_names)
        if foreign:
            raise InputError(f"{out}: holds files this command did not write ({', '.join(foreign[:3])}"
                             f"{', ...' if len(foreign) > 3 else ''}); choose a new or empty folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        lock = open(out.parent / f".{out.name}.lock", "a")  # noqa: SIM115 -- held for the whole block
    except OSError as e:
        raise InputError(f"{out}: cannot write there: {e.strerror}") from None
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{out}: another run is writing this folder; wait for it or choose another") from None
        stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.staging-"))
        try:
            yield stage
            os.chmod(stage, 0o777 & ~_umask())
            if out.exists():
                old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
                os.rename(out, old / out.name)
                os.rename(stage, out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(stage, out)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
    finally:
        lock.close()
