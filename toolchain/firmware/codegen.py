"""Firmware files for a TFLM project, rendered from ``firmware_templates/`` with Jinja2.

``model_data.h/.cc`` follow TFLM's convention (``alignas(16) const unsigned char g_model[]`` and
its length), ``model_ops.h`` registers exactly the operator kinds the model uses in a
``MicroMutableOpResolver<N>``, ``model_config.h`` carries the arena size (the prediction for the
board times its margin), the input/output shapes and quantization, and the labels; ``main.cc``
is an example entry point.

Labels are checked (:func:`check_labels`: one per class of the model's first output, none empty,
none over 256 bytes of UTF-8, no NUL) and written as C string literals by
:func:`c_string_literal`, so any label compiles and reads back byte for byte.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jinja2

from toolchain.errors import InputError
from toolchain.files import write_atomically
from toolchain.ir.graph import Graph
from toolchain.memory.estimate import ArenaEstimate
from toolchain.memory.persistent import resource_variable_count
from toolchain.memory.planner import align_up
from toolchain.memory.scratch import KERNEL_LIBRARIES
from toolchain.resources import shipped_dir
from toolchain.runtime.runner import run

TEMPLATES_DIR = shipped_dir("firmware_templates")
VERSION = "0.1.0"

# TFLite builtin -> MicroMutableOpResolver method, for every builtin the pinned TFLM registers
# (tensorflow/lite/micro/micro_mutable_op_resolver.h; tests/test_coverage.py checks it against that header).
RESOLVER_METHODS = {
    "ABS": "AddAbs", "ADD": "AddAdd", "ADD_N": "AddAddN", "ARG_MAX": "AddArgMax", "ARG_MIN": "AddArgMin",
    "ASSIGN_VARIABLE": "AddAssignVariable", "AVERAGE_POOL_2D": "AddAveragePool2D", "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd", "BROADCAST_ARGS": "AddBroadcastArgs",
    "BROADCAST_TO": "AddBroadcastTo", "CALL_ONCE": "AddCallOnce", "CAST": "AddCast", "CEIL": "AddCeil",
    "CONCATENATION": "AddConcatenation", "CONV_2D": "AddConv2D", "COS": "AddCos", "CUMSUM": "AddCumSum",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "DEPTH_TO_SPACE": "AddDepthToSpace", "DEQUANTIZE": "AddDequantize",
    "DIV": "AddDiv", "DYNAMIC_UPDATE_SLICE": "AddDynamicUpdateSlice", "ELU": "AddElu",
    "EMBEDDING_LOOKUP": "AddEmbeddingLookup", "EQUAL": "AddEqual", "EXP": "AddExp", "EXPAND_DIMS": "AddExpandDims",
    "FILL": "AddFill", "FLOOR": "AddFloor", "FLOOR_DIV": "AddFloorDiv", "FLOOR_MOD": "AddFloorMod",
    "FULLY_CONNECTED": "AddFullyConnected", "GATHER": "AddGather", "GATHER_ND": "AddGatherNd",
    "GREATER": "AddGreater", "GREATER_EQUAL": "AddGreaterEqual", "HARD_SWISH": "AddHardSwish", "IF": "AddIf",
    "L2_NORMALIZATION": "AddL2Normalization", "L2_POOL_2D": "AddL2Pool2D", "LEAKY_RELU": "AddLeakyRelu",
    "LESS": "AddLess", "LESS_EQUAL": "AddLessEqual", "LOG": "AddLog", "LOGICAL_AND": "AddLogicalAnd",
    "LOGICAL_NOT": "AddLogicalNot", "LOGICAL_OR": "AddLogicalOr", "LOGISTIC": "AddLogistic",
    "LOG_SOFTMAX": "AddLogSoftmax", "MAXIMUM": "AddMaximum", "MAX_POOL_2D": "AddMaxPool2D", "MEAN": "AddMean",
    "MINIMUM": "AddMinimum", "MIRROR_PAD": "AddMirrorPad", "MUL": "AddMul", "NEG": "AddNeg",
    "NOT_EQUAL": "AddNotEqual", "PACK": "AddPack", "PAD": "AddPad", "PADV2": "AddPadV2", "PRELU": "AddPrelu",
    "QUANTIZE": "AddQuantize", "READ_VARIABLE": "AddReadVariable", "REDUCE_ALL": "AddReduceAll",
    "REDUCE_MAX": "AddReduceMax", "REDUCE_MIN": "AddReduceMin", "RELU": "AddRelu", "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape", "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor", "REVERSE_V2": "AddReverseV2", "ROUND": "AddRound",
    "RSQRT": "AddRsqrt", "SELECT_V2": "AddSelectV2", "SHAPE": "AddShape", "SIN": "AddSin", "SLICE": "AddSlice",
    "SOFTMAX": "AddSoftmax", "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd", "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit", "SPLIT_V": "AddSplitV", "SQRT": "AddSqrt", "SQUARE": "AddSquare",
    "SQUARED_DIFFERENCE": "AddSquaredDifference", "SQUEEZE": "AddSqueeze", "STRIDED_SLICE": "AddStridedSlice",
    "SUB": "AddSub", "SUM": "AddSum", "SVDF": "AddSvdf", "TANH": "AddTanh", "TRANSPOSE": "AddTranspose",
    "TRANSPOSE_CONV": "AddTransposeConv", "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
    "UNPACK": "AddUnpack", "VAR_HANDLE": "AddVarHandle", "WHILE": "AddWhile", "ZEROS_LIKE": "AddZerosLike",
}

# TfLitePtrUnion member for each element type (tensorflow/lite/core/c/common.h).
_PTR_FIELDS = {"int8": "int8", "uint8": "uint8", "int16": "i16", "int32": "i32", "float32": "f"}

# arm-none-eabi-gcc flags per core (the board file's `core`).
ARM_CPU_FLAGS = {
    "cortex-m0plus": ["-mcpu=cortex-m0plus"],
    "cortex-m4": ["-mcpu=cortex-m4"],
    "cortex-m4f": ["-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"],
    "cortex-m7": ["-mcpu=cortex-m7", "-mfpu=fpv5-d16", "-mfloat-abi=hard"],
    "cortex-m33": ["-mcpu=cortex-m33", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard"],
}

FIRMWARE_FILES = ("model_data.h", "model_data.cc", "model_ops.h", "model_config.h", "main.cc", "Makefile")


@dataclass(frozen=True)
class OpRegistration:
    kind: str
    method: str


def resolver_ops(graph: Graph) -> list[OpRegistration]:
    """The resolver calls for every distinct op kind, in first-use order."""
    missing = [k for k in graph.op_kinds if k not in RESOLVER_METHODS]
    if missing:
        raise InputError(f"TFLM's op resolver has no registration for {', '.join(missing)}; the model cannot run on TFLM")
    return [OpRegistration(k, RESOLVER_METHODS[k]) for k in graph.op_kinds]


def arena_size_for(estimate: ArenaEstimate, margin: float) -> int:
    return align_up(int(-(-estimate.arena_bytes * margin // 1)))


MAX_LABEL_BYTES = 256

# Bytes that stand for themselves in a C string literal: printable ASCII but for the three that
# would end the literal, start an escape, or start a trigraph (``??=`` is ``#`` before C++17).
_LITERAL_SAFE = frozenset(range(0x20, 0x7F)) - {ord('"'), ord("\\"), ord("?")}
_SIMPLE_ESCAPES = {ord('"'): '\\"', ord("\\"): "\\\\", ord("?"): "\\?", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}


def c_string_literal(text: str | bytes) -> str:
    """``text`` as a C/C++ string literal, quotes included, whose bytes are exactly ``text``'s
    UTF-8 (a ``str``; lone surrogates from ``os.fsdecode`` give back their original bytes) or
    ``text`` itself (``bytes``).

    Printable ASCII stands for itself; ``"``, backslash, ``?`` (no trigraph can form), newline,
    carriage return and tab take their simple escapes; every other byte, non-ASCII UTF-8
    included, a three-digit octal escape, which ends after three digits, so a digit after it
    stays a digit (a ``\\x`` escape would swallow it).
    """
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else bytes(text)
    out = []
    for b in data:
        if b in _LITERAL_SAFE:
            out.append(chr(b))
        else:
            out.append(_SIMPLE_ESCAPES.get(b) or f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def class_count(graph: Graph) -> int:
    """Classes the model scores: the last dimension of its first output (1 for a scalar)."""
    shape = graph.tensors[graph.outputs[0]].shape
    return int(shape[-1]) if shape else 1


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def check_labels(labels: list[str] | None, graph: Graph) -> list[str]:
    """The labels as strings, checked: one per class of ``graph`` (when any are given), each
    non-empty, at most :data:`MAX_LABEL_BYTES` bytes of UTF-8 and free of NUL (a C string
    would end there). Raises :class:`InputError` naming the label; ``None`` or ``[]``: no labels."""
    labels = [str(label) for label in (labels or [])]
    for i, label in enumerate(labels, 1):
        try:
            size = len(label.encode("utf-8", "surrogateescape"))
        except UnicodeEncodeError:
            raise InputError(f"--labels: label {i} ({ascii(label)[:60]}) is not valid Unicode text") from None
        if not label:
            raise InputError(f"--labels: label {i} is empty; give every class a name")
        if size > MAX_LABEL_BYTES:
            raise InputError(f"--labels: label {i} is {size} bytes of UTF-8; at most {MAX_LABEL_BYTES} are allowed")
        if "\0" in label:
            raise InputError(f"--labels: label {i} contains a NUL character, which would end the C string")
    classes = class_count(graph)
    if labels and classes > 0 and len(labels) != classes:
        raise InputError(f"--labels: {_plural(len(labels), 'label')} for a model with {_plural(classes, 'output')}")
    return labels


def _comment_text(text: str) -> str:
    """``text`` safe inside a ``//`` comment: control characters (a newline would end the comment
    and start code) shown as ``\\xNN``."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m[0]):02x}", text)


def _hex_lines(data: bytes, per_line: int = 16) -> list[str]:
    return [", ".join(f"0x{b:02x}" for b in data[i : i + per_line]) + "," for i in range(0, len(data), per_line)]


def render_firmware(
    model_bytes: bytes,
    graph: Graph,
    target,
    estimate: ArenaEstimate,
    out_dir: Path,
    model_name: str = "model.tflite",
    labels: list[str] | None = None,
    allocation_min_bytes: int = 0,
    allocation_build: str = "",
) -> dict[str, Path]:
    """Write the firmware files into ``out_dir``; returns name -> path. ``labels`` (class names,
    in output order) go into ``model_config.h`` as ``kLabels``; see :func:`check_labels`.

    ``kTensorArenaSize`` is the predicted arena times the board's margin, 16-aligned; when
    ``allocation_min_bytes`` (the smallest arena ``AllocateTensors`` succeeded in on the board's
    build, ``allocation_build``) is larger, that: allocation briefly needs temporary room that
    the final arena does not show (small models with a tiny head)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    src, dst = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    labels = check_labels(labels, graph)
    context = {
        "version": VERSION,
        "model_name": _comment_text(model_name),
        "model_bytes": len(model_bytes),
        "guard": "MOOFA_" + re.sub(r"[^A-Z0-9]", "_", target.name.upper()),
        "hex_lines": _hex_lines(model_bytes),
        "ops": resolver_ops(graph),
        "target": target,
        "arena": estimate.to_dict() | {"arena_bytes": estimate.arena_bytes},
        "arena_size": max(arena_size_for(estimate, target.arena_margin), align_up(allocation_min_bytes)),
        "planning_bytes": allocation_min_bytes if allocation_min_bytes > arena_size_for(estimate, target.arena_margin) else 0,
        "planning_build": allocation_build,
        "resource_variables": resource_variable_count(graph),
        "input": src,
        "output": dst,
        "output_field": _PTR_FIELDS.get(dst.dtype, "int8"),
        "labels": [c_string_literal(label) for label in labels],  # literals, quotes included
        "cpu_flags": " ".join(ARM_CPU_FLAGS.get(target.core, [f"-mcpu={target.core}"])),
        "tflm_arch": {"cortex-m4f": "cortex-m4+fp", "cortex-m7": "cortex-m7+fp", "cortex-m33": "cortex-m33+fp"}.get(target.core, target.core),
        "kernel_dir": KERNEL_LIBRARIES[target.kernel_library].optimized_kernel_dir if target.kernel_library in KERNEL_LIBRARIES else "",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in FIRMWARE_FILES:
        text = env.get_template(name + ".j2").render(**context)
        written[name] = write_atomically(out_dir / name, text)
    return written


@dataclass
class CompileCheck:
    compiled: bool
    section_bytes: int  # bytes of g_model's section in the object file
    fits_flash: bool
    reason: str = ""


def compile_model_data(model_data_cc: Path, core: str, flash_bytes: int) -> CompileCheck:
    """Compile ``model_data.cc`` with arm-none-eabi-g++ for ``core`` and size its data section."""
    if core not in ARM_CPU_FLAGS:
        return CompileCheck(False, 0, True, f"no Arm compiler flags for core {core!r}")
    gxx, size = shutil.which("arm-none-eabi-g++"), shutil.which("arm-none-eabi-size")
    if not gxx or not size:
        return CompileCheck(False, 0, True, "arm-none-eabi-g++ not installed (apt-get install gcc-arm-none-eabi)")
    with tempfile.TemporaryDirectory() as tmp:
        obj = Path(tmp) / "model_data.o"
        cmd = [gxx, *ARM_CPU_FLAGS[core], "-mthumb", "-Os", "-std=c++17", "-c", str(model_data_cc), "-o", str(obj)]
        proc = run(cmd, what="arm-none-eabi-g++", timeout_s=300)
        if proc.returncode != 0:
            return CompileCheck(False, 0, False, proc.stderr.strip().splitlines()[-1] if proc.stderr else "compile failed")
        out = run([size, "-A", str(obj)], what="arm-none-eabi-size", timeout_s=60, check=True).stdout
    section = sum(int(n) for name, n in re.findall(r"^(\.rodata\S*|\.text\S*)\s+(\d+)", out, re.M))
    return CompileCheck(True, section, section <= flash_bytes)
