"""Subnet configs and the search space: round trips, validation errors, evolution operators."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest

from moofa.arch.catalog import get_layout
from moofa.arch.space import SearchSpace, SubnetConfig
from toolchain.errors import InputError

OFA = get_layout("ofa", 224, 3, 1000)
MOOFA = get_layout("moofa", 32, 1, 10)


@pytest.fixture(params=["ofa", "moofa"])
def space(request):
    return SearchSpace(OFA if request.param == "ofa" else MOOFA, resolutions=None)


def test_hand_written_config_reads_and_prints_the_same():
    text = "ofa r224 | k3e4 k5e6 | k7e3 k3e3 k3e4 | k5e4 k5e4 | k3e6 k7e6 k3e3 k5e4 | k3e3 k3e3"
    config = SubnetConfig.from_string(text)
    assert config.depths == (2, 3, 2, 4, 2)
    assert config.kernels[1] == (7, 3, 3) and config.expands[3] == (6, 6, 3, 4)
    assert config.to_string() == text
    assert json.loads(config.to_json()) == {
        "layout": "ofa",
        "resolution": 224,
        "depth": [2, 3, 2, 4, 2],
        "kernel": [[3, 5], [7, 3, 3], [5, 5], [3, 7, 3, 5], [3, 3]],
        "expand": [[4, 6], [3, 3, 4], [4, 4], [6, 6, 3, 4], [3, 3]],
    }
    SearchSpace(OFA).validate(config)


def test_json_and_string_round_trip_exactly(space):
    rng = random.Random(1)
    for _ in range(50):
        config = space.sample(rng)
        text = config.to_json()
        assert SubnetConfig.from_json(text) == config
        assert SubnetConfig.from_json(text).to_json() == text  # byte for byte
        assert SubnetConfig.from_string(config.to_string()) == config
        assert space.parse(config.to_string()) == config


def test_fractional_expand_ratios_round_trip():
    config = SubnetConfig("x", 64, ((3, 5),), ((1.5, 2),))
    assert config.to_string() == "x r64 | k3e1.5 k5e2"
    assert SubnetConfig.from_string(config.to_string()) == config
    assert SubnetConfig.from_json(config.to_json()) == config
    # An integral float is the same ratio and prints as an int.
    assert SubnetConfig.from_json('{"layout": "x", "resolution": 64, "depth": [1], "kernel": [[3]], "expand": [[4.0]]}').to_json().endswith("[[4]]}")


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.update(kernel=[[3, 9]] + d["kernel"][1:]), "kernel[0][1] = 9"),
        (lambda d: d.update(expand=[[4, 5]] + d["expand"][1:]), "expand[0][1] = 5"),
        (lambda d: d.update(depth=[1] + d["depth"][1:], kernel=[[3]] + d["kernel"][1:], expand=[[4]] + d["expand"][1:]), "depth[0] = 1"),
        (lambda d: d.update(resolution=100), "resolution = 100"),
        (lambda d: d.update(layout="moofa"), "layout = 'moofa'"),
        (lambda d: d.update(depth=d["depth"][:4], kernel=d["kernel"][:4], expand=d["expand"][:4]), "4 stages"),
    ],
)
def test_validation_names_the_bad_field(mutate, field):
    space = SearchSpace(OFA)
    data = json.loads(space.max_config().to_json())
    data["depth"][0] = 2
    data["kernel"][0] = data["kernel"][0][:2]
    data["expand"][0] = data["expand"][0][:2]
    mutate(data)
    with pytest.raises(InputError, match=re.escape(field)):
        space.validate(SubnetConfig.from_dict(data))


@pytest.mark.parametrize(
    "text, message",
    [
        ("[1, 2]", "expected a JSON object"),
        ('{"layout": "ofa", "resolution": 224, "depth": [], "kernel": []}', "missing field 'expand'"),
        ('{"layout": "ofa", "resolution": 224, "depth": [], "kernel": [], "expand": [], "width": 1}', "unknown field 'width'"),
        ('{"layout": "ofa", "resolution": "224", "depth": [], "kernel": [], "expand": []}', "resolution = '224' is not an integer"),
        ('{"layout": "ofa", "resolution": 224, "depth": [2], "kernel": [[3]], "expand": [[4, 4]]}', r"kernel\[0\] lists 1 blocks but depth\[0\] = 2"),
        ('{"layout": "ofa", "resolution": 224, "depth": [1], "kernel": [[true]], "expand": [[4]]}', r"kernel\[0\]\[0\] = True is not an integer"),
        ("{nope", "not valid JSON"),
    ],
)
def test_malformed_json_is_an_input_error(text, message):
    with pytest.raises(InputError, match=message):
        SubnetConfig.from_json(text)


def test_malformed_block_string_is_an_input_error():
    with pytest.raises(InputError, match="should read like 'k5e4'"):
        SubnetConfig.from_string("ofa r224 | k3x4")
    with pytest.raises(InputError, match="LAYOUT rRESOLUTION"):
        SubnetConfig.from_string("ofa 224 | k3e4")


def test_sampling_mutation_and_crossover_stay_in_the_space(space):
    rng = random.Random(2)
    population = [space.sample(rng) for _ in range(30)]
    seen_depths = set()
    for _ in range(300):
        a, b = rng.choice(population), rng.choice(population)
        child = space.mutate(a, rng, arch_prob=0.3) if rng.random() < 0.5 else space.crossover(a, b, rng)
        space.validate(child)
        seen_depths.update(child.depths)
        population.append(child)
    assert seen_depths == set(space.depth_choices)
    assert space.mutate(population[0], rng, arch_prob=0.0, resolution_prob=0.0) == population[0]


def test_sampling_is_uniform_over_choices():
    space = SearchSpace(OFA, resolutions=(160, 192, 224))
    rng = random.Random(3)
    kernels = [k for _ in range(600) for ks in space.sample(rng).kernels for k in ks]
    counts = np.bincount(kernels)[[3, 5, 7]] / len(kernels)
    assert np.all(np.abs(counts - 1 / 3) < 0.03)


def test_encoding_is_fixed_length_one_hot(space):
    rng = random.Random(4)
    nk, ne = len(space.kernel_choices), len(space.expand_choices)
    for _ in range(20):
        config = space.sample(rng)
        vec = space.encode(config)
        assert vec.shape == (space.encoding_length,) == (20 * (nk + ne) + len(space.resolutions),)
        blocks = vec[: 20 * (nk + ne)].reshape(20, nk + ne)
        active = blocks.sum(axis=1)
        assert active.sum() == 2 * sum(config.depths)  # one kernel + one expand bit per active block
        assert vec[20 * (nk + ne):].sum() == 1
    assert space.encode_many([config, config]).shape == (2, space.encoding_length)


def test_coupled_mode_moves_depth_and_expand_together():
    space = SearchSpace(OFA, coupled=True)
    pairs = dict(zip(space.depth_choices, space.expand_choices))  # {2: 3, 3: 4, 4: 6}
    rng = random.Random(5)
    configs = [space.sample(rng) for _ in range(50)]
    for _ in range(200):
        configs.append(space.mutate(rng.choice(configs), rng, arch_prob=0.3))
        configs.append(space.crossover(rng.choice(configs), rng.choice(configs), rng))
    for c in configs:
        for ks, es in zip(c.kernels, c.expands):
            assert set(es) == {pairs[len(ks)]}
    bad = SubnetConfig("ofa", 224, ((3, 3),) * 5, ((6, 6),) * 5)
    with pytest.raises(InputError, match="coupled depth 2 goes with expand 3"):
        space.validate(bad)
    assert space.size() == (3**2 + 3**3 + 3**4) ** 5
    assert SearchSpace(OFA).size() == (9**2 + 9**3 + 9**4) ** 5
