"""Constrained evolution: results fit by the planner's own numbers, are reproducible, beat random."""

from __future__ import annotations

import json

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
from toolchain.errors import InputError


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


def test_predictor_ranks_subnets_a_few_tenths_of_a_point_apart(setup):
    # A well-trained supernet's subnets span a few tenths of a point; fitted to such targets
    # unscaled, the MLP decayed to a constant (every prediction equal, tau NaN).
    _, space, _, _, _ = setup
    rng = __import__("random").Random(0)
    configs = [space.sample(rng) for _ in range(300)]
    enc = space.encode_many(configs)
    truth = 0.91 + 0.0004 * (enc.sum(1) - enc.sum(1).mean())
    assert truth.std() < 0.005
    predictor, report = fit_predictor(space, configs, truth, epochs=60)
    assert report["kendall_tau"] > 0.6
    assert np.std(predictor.predict(configs)) > 0.3 * truth.std()


# --- the predictor files: the bundled ones are read-only, a broken one is refused ----------------
def _tree(folder):
    """Name -> (size, mtime) of every file under ``folder``."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def bundled_measurements(monkeypatch, tmp_path):
    """Building for the bundled "moofa" supernet without its dataset: loaders stubbed, every
    measurement that the shipped dataset does not hold answered by a stub (and counted)."""
    import moofa.train.data
    import moofa.train.loop

    measured = []

    def fake_evaluate(net, config, loaders, device, **kwargs):
        measured.append(config)
        return 0.5 + 0.001 * len(measured), 0, 0

    monkeypatch.setenv("MOOFA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(moofa.train.data, "make_loaders", lambda *a, **k: None)
    monkeypatch.setattr(moofa.train.loop, "evaluate_subnet", fake_evaluate)
    return measured


def test_building_for_a_bundled_supernet_writes_only_into_the_user_folder(bundled_measurements, tmp_path, one_torch_thread):
    from moofa.search.predictor import (
        build_predictor,
        dataset_path_for,
        is_bundled,
        load_predictor_for,
        measure_subnets,
        predictor_in_use,
        predictor_path_for,
        supernet_digest,
    )
    from moofa.train.evaluate import BUNDLED_DIR, load_supernet, resolve_supernet, trained_space

    path = resolve_supernet("moofa")
    assert is_bundled(path)
    shipped = path.with_name(path.stem + ".predictor.pt")
    assert predictor_in_use(path) == shipped  # nothing built yet: the bundled one
    before = _tree(BUNDLED_DIR)
    report = build_predictor("moofa", n=20, progress=False)
    assert not bundled_measurements  # all 20 reused from the dataset shipped with the bundled predictor
    assert _tree(BUNDLED_DIR) == before
    cache = tmp_path / "cache"
    name = f"{path.stem}-{supernet_digest(path)}"
    assert report["predictor"] == str(cache / f"{name}.predictor.pt") == str(predictor_path_for(path))
    assert report["dataset"] == str(cache / f"{name}.predictor-data.json") == str(dataset_path_for(path))
    assert sorted(p.name for p in cache.iterdir()) == [f"{name}.predictor-data.json", f"{name}.predictor.pt"]
    # Search and deploy now read the user's predictor for this supernet.
    net, meta = load_supernet("moofa")
    predictor = load_predictor_for(path, trained_space(net, meta))
    assert predictor.path == predictor_in_use(path) == cache / f"{name}.predictor.pt" and predictor.meta["n"] == 20
    # Other images: measured afresh; then a larger build grows the user's dataset, measuring only
    # the two new subnets.
    build_predictor("moofa", n=20, val_images=16, progress=False)
    assert len(bundled_measurements) == 20
    build_predictor("moofa", n=22, val_images=16, progress=False)
    assert len(bundled_measurements) == 22 and _tree(BUNDLED_DIR) == before
    data = json.loads((cache / f"{name}.predictor-data.json").read_text())
    assert [e["val_top1"] for e in data["subnets"][20:]] == [0.521, 0.522] and data["val_images"] == 16
    assert not list(cache.glob("*.predictor-partial.*.json"))
    # An unfinished build keeps its partial measurements in the user folder too.
    measure_subnets(path, 3, seed=5, val_images=16, progress=False)
    assert [p.name for p in cache.glob("*.predictor-partial.*.json")] == [f"{name}.predictor-partial.0.json"]
    assert _tree(BUNDLED_DIR) == before


def test_too_few_subnets_are_refused_before_anything_is_measured(bundled_measurements, tmp_path):
    from moofa.search.predictor import MIN_SUBNETS, build_predictor

    for n in (0, 1, MIN_SUBNETS - 1):
        with pytest.raises(InputError, match=f"at least {MIN_SUBNETS}") as e:
            build_predictor("moofa", n=n, progress=False)
        assert "\n" not in str(e.value)
    assert not bundled_measurements and not (tmp_path / "cache").exists()


def test_a_non_finite_fit_is_refused_and_nothing_is_written(monkeypatch, tmp_path):
    import moofa.search.predictor as predictor_module
    from moofa.train.evaluate import BUNDLED_DIR

    layout = get_layout("moofa", resolution=28, in_channels=1, num_classes=10)
    space = SearchSpace(layout, resolutions=(20, 24, 28))
    rng = __import__("random").Random(0)
    configs = [space.sample(rng) for _ in range(12)]
    monkeypatch.setenv("MOOFA_CACHE_DIR", str(tmp_path))
    before = _tree(BUNDLED_DIR)
    fit = predictor_module.fit_predictor

    def nan_fit(*args, **kwargs):
        predictor, report = fit(*args, **kwargs, epochs=1)
        with torch.no_grad():
            predictor.model.net[2].weight[0, 0] = float("nan")
        return predictor, report

    def huge_fit(*args, **kwargs):
        predictor, report = fit(*args, **kwargs, epochs=1)
        with torch.no_grad():
            for p in predictor.model.net.parameters():
                p.fill_(1e30)
        return predictor, report

    cases = [([float("nan")] * 12, fit, "accuracies are NaN or infinite"),
             ([0.5] * 12, nan_fit, "weight 'net.2.weight' holds NaN"),
             ([0.5] * 12, huge_fit, "predictions are NaN or infinite")]
    for accs, fitter, match in cases:
        monkeypatch.setattr(predictor_module, "measure_subnets", lambda *a, accs=accs: (space, {}, configs, accs, 0))
        monkeypatch.setattr(predictor_module, "fit_predictor", fitter)
        with pytest.raises(InputError, match=match):
            predictor_module.build_predictor("moofa", n=12, progress=False)
    assert not list(tmp_path.iterdir()) and _tree(BUNDLED_DIR) == before


@pytest.fixture(scope="module")
def saved_predictor(setup, tmp_path_factory):
    _, space, _, _, _ = setup
    torch.manual_seed(1)
    predictor = Predictor(space, PredictorMLP(space.encoding_length, base_acc=0.8, acc_scale=0.02).eval(),
                          {"supernet_sha256_16": "0" * 16, "n": 20, "hidden": 400, "layers": 3})
    path = tmp_path_factory.mktemp("predictor") / "good.predictor.pt"
    predictor.save(path)
    return space, path


def _rewrite(path, out, change):
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, out)
    return out


def test_a_good_predictor_file_loads(saved_predictor):
    space, path = saved_predictor
    loaded = Predictor.load(path, space)
    assert loaded.meta["n"] == 20 and loaded.path == path


def test_a_predictor_file_from_before_the_accuracy_scale_predicts_unscaled(saved_predictor, tmp_path):
    space, path = saved_predictor
    old = tmp_path / "old.predictor.pt"
    _rewrite(path, old, lambda s: s["model"].pop("acc_scale"))
    new, before = Predictor.load(path, space), Predictor.load(old, space)
    configs = [space.max_config(space.resolutions[-1]), space.min_config(space.resolutions[0])]
    with torch.no_grad():
        x = torch.from_numpy(space.encode_many(configs))
        unscaled = (before.model.net(x).squeeze(-1) + before.model.base_acc).numpy()
    np.testing.assert_allclose(before.predict(configs), unscaled)
    assert float(before.model.acc_scale) == 1.0 and float(new.model.acc_scale) != 1.0


@pytest.mark.parametrize("kind,match", [
    ("nan weight", "NaN or infinite"),
    ("inf bias", "NaN or infinite"),
    ("huge weights", "predictions are NaN or infinite"),
    ("truncated", "truncated"),
    ("empty", "truncated"),
    ("not torch", "truncated"),
    ("wrong shape", r"layer 'net.2.weight' is torch.float32 \(400, 300\), expected torch.float32 \(400, 400\)"),
    ("missing layer", "missing net.6.weight"),
    ("extra layer", "unexpected net.8.weight"),
    ("integer layer", "layer 'net.0.bias' is torch.int64"),
    ("too few subnets", "built from 3 subnets"),
    ("no n", "built from None subnets"),
    ("meta not json", "no readable metadata"),
    ("huge hidden", r"hidden = 1000000000"),
    ("weights not a dict", "no weight tensors"),
    ("other format", "not a moofa accuracy predictor"),
])
def test_a_broken_predictor_file_is_a_one_line_input_error(saved_predictor, tmp_path, kind, match):
    space, path = saved_predictor
    out = tmp_path / "broken.predictor.pt"

    def meta(**changes):
        return lambda s: s.__setitem__("meta_json", json.dumps({**json.loads(s["meta_json"]), **changes}))

    changes = {
        "nan weight": lambda s: s["model"]["net.2.weight"].__setitem__((3, 7), float("nan")),
        "inf bias": lambda s: s["model"]["net.0.bias"].__setitem__(0, float("inf")),
        "huge weights": lambda s: [v.fill_(1e30) for k, v in s["model"].items() if k != "base_acc"],
        "wrong shape": lambda s: s["model"].__setitem__("net.2.weight", torch.zeros(400, 300)),
        "missing layer": lambda s: s["model"].pop("net.6.weight"),
        "extra layer": lambda s: s["model"].__setitem__("net.8.weight", torch.zeros(1)),
        "integer layer": lambda s: s["model"].__setitem__("net.0.bias", torch.zeros(400, dtype=torch.int64)),
        "too few subnets": meta(n=3),
        "no n": lambda s: s.__setitem__("meta_json", json.dumps({k: v for k, v in json.loads(s["meta_json"]).items() if k != "n"})),
        "meta not json": lambda s: s.__setitem__("meta_json", "{not json"),
        "huge hidden": meta(hidden=10**9),
        "weights not a dict": lambda s: s.__setitem__("model", [1, 2]),
        "other format": lambda s: s.__setitem__("format", "something/else"),
    }
    if kind == "truncated":
        out.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "empty":
        out.write_bytes(b"")
    elif kind == "not torch":
        out.write_text("hello")
    else:
        _rewrite(path, out, changes[kind])
    with pytest.raises(InputError, match=match) as e:
        Predictor.load(out, space)
    assert "\n" not in str(e.value) and str(e.value).startswith(str(out))


def test_a_broken_user_predictor_for_a_bundled_supernet_names_its_file(bundled_measurements, tmp_path):
    from moofa.search.predictor import load_predictor_for, predictor_path_for
    from moofa.train.evaluate import load_supernet, resolve_supernet, trained_space

    path = resolve_supernet("moofa")
    user = predictor_path_for(path)
    user.parent.mkdir(parents=True)
    user.write_bytes(b"PK\x03\x04 broken")
    net, meta = load_supernet("moofa")
    with pytest.raises(InputError) as e:
        load_predictor_for(path, trained_space(net, meta))
    assert str(e.value).startswith(str(user)) and "\n" not in str(e.value)
    user.unlink()
    assert load_predictor_for(path, trained_space(net, meta)).path == path.with_name(path.stem + ".predictor.pt")
