"""The benches' own logic: bench_claim's --include merge, bench_predictor_ceiling's estimate."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _bench(name: str = "bench_claim"):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
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


@pytest.mark.parametrize("noise", [0.1, 0.35, 1.0])
def test_perfect_predictor_ceiling_matches_a_simulation(noise):
    """Simulated subnets: true accuracy plus Gaussian noise on a 5,000- and a 10,000-image split.
    From the two measurements' tau alone, the estimate recovers what knowing the truth scores."""
    from moofa.search.predictor import kendall_tau

    ceiling = _bench("bench_predictor_ceiling").perfect_predictor_taus
    rng = np.random.default_rng(0)
    true = rng.normal(size=3000)
    val = true + rng.normal(scale=np.sqrt(noise), size=true.size)
    test = true + rng.normal(scale=np.sqrt(noise * 5000 / 10000), size=true.size)
    est_val, est_test = ceiling(kendall_tau(val, test), 5000, 10000)
    assert abs(est_val - kendall_tau(true, val)) < 0.03
    assert abs(est_test - kendall_tau(true, test)) < 0.03
    assert est_test > est_val  # the larger split is the less noisy one
    assert ceiling(1.0, 5000, 10000) == pytest.approx((1.0, 1.0))


def test_nothing_fits_says_what_the_smallest_needs_and_which_limit_it_is_over():
    text = _bench().nothing_fits
    over_flash = {"budget_kib": 192, "smallest_arena_bytes": 104_044, "smallest_flash_bytes": 2_427_432, "flash_budget_bytes": 917_504}
    assert text(over_flash) == ("nothing fits (flash): the smallest needs 104,044 B of arena and about 2,427,432 B of flash "
                                "(917,504 B left for the model)")
    assert text({**over_flash, "budget_kib": 64}).startswith("nothing fits (arena and flash):")
    assert text({**over_flash, "budget_kib": 64, "flash_budget_bytes": 8_000_000}).startswith("nothing fits (arena):")
    assert text({"budget_kib": 56}) == "nothing fits"  # a row from before the needs were recorded
    assert text({**over_flash, "budget_kib": 512, "flash_budget_bytes": 8_000_000}).startswith("nothing fits: the smallest")  # neither limit
