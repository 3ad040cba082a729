"""What the memory model stands behind: which ops it models exactly, and what TFLM refuses.

Three answers for a model on a board, so that no figure is printed as exact that the model
cannot stand behind:

- **exact**: every op kind of the model is modelled (:data:`MODELLED`: its tail measured, its
  kernel scratch modelled, a calibration model named that proves it) *and* the board's build is
  one the figures were measured on (:data:`MEASURED_BUILDS`: the 64-bit host build, and TFLM built
  for ARMv7E-M Cortex-M cores with reference or CMSIS-NN kernels, run in QEMU). Otherwise the
  target is *approximate*, with the reasons: the ops not modelled, or a build not measured (ESP-NN,
  CMSIS-NN without the DSP extension).
- **refused**: a check TFLM's kernels make in ``Prepare`` that depends only on the model fails,
  so ``AllocateTensors`` would fail on every build (:func:`tflm_refusals`). ``moofa verify``
  reports it as "will not run on TFLM" and exits 1.
- :data:`TFLM_BUILTIN_OPS` and :data:`TFLM_CUSTOM_OPS`: every op the pinned TFLM registers, for
  the coverage table (``moofa ops``, docs/OPS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolchain.ir.graph import TFLM_UNSIZED_DTYPES, Graph
from toolchain.memory.kernel_dtypes import dtype_refusals
from toolchain.memory.persistent import HOST_KERNELS, custom_option

#: The TFLM source the op lists below were read from (tflite-micro, micro_mutable_op_resolver.h).
TFLM_COMMIT = "90b983c2"

#: Every builtin ``MicroMutableOpResolver::Add*`` registers (tensorflow/lite/micro/micro_mutable_op_resolver.h).
TFLM_BUILTIN_OPS = (
    "ABS", "ADD", "ADD_N", "ARG_MAX", "ARG_MIN", "ASSIGN_VARIABLE", "AVERAGE_POOL_2D", "BATCH_MATMUL",
    "BATCH_TO_SPACE_ND", "BROADCAST_ARGS", "BROADCAST_TO", "CALL_ONCE", "CAST", "CEIL", "CONCATENATION", "CONV_2D",
    "COS", "CUMSUM", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE", "DEQUANTIZE", "DIV", "DYNAMIC_UPDATE_SLICE", "ELU",
    "EMBEDDING_LOOKUP", "EQUAL", "EXP", "EXPAND_DIMS", "FILL", "FLOOR", "FLOOR_DIV", "FLOOR_MOD", "FULLY_CONNECTED",
    "GATHER", "GATHER_ND", "GREATER", "GREATER_EQUAL", "HARD_SWISH", "IF", "L2_NORMALIZATION", "L2_POOL_2D",
    "LEAKY_RELU", "LESS", "LESS_EQUAL", "LOG", "LOGICAL_AND", "LOGICAL_NOT", "LOGICAL_OR", "LOGISTIC", "LOG_SOFTMAX",
    "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MIRROR_PAD", "MUL", "NEG", "NOT_EQUAL", "PACK", "PAD", "PADV2",
    "PRELU", "QUANTIZE", "READ_VARIABLE", "REDUCE_ALL", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RESHAPE",
    "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "REVERSE_V2", "ROUND", "RSQRT", "SELECT_V2", "SHAPE", "SIN",
    "SLICE", "SOFTMAX", "SPACE_TO_BATCH_ND", "SPACE_TO_DEPTH", "SPLIT", "SPLIT_V", "SQRT", "SQUARE",
    "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "SVDF", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
    "UNIDIRECTIONAL_SEQUENCE_LSTM", "UNPACK", "VAR_HANDLE", "WHILE", "ZEROS_LIKE",
)

#: The custom ops the same resolver can register (``AddCustom``): the signal library's audio
#: front end (signal/micro/kernels/), the circular buffer, TFLM's weight decoder, the SSD
#: post-processing and the Ethos-U delegate op.
TFLM_CUSTOM_OPS = (
    "CIRCULAR_BUFFER", "TFLM_DECODE", "TFLite_Detection_PostProcess", "ethos-u",
    "SignalDelay", "SignalEnergy", "SignalFftAutoScale", "SignalFilterBank", "SignalFilterBankLog",
    "SignalFilterBankSpectralSubtraction", "SignalFilterBankSquareRoot", "SignalFramer", "SignalIrfft",
    "SignalOverlapAdd", "SignalPCAN", "SignalRfft", "SignalStacker", "SignalWindow",
)

# The model that proves each modelled op, head and tail, against TFLM's recording allocator on
# the host build: a test-corpus model (tests/corpus.py, held equal by tests/test_verify.py on
# every run) or a calibration model of bench/calibrate_tail.py (held by that script; its run is
# in docs/BENCHMARKS.md).
_TEST_CORPUS, _CALIBRATION = "tests/corpus.py", "bench/calibrate_tail.py"
PROOF: dict[str, tuple[str, str]] = {
    "CONV_2D": (_TEST_CORPUS, "ds_cnn_kws"),
    "DEPTHWISE_CONV_2D": (_TEST_CORPUS, "ds_cnn_kws"),
    "AVERAGE_POOL_2D": (_TEST_CORPUS, "ds_cnn_kws"),
    "FULLY_CONNECTED": (_TEST_CORPUS, "fc_only"),
    "RESHAPE": (_TEST_CORPUS, "fc_only"),
    "SOFTMAX": (_TEST_CORPUS, "ds_cnn_kws"),
    "MAX_POOL_2D": (_TEST_CORPUS, "pool_mix"),
    "CONCATENATION": (_TEST_CORPUS, "concat_branches"),
    "MEAN": (_TEST_CORPUS, "dw_stack_160"),
    "ADD": (_TEST_CORPUS, "resnet8"),
    "HARD_SWISH": (_TEST_CORPUS, "mbconv_se_hswish"),
    "MUL": (_TEST_CORPUS, "mbconv_se_hswish"),
    "RELU": (_CALIBRATION, "relu_8"),
    "RELU6": (_CALIBRATION, "relu6_8"),
    "LOGISTIC": (_CALIBRATION, "sigm_8"),
    "TANH": (_CALIBRATION, "tanh_8"),
    "PAD": (_CALIBRATION, "pad"),
    "MAXIMUM": (_CALIBRATION, "maximum"),
    "TRANSPOSE": (_CALIBRATION, "transpose"),
    "SHAPE": (_CALIBRATION, "reshape_8"),
    "PACK": (_CALIBRATION, "reshape_8"),
    "SUB": (_CALIBRATION, "sub"),
    "STRIDED_SLICE": (_CALIBRATION, "strided_slice"),
    "TRANSPOSE_CONV": (_CALIBRATION, "tconv2"),
    "BATCH_MATMUL": (_CALIBRATION, "bmm2"),
    "EMBEDDING_LOOKUP": (_CALIBRATION, "embed_f"),
    "SVDF": (_CALIBRATION, "svdf2"),
    "EXP": (_CALIBRATION, "exp_f"),
    # Float32, int8 and 16x8, two shapes each: lstm, lstm_f, lstm_tm_f, lstm_last, lstm_last_f,
    # lstm_16x8 and lstm_tm_16x8 are measured by the same script (and bench/bench_board_arena.py);
    # the one named here is time-major with a batch of 2.
    "UNIDIRECTIONAL_SEQUENCE_LSTM": (_CALIBRATION, "lstm_tm"),
    "SUM": (_CALIBRATION, "sum2"),
    "REDUCE_MAX": (_CALIBRATION, "reduce_max2"),
    "REDUCE_MIN": (_CALIBRATION, "reduce_min2"),
    "MINIMUM": (_CALIBRATION, "minimum2"),
    "SQUARED_DIFFERENCE": (_CALIBRATION, "sqdiff2"),
    "DIV": (_CALIBRATION, "div"),
    "UNPACK": (_CALIBRATION, "unpack"),
    "SPLIT_V": (_CALIBRATION, "split_v"),
    "ELU": (_CALIBRATION, "elu2"),
    "ARG_MAX": (_CALIBRATION, "arg_max"),
    "ARG_MIN": (_CALIBRATION, "arg_min"),
    "L2_NORMALIZATION": (_CALIBRATION, "l2norm"),
    "LOG_SOFTMAX": (_CALIBRATION, "log_softmax"),
    "SPACE_TO_BATCH_ND": (_CALIBRATION, "space_batch"),
    "BATCH_TO_SPACE_ND": (_CALIBRATION, "space_batch"),
    "PADV2": (_CALIBRATION, "padv2"),
    **{kind: (_CALIBRATION, "unary_f") for kind in ("ABS", "SQRT", "RSQRT", "SQUARE", "LOG", "SIN", "COS", "FLOOR",
                                                     "CEIL", "ROUND", "NEG")},
    **{kind: (_CALIBRATION, "logic_f") for kind in ("GREATER_EQUAL", "LESS", "NOT_EQUAL", "CAST", "GREATER",
                                                     "LOGICAL_AND", "LOGICAL_OR", "LESS_EQUAL")},
    **{kind: (_CALIBRATION, "misc_f") for kind in ("FLOOR_DIV", "FLOOR_MOD", "MIRROR_PAD", "REVERSE_V2", "SELECT_V2")},
    **{kind: (_CALIBRATION, "logic2_f") for kind in ("LOGICAL_NOT", "EQUAL", "GATHER_ND")},
    "GATHER": (_CALIBRATION, "gather2"),
    "LEAKY_RELU": (_CALIBRATION, "leaky2"),
    "PRELU": (_CALIBRATION, "prelu2"),
    "RESIZE_NEAREST_NEIGHBOR": (_CALIBRATION, "resize_nn2"),
    "RESIZE_BILINEAR": (_CALIBRATION, "resize_bl2"),
    "SPLIT": (_CALIBRATION, "split2"),
    "SLICE": (_CALIBRATION, "slice2"),
    "DEPTH_TO_SPACE": (_CALIBRATION, "depth_to_space2"),
    "SPACE_TO_DEPTH": (_CALIBRATION, "space_to_depth2"),
    **{kind: (_CALIBRATION, "expand_squeeze_f") for kind in ("EXPAND_DIMS", "SQUEEZE")},
    **{kind: (_CALIBRATION, "fill_zeros_f") for kind in ("FILL", "ZEROS_LIKE")},
    "L2_POOL_2D": (_CALIBRATION, "l2pool_f"),
    **{kind: (_CALIBRATION, "broadcast_f") for kind in ("BROADCAST_TO", "BROADCAST_ARGS")},
    "DYNAMIC_UPDATE_SLICE": (_CALIBRATION, "dus_f"),
    "REDUCE_ALL": (_CALIBRATION, "reduce_all2"),
    # int8 (its OpData); float CUMSUM is in misc_f.
    "CUMSUM": (_CALIBRATION, "cumsum2"),
    # Its pointer scratch is the build's pointer width x inputs; int8 (its OpData) in add_n_8.
    "ADD_N": (_CALIBRATION, "add_n_f"),
    "QUANTIZE": (_CALIBRATION, "q_float_io"),
    "DEQUANTIZE": (_CALIBRATION, "q_float_io"),
    # Control flow: every subgraph planned in one arena with TFLM's one clock
    # (toolchain/memory/planner.py), the tail's arrays per subgraph (persistent.py); if_mean_f
    # puts scratch-requesting ops inside the branches.
    "IF": (_CALIBRATION, "if_f"),
    "WHILE": (_CALIBRATION, "while_f"),
    # Resource variables, with the CALL_ONCE that initialises them: the interpreter's
    # MicroResourceVariables, each variable's buffer (the first ASSIGN_VARIABLE's Prepare).
    **{kind: (_CALIBRATION, "var_f") for kind in ("CALL_ONCE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE")},
    # Custom ops go by the reader's name for them, ``CUSTOM:<name>``.
    **{f"CUSTOM:{kind}": (_CALIBRATION, "signal_f") for kind in ("SignalWindow", "SignalFftAutoScale", "SignalEnergy",
                                                                  "SignalPCAN", "SignalFilterBankSquareRoot")},
    "CUSTOM:SignalStacker": (_CALIBRATION, "stacker_f"),  # its state sized from its options
    # State per row of the input, sized in Prepare from its shape and the options.
    **{f"CUSTOM:{kind}": (_CALIBRATION, "signal_state_f") for kind in ("SignalDelay", "SignalFramer", "SignalOverlapAdd")},
    # Buffers sized in Init from the options (the FFTs' KISS FFT state; Rfft's scratch).
    **{f"CUSTOM:{kind}": (_CALIBRATION, "signal_fft_f") for kind in (
        "SignalFilterBank", "SignalFilterBankLog", "SignalFilterBankSpectralSubtraction", "SignalRfft", "SignalIrfft")},
    "CUSTOM:CIRCULAR_BUFFER": (_CALIBRATION, "circular_buffer_8"),
    "CUSTOM:TFLite_Detection_PostProcess": (_CALIBRATION, "detection_f"),  # eleven scratch buffers
}

#: Op kinds the memory model covers exactly (on the measured build).
MODELLED = frozenset(PROOF)

# QUANTIZE and DEQUANTIZE were measured together and their tail split evenly
# (toolchain/memory/persistent.py): exact only when the model has both.
_MEASURED_AS_A_PAIR = frozenset({"QUANTIZE", "DEQUANTIZE"})

#: The builds whose figures are measured (head and tail, every modelled op): the host package's
#: interpreter, and TFLM built for Cortex-M4 and M7 and run in QEMU (toolchain/runtime/cortexm.py,
#: bench/bench_board_arena.py).
MEASURED_BUILDS = {
    (8, "reference"): "64-bit host, reference kernels",
    (4, "reference"): "32-bit Cortex-M (ARMv7E-M), reference kernels",
    (4, "cmsis-nn"): "32-bit Cortex-M (ARMv7E-M, DSP), CMSIS-NN",
}
#: The 32-bit cores those builds were measured on (ARMv7E-M with DSP: the same struct sizes and
#: CMSIS-NN code paths on every one of them).
MEASURED_CORES = frozenset({"cortex-m4", "cortex-m4f", "cortex-m7"})


@dataclass(frozen=True)
class Exactness:
    """Whether a target's figures are exact, and if not, why."""

    unmodelled_ops: tuple[str, ...]
    build_reasons: tuple[str, ...]

    @property
    def exact(self) -> bool:
        return not self.unmodelled_ops and not self.build_reasons

    @property
    def reasons(self) -> tuple[str, ...]:
        ops = (f"ops not modelled exactly: {', '.join(self.unmodelled_ops)}",) if self.unmodelled_ops else ()
        return ops + self.build_reasons

    def to_dict(self) -> dict:
        return {"exact": self.exact, "unmodelled_ops": list(self.unmodelled_ops),
                "approximate_because": list(self.reasons)}


#: The custom ops whose tail or scratch is sized from their flexbuffer options, and the options
#: it takes (toolchain/memory/persistent.py, scratch.py): without them the figure is a guess, and
#: the op counts as not modelled.
SIZED_BY_OPTIONS: dict[str, tuple[str, ...]] = {
    "CUSTOM:SignalStacker": ("num_channels", "stacker_left_context", "stacker_right_context"),
    "CUSTOM:SignalDelay": ("delay_length",),
    "CUSTOM:SignalFramer": ("frame_size", "frame_step"),
    "CUSTOM:SignalFilterBank": ("num_channels",),
    "CUSTOM:SignalFilterBankSpectralSubtraction": ("num_channels",),
    "CUSTOM:SignalRfft": ("T", "fft_length"),
    "CUSTOM:SignalIrfft": ("T", "fft_length"),
    "CUSTOM:TFLite_Detection_PostProcess": ("max_detections", "num_classes"),
}


def _options_unread(op) -> bool:
    needed = SIZED_BY_OPTIONS.get(op.kind)
    if not needed:
        return False
    values = dict(zip(needed, (custom_option(op, name) for name in needed)))
    if not all(isinstance(v, int) and v >= 0 for v in values.values()):
        return True
    return "T" in values and values["T"] not in _FFT_TYPES  # TFLM's FFTs run int16, int32, float32


_FFT_TYPES = frozenset({0, 2, 7})  # LiteRT TensorType FLOAT32, INT32, INT16


def unmodelled_ops(graph: Graph) -> tuple[str, ...]:
    """The op kinds of ``graph`` (and of its other subgraphs, if read) the memory model does
    not cover exactly, sorted: kinds it has no figures for, and ops sized from options the
    model does not give."""
    kinds = set(graph.op_kinds).union(*(sub.op_kinds for sub in graph.subgraphs))
    missing = kinds - MODELLED
    missing |= {op.kind for g in (graph, *graph.subgraphs) for op in g.ops if _options_unread(op)}
    pair = kinds & _MEASURED_AS_A_PAIR
    if pair and pair != _MEASURED_AS_A_PAIR:
        missing |= pair
    return tuple(sorted(missing))


def exactness(graph: Graph, pointer_bytes: int, kernel_library: str, core: str | None = None) -> Exactness:
    """:class:`Exactness` of ``graph``'s figures on a build (pointer width, kernel library, core)."""
    build = []
    if (pointer_bytes, kernel_library) not in MEASURED_BUILDS:
        build.append(f"the {pointer_bytes * 8}-bit {kernel_library} build is not measured (its scratch and OpData sizes "
                     "are documented from its source)")
    elif pointer_bytes == 4 and core is not None and core not in MEASURED_CORES:
        build.append(f"measured on ARMv7E-M builds; {core}'s build is not measured")
    return Exactness(unmodelled_ops(graph), tuple(build))


# --- what TFLM refuses in Prepare, from the model alone ----------------------------------------
def _near(value, target: float, tolerance: float) -> bool:
    return value is not None and abs(float(value) - target) <= tolerance


def _softmax(graph: Graph, op) -> str | None:
    # tensorflow/lite/micro/kernels/softmax_common.cc, CalculateSoftmaxParams.
    x, y = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    if y.dtype == "int16":
        if x.dtype not in ("int8", "int16"):
            return f"int16 output needs an int8 or int16 input, not {x.dtype}"
    elif x.dtype != y.dtype:
        return f"input {x.dtype} and output {y.dtype} differ"
    if x.dtype == "int16":
        if x.zero_point not in (0, None) or y.zero_point not in (0, None):
            return "int16 input and output zero points must be 0"
        if not _near(y.scale, 1 / 32768, 0.001 / 32768):
            return f"int16 output scale must be 1/32768, not {y.scale!r}"
    elif x.dtype == "int8" and y.dtype == "int16":
        if y.zero_point != -32768 or not _near(y.scale, 1 / 65536, 0.001 / 65536):
            return f"int16 output of an int8 input must have zero point -32768 and scale 1/65536, not {y.zero_point} and {y.scale!r}"
    elif x.dtype == "int8":
        if y.zero_point != -128 or y.scale is None or np.float32(y.scale) != np.float32(1 / 256):
            return f"int8 output must have zero point -128 and scale 1/256, not {y.zero_point} and {y.scale!r}"
    return None


def _logistic(graph: Graph, op) -> str | None:
    # tensorflow/lite/micro/kernels/logistic_common.cc, LogisticPrepare.
    x, y = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    if x.dtype != y.dtype:
        return f"input {x.dtype} and output {y.dtype} differ"
    if x.dtype == "int8" and y.zero_point != -128:
        return f"int8 output zero point must be -128, not {y.zero_point}"
    if x.dtype == "int16" and (x.zero_point not in (0, None) or y.zero_point not in (0, None)):
        return "int16 input and output zero points must be 0"
    return None


def _concatenation(graph: Graph, op) -> str | None:
    # tensorflow/lite/micro/kernels/concatenation.cc, ConcatenationPrepare: at most kMaxInputNum
    # (10) inputs; int8 inputs share the output's scale and zero point, int16 ones have zero point 0.
    if len(op.inputs) > 10:
        return f"{len(op.inputs)} inputs; TFLM's kernel takes at most 10"
    y = graph.tensors[op.outputs[0]]
    for k, t in enumerate(op.inputs):
        if not 0 <= t < len(graph.tensors):
            continue
        x = graph.tensors[t]
        if x.dtype == "int8" and y.dtype == "int8" and (x.scale != y.scale or x.zero_point != y.zero_point):
            return f"int8 input {k} has scale {x.scale!r} and zero point {x.zero_point}, the output {y.scale!r} and {y.zero_point}"
        if x.dtype == "int16" and x.zero_point not in (0, None):
            return f"int16 input {k} has zero point {x.zero_point}, not 0"
    return None


def _dequantize(graph: Graph, op) -> str | None:
    # tensorflow/lite/micro/kernels/dequantize_common.cc, DequantizePrepare: an int8, int16 or
    # uint8 input and a float32 output. So the float16 weights the converter writes for
    # `supported_types = [tf.float16]` (a DEQUANTIZE in front of every float op) do not run.
    x, y = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    if x.dtype not in ("int8", "int16", "uint8"):
        hint = " (float16 weights: convert without supported_types = [tf.float16])" if x.dtype == "float16" else ""
        return f"input {x.dtype}: TFLM dequantizes only int8, int16 and uint8{hint}"
    if y.dtype != "float32":
        return f"output {y.dtype}: TFLM dequantizes only to float32"
    return None


def _constant_operand(index: int, what: str, max_rank: int | None = None):
    """A shape-like operand TFLM's kernel reads in Prepare and so needs constant (kernels/
    expand_dims.cc "Non-constant >axis<", fill.cc ">dims<", broadcast_to.cc ">shape<"; the output
    shape is fixed in the model); ``max_rank``: BROADCAST_TO's 1-5D limit on its input."""

    def check(graph: Graph, op) -> str | None:
        if max_rank is not None and len(graph.tensors[op.inputs[0]].shape) > max_rank:
            return f"input of rank {len(graph.tensors[op.inputs[0]].shape)}; TFLM's kernel takes at most {max_rank}"
        if index < len(op.inputs) and 0 <= op.inputs[index] < len(graph.tensors) and not graph.tensors[op.inputs[index]].is_constant:
            return f"{what} (input {index}) is not a constant; TFLM's kernel needs it constant"
        return None

    return check


_PREPARE_CHECKS = {"SOFTMAX": _softmax, "LOGISTIC": _logistic, "CONCATENATION": _concatenation, "DEQUANTIZE": _dequantize}
# Checks beside the tensor-type table (kernel_dtypes.py keeps these ops' type rules).
_OPERAND_CHECKS = {"EXPAND_DIMS": _constant_operand(1, "axis"), "FILL": _constant_operand(0, "dims"),
                   "BROADCAST_TO": _constant_operand(1, "shape", max_rank=5)}


def _cmsis_fully_connected(graph: Graph, op) -> str | None:
    # tensorflow/lite/micro/kernels/cmsis_nn/fully_connected.cc, Prepare: per-channel weights
    # only with an int8 input (measured: an int16 model fails AllocateTensors on that build).
    x = graph.tensors[op.inputs[0]]
    w = graph.tensors[op.inputs[1]] if len(op.inputs) > 1 and 0 <= op.inputs[1] < len(graph.tensors) else None
    if w is not None and w.quant_channels > 1 and x.dtype != "int8":
        return f"CMSIS-NN takes per-channel weights only with an int8 input, not {x.dtype}"
    return None


def _cmsis_transpose_conv(graph: Graph, op) -> str | None:
    # tensorflow/lite/micro/kernels/cmsis_nn/transpose_conv.cc, CalculateOpData: the int16 branch
    # reads the bias's type without checking that there is a bias (measured: AllocateTensors fails
    # on the cortex-m7 CMSIS-NN build for a bias-free 16x8 model; the reference kernel runs it).
    x = graph.tensors[op.inputs[2]] if len(op.inputs) > 2 and 0 <= op.inputs[2] < len(graph.tensors) else None
    has_bias = len(op.inputs) > 3 and op.inputs[3] >= 0
    if x is not None and x.dtype == "int16" and not has_bias:
        return "CMSIS-NN's kernel needs a bias for an int16 input"
    return None


_LIBRARY_CHECKS = {"cmsis-nn": {"FULLY_CONNECTED": _cmsis_fully_connected, "TRANSPOSE_CONV": _cmsis_transpose_conv}}


def _printable(name: str, limit: int = 60) -> str:
    name = "".join(c if c.isprintable() else "?" for c in name)
    return name if len(name) <= limit else name[: limit - 3] + "..."


def tflm_refusals(graph: Graph, kernel_library: str | None = None) -> list[str]:
    """``"<op #i KIND>: <reason>"`` for every op whose TFLM kernel would fail ``Prepare`` on this
    model, and ``"tensor k 'NAME': <reason>"`` for every tensor TFLM cannot allocate: whatever the
    build (checks that depend on the model only), or with ``kernel_library`` only the checks that
    build adds."""
    out = []
    if kernel_library is None:
        # TFLM sizes every tensor, constant or not, when it plans the arena
        # (micro_allocation_info.cc, via memory_helpers.cc TfLiteTypeSizeOf), and fails on a type
        # it has no size for.
        out += [f"tensor {k} '{_printable(t.name)}': type {t.dtype.upper()} has no size in TFLM (TfLiteTypeSizeOf), "
                "so AllocateTensors fails" for k, t in enumerate(graph.tensors) if t.dtype in TFLM_UNSIZED_DTYPES]
        # The tensor types each kernel accepts (toolchain/memory/kernel_dtypes.py); a type TFLM
        # cannot even size is said once, above.
        unsized = tuple(f" is {d}" for d in TFLM_UNSIZED_DTYPES)
        out += [r for r in dtype_refusals(graph) if not any(u in r for u in unsized)]
    checks = {**_PREPARE_CHECKS, **_OPERAND_CHECKS} if kernel_library is None else _LIBRARY_CHECKS.get(kernel_library, {})
    for k, sub in enumerate([graph, *graph.subgraphs]):
        for i, op in enumerate(sub.ops):
            check = checks.get(op.kind)
            if check is None or not op.inputs or not op.outputs or op.inputs[0] < 0 or op.outputs[0] < 0:
                continue
            reason = check(sub, op)
            if reason:
                out.append(f"{f'subgraph {k} ' if k else ''}op #{i} {op.kind}: {reason}")
    return out


def coverage_rows() -> list[dict]:
    """One row per op TFLM registers: modelled exactly (and the model that proves it) or not."""
    rows = []
    for kind, custom in [(k, False) for k in TFLM_BUILTIN_OPS] + [(k, True) for k in TFLM_CUSTOM_OPS]:
        proof = PROOF.get(f"CUSTOM:{kind}" if custom else kind)
        rows.append({"op": kind, "custom": custom, "modelled": proof is not None,
                     "proof": f"{proof[1]} ({proof[0]})" if proof else None,
                     "note": "exact when the model has both QUANTIZE and DEQUANTIZE" if kind in _MEASURED_AS_A_PAIR else None})
    return rows


def coverage_markdown() -> str:
    """docs/OPS.md: the coverage table with its counts (``moofa ops --markdown``; a test keeps the file equal)."""
    rows = coverage_rows()
    modelled = sum(r["modelled"] for r in rows)
    lines = [
        "# Op coverage of the memory model",
        "",
        f"Generated by `moofa ops --markdown` from `toolchain/memory/coverage.py`; every op tflite-micro "
        f"{TFLM_COMMIT} registers (`MicroMutableOpResolver::Add*`, builtin and custom).",
        "",
        f"**{len(rows)} ops: {modelled} modelled exactly, {len(rows) - modelled} not modelled.** A model with an op that is "
        "not modelled is reported as *approximate* by `moofa verify` (`\"exact\": false` and `\"unmodelled_ops\"` in "
        "`--json`; `--strict` makes it exit 2). The figures are measured on the builds: "
        + "; ".join(MEASURED_BUILDS.values()) + ". Other builds are approximate until measured (docs/ARCHITECTURE.md).",
        "",
        "| op | kind | modelled | proved by |",
        "|---|---|---|---|",
    ]
    for r in rows:
        proof = r["proof"] or ""
        if r["note"]:
            proof += f" ({r['note']})"
        lines.append(f"| `{r['op']}` | {'custom' if r['custom'] else 'builtin'} | {'exact' if r['modelled'] else 'no'} | {proof} |")
    return "\n".join(lines)


assert MODELLED <= set(HOST_KERNELS), "every modelled op has measured tail figures"
