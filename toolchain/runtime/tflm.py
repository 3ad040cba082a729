"""Measure a model's arena with the real TFLM interpreter (the ``tflite-micro`` package).

The interpreter is TFLM's host build with reference kernels and the recording allocator. It can
abort the whole process on a model it cannot handle, so it always runs in a child process; the
parent reads the allocation report the child prints and turns any failure into one line.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from toolchain.errors import InputError
from toolchain.runtime.runner import run_python

DEFAULT_ARENA_BYTES = 64 << 20  # the host has memory to spare; the recorder reports what was used

_CHILD = r"""
import json, sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime
path, arena = sys.argv[1], int(sys.argv[2])
it = runtime.Interpreter.from_file(path, arena_size=arena)
k = 0
while True:
    try:
        d = it.get_input_details(k)
    except Exception:
        break
    it.set_input(np.zeros(d["shape"], d["dtype"]), k)
    k += 1
it.invoke()
sys.stdout.flush()
it.print_allocations()
sys.stderr.flush()
"""

_LINE = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")
_KIND = re.compile(r"'([^']+)' used (\d+) bytes with alignment overhead \(requested (\d+) bytes for (\d+)")


@dataclass
class Measurement:
    """What TFLM's recording allocator reported for one model."""

    arena_head_bytes: int
    arena_tail_bytes: int
    arena_total_bytes: int
    tail_by_kind: dict = field(default_factory=dict)  # kind -> {"used_bytes", "requested_bytes", "count"}

    def agrees_with(self, estimate) -> bool:
        """Whether a prediction (anything with ``arena_head_bytes`` and ``arena_tail_bytes``) is
        this measurement to the byte: the one statement of "the model agrees with TFLM"."""
        return (estimate.arena_head_bytes, estimate.arena_tail_bytes) == (self.arena_head_bytes, self.arena_tail_bytes)

    def to_dict(self) -> dict:
        return {
            "arena_head_bytes": self.arena_head_bytes,
            "arena_tail_bytes": self.arena_tail_bytes,
            "arena_total_bytes": self.arena_total_bytes,
            "tail_by_kind": self.tail_by_kind,
        }


def parse_report(text: str) -> Measurement | None:
    totals = {k: int(v) for k, v in _LINE.findall(text)}
    if not {"head", "tail", "total"} <= totals.keys():
        return None
    kinds = {
        m[0]: {"used_bytes": int(m[1]), "requested_bytes": int(m[2]), "count": int(m[3])}
        for m in _KIND.findall(text)
    }
    return Measurement(totals["head"], totals["tail"], totals["total"], kinds)


def measure(path: str | Path, arena_bytes: int = DEFAULT_ARENA_BYTES, timeout_s: float = 300) -> Measurement:
    """Run ``path`` once on the TFLM interpreter in a child process and return its arena figures."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    proc = run_python(_CHILD, [path, arena_bytes], what=f"{path}: the TFLM interpreter", timeout_s=timeout_s)
    report = parse_report(proc.stderr + proc.stdout)
    if proc.returncode != 0 or report is None:
        raise InputError(f"{path}: the TFLM interpreter could not run this model: {proc.reason()}")
    return report


if __name__ == "__main__":  # python -m toolchain.runtime.tflm MODEL
    print(json.dumps(measure(sys.argv[1]).to_dict(), indent=2))
