"""Hand-designed baselines of the claim benchmark: they build, run, and export by the supernets' path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moofa.arch.baselines import make_baseline
from toolchain.errors import InputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name, params", [("mobilenetv2-0.35", 408_650), ("mobilenetv2-0.5", 700_202), ("dscnn-s", 21_066),
                                          ("dscnn-m", 125_170), ("cnn3", 94_186)])
def test_baselines_build_at_fashion_mnist_size(name, params):
    net = make_baseline(name, 28, 1, 10).eval()
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert sum(p.numel() for p in net.parameters()) == params


def test_unknown_baseline_is_one_line():
    for bad in ("resnet", "mobilenetv2-x", "mobilenetv2-0", "dscnn-xl"):
        with pytest.raises(InputError, match="baseline"):
            make_baseline(bad)


def test_a_baseline_exports_to_int8_with_an_exact_arena(tmp_path):
    from toolchain.convert.export import export_int8
    from toolchain.memory.estimate import estimate_arena
    from toolchain.tflite.reader import read_model

    net = make_baseline("dscnn-s").eval()
    result = export_int8(net, np.random.default_rng(0).standard_normal((16, 1, 28, 28)).astype(np.float32), tmp_path / "m.tflite")
    assert set(result.op_kinds) == {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED"}
    assert estimate_arena(read_model(str(result.path)), 4, "cmsis-nn").tail_exact
