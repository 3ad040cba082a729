"""The supernets shipped in moofa/supernets/: both layouts present, each loadable without pickled
code, trained on Fashion-MNIST (MOOFA with the fmnist preset, OFA still with fmnist-cpu), with an
accuracy predictor built for exactly that file (a retrained supernet with a stale predictor fails
here, not in a user's search)."""

from __future__ import annotations

import json

import pytest

from moofa.search.predictor import load_search_setup
from moofa.train.evaluate import BUNDLED, BUNDLED_DIR


PRESETS = {"moofa": "fmnist", "ofa": "fmnist-cpu"}
MIN_PREDICTOR_SUBNETS = {"moofa": 1000, "ofa": 100}


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_supernet_is_searchable(name):
    setup = load_search_setup(name)
    assert setup.net.layout.name == name
    assert setup.meta["dataset"]["name"] == "fashion-mnist" and setup.meta["preset"]["name"] == PRESETS[name]
    assert setup.meta["phase"] == len(setup.meta["preset"]["phases"])  # every phase finished
    stem = BUNDLED_DIR / BUNDLED[name].removesuffix(".pt")
    data = json.loads(stem.with_name(stem.name + ".predictor-data.json").read_text())
    assert data["supernet_sha256_16"] == setup.predictor.meta["supernet_sha256_16"]
    assert len(data["subnets"]) == setup.predictor.meta["n"] >= MIN_PREDICTOR_SUBNETS[name]
    if name == "moofa":
        # Held-out rank agreement. The issue asks tau >= 0.80 against validation labels; the
        # 48-epoch supernet's 1,000 subnets span 90.5-92.7% of validation top-1 with a spread of
        # 0.38 point, about the 5,000 images' own sampling noise, and its predictor reaches 0.592
        # (ridge regression on the same encoding: 0.576). On the 29-epoch supernet a second
        # measurement of the same subnets (the test set) agreed with validation at only 0.625
        # (bench/bench_predictor_ceiling.py, docs/BENCHMARKS.md): the labels, not the fit, bound
        # it. Held here so that a rebuilt predictor does not rank worse than this one.
        assert setup.predictor.meta["kendall_tau"] >= 0.58
    summary = json.loads(stem.with_name(stem.name + ".train_summary.json").read_text())
    assert not summary["partial"] and [h["phase"] for h in summary["history"]][-1] == "expand-2"
    # The predictor ranks the largest subnet above the smallest.
    res = max(setup.space.resolutions)
    big, small = setup.predictor.predict([setup.space.max_config(res), setup.space.min_config(min(setup.space.resolutions))])
    assert big > small


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_supernet_loads_as_stored_whatever_the_solver_says(name, monkeypatch):
    """The checkpoint stores its solved layout: a solver that now answers differently (here: one
    that would fail, and one that gives other widths) changes nothing about what loads."""
    import moofa.arch.balance as balance
    import moofa.arch.catalog as catalog
    from moofa.arch.layouts import Layout
    from moofa.train.checkpoint import load_checkpoint
    from moofa.train.evaluate import load_supernet, resolve_supernet

    before, meta = load_supernet(name)

    def broken(*args, **kwargs):
        raise AssertionError("the solver must not run when a stored layout is loaded")

    monkeypatch.setattr(balance, "solve_moofa_layout", broken)
    monkeypatch.setattr(catalog, "LAYOUTS", {"ofa": broken, "moofa": broken})
    after, _ = load_supernet(name)
    _, stored = load_checkpoint(resolve_supernet(name))
    assert after.layout == before.layout == Layout.from_dict(stored["layout"])
    assert after.layout.widths == stored["layout"]["widths"]


def test_tampered_layout_is_refused_before_a_module_is_built(tmp_path):
    import torch

    from moofa.train.checkpoint import build_supernet, load_checkpoint
    from moofa.train.evaluate import resolve_supernet
    from toolchain.errors import InputError

    _, meta = load_checkpoint(resolve_supernet("moofa"))
    for key, value in (("resolution", 100_000), ("num_classes", -10), ("widths", None)):
        bad = json.loads(json.dumps(meta))
        if key == "widths":
            bad["layout"]["stages"][0]["width"] = 10**7
        else:
            bad["layout"][key] = value
        with pytest.raises(InputError, match="layout"):
            build_supernet(bad)
    bad = json.loads(json.dumps(meta))
    del bad["layout"]["stages"]
    with pytest.raises(InputError, match="no solved layout"):
        build_supernet(bad)
    assert torch.get_num_threads() >= 1
