"""Models with control flow (IF, WHILE: several subgraphs) run on TFLM, so `moofa verify` reads
them instead of refusing them, and marks its figures approximate: it plans the first subgraph
only, while TFLM plans every subgraph's tensors in one arena."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from toolchain.errors import InputError
from toolchain.memory.coverage import exactness, tflm_refusals, unmodelled_ops
from toolchain.runtime.tflm import measure
from toolchain.tflite.reader import parse_model, read_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def control_flow_models(tmp_path_factory):
    """An IF (tf.cond on a bool input) and a WHILE (three steps of tanh), float32."""
    from toolchain.runtime.tf import quietly, tf_quiet

    tf = tf_quiet()

    class Branches(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32), tf.TensorSpec([1], tf.bool)],
                     autograph=False)
        def cond(self, x, c):
            return tf.cond(c[0], lambda: tf.nn.relu(x * 2.0 + 1.0), lambda: tf.tanh(x) - 1.0)

        @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32)], autograph=False)
        def loop(self, x):
            _, y = tf.while_loop(lambda i, y: i < 3, lambda i, y: (i + 1, tf.tanh(y) * 1.5), [tf.constant(0), x])
            return y

    module = Branches()
    out = tmp_path_factory.mktemp("control_flow")
    paths = {}
    for name, fn in (("if", module.cond), ("while", module.loop)):
        converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], module)
        paths[name] = out / f"{name}.tflite"
        paths[name].write_bytes(quietly(converter.convert))
    return paths


def moofa(*args):
    return subprocess.run([sys.executable, "-m", "moofa", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name, control", [("if", "IF"), ("while", "WHILE")])
def test_control_flow_reads_for_verify_and_is_approximate(control_flow_models, name, control):
    path = control_flow_models[name]
    measured = measure(path)  # the independent truth: TFLM runs it
    assert measured.arena_head_bytes > 0
    graph = parse_model(path.read_bytes(), str(path), control_flow=True)
    assert len(graph.subgraphs) == 2 and control in graph.op_kinds
    missing = unmodelled_ops(graph)
    assert control in missing
    assert not exactness(graph, 8, "reference").exact
    assert tflm_refusals(graph) == []
    r = moofa("verify", str(path), "--target", "host", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    (target,) = out["targets"]
    assert target["exact"] is False and control in target["unmodelled_ops"]
    assert any("subgraphs" in note for note in out["notes"])
    human = moofa("verify", str(path), "--target", "host")
    assert human.returncode == 0 and "approx*" in human.stdout and "3 subgraphs" in human.stdout
    strict = moofa("verify", str(path), "--target", "host", "--strict")
    assert strict.returncode == 2


def test_the_rest_of_moofa_still_says_plainly_that_it_covers_one_subgraph(control_flow_models, tmp_path):
    path = control_flow_models["if"]
    with pytest.raises(InputError, match="3 subgraphs"):
        read_model(path)
    r = moofa("plan", str(path), "-o", str(tmp_path / "planned.tflite"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "subgraphs" in r.stderr
    assert not (tmp_path / "planned.tflite").exists()


def test_a_refusal_inside_a_branch_is_found(control_flow_models, tmp_path):
    """The prepare-time checks run on every subgraph's ops (here: a DEQUANTIZE made float16)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(control_flow_models["if"].read_bytes()), 0)
    branch = model.subgraphs[1]
    op = branch.operators[0]
    model.operatorCodes.append(schema.OperatorCodeT())
    model.operatorCodes[-1].builtinCode = model.operatorCodes[-1].deprecatedBuiltinCode = schema.BuiltinOperator.DEQUANTIZE
    op.opcodeIndex = len(model.operatorCodes) - 1
    op.builtinOptionsType, op.builtinOptions = 0, None
    op.inputs = op.inputs[:1]
    branch.tensors[op.inputs[0]].type = schema.TensorType.FLOAT16
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    bad = tmp_path / "bad_branch.tflite"
    bad.write_bytes(bytes(builder.Output()))
    graph = parse_model(bad.read_bytes(), str(bad), control_flow=True)
    refusals = tflm_refusals(graph)
    assert len(refusals) == 1 and refusals[0].startswith("subgraph 1 op #0 DEQUANTIZE: input float16")
    assert "DEQUANTIZE" not in graph.op_kinds and "DEQUANTIZE" in unmodelled_ops(graph)  # a branch's ops count too
