"""The table of tensor types TFLM's kernels accept (toolchain/memory/kernel_dtypes.py).

Each refusal the table predicts is checked against the independent truth: the real TFLM host
interpreter (``measure``: AllocateTensors + Invoke) refuses the same model. The corpus (every
model TFLM runs) must get no refusal, and a supported type must pass both.
"""

from __future__ import annotations

import numpy as np
import pytest

from toolchain.errors import InputError
from toolchain.ir.graph import Graph, Op, Tensor
from toolchain.memory.coverage import _PREPARE_CHECKS, TFLM_BUILTIN_OPS
from toolchain.memory.kernel_dtypes import EVAL, KERNEL_DTYPES, LEFT_OUT, PREPARE, dtype_refusals
from toolchain.runtime.tflm import measure
from toolchain.tflite.reader import parse_model, read_model


def _convert(tf, converter, path):
    from toolchain.runtime.tf import quietly

    path.write_bytes(quietly(converter.convert))
    return path


def _keras(tf, model, path, *, int8=False, dynamic_range=False, shape=None):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8 or dynamic_range:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if int8:
        rng = np.random.default_rng(0)

        def data():
            for _ in range(8):
                yield [rng.uniform(-1, 1, (1, *shape)).astype(np.float32)]

        converter.representative_dataset = data
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return _convert(tf, converter, path)


def _function(tf, fn, specs, path):
    f = tf.function(fn, input_signature=specs)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    return _convert(tf, converter, path)


def _refused_by_table_and_tflm(path, kind: str, stage: str) -> list[str]:
    refusals = dtype_refusals(read_model(path))
    assert refusals, f"the table lets {kind} through"
    assert all(kind in r for r in refusals) and any(f"fails in {stage}," in r for r in refusals), refusals
    with pytest.raises(InputError):  # the independent truth: TFLM itself refuses it
        measure(path)
    return refusals


def _runs_and_not_refused(path, kind: str) -> None:
    graph = read_model(path)
    assert kind in graph.op_kinds
    assert dtype_refusals(graph) == []
    measure(path)  # raises InputError if TFLM cannot run it


@pytest.fixture(scope="module")
def tf():
    from toolchain.runtime.tf import tf_quiet

    return tf_quiet()


@pytest.mark.slow
def test_int8_exp_is_refused_as_tflm_refuses_it(tf, tmp_path):
    """exp.cc's Prepare takes float32 only; the converter writes an int8 EXP for a quantized model."""
    inp = tf.keras.Input((4, 4, 2), batch_size=1)
    model = tf.keras.Model(inp, tf.keras.layers.Lambda(lambda x: tf.exp(x))(inp))
    path = _keras(tf, model, tmp_path / "exp_int8.tflite", int8=True, shape=(4, 4, 2))
    graph = read_model(path)
    assert "EXP" in graph.op_kinds
    (refusal,) = _refused_by_table_and_tflm(path, "EXP", PREPARE)
    assert "int8" in refusal and "float32" in refusal and "exp.cc" in refusal and "AllocateTensors" in refusal


@pytest.mark.slow
def test_float32_exp_runs_and_is_not_refused(tf, tmp_path):
    inp = tf.keras.Input((4, 4, 2), batch_size=1)
    model = tf.keras.Model(inp, tf.keras.layers.Lambda(lambda x: tf.exp(x))(inp))
    _runs_and_not_refused(_keras(tf, model, tmp_path / "exp_f32.tflite"), "EXP")


@pytest.mark.slow
def test_int32_floor_div_fails_at_invoke_as_in_tflm(tf, tmp_path):
    """floor_div.cc's Eval takes float32 only: AllocateTensors succeeds, Invoke fails."""
    spec = [tf.TensorSpec((1, 8), tf.int32), tf.TensorSpec((1, 8), tf.int32)]
    path = _function(tf, lambda a, b: tf.math.floordiv(a, b), spec, tmp_path / "floordiv_i32.tflite")
    (refusal,) = _refused_by_table_and_tflm(path, "FLOOR_DIV", EVAL)
    assert "int32" in refusal and "Invoke" in refusal


@pytest.mark.slow
def test_int32_neg_is_refused_as_tflm_refuses_it(tf, tmp_path):
    spec = [tf.TensorSpec((1, 8), tf.int32)]
    path = _function(tf, lambda a: tf.negative(a), spec, tmp_path / "neg_i32.tflite")
    _refused_by_table_and_tflm(path, "NEG", EVAL)


@pytest.mark.slow
def test_int64_shape_is_refused_as_tflm_refuses_it(tf, tmp_path):
    """shape.cc's Eval writes an int32 output only; out_type=tf.int64 (dynamic batch keeps SHAPE)."""
    spec = [tf.TensorSpec((None, 8), tf.float32)]
    path = _function(tf, lambda a: tf.shape(a, out_type=tf.int64), spec, tmp_path / "shape_i64.tflite")
    _refused_by_table_and_tflm(path, "SHAPE", EVAL)


@pytest.mark.slow
def test_int64_arg_max_is_refused_as_tflm_refuses_it(tf, tmp_path):
    """tf.argmax's default output type is int64; arg_min_max.cc's Eval writes int32 only."""
    spec = [tf.TensorSpec((1, 10), tf.float32)]
    path = _function(tf, lambda a: tf.argmax(a, axis=1), spec, tmp_path / "argmax_i64.tflite")
    (refusal,) = _refused_by_table_and_tflm(path, "ARG_MAX", EVAL)
    assert "int64" in refusal
    ok = _function(tf, lambda a: tf.argmax(a, axis=1, output_type=tf.int32), spec, tmp_path / "argmax_i32.tflite")
    _runs_and_not_refused(ok, "ARG_MAX")


@pytest.mark.slow
def test_hybrid_fully_connected_is_refused_as_tflm_refuses_it(tf, tmp_path):
    """Dynamic-range quantization: float32 input with int8 weights, which fully_connected.cc's
    Prepare refuses (float32 input takes float32 weights only)."""
    inp = tf.keras.Input((64,), batch_size=1)
    model = tf.keras.Model(inp, tf.keras.layers.Dense(64)(inp))
    path = _keras(tf, model, tmp_path / "fc_hybrid.tflite", dynamic_range=True)
    graph = read_model(path)
    fc = next(op for op in graph.ops if op.kind == "FULLY_CONNECTED")
    assert (graph.tensors[fc.inputs[0]].dtype, graph.tensors[fc.inputs[1]].dtype) == ("float32", "int8")
    (refusal,) = _refused_by_table_and_tflm(path, "FULLY_CONNECTED", PREPARE)
    assert "weights" in refusal and "float32" in refusal and "int8" in refusal


@pytest.mark.slow
def test_int8_fully_connected_with_int8_weights_runs_and_is_not_refused(tf, tmp_path):
    inp = tf.keras.Input((64,), batch_size=1)
    model = tf.keras.Model(inp, tf.keras.layers.Dense(16)(inp))
    _runs_and_not_refused(_keras(tf, model, tmp_path / "fc_int8.tflite", int8=True, shape=(64,)), "FULLY_CONNECTED")


@pytest.mark.slow
def test_no_corpus_model_is_refused(corpus):
    """Every corpus model runs on TFLM (tests/test_verify.py measures them all)."""
    for name, path in corpus.items():
        assert dtype_refusals(read_model(path)) == [], name


@pytest.mark.slow
def test_no_calibration_model_is_refused():
    """The calibration models of bench/calibrate_tail.py that prove an op exact all run on TFLM
    (their tails are measured there): 80-odd op kinds, none refused."""
    import importlib.util
    import sys
    from pathlib import Path

    from toolchain.memory.coverage import PROOF

    path = Path(__file__).resolve().parents[1] / "bench" / "calibrate_tail.py"
    module = sys.modules.get("calibrate_tail")
    if module is None:
        spec = importlib.util.spec_from_file_location("calibrate_tail", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["calibrate_tail"] = module  # its dataclasses look themselves up there
        spec.loader.exec_module(module)
    names = sorted({name for where, name in PROOF.values() if where == "bench/calibrate_tail.py"})
    out = module.cache_dir()
    for name in names:
        path = module.build(name, out)
        assert dtype_refusals(parse_model(path.read_bytes(), str(path), control_flow=True)) == [], name


def test_table_names_only_tflm_builtins_and_skips_the_hand_written_checks():
    assert set(KERNEL_DTYPES) <= set(TFLM_BUILTIN_OPS)
    assert not set(KERNEL_DTYPES) & set(_PREPARE_CHECKS)
    assert set(KERNEL_DTYPES) | set(LEFT_OUT) == set(TFLM_BUILTIN_OPS)
    for kind, kernel in KERNEL_DTYPES.items():
        assert kernel.source.endswith(".cc") and kernel.rules, kind
        assert all(rule.stage in (PREPARE, EVAL) for rule in kernel.rules), kind


def _graph(kind, in_types, out_types, inputs=None):
    tensors = [Tensor(f"t{k}", (1, 4), t) for k, t in enumerate([*in_types, *out_types])]
    ins = tuple(range(len(in_types))) if inputs is None else tuple(inputs)
    outs = tuple(range(len(in_types), len(in_types) + len(out_types)))
    return Graph(tensors, [Op(kind, ins, outs)], [0], [outs[0]] if outs else [0])


def test_combinations_and_stages_on_hand_built_graphs():
    # CONV_2D: int8 input with int4 or int8 filter, int16 with int8, float32 with float32.
    assert dtype_refusals(_graph("CONV_2D", ["int8", "int4", "int32"], ["int8"])) == []
    assert dtype_refusals(_graph("CONV_2D", ["int16", "int8", "int64"], ["int16"])) == []
    (r,) = dtype_refusals(_graph("CONV_2D", ["int16", "int4", "int64"], ["int16"]))
    assert r.startswith("op #0 CONV_2D: ") and "filter" in r and "AllocateTensors" in r
    (r,) = dtype_refusals(_graph("CONV_2D", ["int16", "int8", "int16"], ["int16"]))  # int16 bias
    assert "bias" in r and "Invoke" in r
    # Bias-free (an absent optional input, -1): no rule about it applies.
    assert dtype_refusals(_graph("CONV_2D", ["int16", "int8"], ["int16"], inputs=[0, 1, -1])) == []
    # DEPTHWISE_CONV_2D: int16 filter passes Prepare (same type) but Eval takes only int8 for int16.
    (r,) = dtype_refusals(_graph("DEPTHWISE_CONV_2D", ["int16", "int16", "int64"], ["int16"]))
    assert "Invoke" in r
    # A Prepare failure is reported before an Eval one of the same op.
    (r,) = dtype_refusals(_graph("FLOOR_DIV", ["int32", "int8"], ["int32"]))
    assert "AllocateTensors" in r
    # QUANTIZE pairs.
    assert dtype_refusals(_graph("QUANTIZE", ["float32"], ["int8"])) == []
    (r,) = dtype_refusals(_graph("QUANTIZE", ["float32"], ["int32"]))
    assert "Invoke" in r


def test_never_raises_on_broken_graphs():
    tensors = [Tensor("a", (1,), "int8"), Tensor("b", (1,), "weird")]
    ops = [Op("EXP", (), ()), Op("EXP", (-1,), (5,)), Op("EXP", (99,), (0,)), Op("FULLY_CONNECTED", (0, 99, -7), (1,)),
           Op("NOT_AN_OP", (0,), (1,)), Op("CONV_2D", (1, 0), (0,)), Op("TRANSPOSE_CONV", (0,), (0,))]
    graph = Graph(tensors, ops, [0], [1])
    refusals = dtype_refusals(graph)
    assert all(isinstance(r, str) for r in refusals)
    assert any(r.startswith("op #5 CONV_2D") for r in refusals)
    graph.subgraphs = [Graph([Tensor("c", (1,), "int8")], [Op("EXP", (0,), (0,))], [0], [0])]
    assert any(r.startswith("subgraph 1 op #0 EXP") for r in dtype_refusals(graph))
