"""Models with control flow (IF, WHILE, CALL_ONCE: several subgraphs) and resource variables
run on TFLM, and `moofa verify` predicts them exactly: every subgraph planned in one arena with
TFLM's one clock, the tail's arrays per subgraph, the interpreter's resource variables. The
truth is TFLM's own measurement on the host build."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from toolchain.errors import InputError
from toolchain.memory.coverage import exactness, tflm_refusals, unmodelled_ops
from toolchain.memory.estimate import estimate_arena
from toolchain.memory.persistent import resource_variable_count
from toolchain.runtime.tflm import measure
from toolchain.tflite.reader import parse_model, read_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def control_flow_models(tmp_path_factory):
    """An IF (tf.cond on a bool input, a reduction in each branch: scratch inside subgraphs), a
    WHILE (three steps of tanh) and two tf.Variables updated per call (CALL_ONCE, VAR_HANDLE,
    READ_VARIABLE, ASSIGN_VARIABLE), float32."""
    from toolchain.runtime.tf import quietly, tf_quiet

    tf = tf_quiet()

    class Branches(tf.Module):
        def __init__(self):
            super().__init__()
            self.v = tf.Variable(tf.zeros([1, 8]))
            self.w = tf.Variable(tf.zeros([1, 16]))

        @tf.function(input_signature=[tf.TensorSpec([1, 4, 4, 8], tf.float32), tf.TensorSpec([1], tf.bool)],
                     autograph=False)
        def cond(self, x, c):
            y = tf.tanh(x)
            return tf.cond(c[0], lambda: tf.reduce_mean(y * 2.0 + 1.0, axis=[1, 2]), lambda: tf.reduce_max(y - 1.0, axis=[1, 2]))

        @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32)], autograph=False)
        def loop(self, x):
            _, y = tf.while_loop(lambda i, y: i < 3, lambda i, y: (i + 1, tf.tanh(y) * 1.5), [tf.constant(0), x])
            return y

        @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32)], autograph=False)
        def state(self, x):
            self.v.assign(self.v * 0.5 + x)
            self.w.assign(tf.concat([self.w[:, 8:], self.v.read_value()], axis=1))
            return self.w.read_value() * 2.0

    module = Branches()
    out = tmp_path_factory.mktemp("control_flow")
    paths = {}
    for name, fn in (("if", module.cond), ("while", module.loop), ("var", module.state)):
        converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], module)
        converter.experimental_enable_resource_variables = name == "var"
        paths[name] = out / f"{name}.tflite"
        paths[name].write_bytes(quietly(converter.convert))
    return paths


def moofa(*args):
    return subprocess.run([sys.executable, "-m", "moofa", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name, control, subgraphs", [("if", "IF", 3), ("while", "WHILE", 3), ("var", "CALL_ONCE", 2)])
def test_control_flow_is_predicted_exactly(control_flow_models, name, control, subgraphs):
    path = control_flow_models[name]
    measured = measure(path)  # the independent truth: TFLM runs it
    graph = parse_model(path.read_bytes(), str(path), control_flow=True)
    assert len(graph.subgraphs) + 1 == subgraphs and control in graph.op_kinds
    predicted = estimate_arena(graph)
    assert (predicted.arena_head_bytes, predicted.arena_tail_bytes) == (measured.arena_head_bytes, measured.arena_tail_bytes)
    assert unmodelled_ops(graph) == () and exactness(graph, 8, "reference").exact
    assert tflm_refusals(graph) == []
    r = moofa("verify", str(path), "--target", "host", "--json", "--measure", "--strict")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    (target,) = out["targets"]
    assert target["exact"] is True and target["measured"]["agrees"] is True
    assert any(f"{subgraphs} subgraphs" in note for note in out["notes"])


def test_scratch_inside_a_branch_is_planned(control_flow_models):
    """MEAN and REDUCE_MAX in the branches request scratch: those requests belong to subgraph
    ops and live through the IF's scopes, not subgraph 0's op of the same index."""
    graph = parse_model(control_flow_models["if"].read_bytes(), "if", control_flow=True)
    plan = estimate_arena(graph).plan
    branch_scratch = [b for b in plan.buffers if b.scratch is not None and b.scratch.subgraph > 0]
    assert branch_scratch and all(b.first_scope > 0 for b in branch_scratch)
    assert {b.subgraph for b in plan.buffers if b.tensor >= 0} == {0, 1, 2}


def test_resource_variables_are_counted_and_said(control_flow_models):
    path = control_flow_models["var"]
    graph = parse_model(path.read_bytes(), str(path), control_flow=True)
    assert resource_variable_count(graph) == 2
    human = moofa("verify", str(path), "--target", "host")
    assert human.returncode == 0 and "MicroResourceVariables::Create(allocator, 2)" in human.stdout


def test_a_subgraph_that_runs_itself_is_one_line(control_flow_models, tmp_path):
    """TFLM's lifetime walk would never end on a cycle; moofa says so in one line."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(control_flow_models["while"].read_bytes()), 0)
    (op,) = [o for o in model.subgraphs[0].operators]
    body = op.builtinOptions.bodySubgraphIndex
    model.subgraphs[body].operators.append(op)  # the body runs the WHILE again
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    bad = tmp_path / "cycle.tflite"
    bad.write_bytes(bytes(builder.Output()))
    with pytest.raises(InputError, match="runs itself"):
        parse_model(bad.read_bytes(), str(bad), control_flow=True)
    r = moofa("verify", str(bad), "--target", "host")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "runs itself" in r.stderr


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
