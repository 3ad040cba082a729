"""PyTorch -> int8 TFLite export: exact rebuild, lean graph, TFLM runs it and matches LiteRT."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from toolchain.convert.export import _same_padding, export_int8, export_onnx  # noqa: E402
from toolchain.errors import InputError  # noqa: E402
from toolchain.memory.estimate import estimate_arena  # noqa: E402
from toolchain.runtime.tflm import measure  # noqa: E402
from toolchain.tflite.reader import read_model  # noqa: E402


class MBConv(nn.Module):
    """Inverted residual with TF-SAME padding done by F.pad, squeeze-excite and hard-swish."""

    def __init__(self, cin, mid, cout, k, stride, size, se=True):
        super().__init__()
        top, bottom = _same_padding(size, k, stride)
        self.pad = (top, bottom, top, bottom)
        self.expand, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.dw, self.bn2 = nn.Conv2d(mid, mid, k, stride, 0, groups=mid, bias=False), nn.BatchNorm2d(mid)
        self.se = se
        self.pool, self.squeeze, self.excite = nn.AdaptiveAvgPool2d(1), nn.Conv2d(mid, mid // 4, 1), nn.Conv2d(mid // 4, mid, 1)
        self.proj, self.bn3 = nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.residual = cin == cout and stride == 1

    def forward(self, x):
        y = F.hardswish(self.bn1(self.expand(x)))
        y = F.hardswish(self.bn2(self.dw(F.pad(y, self.pad))))
        if self.se:
            y = y * F.hardsigmoid(self.excite(F.relu(self.squeeze(self.pool(y)))))
        y = self.bn3(self.proj(y))
        return x + y if self.residual else y


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.bn, self.act = nn.Conv2d(1, 16, 3, 2, 0, bias=False), nn.BatchNorm2d(16), nn.Hardswish()
        self.blocks = nn.Sequential(
            MBConv(16, 48, 16, 3, 1, 16), MBConv(16, 64, 24, 5, 2, 16), MBConv(24, 72, 24, 3, 1, 8, se=False)
        )
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(24, 10)

    def forward(self, x):
        x = self.act(self.bn(self.stem(F.pad(x, (0, 1, 0, 1)))))
        return self.fc(torch.flatten(self.pool(self.blocks(x)), 1))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    net = TinyNet()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    images = np.random.default_rng(0).standard_normal((96, 1, 32, 32)).astype(np.float32)
    path = tmp_path_factory.mktemp("export") / "tiny.tflite"
    return net.eval(), images, export_int8(net, images, path)


def test_rebuild_is_exact_and_graph_is_lean(exported):
    _, _, result = exported
    assert result.float_max_abs_diff < 1e-5
    graph = read_model(result.path)
    kinds = [op.kind for op in graph.ops]
    # SAME padding absorbed, BN folded, NHWC throughout: no PAD, TRANSPOSE or RESHAPE.
    assert not {"PAD", "TRANSPOSE", "RESHAPE", "QUANTIZE", "DEQUANTIZE"} & set(kinds)
    assert kinds.count("DEPTHWISE_CONV_2D") == 3 and kinds.count("ADD") == 2
    x, y = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    assert (x.dtype, x.shape, y.dtype, y.shape) == ("int8", (1, 32, 32, 1), "int8", (1, 10))
    weights = [graph.tensors[op.inputs[1]] for op in graph.ops if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert all(w.dtype == "int8" and w.quant_channels == w.shape[0 if w.shape[0] > 1 else -1] for w in weights)


def test_int8_model_tracks_the_float_network(exported):
    from ai_edge_litert.interpreter import Interpreter

    net, images, result = exported
    it = Interpreter(model_path=str(result.path))
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    (si, zi), (so, zo) = i["quantization"], o["quantization"]
    agree = 0
    for image in images[:48]:
        q = np.clip(np.round(image.transpose(1, 2, 0) / si) + zi, -128, 127).astype(np.int8)[None]
        it.set_tensor(i["index"], q)
        it.invoke()
        got = (it.get_tensor(o["index"]).astype(np.float32) - zo) * so
        with torch.no_grad():
            want = net(torch.from_numpy(image[None])).numpy()
        agree += int(np.argmax(got) == np.argmax(want))
    assert agree >= 40  # int8 keeps the float network's decision on >= 83% of random inputs


def test_tflm_runs_the_export_with_the_predicted_arena(exported):
    _, _, result = exported
    m = measure(result.path)
    e = estimate_arena(read_model(result.path), 8, "reference")
    assert (e.arena_head_bytes, e.arena_tail_bytes) == (m.arena_head_bytes, m.arena_tail_bytes)


def test_unsupported_layers_are_named(tmp_path):
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.up = nn.Upsample(scale_factor=2)

        def forward(self, x):
            return self.up(self.conv(x))

    with pytest.raises(InputError, match="upsample|interpolate"):
        export_int8(Odd(), np.zeros((2, 1, 8, 8), np.float32), tmp_path / "odd.tflite")
    assert not (tmp_path / "odd.tflite").exists()


def test_onnx_export_matches_torch_with_the_tflite_graph_shape(exported, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    net, images, _ = exported
    result = export_onnx(net, images[:4], tmp_path / "tiny.onnx")
    model = onnx.load(str(result.path))
    onnx.checker.check_model(model, full_check=True)
    kinds = [n.op_type for n in model.graph.node]
    # batch-norm folded, TF-SAME F.pad folded into the convolutions' pads: the stem's (0, 1, 0, 1)
    # pad is SAME for a 3x3 stride-2 conv on 32x32, so no Pad node at all
    assert "BatchNormalization" not in kinds and "Pad" not in kinds
    assert kinds.count("Conv") == 1 + 3 * 3 + 2 * 2 and kinds.count("Gemm") == 1
    assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == ["logits"]
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run(None, {"input": x[None]})[0] for x in images[:16]])
    with torch.no_grad():
        expected = net(torch.from_numpy(images[:16])).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    again = export_onnx(net, images[:4], tmp_path / "again.onnx")
    assert again.path.read_bytes() == result.path.read_bytes()


def test_onnx_export_keeps_a_pad_that_is_not_same(tmp_path):
    ort = pytest.importorskip("onnxruntime")

    class Padded(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, 2)

        def forward(self, x):
            y = F.pad(x, (2, 0, 1, 0))  # not TF's SAME for this conv: becomes the Conv's pads
            return F.relu6(self.conv(y) * 0.5 + 1.0).mean((2, 3))

    net = Padded().eval()
    x = np.random.default_rng(1).standard_normal((3, 1, 9, 9)).astype(np.float32)
    result = export_onnx(net, x, tmp_path / "p.onnx")
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run(None, {"input": s[None]})[0] for s in x])
    np.testing.assert_allclose(got, net(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


def test_onnx_export_names_unsupported_layers(tmp_path):
    class Odd(nn.Module):
        def forward(self, x):
            return torch.tanh(x)

    with pytest.raises(InputError, match="tanh"):
        export_onnx(Odd(), np.zeros((1, 1, 4, 4), np.float32), tmp_path / "odd.onnx")
    assert not (tmp_path / "odd.onnx").exists()


def _litert_logits(path, images):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    (si, zi), (so, zo) = i["quantization"], o["quantization"]
    out = []
    for image in images:
        it.set_tensor(i["index"], np.clip(np.round(image.transpose(1, 2, 0) / si) + zi, -128, 127).astype(np.int8)[None])
        it.invoke()
        out.append((it.get_tensor(o["index"]).astype(np.float64) - zo) * so)
    return np.concatenate(out)


def test_int8_errors_cover_every_op_and_agree_with_the_export(exported):
    """Per-op SQNR of the int8 export: one row per op of the exported model, in its order; the
    logits' SQNR is the one PyTorch's float logits and export_int8's model give on the same images."""
    from toolchain.convert.int8_error import int8_errors

    net, images, result = exported
    errors = int8_errors(net, images, images[:32])
    graph = read_model(result.path)
    assert [e.kind for e in errors.ops] == [op.kind for op in graph.ops] and errors.images == 32
    assert [e.shape for e in errors.ops] == [graph.tensors[op.outputs[0]].shape for op in graph.ops]
    with torch.no_grad():
        want = net(torch.from_numpy(images[:32])).numpy().astype(np.float64)
    got = _litert_logits(result.path, images[:32])
    direct = 10 * np.log10(np.sum(want**2) / np.sum((got - want) ** 2))
    assert abs(errors.output_sqnr_db - direct) < 0.5, (errors.output_sqnr_db, direct)
    # Random weights and inputs: every tensor keeps 20-60 dB (pooling averages noise away: SQNR can rise).
    assert 30 < errors.input_sqnr_db < 60 and all(20 < e.sqnr_db < 60 for e in errors.ops), [round(e.sqnr_db, 1) for e in errors.ops]
    worst = errors.worst(3)
    assert len(worst) == 3 and worst[0].drop_db >= worst[1].drop_db >= worst[2].drop_db
    # No channel of a calibrated output spans more than the 255 steps of int8, and the logits' narrowest
    # class spans what its own float range over these images says (checked from the float side).
    assert all(0 < e.narrowest_steps <= 255.5 for e in errors.ops), [e.narrowest_steps for e in errors.ops]
    spans = want.max(axis=0) - want.min(axis=0)
    assert errors.ops[-1].narrowest_steps == pytest.approx(spans.min() / errors.ops[-1].scale, rel=0.02)


def test_int8_errors_point_at_the_layer_that_loses_precision(exported):
    """One expand channel of the last block made 1000x larger (its projection weights zeroed, so the
    float network is unchanged) crushes that block's other channels into a few int8 steps: every
    op before it keeps its SQNR, the logits lose most of theirs, and the first op that differs is
    that block's expand convolution."""
    import copy

    from toolchain.convert.int8_error import int8_errors

    net, images, _ = exported
    clean = copy.deepcopy(net)
    block = clean.blocks[2]
    with torch.no_grad():
        block.proj.weight[:, 0] = 0.0
    broken = copy.deepcopy(clean)
    with torch.no_grad():
        broken.blocks[2].bn1.weight[0] *= 1000.0
        broken.blocks[2].bn1.bias[0] = 1000.0
        assert torch.allclose(clean(torch.from_numpy(images[:4])), broken(torch.from_numpy(images[:4])), atol=1e-4)
    a, b = int8_errors(clean, images, images[:32]), int8_errors(broken, images, images[:32])
    first = next(i for i, (x, y) in enumerate(zip(a.ops, b.ops)) if abs(x.sqnr_db - y.sqnr_db) > 0.05)
    assert b.ops[first].kind == "CONV_2D" and b.ops[first].shape == (1, 8, 8, 72)
    assert all(x.sqnr_db == y.sqnr_db for x, y in zip(a.ops[:first], b.ops[:first]))
    assert b.output_sqnr_db < a.output_sqnr_db - 10, (a.output_sqnr_db, b.output_sqnr_db)
    # ... and that op says why: its other channels now span a few int8 steps, not tens.
    assert b.ops[first].narrowest_steps < 5 < a.ops[first].narrowest_steps, (a.ops[first].narrowest_steps, b.ops[first].narrowest_steps)
