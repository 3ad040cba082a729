"""The op coverage table is true: every op it calls exact is proved by a model TFLM measures equal
to the prediction, a model with an op it does not cover is marked approximate (and --strict
refuses it), and a model TFLM's kernels would refuse in Prepare is reported as such, not "fits"."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from toolchain.firmware.codegen import RESOLVER_METHODS

from toolchain.memory.coverage import (
    MODELLED,
    PROOF,
    TFLM_BUILTIN_OPS,
    TFLM_CUSTOM_OPS,
    coverage_markdown,
    exactness,
    tflm_refusals,
    unmodelled_ops,
)
from toolchain.memory.estimate import estimate_arena
from toolchain.memory.persistent import HOST_KERNELS
from toolchain.runtime.tflm import measure
from toolchain.tflite.reader import read_model

REPO = Path(__file__).resolve().parents[1]


def moofa(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "moofa", *args], capture_output=True, text=True, cwd=REPO, timeout=300)


def test_docs_ops_md_is_the_generated_table():
    assert (REPO / "docs" / "OPS.md").read_text() == coverage_markdown() + "\n", "regenerate: moofa ops --markdown > docs/OPS.md"
    r = moofa("ops", "--json")
    rows = json.loads(r.stdout)
    assert r.returncode == 0 and len(rows) == len(TFLM_BUILTIN_OPS) + len(TFLM_CUSTOM_OPS)
    assert {("CUSTOM:" if row["custom"] else "") + row["op"] for row in rows if row["modelled"]} == MODELLED  # the reader's names


def test_ops_with_tail_figures_but_no_proof_are_not_called_exact(monkeypatch):
    from toolchain.ir.graph import Graph, Tensor
    from toolchain.memory import coverage

    assert MODELLED <= set(HOST_KERNELS)
    # An op kind with figures but no model that measured them (MINIMUM had figures long before
    # minimum2 proved them) stays approximate: exactness follows PROOF, not the figures.
    graph = Graph([Tensor("x", (1, 4), "int8", quant_channels=1), Tensor("y", (1, 4), "int8", quant_channels=1)], [], [0], [1])
    graph.add_op("MINIMUM", [0, 0], [1])
    assert "MINIMUM" in HOST_KERNELS and unmodelled_ops(graph) == ()
    monkeypatch.setattr(coverage, "MODELLED", MODELLED - {"MINIMUM"})
    assert coverage.unmodelled_ops(graph) == ("MINIMUM",) and not coverage.exactness(graph, 8, "reference").exact


@pytest.mark.parametrize("op", sorted(k for k, (where, _) in PROOF.items() if where == "tests/corpus.py"))
def test_each_corpus_proof_has_the_op_and_is_exact(op, corpus):
    _, name = PROOF[op]
    graph = read_model(corpus[name])
    assert op in graph.op_kinds
    estimate, measured = estimate_arena(graph, 8, "reference"), measure(corpus[name])
    assert measured.agrees_with(estimate)


@pytest.mark.slow
def test_each_calibration_proof_has_the_op_and_is_exact():
    calibrate_tail = _calibration_module()
    proofs: dict[str, set[str]] = {}
    for op, (where, name) in PROOF.items():
        if where == "bench/calibrate_tail.py":
            proofs.setdefault(name, set()).add(op)
    out = calibrate_tail.cache_dir()
    for name, ops in sorted(proofs.items()):
        assert name in calibrate_tail.MODELS, name
        row = calibrate_tail.calibrate(name, calibrate_tail.build(name, out))
        assert ops <= set(row["ops"]) and row["ok"], row


def _pinned_tflm_header() -> str | None:
    """micro_mutable_op_resolver.h of the pinned TFLM, from $MOOFA_TFLM_SRC or the shared archive."""
    rel = "tensorflow/lite/micro/micro_mutable_op_resolver.h"
    from toolchain.runtime import cortexm

    unpacked = cortexm.cache_root() / "tflm" / cortexm.TFLM_COMMIT / "tflite-micro"  # what the Cortex-M builds unpack
    for root in filter(None, (os.environ.get("MOOFA_TFLM_SRC"), str(Path.home() / ".cache/moofa/src/tflite-micro"), str(unpacked))):
        if (Path(root) / rel).is_file():
            return (Path(root) / rel).read_text()
    archive = REPO.parent / "shared" / "third_party" / "tflm-src-90b983c2.tar.xz"
    if archive.is_file():
        with tarfile.open(archive) as tar:
            return tar.extractfile(f"tflite-micro/{rel}").read().decode()
    return None


def test_the_op_lists_are_the_pinned_tflm_resolvers():
    header = _pinned_tflm_header()
    if header is None:
        pytest.skip("no tflite-micro source tree here (set MOOFA_TFLM_SRC)")
    assert set(re.findall(r"AddBuiltin\(BuiltinOperator_([A-Z0-9_]+)", header)) == set(TFLM_BUILTIN_OPS)
    methods = dict((op, m) for m, op in re.findall(r"TfLiteStatus (Add\w+)\([^{]*\{\s*return AddBuiltin\(BuiltinOperator_([A-Z0-9_]+)", header))
    assert RESOLVER_METHODS == methods  # the firmware registers every op TFLM has, by its own method
    customs = set(re.findall(r'AddCustom\(\s*"([A-Za-z0-9_]+)"', header))
    assert customs <= set(TFLM_CUSTOM_OPS) and len(set(TFLM_CUSTOM_OPS) - customs) <= 1  # + the Ethos-U name


@pytest.fixture(scope="module")
def add_n_model(tmp_path_factory) -> Path:
    """float32 ADD_N of three tensors, converted by TensorFlow."""
    from toolchain.runtime.tf import quietly, tf_quiet

    tf = tf_quiet()
    fn = tf.function(lambda x: tf.math.add_n([x, x * 2.0, x * 3.0]), input_signature=[tf.TensorSpec([1, 8, 8, 1], tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
    path = tmp_path_factory.mktemp("add_n") / "add_n.tflite"
    path.write_bytes(quietly(converter.convert))
    return path


def test_add_n_is_exact_and_its_scratch_is_a_pointer_per_input(add_n_model):
    """ADD_N asks for one pointer per input: 8 bytes each on the host, 4 on a Cortex-M build."""
    from toolchain.memory.scratch import scratch_requests

    graph = read_model(add_n_model)
    assert "ADD_N" in graph.op_kinds and unmodelled_ops(graph) == ()
    assert measure(add_n_model).agrees_with(estimate_arena(graph, 8, "reference"))
    add_n = [i for i, op in enumerate(graph.ops) if op.kind == "ADD_N"]
    for pointer_bytes in (8, 4):
        sizes = [r.size_bytes for r in scratch_requests(graph, "cmsis-nn", pointer_bytes) if r.op_index in add_n]
        assert sizes == [3 * pointer_bytes]


def test_an_unmodelled_op_is_approximate_in_every_output_and_strict_refuses_it(corpus, tmp_path):
    """A Vela-compiled model's ``ethos-u`` op (TFLM registers it for the NPU; moofa has no
    figures for it) makes every target approximate."""
    from ai_edge_litert import schema_py_generated as schema

    model = _with_custom_ops(corpus["fc_only"], tmp_path / "vela.tflite", [("ethos-u", schema.TensorType.INT8)])
    graph = read_model(model)
    assert unmodelled_ops(graph) == ("CUSTOM:ethos-u",)
    r = moofa("verify", str(model), "--target", "host", "--json")
    target = json.loads(r.stdout)["targets"][0]
    assert r.returncode == 0 and target["exact"] is False and target["unmodelled_ops"] == ["CUSTOM:ethos-u"]
    r = moofa("verify", str(model), "--target", "host", "--junit", str(tmp_path / "j.xml"))
    assert "approx*" in r.stdout and "CUSTOM:ethos-u" in r.stdout
    assert '<property name="exact" value="false"/>' in (tmp_path / "j.xml").read_text()
    r = moofa("verify", str(model), "--target", "host", "--strict")
    assert r.returncode == 2 and "CUSTOM:ethos-u" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_exact_only_on_the_measured_builds(corpus):
    graph = read_model(corpus["ds_cnn_kws"])
    assert exactness(graph, 8, "reference").exact
    assert exactness(graph, 4, "reference", "cortex-m7").exact and exactness(graph, 4, "cmsis-nn", "cortex-m4f").exact
    assert not exactness(graph, 8, "cmsis-nn").exact and not exactness(graph, 4, "esp-nn", "xtensa-lx7").exact
    assert not exactness(graph, 4, "cmsis-nn", "cortex-m0plus").exact  # no DSP: other CMSIS-NN code paths
    r = moofa("verify", str(corpus["ds_cnn_kws"]), "--target", "host,f746,pico,esp32-s3", "--json")
    exact = {t["target"]: t["exact"] for t in json.loads(r.stdout)["targets"]}
    assert exact == {"host": True, "nucleo-f746zg": True, "raspberry-pi-pico": False, "esp32-s3-devkitc-1": False}


def test_a_build_specific_refusal_is_per_board(corpus):
    r = moofa("verify", str(corpus["int16_cnn"]), "--target", "host,f746", "--json")
    host, f746 = json.loads(r.stdout)["targets"]
    assert r.returncode == 1 and host["fits"] and not host["tflm_refuses"]
    assert not f746["fits"] and "CMSIS-NN" in f746["tflm_refuses"][0]


def _with_softmax_output(src: Path, dst: Path, scale: float, zero_point: int) -> Path:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(src.read_bytes(), 0))
    sub = model.subgraphs[0]
    softmax = [op for op in sub.operators
               if model.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.SOFTMAX][0]
    q = sub.tensors[softmax.outputs[0]].quantization
    q.scale, q.zeroPoint = [scale], [zero_point]
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    dst.write_bytes(bytes(builder.Output()))
    return dst


def test_a_model_tflm_refuses_is_reported_as_such_not_fits(corpus, tmp_path):
    from toolchain.errors import InputError

    bad = _with_softmax_output(corpus["ds_cnn_kws"], tmp_path / "bad_softmax.tflite", 1 / 128, -128)
    graph = read_model(bad)
    assert tflm_refusals(graph) and "SOFTMAX" in tflm_refusals(graph)[0]
    with pytest.raises(InputError):  # the independent truth: TFLM itself refuses it
        measure(bad)
    r = moofa("verify", str(bad), "--target", "f746", "--json")
    out = json.loads(r.stdout)
    assert r.returncode == 1 and out["runs_on_tflm"] is False and out["fits"] is False
    assert "will not run on TFLM" in moofa("verify", str(bad), "--target", "f746").stdout
    good = _with_softmax_output(corpus["ds_cnn_kws"], tmp_path / "good.tflite", 1 / 256, -128)
    assert not tflm_refusals(read_model(good))
    measure(good)


def _with_custom_ops(src: Path, dst: Path, ops: list[tuple[str, int]]) -> Path:
    """``src`` with a chain of custom ops appended after its output: each ``(custom code, tensor
    type)`` reads the previous output and writes a new tensor of that type (the last becomes the
    graph's output), the way models built from TFLM's signal library look."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(src.read_bytes(), 0))
    sub = model.subgraphs[0]
    previous = int(sub.outputs[0])
    for code, ttype in ops:
        opcode = schema.OperatorCodeT()
        opcode.builtinCode = opcode.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
        opcode.customCode = code
        model.operatorCodes.append(opcode)
        tensor = schema.TensorT()
        tensor.name, tensor.type, tensor.shape, tensor.buffer = f"{code}_out", ttype, [1, 16], 0
        sub.tensors.append(tensor)
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = len(model.operatorCodes) - 1, [previous], [len(sub.tensors) - 1]
        sub.operators.append(op)
        previous = len(sub.tensors) - 1
    sub.outputs = [previous]
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    dst.write_bytes(bytes(builder.Output()))
    return dst


def test_every_schema_tensor_type_reads_and_custom_ops_are_named_not_fatal(corpus, tmp_path):
    """Found: a model built with TFLM's signal-library custom ops (UINT16 / UINT32 tensors) was
    refused with exit 2. Every tensor type of the schema is read, sized as TFLM sizes it; custom
    ops (known to TFLM or not) make the figures approximate, named; a type TFLM cannot size is
    reported as a model TFLM will not run."""
    from ai_edge_litert import schema_py_generated as schema

    from toolchain.ir.graph import DTYPE_BYTES, TFLM_UNSIZED_DTYPES

    types = {k.lower(): v for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    assert set(types) == set(DTYPE_BYTES) and TFLM_UNSIZED_DTYPES <= set(types)
    for name, ttype in types.items():
        graph = read_model(_with_custom_ops(corpus["fc_only"], tmp_path / f"{name}.tflite", [("VendorOp", ttype)]))
        assert graph.tensors[-1].dtype == name and graph.tensors[-1].nbytes == 16 * DTYPE_BYTES[name]
        assert estimate_arena(graph, 4, "cmsis-nn").arena_bytes > 0
        assert bool(tflm_refusals(graph)) == (name in TFLM_UNSIZED_DTYPES), name
    assert (DTYPE_BYTES["uint16"], DTYPE_BYTES["uint32"], DTYPE_BYTES["int4"], DTYPE_BYTES["complex128"]) == (2, 4, 1, 16)

    signal = _with_custom_ops(corpus["fc_only"], tmp_path / "signal.tflite",
                              [("SignalDelay", schema.TensorType.UINT16), ("SignalFramer", schema.TensorType.UINT32),
                               ("NoSuchVendorOp", schema.TensorType.INT32)])  # two signal ops without the options they are sized from
    r = moofa("verify", str(signal), "--target", "host,f746", "--json")
    assert r.returncode == 0, r.stderr
    targets = json.loads(r.stdout)["targets"]
    for t in targets:
        assert t["exact"] is False and t["fits"] is True
        assert t["unmodelled_ops"] == ["CUSTOM:NoSuchVendorOp", "CUSTOM:SignalDelay", "CUSTOM:SignalFramer"]
    r = moofa("verify", str(signal), "--target", "host")
    assert r.returncode == 0 and "approx*" in r.stdout and "CUSTOM:SignalDelay" in r.stdout

    strings = _with_custom_ops(corpus["fc_only"], tmp_path / "string.tflite", [("VendorOp", schema.TensorType.STRING)])
    r = moofa("verify", str(strings), "--target", "host", "--json")
    out = json.loads(r.stdout)
    assert r.returncode == 1 and out["runs_on_tflm"] is False and "STRING" in " ".join(out["tflm_refuses"])
    assert "will not run on TFLM" in moofa("verify", str(strings), "--target", "host").stdout


def _concat_of_inputs(path: Path, n: int) -> Path:
    """A full-int8 CONCATENATION of ``n`` graph inputs, converted by TensorFlow."""
    from toolchain.runtime.tf import quietly, tf_quiet

    tf = tf_quiet()
    spec = [tf.TensorSpec((1, 2, 2, 2), tf.float32)] * n
    fn = tf.function(lambda *xs: tf.concat(xs, axis=3), input_signature=spec).get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([tf.random.uniform((1, 2, 2, 2))] * n for _ in range(4))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    path.write_bytes(quietly(converter.convert))
    return path


def test_a_concatenation_tflm_refuses_is_reported(corpus, tmp_path):
    """TFLM's CONCATENATION takes at most ten inputs, and int8 inputs on the output's scale."""
    from toolchain.errors import InputError

    ten, eleven = _concat_of_inputs(tmp_path / "ten.tflite", 10), _concat_of_inputs(tmp_path / "eleven.tflite", 11)
    assert not tflm_refusals(read_model(ten))
    measure(ten)
    refusals = tflm_refusals(read_model(eleven))
    assert len(refusals) == 1 and "CONCATENATION" in refusals[0] and "11 inputs" in refusals[0]
    with pytest.raises(InputError):  # the independent truth: TFLM itself refuses it
        measure(eleven)
    r = moofa("verify", str(eleven), "--target", "host", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["runs_on_tflm"] is False

    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(ten.read_bytes(), 0))
    sub = model.subgraphs[0]
    first = sub.tensors[sub.operators[0].inputs[0]]
    first.quantization.scale = [first.quantization.scale[0] * 2]
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    rescaled = tmp_path / "rescaled.tflite"
    rescaled.write_bytes(bytes(builder.Output()))
    assert "int8 input 0 has scale" in " ".join(tflm_refusals(read_model(rescaled)))
    with pytest.raises(InputError):
        measure(rescaled)


def _calibration_module():
    spec = importlib.util.spec_from_file_location("calibrate_tail", REPO / "bench" / "calibrate_tail.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("calibrate_tail", module)  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def test_variable_tensors_live_in_the_tail_unless_the_offline_plan_places_them(tmp_path):
    """An SVDF's activation state is a variable tensor: TFLM gives it a persistent buffer after the
    scratch handles (AllocateVariables), or the offline plan's offset in the head. Each way the
    prediction equals TFLM's."""
    import flatbuffers
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema

    from toolchain.tflite.reader import OFFLINE_PLAN_METADATA

    data = _calibration_module()._svdf_model(int8=False, layers=2)
    plain = tmp_path / "svdf2.tflite"
    plain.write_bytes(data)
    graph = read_model(plain)
    n = len(graph.tensors)
    variables = [k for k, t in enumerate(graph.tensors) if t.is_variable]
    assert len(variables) == 2 and all(graph.tensors[k].nbytes == 128 for k in variables)
    for offsets in (None, {variables[0]: 0}, {variables[0]: 256, variables[1]: 0}):
        path = plain
        if offsets is not None:
            model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
            buf = schema.BufferT()
            buf.data = np.array([0, 0, n, *(offsets.get(k, -1) for k in range(n))], dtype="<i4").view(np.uint8)
            model.buffers.append(buf)
            meta = schema.MetadataT()
            meta.name, meta.buffer = OFFLINE_PLAN_METADATA, len(model.buffers) - 1
            model.metadata = [meta]
            builder = flatbuffers.Builder(0)
            builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
            path = tmp_path / f"svdf2_{len(offsets)}.tflite"
            path.write_bytes(bytes(builder.Output()))
        e, m = estimate_arena(read_model(path)), measure(path)
        assert (e.arena_head_bytes, e.arena_tail_bytes) == (m.arena_head_bytes, m.arena_tail_bytes), offsets


@pytest.fixture(scope="module")
def lstm_models(tmp_path_factory) -> dict[str, Path]:
    """tf_keras LSTMs converted to UNIDIRECTIONAL_SEQUENCE_LSTM: a float one (4 steps, 3 features,
    8 units), a time-major int8 one (5 steps, batch 2, 5 features, 6 units), and that one in 16x8."""
    calibrate_tail = _calibration_module()
    out = tmp_path_factory.mktemp("lstm")
    paths = {}
    for name, traced, quantization in (
        ("float", calibrate_tail._lstm(4, 3, 8), calibrate_tail.FLOAT32),
        ("int8", calibrate_tail._lstm(5, 5, 6, time_major=True, batch=2), calibrate_tail.FULL_INT8),
        ("16x8", calibrate_tail._lstm(5, 5, 6, time_major=True, batch=2), calibrate_tail.FULL_INT8),
    ):
        if name == "16x8":
            traced.rewrite = calibrate_tail._lstm_as_16x8
        paths[name] = out / f"{name}.tflite"
        paths[name].write_bytes(calibrate_tail._convert(traced, quantization))
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("dtype, cell, units, batch, state_bytes", [
    ("float", "float32", 8, 1, 4), ("int8", "int16", 6, 2, 2), ("16x8", "int16", 6, 2, 2)])
def test_lstm_is_predicted_exactly(lstm_models, dtype, cell, units, batch, state_bytes):
    """UNIDIRECTIONAL_SEQUENCE_LSTM: 16 B of options, a 688 B OpDataLSTM, four scratch buffers of
    batch x units cell-state elements and two variable states; TFLM measures the same head and tail.
    CMSIS-NN: a 912 B OpData, eight kernel-sum arrays and three buffers for integer inputs (the
    32-bit figures are measured by bench/bench_board_arena.py)."""
    from toolchain.memory.persistent import MCU32_CMSIS_NN_KERNELS, op_allocations
    from toolchain.memory.scratch import scratch_requests

    graph = read_model(lstm_models[dtype])
    assert graph.op_kinds == ["UNIDIRECTIONAL_SEQUENCE_LSTM"] and unmodelled_ops(graph) == ()
    (op,) = graph.ops
    hidden, state = graph.tensors[op.inputs[18]], graph.tensors[op.inputs[19]]
    assert hidden.is_variable and state.is_variable and state.dtype == cell
    assert hidden.dtype == graph.tensors[op.inputs[0]].dtype == {"float": "float32", "int8": "int8", "16x8": "int16"}[dtype]
    assert op_allocations(graph, op) == ([(16, 4)], [(688, 16)], [])
    assert [r.size_bytes for r in scratch_requests(graph)] == [batch * units * state_bytes] * 4
    integer = dtype != "float"
    cmsis = scratch_requests(graph, "cmsis-nn")
    assert [r.size_bytes for r in cmsis] == [batch * units * state_bytes] * (3 if integer else 4)
    kernel_sums = [(units * (8 if dtype == "16x8" else 4), 16)] * 8 if integer else []
    assert op_allocations(graph, op, MCU32_CMSIS_NN_KERNELS) == ([(16, 4)], [(912, 16)], kernel_sums)
    estimate, measured = estimate_arena(graph, 8, "reference"), measure(lstm_models[dtype])
    assert (estimate.arena_head_bytes, estimate.arena_tail_bytes) == (measured.arena_head_bytes, measured.arena_tail_bytes)
    assert exactness(graph, 8, "reference").exact
    assert all(exactness(graph, 4, library, "cortex-m7").exact for library in ("reference", "cmsis-nn"))


@pytest.mark.slow
def test_float16_weights_behind_dequantize_are_refused_as_tflm_refuses_them(tmp_path):
    """The converter's float16 weights (`supported_types = [tf.float16]`): a DEQUANTIZE of each
    float16 constant in front of a float graph. TFLM dequantizes only int8/int16/uint8."""
    from toolchain.errors import InputError
    from toolchain.runtime.tf import quietly, tf_quiet

    tf = tf_quiet()
    inp = tf.keras.Input((8, 8, 1), batch_size=1)
    model = tf.keras.Model(inp, tf.keras.layers.Dense(4)(tf.keras.layers.Flatten()(tf.keras.layers.Conv2D(4, 3)(inp))))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    path = tmp_path / "fp16.tflite"
    path.write_bytes(quietly(converter.convert))
    graph = read_model(path)
    assert "DEQUANTIZE" in graph.op_kinds and any(t.dtype == "float16" for t in graph.tensors)
    refusals = tflm_refusals(graph)
    assert refusals and all("DEQUANTIZE" in r and "float16" in r for r in refusals)
    with pytest.raises(InputError):  # the independent truth: TFLM itself refuses it
        measure(path)
    r = moofa("verify", str(path), "--target", "host", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["runs_on_tflm"] is False


@pytest.mark.parametrize("kind", ["FILL", "BROADCAST_TO", "EXPAND_DIMS"])
def test_a_shape_operand_that_is_not_constant_is_refused_as_tflm_refuses_it(kind, tmp_path):
    """FILL's dims, BROADCAST_TO's shape and EXPAND_DIMS's axis must be constant (their Prepare
    says "Non-constant ... tensor is not supported"): here that operand is a graph input."""
    from ai_edge_litert import schema_py_generated as schema

    from toolchain.errors import InputError

    calibrate_tail = _calibration_module()
    T, B, none = schema.TensorType, schema.BuiltinOperator, schema.BuiltinOptions.NONE
    if kind == "FILL":  # dims (input 0) from the graph, value a scalar input
        tensors = [((3,), T.INT32, None, None), ((), T.FLOAT32, None, None), ((1, 4, 8), T.FLOAT32, None, None)]
        ops, inputs = [(B.FILL, [0, 1], [2], none, None)], [0, 1]
    elif kind == "BROADCAST_TO":
        tensors = [((1, 8), T.FLOAT32, None, None), ((2,), T.INT32, None, None), ((4, 8), T.FLOAT32, None, None)]
        ops, inputs = [(B.BROADCAST_TO, [0, 1], [2], none, None)], [0, 1]
    else:
        tensors = [((1, 8), T.FLOAT32, None, None), ((1,), T.INT32, None, None), ((1, 1, 8), T.FLOAT32, None, None)]
        ops, inputs = [(B.EXPAND_DIMS, [0, 1], [2], none, None)], [0, 1]
    path = tmp_path / f"{kind}.tflite"
    path.write_bytes(calibrate_tail._assembled(tensors, ops, inputs, [2]))
    refusals = tflm_refusals(read_model(path))
    assert len(refusals) == 1 and kind in refusals[0] and "not a constant" in refusals[0]
    with pytest.raises(InputError):  # the independent truth: TFLM refuses it
        measure(path)
    r = moofa("verify", str(path), "--target", "host")
    assert r.returncode == 1 and "will not run on TFLM" in r.stdout


_VALID_OPTIONS = {
    "CUSTOM:SignalStacker": {"num_channels": 8, "stacker_left_context": 2, "stacker_right_context": 1, "stacker_step": 1},
    "CUSTOM:SignalDelay": {"delay_length": 3},
    "CUSTOM:SignalFramer": {"frame_size": 8, "frame_step": 4, "prefill": True},
    "CUSTOM:SignalFilterBank": {"num_channels": 8},
    "CUSTOM:SignalFilterBankSpectralSubtraction": {
        "alternate_one_minus_smoothing": 0, "alternate_smoothing": 0, "clamping": False, "min_signal_remaining": 655,
        "num_channels": 4, "one_minus_smoothing": 15729, "smoothing": 655, "smoothing_bits": 0, "spectral_subtraction_bits": 14},
    "CUSTOM:SignalRfft": {"T": 7, "fft_length": 32},
    "CUSTOM:SignalIrfft": {"T": 2, "fft_length": 32},
    "CUSTOM:TFLite_Detection_PostProcess": {"max_detections": 10**6, "num_classes": 2},
}


@pytest.mark.parametrize("options", [None, {}, {"delay_length": "three"}, {"frame_size": 8.5}, {"num_channels": -5},
                                     {"T": -1, "fft_length": -32}, "valid"])
def test_ops_sized_from_their_options_are_approximate_without_them_and_never_fail(options):
    """The signal ops and the SSD post-processing are sized from their flexbuffer options: a model
    whose options are missing or malformed is priced (a guess, never a crash or a negative size)
    and marked approximate; with the options each needs it is exact."""
    from toolchain.ir.graph import Graph, Op, Tensor
    from toolchain.memory.coverage import SIZED_BY_OPTIONS

    assert set(_VALID_OPTIONS) == set(SIZED_BY_OPTIONS)
    t = [Tensor("a", (1, 10, 4), "float32"), Tensor("b", (1, 10, 3), "float32"), Tensor("c", (10, 4), "float32"),
         Tensor("d", (2, 16), "int16")]
    for kind in SIZED_BY_OPTIONS:
        inputs = (0, 1, 2) if "Detection" in kind else (3,)
        given = _VALID_OPTIONS[kind] if options == "valid" else options
        graph = Graph(t, [Op(kind, inputs, (3,), {} if given is None else {"options": given})], [0], [3])
        assert (unmodelled_ops(graph) == ()) == (options == "valid"), (kind, options)
        for pointer_bytes, library in ((8, "reference"), (4, "cmsis-nn")):
            e = estimate_arena(graph, pointer_bytes, library)
            assert e.arena_head_bytes >= 0 and e.arena_tail_bytes > 0
            assert all(b.size_bytes >= 0 for b in e.plan.buffers)


def test_signal_options_are_read_by_position_as_tflm_reads_them():
    """TFLM's signal kernels read their options by position in the (sorted) flexbuffer map: a map
    with another key before the one named is read as TFLM reads it, not by the name."""
    from toolchain.ir.graph import Graph, Op, Tensor
    from toolchain.memory.persistent import HOST_KERNELS, custom_option, op_allocations

    t = [Tensor("x", (16,), "int16"), Tensor("y", (16,), "int16")]
    plain = Op("CUSTOM:SignalDelay", (0,), (1,), {"options": {"delay_length": 3}})
    shifted = Op("CUSTOM:SignalDelay", (0,), (1,), {"options": {"a_first": 40, "delay_length": 3}})
    assert custom_option(plain, "delay_length") == 3 and custom_option(shifted, "delay_length") == 40
    graph = Graph(t, [shifted], [0], [1])
    state = op_allocations(graph, shifted, HOST_KERNELS)[2][-1][0]
    assert state == 40 + 4 * (16 + 40)  # CircularBuffer + 2 int16 per element, capacity frame + delay
    fft = Op("CUSTOM:SignalRfft", (0,), (1,), {"options": {"T": 7, "fft_length": 32, "z": 1}})
    assert custom_option(fft, "T") == 7 and custom_option(fft, "fft_length") == 32
    assert unmodelled_ops(Graph(t, [fft], [0], [1])) == ()
    fft.attrs["options"]["T"] = 99  # not a type TFLM's FFTs run
    assert unmodelled_ops(Graph(t, [fft], [0], [1])) == ("CUSTOM:SignalRfft",)
