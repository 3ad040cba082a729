"""`moofa-deploy --model M.onnx`: ONNX -> full-int8 TFLite (onnx2tf + TFLiteConverter) -> deploy."""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from moofa.cli import deploy_main
from toolchain.tflite.reader import read_model

onnx = pytest.importorskip("onnx")
# Never import onnx2tf here: importing it sets TF_USE_LEGACY_KERAS=1 for the whole process, and
# tf.keras turns into tf_keras for every later test (the conversion runs in a child process).
if importlib.util.find_spec("onnx2tf") is None:
    pytest.skip("onnx2tf is not installed (requirements.lock)", allow_module_level=True)

REPO = Path(__file__).resolve().parents[1]
SHAPE = (3, 16, 16)  # not Fashion-MNIST's 1x28x28, and 3 channels: onnx2tf's sample-download case


def _tiny_cnn():
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.ReLU6(),
        nn.Conv2d(8, 16, 1), nn.Hardswish(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    ).eval()
    with torch.no_grad():  # batch-norm statistics that are not the identity
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 2.0)
    return net


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    import torch

    root = tmp_path_factory.mktemp("onnx")
    net = _tiny_cnn()
    path = root / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(net, (torch.zeros(1, *SHAPE),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"])
    rng = np.random.default_rng(0)
    calib = root / "calib.npy"
    np.save(calib, rng.standard_normal((64, *SHAPE)).astype(np.float32))
    return path, calib, net


def deploy(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from moofa.cli import deploy_main; sys.exit(deploy_main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO, timeout=600)


@pytest.mark.slow
def test_onnx_deploys_as_full_int8_and_agrees_with_pytorch(onnx_model, tmp_path):
    import torch

    path, calib, net = onnx_model
    out = tmp_path / "out"
    r = deploy("--model", str(path), "--target", "nucleo-f746zg", "--out", str(out), "--calibration", str(calib), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["ok"] and s["fits"]
    assert s["measured"]["agrees"], s["measured"]  # TFLM-measured arena == prediction
    assert s["tflm_vs_litert"]["agree"] and s["tflm_vs_litert"]["max_abs_diff"] <= 1
    c = s["conversion"]
    assert c["onnx_input_shape"] == [1, 3, 16, 16] and c["tflite_input_shape"] == [1, 16, 16, 3]
    assert c["float_max_abs_diff"] < 1e-4 and c["calibration_samples"] == 64

    graph = read_model(out / "model.tflite")
    x, y = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    assert (x.dtype, y.dtype) == ("int8", "int8") and x.shape == (1, 16, 16, 3)
    assert "kInputShape[kInputDims] = {1, 16, 16, 3}" in (out / "model_config.h").read_text()
    conv_weights = [graph.tensors[op.inputs[1]] for op in graph.ops if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert conv_weights and all(w.dtype == "int8" and w.quant_channels > 1 for w in conv_weights)  # per-channel
    assert "1x16x16x3" in (out / "report.md").read_text()

    # int8 TFLite vs the PyTorch float network on fresh inputs (not the calibration ones).
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(out / "model.tflite"))
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    (si, zi), (so, zo) = i["quantization"], o["quantization"]
    fresh = np.random.default_rng(1).standard_normal((64, *SHAPE)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(fresh)).numpy()
    got = []
    for sample in fresh.transpose(0, 2, 3, 1):
        it.set_tensor(i["index"], np.clip(np.round(sample / si) + zi, -128, 127).astype(np.int8)[None])
        it.invoke()
        got.append((it.get_tensor(o["index"]).astype(np.float32) - zo) * so)
    got = np.concatenate(got)
    assert np.max(np.abs(got - expected)) < 0.05 * np.max(np.abs(expected))
    assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.9


def _run_in_process(capsys, *args: str) -> tuple[int, str]:
    rc = deploy_main(list(args))
    return rc, capsys.readouterr().err


def _unsupported_op_models(root: Path) -> list[Path]:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])
    paths = []
    # A standard op that onnx2tf cannot convert, and a custom-domain op.
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [4, 4])
    crop = helper.make_node("CenterCropPad", ["input", "shape"], ["y"], axes=[2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])
    m = helper.make_model(helper.make_graph([crop], "g", [x], [y], [shape]), opset_imports=[helper.make_opsetid("", 18)])
    paths.append(root / "centercrop.onnx")
    onnx.save(m, str(paths[-1]))
    custom = helper.make_node("Foo", ["input"], ["y"], domain="com.example")
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    m = helper.make_model(helper.make_graph([custom], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.example", 1)])
    paths.append(root / "custom.onnx")
    onnx.save(m, str(paths[-1]))
    return paths


def test_bad_onnx_exits_2_in_one_line_and_writes_nothing(onnx_model, tmp_path, capsys):
    path, calib, _ = onnx_model
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    text = tmp_path / "text.onnx"
    text.write_text("this is not a model\n" * 20)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    bad_calib = tmp_path / "bad_calib.npy"
    np.save(bad_calib, np.zeros((4, 16, 16, 3), np.float32))  # NHWC: the wrong layout for this model
    cases = [
        (truncated, ["--calibration", str(calib)], "truncated"),
        (text, ["--calibration", str(calib)], "not an ONNX model"),
        (empty, ["--calibration", str(calib)], "empty"),
        (path, [], "--calibration"),  # a 3x16x16 input: no default calibration data
        (path, ["--calibration", str(bad_calib)], "expected (N, 3, 16, 16)"),
        (path, ["--calibration", str(tmp_path / "missing.npy")], "no such file"),
    ] + [(p, ["--calibration", str(calib)], "unsupported ONNX op") for p in _unsupported_op_models(tmp_path)]
    for model, extra, words in cases:
        out = tmp_path / f"out-{model.stem}-{len(extra)}"
        rc, err = _run_in_process(capsys, "--model", str(model), "--target", "f746", "--out", str(out), *extra)
        assert rc == 2, (model, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert words in err, err
        assert not out.exists()  # nothing half-written


def _idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_shaped_models_calibrate_on_fashion_mnist_by_default(tmp_path, capsys):
    from moofa.deploy_onnx import FMNIST_CALIBRATION_IMAGES, onnx_calibration
    from toolchain.convert.onnx_import import OnnxModelInfo

    rng = np.random.default_rng(0)
    for split, n in (("train", 300), ("t10k", 10)):
        _idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    info = OnnxModelInfo("m.onnx", "input", (1, 1, 28, 28), False, "logits", ("Conv",), 17)
    x, source = onnx_calibration(info, None, str(tmp_path))
    assert x.shape == (FMNIST_CALIBRATION_IMAGES, 1, 28, 28) and x.dtype == np.float32
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1.0) < 0.05  # normalized with the dataset's statistics
    err = capsys.readouterr().err
    assert "Fashion-MNIST" in err and "--calibration" in err and len(err.strip().splitlines()) == 1
    assert re.search(r"mean [0-9.]+ and std [0-9.]+", source)


@pytest.mark.slow
@pytest.mark.parametrize("per_channel", [True, False])
def test_fully_connected_tail_follows_its_weight_quantization(per_channel, tmp_path):
    """TFLM allocates FULLY_CONNECTED's per-channel multiplier and shift arrays only for
    per-channel weights (ONNX models and older converters make per-tensor ones)."""
    from toolchain.memory.estimate import estimate_arena
    from toolchain.runtime.tf import quietly, tf_quiet
    from toolchain.runtime.tflm import measure

    tf = tf_quiet()
    tf.keras.backend.clear_session()
    model = tf.keras.Sequential([tf.keras.Input((24,), batch_size=1), tf.keras.layers.Dense(12), tf.keras.layers.Dense(10)])
    samples = np.random.default_rng(0).standard_normal((16, 1, 24)).astype(np.float32)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s] for s in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    converter._experimental_disable_per_channel_quantization_for_dense_layers = not per_channel
    path = tmp_path / "fc.tflite"
    path.write_bytes(quietly(converter.convert))
    graph = read_model(path)
    weights = [graph.tensors[op.inputs[1]] for op in graph.ops if op.kind == "FULLY_CONNECTED"]
    assert len(weights) == 2 and all((w.quant_channels > 1) == per_channel for w in weights)
    estimate, measured = estimate_arena(graph, pointer_bytes=8, kernel_library="reference"), measure(path)
    assert (estimate.arena_head_bytes, estimate.arena_tail_bytes) == (measured.arena_head_bytes, measured.arena_tail_bytes)


def test_cross_check_tolerates_a_few_quantization_steps_for_integer_outputs():
    from toolchain.deploy.pipeline import CrossCheck

    def result(identical, max_diff, tolerance):
        return CrossCheck(32, identical, max_diff, 0 if identical else 2, tolerance)

    assert result(True, 0, 1).agree and result(True, 0, 1).text() == "identical"
    assert result(False, 1, 1).agree and "2 of 32 inputs differ, by at most 1" in result(False, 1, 1).text()
    assert result(False, 2, 2).agree and "within 2 quantization steps" in result(False, 2, 2).text()
    assert not result(False, 2, 1).agree and "DIFFERENT" in result(False, 2, 1).text()
    assert not result(False, 1e-6, 0).agree  # float outputs: exact
    # compare() measures it from the outputs: steps count for integer outputs only
    a = np.zeros((3, 4), np.int8)
    b = a.copy()
    b[1, 2] = 2
    assert CrossCheck.compare(a, b, 2) == CrossCheck(3, False, 2.0, 1, 2.0)
    assert not CrossCheck.compare(a.astype(np.float32), b.astype(np.float32), 2).agree
