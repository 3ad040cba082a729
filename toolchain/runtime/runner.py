"""The one way the toolchain runs a child process: TFLM, CP-SAT, the ONNX converter, the Arm compiler.

Every child gets a timeout, its own process group (so a timeout or an interrupt of the parent
kills the child and anything it started), and one error path: a failure becomes an
:class:`~toolchain.errors.InputError` whose message is one line naming what was run, the child's
last useful line and how it ended. Python children import the same ``toolchain`` (and ``moofa``)
as the parent: the folder above this package goes first on their ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from toolchain.errors import InputError

#: The folder that holds the ``toolchain`` package (the repository, or site-packages).
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ChildResult:
    """What a finished child left: its exit status and its two output streams."""

    returncode: int
    stdout: str
    stderr: str

    def reason(self) -> str:
        """One line: the child's last useful output line and how it ended."""
        return failure_reason(self.returncode, self.stdout, self.stderr)


def python_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The parent's environment with :data:`PACKAGE_ROOT` first on ``PYTHONPATH``."""
    env = dict(os.environ)
    root = str(PACKAGE_ROOT)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


def run(argv: list[str], *, what: str, timeout_s: float, input: str | None = None, cwd: str | Path | None = None,
        env: dict[str, str] | None = None, check: bool = False) -> ChildResult:
    """Run ``argv`` to completion (text streams captured) within ``timeout_s`` seconds.

    ``what`` names the job in error messages ("the TFLM interpreter"). A timeout, or with
    ``check`` a non-zero exit, raises :class:`InputError`; so does a program that is not there.
    An interrupt of the parent (Ctrl-C, or an exception raised while waiting) kills the child's
    whole process group before it propagates.
    """
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env,
                                start_new_session=True)
    except FileNotFoundError:
        raise InputError(f"{what}: {argv[0]} not found") from None
    try:
        stdout, stderr = proc.communicate(input, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise InputError(f"{what} did not finish within {timeout_s:.0f} s") from None
    except BaseException:
        _kill_group(proc)
        raise
    result = ChildResult(proc.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise InputError(f"{what} failed: {result.reason()}")
    return result


def run_python(code: str, args: list[str] = (), **kwargs) -> ChildResult:
    """Run ``python -c code args...`` with this interpreter and this package on the path (see :func:`run`)."""
    env = python_env(kwargs.pop("env", None))
    return run([sys.executable, "-c", code, *map(str, args)], env=env, **kwargs)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


_TRACEBACK_LINE = ("File ", "Traceback", "^", "~")


def failure_reason(returncode: int, stdout: str, stderr: str) -> str:
    """The last useful line a failed child printed, and how it ended, on one line."""
    how = f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
    lines = [ln.strip() for ln in (stderr + stdout).splitlines() if ln.strip()]
    # A runtime prints its own diagnosis before failing; a Python traceback ends with the exception.
    useful = [ln for ln in lines if not ln.startswith(_TRACEBACK_LINE)]
    detail = useful[-1] if useful else "no message"
    if len(useful) >= 2 and "Traceback" in stderr:
        own = [ln for ln in useful if not re.match(r"^\w+Error", ln)]
        detail = (own[-1] + " | " if own and own[-1] != detail else "") + detail
    return f"{detail[:300]} ({how})"
