"""bench/bench_claim.py --include: several earlier tables merge with each (method, board) once."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_claim.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_claim", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(method, board, top1, budget=None):
    return {"method": method, "board": board, "kind": "searched" if budget else "baseline", "budget_kib": budget, "int8_top1": top1}


def test_later_include_replaces_a_method_board_and_keeps_the_rest():
    merge = _bench().merge_included
    base = [_row("moofa", "f746", 0.90, 56), _row("moofa", "f746", 0.91, 64), _row("seed1", "f746", 0.89, 56), _row("cnn3", "f746", 0.92)]
    # Two runs started from the same base: one re-measured seed1 (at one budget only), one added a baseline.
    run_seed = [r for r in base if r["method"] != "seed1"] + [_row("seed1", "f746", 0.905, 56)]
    run_base = base + [_row("mnv2", "f746", 0.93)]
    merged = merge([base, run_base, run_seed])
    by = {(r["method"], r["budget_kib"]): r["int8_top1"] for r in merged}
    assert by[("seed1", 56)] == 0.905  # the later run's rows replace the base's copy
    assert by[("mnv2", None)] == 0.93  # kept: the later run does not have that method
    assert len(merged) == 5  # each (method, board) once: no duplicate of the rows both runs copied
    assert [r["int8_top1"] for r in merged if r["method"] == "moofa"] == [0.90, 0.91]  # a group's rows stay whole and in order
