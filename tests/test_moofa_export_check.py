"""The analytic graph against the real thing: a subnet extracted from the supernet, exported by
the toolchain's int8 exporter (Keras rebuild + TFLiteConverter) and read back, has exactly the
analytic graph's ops, tensors, weights and arena."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorflow")

from moofa.analytic import Pricer, subnet_graph  # noqa: E402
from moofa.layouts import get_layout  # noqa: E402
from moofa.space import SubnetConfig  # noqa: E402
from moofa.supernet import Supernet  # noqa: E402
from toolchain.export import export_int8  # noqa: E402
from toolchain.memory import estimate_arena  # noqa: E402
from toolchain.tflite_reader import read_model  # noqa: E402


def test_exported_subnet_matches_the_analytic_graph(tmp_path):
    torch.set_num_threads(1)
    layout = get_layout("moofa", 28, 1, 10)
    # Residual blocks, squeeze-excite, both activations, a stride-2 7x7 depthwise on an even map.
    config = SubnetConfig.from_string("moofa r28 | k7e2 k3e4 | k5e3 k3e2 | k3e2 k7e2 | k3e2 k3e2 | k5e2 k3e2")
    net = Supernet(layout).eval()
    path = tmp_path / "subnet.tflite"
    result = export_int8(net.extract(config), np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32), path)
    real, analytic = read_model(path), subnet_graph(layout, config)
    assert [op.kind for op in real.ops] == [op.kind for op in analytic.ops]  # no PAD, no RESHAPE
    assert len(real.tensors) == len(analytic.tensors)
    assert real.constant_bytes() == analytic.constant_bytes()
    assert sum(t.quant_channels for t in real.tensors) == sum(t.quant_channels for t in analytic.tensors)
    for library, pointer in [("reference", 8), ("cmsis-nn", 4)]:
        measured, predicted = estimate_arena(real, pointer, library), Pricer(layout, pointer_bytes=pointer, kernel_library=library)(config)
        assert (measured.arena_head_bytes, measured.arena_tail_bytes) == (predicted.arena_head_bytes, predicted.arena_tail_bytes)
    assert abs(Pricer(layout)(config).flash_bytes - result.model_bytes) < 0.01 * result.model_bytes
