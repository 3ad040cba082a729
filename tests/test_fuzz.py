"""Mutated real models must never crash the reader or the memory model.

Every outcome is either a prediction (for every kernel library and both pointer widths) or an
InputError whose message is one line starting with the file name (what the CLI prints before
exiting with 2). Two kinds of mutation, driven by a seeded ``random.Random`` so that ten thousand
cases run in seconds and a failure names the case that reproduces it:

- bytes: flipped bits, set bytes, 32-bit fields set to telling values (0, -1, the file size ...),
  inserted and deleted bytes, truncation;
- structure: the model unpacked with the LiteRT schema's object API (``ModelT``), changed the
  way a broken converter or a hand-edited file would be (ops without inputs or outputs, tensor
  indices out of range or -1, zero, negative and huge dimensions, empty or extra subgraphs, wrong
  buffer and opcode indices, other op kinds on the same tensors, odd options and quantization,
  offline arena plans of every shape) and packed again, sometimes byte-mutated on top.

A small hypothesis test keeps shrinking at hand for byte mutations.
"""

from __future__ import annotations

import random
import time
import traceback
from dataclasses import dataclass, field

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolchain.errors import InputError
from toolchain.ir.graph import Graph, Op, Tensor
from toolchain.memory.coverage import PROOF, exactness, tflm_refusals, unmodelled_ops
from toolchain.memory.estimate import estimate_arena
from toolchain.memory.scratch import KERNEL_LIBRARIES
from toolchain.tflite.reader import OFFLINE_PLAN_METADATA, parse_model

WHERE = "fuzz.tflite"
# Byte mutations start from all five; structural ones (unpack, change, pack: several times the
# cost of a byte mutation) from the four smaller, which between them have every op kind the
# memory model treats specially: convolutions, pools, MEAN, ADD, CONCATENATION, int16 SOFTMAX.
SEEDS = ("fc_only", "ds_cnn_kws", "mbconv_se_hswish", "int16_cnn", "pool_mix")
STRUCTURAL_SEEDS = ("fc_only", "ds_cnn_kws", "int16_cnn", "pool_mix")
LIBRARIES = tuple(KERNEL_LIBRARIES)  # reference, cmsis-nn, esp-nn
POINTER_WIDTHS = (8, 4)
CASES = 10_000

# Op kinds a mutation may give an op: every kind the memory model treats specially (scratch or
# tail figures, GATHER's output dims and ADD_N's pointer scratch among them) and a custom op it has
# no figures for.
KINDS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MEAN", "AVERAGE_POOL_2D", "MAX_POOL_2D", "SOFTMAX",
         "ADD", "MUL", "CONCATENATION", "RESHAPE", "HARD_SWISH", "QUANTIZE", "TRANSPOSE_CONV", "BATCH_MATMUL", "EMBEDDING_LOOKUP",
         "SVDF", "SUM", "REDUCE_MAX", "MIRROR_PAD", "GATHER", "ADD_N", "CUSTOM")
_BUILTIN = {k: getattr(schema.BuiltinOperator, k) for k in KINDS}
_TENSOR_TYPES = sorted(v for k, v in vars(schema.TensorType).items() if not k.startswith("_"))
INT32_MIN, INT32_MAX, UINT32_MAX = -(1 << 31), (1 << 31) - 1, (1 << 32) - 1


# --- outcomes ------------------------------------------------------------------------------------
def outcome(data: bytes) -> str:
    """``"error"`` or ``"prediction"``; raises (AssertionError or the crash) on anything else."""
    try:
        graph = parse_model(data, WHERE, control_flow=True)  # as `moofa verify` reads: every subgraph
    except InputError as e:
        message = str(e)
        assert "\n" not in message and message.startswith(WHERE + ":"), f"malformed error message {message!r}"
        return "error"
    check_predictions(graph)
    return "prediction"


def check_predictions(graph: Graph) -> None:
    # What `moofa verify` says besides the figures: the ops it cannot stand behind, and TFLM's
    # prepare-time refusals (each a one-line reason).
    assert all(isinstance(op, str) and op for op in unmodelled_ops(graph))
    for library in (None, *LIBRARIES):
        assert all(isinstance(r, str) and r and "\n" not in r for r in tflm_refusals(graph, library)), library
    for library in LIBRARIES:
        for width in POINTER_WIDTHS:
            exactness(graph, width, library)
            e = estimate_arena(graph, width, library)
            assert e.lower_bound_bytes >= 0 and e.scratch_bytes >= 0 and e.arena_tail_bytes > 0, (library, width)
            # An offline plan may be a bad one (overlapping buffers; `moofa plan` replaces it), so
            # only TFLM's own greedy plan is bound to respect the liveness floor.
            assert e.arena_head_bytes >= (e.lower_bound_bytes if graph.offline_offsets is None else 0), (library, width)


# --- byte mutations --------------------------------------------------------------------------------
def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        pos = rng.randrange(len(out)) if out else 0
        r = rng.random()
        if not out:
            out.append(rng.randrange(256))
        elif r < 0.25:
            out[pos] ^= 1 << rng.randrange(8)
        elif r < 0.45:
            out[pos] = rng.randrange(256)
        elif r < 0.75 and len(out) >= 4:
            # Flatbuffers are made of 32-bit offsets, lengths and indices: hit one whole.
            pos = min(pos & ~3, len(out) - 4)
            value = rng.choice((0, 1, 2, 3, -1, -2, 255, len(out), len(out) // 2, INT32_MAX, INT32_MIN, rng.randrange(1 << 16)))
            out[pos:pos + 4] = (value & UINT32_MAX).to_bytes(4, "little")
        elif r < 0.87:
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        else:
            del out[pos:pos + rng.randint(1, 4)]
    if rng.random() < 0.1:
        del out[rng.randrange(len(out) + 1):]
    return bytes(out)


# --- structural mutations --------------------------------------------------------------------------
class _Log:
    """Attribute assignments on the unpacked model, undone after the case is packed."""

    def __init__(self):
        self.changes: list[tuple[object, str, object]] = []
        self.notes: list[str] = []

    def set(self, obj, attr: str, value, note: str) -> None:
        self.changes.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, value)
        self.notes.append(note)

    def undo(self) -> None:
        for obj, attr, old in reversed(self.changes):
            setattr(obj, attr, old)


def _tensor_index(rng: random.Random, n: int) -> int:
    return rng.choice((-1, -1, -2, n, n + 1, n + rng.randrange(1000), INT32_MAX, INT32_MIN, rng.randrange(max(n, 1))))


def _uint_index(rng: random.Random, n: int) -> int:
    return rng.choice((n, n + 1, n + rng.randrange(1000), UINT32_MAX, 0, rng.randrange(max(n, 1))))


def _sg(m):
    return m.subgraphs[0] if m.subgraphs else None


def _pick(rng, items):
    return rng.randrange(len(items)) if items is not None and len(items) else None


def _mut_op_io(rng, m, log):
    sg = _sg(m)
    i = _pick(rng, sg.operators if sg else None)
    if i is None:
        return
    op, attr = sg.operators[i], rng.choice(("inputs", "outputs"))
    old = [] if getattr(op, attr) is None else [int(t) for t in getattr(op, attr)]
    n = len(sg.tensors or [])
    r = rng.random()
    if r < 0.25 or not old:
        new, how = [], "none"
    elif r < 0.4:
        new, how = old[1:], "drop first"
    elif r < 0.5:
        new, how = old[:1], "keep first"
    elif r < 0.85:
        new = list(old)
        new[rng.randrange(len(new))] = _tensor_index(rng, n)
        how = f"one index -> {new}"
    else:
        new, how = old + [_tensor_index(rng, n)], "extra index"
    log.set(op, attr, new, f"op {i} {attr}: {how}")


def _mut_shape(rng, m, log):
    sg = _sg(m)
    i = _pick(rng, sg.tensors if sg else None)
    if i is None:
        return
    t = sg.tensors[i]
    old = [] if t.shape is None else [int(d) for d in t.shape]
    r = rng.random()
    if r < 0.15 or not old:
        new = rng.choice(([], None, [0], [rng.choice((0, 1, -1, 7, INT32_MAX))]))
    elif r < 0.75:
        new = list(old)
        new[rng.randrange(len(new))] = rng.choice((0, 0, -1, -7, 1, 3, 1 << 20, INT32_MAX, INT32_MIN))
    elif r < 0.85:
        new = old[:-1] if rng.random() < 0.5 else old[1:]
    else:
        new = [rng.choice((0, 1, 2, 3, 16, 1 << 16)) for _ in range(rng.randint(1, 8))]
    log.set(t, "shape", new, f"tensor {i} shape {old} -> {new}")


def _mut_tensor(rng, m, log):
    sg = _sg(m)
    i = _pick(rng, sg.tensors if sg else None)
    if i is None:
        return
    t = sg.tensors[i]
    r = rng.random()
    if r < 0.35:
        log.set(t, "buffer", _uint_index(rng, len(m.buffers or [])), f"tensor {i} buffer")
    elif r < 0.6:
        log.set(t, "type", rng.choice(_TENSOR_TYPES), f"tensor {i} type")
    elif r < 0.75:
        log.set(t, "isVariable", not t.isVariable, f"tensor {i} variable")
    else:
        q = schema.QuantizationParametersT()
        channels = rng.choice((0, 1, 2, 3, 64, 1000))
        q.scale = [rng.choice((0.0, 1.0, 0.5, float("inf"), float("nan"), -1.0)) for _ in range(channels)]
        q.zeroPoint = [rng.randrange(-300, 300) for _ in range(rng.choice((0, 1, channels)))]
        q.quantizedDimension = rng.choice((0, 3, 100))
        log.set(t, "quantization", rng.choice((None, q)), f"tensor {i} quantization ({channels} scales)")


def _mut_subgraph(rng, m, log):
    sg = _sg(m)
    r = rng.random()
    if sg is None or r < 0.08:
        log.set(m, "subgraphs", [], "no subgraph")
    elif r < 0.13:
        log.set(m, "subgraphs", [sg, sg], "two subgraphs")
    elif r < 0.25:
        n = len(sg.tensors or [])
        log.set(sg, "tensors", (sg.tensors or [])[: rng.randrange(n + 1)], "tensors cut")
    elif r < 0.35:
        log.set(sg, "operators", [], "no operators")
    elif r < 0.5:
        ops = list(sg.operators or [])
        rng.shuffle(ops)
        log.set(sg, "operators", ops, "operators shuffled")
    elif r < 0.6 and sg.operators:
        ops = list(sg.operators)
        i = rng.randrange(len(ops))
        ops.insert(rng.randrange(len(ops) + 1), ops[i])
        log.set(sg, "operators", ops, f"operator {i} twice")
    else:
        attr = rng.choice(("inputs", "outputs"))
        n = len(sg.tensors or [])
        old = [] if getattr(sg, attr) is None else [int(t) for t in getattr(sg, attr)]
        new = rng.choice(([], old + old, [_tensor_index(rng, n)], old + [_tensor_index(rng, n)]))
        log.set(sg, attr, new, f"subgraph {attr} -> {new}")


def _mut_codes(rng, m, log):
    sg = _sg(m)
    r = rng.random()
    if r < 0.1:
        log.set(m, "operatorCodes", [], "no operator codes")
    elif r < 0.3 and sg and sg.operators:
        i = rng.randrange(len(sg.operators))
        log.set(sg.operators[i], "opcodeIndex", _uint_index(rng, len(m.operatorCodes or [])), f"op {i} opcode index")
    elif r < 0.45 and sg and sg.operators and m.operatorCodes:
        i = rng.randrange(len(sg.operators))
        log.set(sg.operators[i], "opcodeIndex", rng.randrange(len(m.operatorCodes)), f"op {i} another code")
    elif m.operatorCodes:
        # Another kind for every op of one code: a pooling op on convolution tensors, MEAN on a
        # matrix, CONV_2D on a fully connected layer's 2-D weights ...
        i = rng.randrange(len(m.operatorCodes))
        kind = rng.choice(KINDS)
        code = schema.OperatorCodeT()
        code.builtinCode = _BUILTIN[kind]
        code.deprecatedBuiltinCode = min(_BUILTIN[kind], schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
        code.version = 1
        codes = list(m.operatorCodes)
        codes[i] = code
        log.set(m, "operatorCodes", codes, f"code {i} -> {kind}")


def _mut_options(rng, m, log):
    sg = _sg(m)
    i = _pick(rng, sg.operators if sg else None)
    if i is None:
        return
    op = sg.operators[i]
    r = rng.random()
    if r < 0.2:
        log.set(op, "builtinOptionsType", schema.BuiltinOptions.NONE, f"op {i} no options")
        log.set(op, "builtinOptions", None, "")
        return
    values = (0, 1, 2, -1, INT32_MAX, INT32_MIN)
    if r < 0.5:
        opts, kind = schema.Conv2DOptionsT(), schema.BuiltinOptions.Conv2DOptions
    elif r < 0.8:
        opts, kind = schema.DepthwiseConv2DOptionsT(), schema.BuiltinOptions.DepthwiseConv2DOptions
        opts.depthMultiplier = rng.choice((0, 1, 2, -1, INT32_MAX))
    else:
        opts, kind = schema.TransposeConvOptionsT(), schema.BuiltinOptions.TransposeConvOptions
    opts.strideH, opts.strideW = rng.choice(values), rng.choice(values)
    if kind != schema.BuiltinOptions.TransposeConvOptions:
        opts.dilationHFactor, opts.dilationWFactor = rng.choice(values), rng.choice(values)
    opts.padding = rng.choice((0, 1, 2, 127))
    log.set(op, "builtinOptionsType", kind, f"op {i} options {vars(opts)}")
    log.set(op, "builtinOptions", opts, "")


def _mut_buffers(rng, m, log):
    r = rng.random()
    buffers = list(m.buffers or [])
    if r < 0.3:
        log.set(m, "buffers", [], "no buffers")
    elif r < 0.7:
        log.set(m, "buffers", buffers[: rng.randrange(len(buffers) + 1)], "buffers cut")
    elif buffers:
        i = rng.randrange(len(buffers))
        empty = schema.BufferT()
        log.set(m, "buffers", buffers[:i] + [empty] + buffers[i + 1:], f"buffer {i} emptied")


def _mut_offline_plan(rng, m, log):
    sg = _sg(m)
    n = len(sg.tensors or []) if sg else 0
    r = rng.random()
    count = n if r < 0.7 else rng.choice((0, max(n - 1, 0), n + 1, -1, INT32_MAX))
    offsets = [rng.choice((-1, -1, 0, 16, 48, 1024, -2, -16, INT32_MAX, INT32_MIN, 16 * rng.randrange(1 << 12))) for _ in range(n)]
    values = [0, 0, count] + offsets
    if rng.random() < 0.1:
        values = values[: rng.randrange(len(values) + 1)]
    raw = np.array(values, dtype="<i4").view(np.uint8)
    if rng.random() < 0.05:
        raw = raw[: max(len(raw) - rng.randint(1, 3), 0)]
    buffers = list(m.buffers or [])
    index = len(buffers) if rng.random() < 0.9 else _uint_index(rng, len(buffers))
    meta = schema.MetadataT()
    meta.name, meta.buffer = OFFLINE_PLAN_METADATA, index
    log.set(m, "buffers", buffers + [schema.BufferT()], f"offline plan {values[:8]}...")
    m.buffers[-1].data = raw
    log.set(m, "metadata", list(m.metadata or []) + [meta], "")


MUTATORS = (_mut_op_io, _mut_op_io, _mut_shape, _mut_shape, _mut_tensor, _mut_subgraph, _mut_codes, _mut_codes,
            _mut_options, _mut_buffers, _mut_offline_plan)


def pack(model) -> bytes:
    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def mutate_structure(rng: random.Random, model) -> tuple[bytes | None, list[str]]:
    """Mutate the unpacked ``model`` in place, pack it and undo the changes; None if the change
    cannot be packed (a value outside its field's type)."""
    log = _Log()
    try:
        for _ in range(rng.choice((1, 1, 2, 3))):
            rng.choice(MUTATORS)(rng, model, log)
        try:
            data = pack(model)
        except (ValueError, OverflowError, TypeError, AttributeError, IndexError) as e:  # struct.error is a ValueError
            return None, log.notes + [f"unpackable: {e}"]
    finally:
        log.undo()
    if rng.random() < 0.2:
        data = mutate_bytes(rng, data)
        log.notes.append("bytes mutated")
    return data, log.notes


# --- the driver --------------------------------------------------------------------------------------
@dataclass
class FuzzReport:
    counts: dict = field(default_factory=lambda: {"error": 0, "prediction": 0, "unpackable": 0})
    failures: list = field(default_factory=list)  # (case, seed model, notes, exception)
    slowest: tuple = (0.0, -1)  # (seconds, case)

    @property
    def cases(self) -> int:
        """Mutated models run through the reader and the memory model."""
        return self.counts["error"] + self.counts["prediction"] + len(self.failures)


class Fuzzer:
    """Mutated models from the seed models; case ``k`` of run ``seed`` is reproducible alone
    (``Fuzzer(seeds).case(seed, k)``), a fraction ``structural`` of them mutated as flatbuffers."""

    def __init__(self, seed_bytes: dict[str, bytes], structural: float = 0.4):
        self.seed_bytes, self.structural = seed_bytes, structural
        self.names = sorted(seed_bytes)
        self.structural_names = [n for n in STRUCTURAL_SEEDS if n in seed_bytes] or self.names
        self.models = {n: schema.ModelT.InitFromPackedBuf(bytearray(seed_bytes[n]), 0) for n in self.structural_names}

    def case(self, seed: int, k: int) -> tuple[str, bytes | None, list[str]]:
        """(seed model, mutated bytes or None if the mutation could not be packed, what was done)."""
        rng = random.Random(f"{seed}:{k}")
        if rng.random() < self.structural:
            name = rng.choice(self.structural_names)
            return (name, *mutate_structure(rng, self.models[name]))
        name = rng.choice(self.names)
        return name, mutate_bytes(rng, self.seed_bytes[name]), ["bytes"]

    def run(self, cases: int, seed: int = 0) -> FuzzReport:
        """Run mutated models until ``cases`` of them have been tried (unpackable ones skipped)."""
        report = FuzzReport()
        k = 0
        while report.cases < cases:
            name, data, notes = self.case(seed, k)
            if data is None:
                report.counts["unpackable"] += 1
            else:
                t0 = time.perf_counter()
                try:
                    report.counts[outcome(data)] += 1
                except Exception as e:  # noqa: BLE001 -- a crash is what we are looking for
                    frame = traceback.extract_tb(e.__traceback__)[-1]
                    where = f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}"
                    report.failures.append((k, name, notes, f"{type(e).__name__} at {where}: {str(e)[:300]}"))
                report.slowest = max(report.slowest, (time.perf_counter() - t0, k))
            k += 1
        return report


def run_fuzz(seed_bytes: dict[str, bytes], cases: int, seed: int = 0, structural: float = 0.4) -> FuzzReport:
    return Fuzzer(seed_bytes, structural).run(cases, seed)


@pytest.fixture(scope="module")
def seeds(corpus):
    return {name: corpus[name].read_bytes() for name in SEEDS}


def test_ten_thousand_mutated_models_never_crash(seeds):
    report = run_fuzz(seeds, CASES, seed=0)
    shown = "\n".join(f"case {k} ({name}; {'; '.join(notes)}): {err}" for k, name, notes, err in report.failures[:10])
    assert not report.failures, f"{len(report.failures)} of {report.cases} cases crashed (replay: Fuzzer(seeds).case(0, k)):\n{shown}"
    assert report.cases == CASES
    assert report.counts["unpackable"] < CASES // 20
    # Both outcomes are reached often: the mutations neither all break the file nor all miss.
    assert report.counts["prediction"] > CASES // 10 and report.counts["error"] > CASES // 10, report.counts
    assert report.slowest[0] < 2.0, report.slowest


@pytest.fixture(scope="module")
def calibration_seeds():
    """Every calibration model that proves an op exact (bench/calibrate_tail.py; the same files
    tests/test_coverage.py builds and measures, from the same cache)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "calibrate_tail.py"
    spec = importlib.util.spec_from_file_location("calibrate_tail", path)
    module = sys.modules.get("calibrate_tail")
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules["calibrate_tail"] = module  # its dataclasses look themselves up there
        spec.loader.exec_module(module)
    names = sorted({name for where, name in PROOF.values() if where == "bench/calibrate_tail.py"})
    out = module.cache_dir()
    return {name: module.build(name, out).read_bytes() for name in names}


@pytest.mark.slow
def test_mutated_calibration_models_never_crash(calibration_seeds):
    """The models behind every op modelled exactly (LSTM, SVDF, TRANSPOSE_CONV, BATCH_MATMUL, the
    reduce, shape and logic ops ...), mutated: each structural mutation starts from any of them."""
    assert len(calibration_seeds) >= 40
    fuzzer = Fuzzer(calibration_seeds, structural=0.5)
    fuzzer.structural_names = fuzzer.names
    fuzzer.models = {n: schema.ModelT.InitFromPackedBuf(bytearray(b), 0) for n, b in calibration_seeds.items()}
    cases = 20_000
    report = fuzzer.run(cases, seed=1)
    shown = "\n".join(f"case {k} ({name}; {'; '.join(notes)}): {err}" for k, name, notes, err in report.failures[:10])
    assert not report.failures, f"{len(report.failures)} of {report.cases} cases crashed:\n{shown}"
    assert report.counts["prediction"] > cases // 10 and report.counts["error"] > cases // 10, report.counts
    assert report.slowest[0] < 2.0, report.slowest  # no hang: every case answers at once
    for name, data in calibration_seeds.items():
        assert outcome(data) == "prediction", name


def test_the_seeds_themselves_predict(seeds):
    for data in seeds.values():
        assert outcome(data) == "prediction"


mutation = st.tuples(st.sampled_from(["flip", "set", "insert", "delete"]), st.integers(0, 1 << 30), st.integers(0, 255))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(SEEDS), mutations=st.lists(mutation, min_size=1, max_size=8), cut=st.one_of(st.none(), st.integers(0, 1 << 30)))
def test_byte_mutations_never_crash_hypothesis(seeds, which, mutations, cut):
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
    outcome(bytes(data))


# --- guards: one case per crash the fuzzing found ---------------------------------------------------
def _graph(ops, shapes=None, dtype="int8"):
    """Tensors 0..4 (input, weights, bias, output, axes) and the given (kind, inputs, outputs) ops."""
    shapes = shapes or {}
    defaults = {0: (1, 8, 8, 4), 1: (4, 3, 3, 4), 2: (4,), 3: (1, 8, 8, 4), 4: (2,)}
    tensors = [Tensor(f"t{i}", shapes.get(i, defaults[i]), "int32" if i in (2, 4) else dtype, is_constant=i in (1, 2, 4),
                      quant_channels=4 if i == 1 else 1) for i in range(5)]
    graph = Graph(tensors, [Op(kind, tuple(ins), tuple(outs)) for kind, ins, outs in ops], [0], [3])
    graph.check()
    return graph


OPERAND_CASES = {
    "no inputs": ((), (3,)),
    "input only": ((0,), (3,)),
    "input -1": ((-1, 1, 2), (3,)),
    "weights -1": ((0, -1, 2), (3,)),
    "axes -1": ((0, -1), (3,)),
    "no outputs": ((0, 1, 2), ()),
    "output -1": ((0, 1, 2), (-1,)),
    "nothing": ((), ()),
}
GUARDED_KINDS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MEAN", "AVERAGE_POOL_2D", "SOFTMAX", "TRANSPOSE_CONV",
                 "BATCH_MATMUL", "EMBEDDING_LOOKUP", "SVDF", "UNIDIRECTIONAL_SEQUENCE_LSTM")


@pytest.mark.parametrize("case", OPERAND_CASES)
def test_ops_missing_operands_are_priced_not_crashed(case):
    """Found: FULLY_CONNECTED without inputs (persistent.py), CONV_2D / DEPTHWISE_CONV_2D with
    only an input or none, MEAN without input or output (scratch.py), for every library."""
    from toolchain.memory.scratch import scratch_requests

    ins, outs = OPERAND_CASES[case]
    for kind in GUARDED_KINDS:
        for dtype in ("int8", "int16", "float32"):
            graph = _graph([(kind, ins, outs)], dtype=dtype)
            check_predictions(graph)
            for library in LIBRARIES:
                requests = scratch_requests(graph, library)
                if not ins or ins[0] < 0:  # no input: no kernel asks for scratch
                    assert requests == [], (kind, library)


def test_missing_operands_price_as_the_docstrings_say():
    from toolchain.memory.persistent import op_allocations
    from toolchain.memory.scratch import scratch_requests

    full = _graph([("FULLY_CONNECTED", (0, 1, 2), (3,))])
    no_inputs = _graph([("FULLY_CONNECTED", (), (3,))])
    no_outputs = _graph([("FULLY_CONNECTED", (0, 1, 2), ())])
    # Per-channel filter: the multiplier and shift arrays, 4 bytes per output channel each.
    assert op_allocations(full, full.ops[0])[2] == [(16, 16), (16, 16)]
    assert op_allocations(no_inputs, no_inputs.ops[0])[2] == [(16, 16), (16, 16)]  # type unknown: counted
    assert op_allocations(no_outputs, no_outputs.ops[0])[2] == []  # no channel count
    int16 = _graph([("SOFTMAX", (-1,), (3,))], dtype="int16")
    assert op_allocations(int16, int16.ops[0])[2] == []  # the int16 tables need an int16 input
    # MEAN's optional axes left out: one resolved axis; a missing output: no request at all.
    mean = _graph([("MEAN", (0, -1), (3,))])
    assert [r.size_bytes for r in scratch_requests(mean)] == [4 * 256, 16, 4]
    assert scratch_requests(_graph([("MEAN", (0, 4), ())])) == []


@pytest.mark.parametrize("shape", [(), (0,), (1, 0, 8, 4), (5,), (1, 1, 1, 1, 4)])
def test_odd_shapes_are_priced_not_crashed(shape):
    """Found: scalar (shape ``()``) inputs of convolutions and pools indexed their channels
    (scratch.py); zero-size and other ranks are priced too."""
    from toolchain.memory.scratch import scratch_requests

    for kind in GUARDED_KINDS:
        for which in (0, 1, 3, 4):
            graph = _graph([(kind, (0, 1, 2) if kind != "MEAN" else (0, 4), (3,))], shapes={which: shape})
            check_predictions(graph)
            if kind == "AVERAGE_POOL_2D" and which == 0:
                channels = shape[-1] if shape else 1
                assert [r.size_bytes for r in scratch_requests(graph, "cmsis-nn")] == [4 * channels]


def _packed(seed: bytes, change) -> bytes:
    model = schema.ModelT.InitFromPackedBuf(bytearray(seed), 0)
    change(model)
    return pack(model)


def _error(data: bytes) -> str:
    with pytest.raises(InputError) as e:
        parse_model(data, WHERE)
    message = str(e.value)
    assert "\n" not in message and message.startswith(WHERE + ":"), message
    return message


def test_graph_inputs_and_outputs_must_name_real_tensors(seeds):
    """Found: a subgraph input or output of -1 was read as "the last tensor" (or crashed the tail
    replay of a model without tensors); an op's optional operand may still be -1."""
    seed = seeds["fc_only"]
    for attr in ("inputs", "outputs"):
        data = _packed(seed, lambda m, attr=attr: setattr(m.subgraphs[0], attr, [-1]))
        assert "refers to tensor -1" in _error(data)

    def optional_bias(m):
        op = next(op for op in m.subgraphs[0].operators if len(op.inputs) == 3)
        op.inputs = [int(op.inputs[0]), int(op.inputs[1]), -1]

    assert outcome(_packed(seed, optional_bias)) == "prediction"


def test_errors_quoting_a_corrupt_name_stay_on_one_line(seeds):
    """Found: a tensor name holding a newline (a byte mutation let it run into the file) was
    quoted whole in the "unsupported type" message (now: a type the schema does not define)."""

    def change(m):
        t = m.subgraphs[0].tensors[0]
        t.name, t.type = "line one\nline two" + "x" * 500, max(_TENSOR_TYPES) + 1

    message = _error(_packed(seeds["fc_only"], change))
    assert "line one?line two" in message and len(message) < 300


def test_negative_offline_offsets_are_a_malformed_plan(seeds):
    """Offsets below -1 point outside the arena: the plan is malformed (what `moofa plan`
    drops and replans), not a head below zero."""
    seed = seeds["fc_only"]
    n = len(parse_model(seed).tensors)

    def plan(offsets):
        def change(m):
            raw = np.array([0, 0, n, *offsets], dtype="<i4").view(np.uint8)
            m.buffers.append(schema.BufferT())
            m.buffers[-1].data = raw
            meta = schema.MetadataT()
            meta.name, meta.buffer = OFFLINE_PLAN_METADATA, len(m.buffers) - 1
            m.metadata = list(m.metadata or []) + [meta]

        return _packed(seed, change)

    assert parse_model(plan([-1] * n)).offline_offsets == [-1] * n
    message = _error(plan([-1] * (n - 1) + [-16]))
    assert OFFLINE_PLAN_METADATA in message and "offset -16" in message
    # An overlapping plan is a bad plan but a model TFLM runs: it is predicted as it is.
    assert outcome(plan([0] * n)) == "prediction"


@pytest.mark.parametrize("stride", [(1, 1), (2, 2), (3, 1), (0, 0), (-1, INT32_MIN), (INT32_MAX, 2)])
@pytest.mark.parametrize("shape", [(), (0,), (1, 0, 8, 4), (5,), (1, 8, 8, 32)])
def test_transpose_conv_with_odd_strides_and_shapes_is_priced_not_crashed(stride, shape):
    """TRANSPOSE_CONV's operands are (output shape, filter, input, bias): its scratch (reference
    and CMSIS-NN, which reads the strides) is priced for any input shape and any stride a file
    can hold, never negative."""
    from toolchain.memory.scratch import scratch_requests

    for dtype in ("int8", "int16", "float32"):
        graph = _graph([("TRANSPOSE_CONV", (4, 1, 0, 2), (3,))], shapes={0: shape}, dtype=dtype)
        graph.ops[0].attrs.update(stride=stride, padding="SAME")
        check_predictions(graph)
        for library in LIBRARIES:
            assert all(r.size_bytes >= 0 for r in scratch_requests(graph, library))


def test_batch_matmul_prepare_prices_as_its_docstring_says():
    """BATCH_MATMUL's Prepare (persistent.py _batch_matmul_prepare): quantization data for a
    non-float lhs, a transposed copy (eval tensor, dims, data) of the lhs when adj_x and of the rhs
    unless adj_y, the output's dims; a missing operand gives no copy and counts as quantized."""
    from toolchain.memory.persistent import HOST_KERNELS, MCU32_CMSIS_NN_KERNELS, op_allocations

    def prepare(ins, outs, kernels=HOST_KERNELS, dtype="int8", **attrs):
        graph = _graph([("BATCH_MATMUL", ins, outs)], shapes={0: (1, 4, 8), 1: (1, 8, 6), 3: (1, 4, 6)}, dtype=dtype)
        graph.ops[0].attrs.update(attrs)
        return [size for size, align in op_allocations(graph, graph.ops[0], kernels)[2] if align == 16]

    assert prepare((0, 1), (3,)) == [28, 24, 16, 48, 16]
    assert prepare((0, 1), (3,), adj_x=True, adj_y=True) == [28, 24, 16, 32, 16]
    assert prepare((0, 1), (3,), dtype="float32") == [24, 16, 192, 16]
    assert prepare((0, 1), (3,), MCU32_CMSIS_NN_KERNELS) == [12, 16, 48, 16, 28]
    assert prepare((), ()) == [28]
    assert prepare((0, -1), (-1,)) == [28]
