"""Mutated real models must never crash the reader or the memory model.

Every outcome is either a prediction or an InputError (what the CLI turns into one line and
exit 2). Hypothesis flips, inserts and truncates bytes of three corpus models.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolchain.errors import InputError
from toolchain.memory.estimate import estimate_arena
from toolchain.tflite.reader import parse_model

SEEDS = ("fc_only", "ds_cnn_kws", "mbconv_se_hswish")


@pytest.fixture(scope="module")
def seeds(corpus):
    return [corpus[name].read_bytes() for name in SEEDS]


mutation = st.tuples(st.sampled_from(["flip", "set", "insert", "delete"]), st.integers(0, 1 << 30), st.integers(0, 255))


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, len(SEEDS) - 1), mutations=st.lists(mutation, min_size=1, max_size=8), cut=st.one_of(st.none(), st.integers(0, 1 << 30)))
def test_mutated_models_never_crash(seeds, which, mutations, cut):
    data = bytearray(seeds[which])
    for kind, pos, value in mutations:
        pos %= max(len(data), 1)
        if kind == "flip":
            data[pos] ^= 1 << (value % 8)
        elif kind == "set":
            data[pos] = value
        elif kind == "insert":
            data.insert(pos, value)
        elif data:
            del data[pos]
    if cut is not None:
        del data[cut % (len(data) + 1):]
    try:
        graph = parse_model(bytes(data), "fuzz.tflite")
    except InputError as e:
        assert "\n" not in str(e) and str(e).startswith("fuzz.tflite")
        return
    estimate = estimate_arena(graph, 8, "reference")
    assert estimate.arena_head_bytes >= estimate.lower_bound_bytes >= 0
