"""Constrained evolution: results fit by the planner's own numbers, are reproducible, beat random."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moofa.arch.catalog import get_layout
from moofa.arch.space import SearchSpace
from moofa.cost.pricer import Pricer, price
from moofa.search.predictor import (
    Constraints,
    Predictor,
    PredictorMLP,
    UnreachableBudget,
    evolution_search,
    fit_predictor,
    kendall_tau,
    random_search,
)
from toolchain.boards.targets import resolve_target


@pytest.fixture(scope="module")
def setup():
    layout = get_layout("moofa", resolution=28, in_channels=1, num_classes=10)
    space = SearchSpace(layout, resolutions=(20, 24, 28))
    torch.manual_seed(0)
    predictor = Predictor(space, PredictorMLP(space.encoding_length, base_acc=0.8).eval())
    target = resolve_target("nucleo-f746zg")
    return layout, space, predictor, target, Pricer(layout, target)


@pytest.mark.parametrize("sram_kib,flash_kib", [(64, 320), (48, 260)])
def test_winner_fits_by_the_planners_own_numbers(setup, sram_kib, flash_kib):
    layout, space, predictor, target, pricer = setup
    c = Constraints(sram_kib * 1024, flash_kib * 1024)
    r = evolution_search(space, predictor, pricer, c, population=40, generations=25, seed=1)
    exact = price(r.config, target, layout)  # builds the graph and runs the toolchain's planner
    assert exact.arena_bytes == r.cost.arena_bytes <= c.sram_budget_bytes
    assert exact.flash_bytes == r.cost.flash_bytes <= c.flash_budget_bytes
    for config, _ in r.population[:10]:
        assert pricer(config).arena_bytes <= c.sram_budget_bytes


def test_same_seed_same_result(setup):
    _, space, predictor, _, pricer = setup
    c = Constraints(64 * 1024, 320 * 1024)
    a = evolution_search(space, predictor, pricer, c, population=30, generations=15, seed=7)
    b = evolution_search(space, predictor, pricer, c, population=30, generations=15, seed=7)
    assert a.config == b.config and a.predicted_top1 == b.predicted_top1 and a.history == b.history


def test_evolution_beats_random_sampling_of_as_many_candidates(setup):
    _, space, predictor, _, pricer = setup
    c = Constraints(64 * 1024, 320 * 1024)
    r = evolution_search(space, predictor, pricer, c, population=50, generations=40, seed=3)
    _, random_best = random_search(space, predictor, pricer, c, n=r.evaluated, seed=3)
    assert r.predicted_top1 > random_best
    assert r.history == sorted(r.history)  # parents survive: the best never gets worse


def test_max_macs_is_respected(setup):
    _, space, predictor, _, pricer = setup
    c = Constraints(300 * 1024, 900 * 1024, max_macs=2_000_000)
    r = evolution_search(space, predictor, pricer, c, population=30, generations=10, seed=0)
    assert r.cost.macs <= 2_000_000


def test_unreachable_budget_reports_the_smallest_subnet(setup):
    _, space, predictor, _, pricer = setup
    with pytest.raises(UnreachableBudget) as e:
        evolution_search(space, predictor, pricer, Constraints(4 * 1024, 1 << 30), population=10, generations=2)
    smallest = pricer(space.min_config(20))
    assert e.value.smallest["arena_bytes"] == smallest.arena_bytes > 4 * 1024


def test_predictor_learns_a_ranking(setup):
    _, space, _, _, _ = setup
    rng = __import__("random").Random(0)
    configs = [space.sample(rng) for _ in range(300)]
    enc = space.encode_many(configs)
    truth = 0.7 + 0.002 * enc.sum(1) + 0.01 * enc[:, -1]  # a smooth function of the encoding
    predictor, report = fit_predictor(space, configs, truth, epochs=60)
    assert report["kendall_tau"] > 0.6 and report["rmse"] < 0.02
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    np.testing.assert_allclose(predictor.predict(configs[:3]), predictor.predict(configs[:3]))
