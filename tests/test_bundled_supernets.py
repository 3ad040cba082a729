"""The supernets shipped in moofa/supernets/: both layouts present, each loadable without pickled
code, trained on Fashion-MNIST at the fmnist-cpu preset, with an accuracy predictor built for
exactly that file (a retrained supernet with a stale predictor fails here, not in a user's search)."""

from __future__ import annotations

import json

import pytest

from moofa.evaluate import BUNDLED, BUNDLED_DIR
from moofa.search import load_search_setup


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_supernet_is_searchable(name):
    setup = load_search_setup(name)
    assert setup.net.layout.name == name
    assert setup.meta["dataset"]["name"] == "fashion-mnist" and setup.meta["preset"]["name"] == "fmnist-cpu"
    assert setup.meta["phase"] == len(setup.meta["preset"]["phases"])  # every phase finished
    stem = BUNDLED_DIR / BUNDLED[name].removesuffix(".pt")
    data = json.loads(stem.with_name(stem.name + ".predictor-data.json").read_text())
    assert data["supernet_sha256_16"] == setup.predictor.meta["supernet_sha256_16"]
    assert len(data["subnets"]) == setup.predictor.meta["n"] >= 100
    summary = json.loads(stem.with_name(stem.name + ".train_summary.json").read_text())
    assert not summary["partial"] and [h["phase"] for h in summary["history"]][-1] == "expand-2"
    # The predictor ranks the largest subnet above the smallest.
    res = max(setup.space.resolutions)
    big, small = setup.predictor.predict([setup.space.max_config(res), setup.space.min_config(min(setup.space.resolutions))])
    assert big > small
