"""The persistent tail of the TFLM arena.

Besides the planned head, TFLM carves long-lived objects from the *end* of the arena, growing
downwards: the allocator's own objects, one ``TfLiteEvalTensor`` per tensor, one node +
registration per op, each op's parsed builtin options, each kernel's ``OpData`` (``Init``) and
per-channel quantization arrays (``Prepare``), the scratch-buffer handles, and the
``TfLiteTensor`` structs of the graph's inputs and outputs with their quantization data. Every
allocation is aligned *down* to its own alignment, so the tail is not a plain sum: padding
depends on the order. We therefore replay the allocations in the order TFLM makes them
(``MicroInterpreter::AllocateTensors`` in tflite-micro's ``micro_interpreter.cc``):

1. allocator objects (a constant prefix),
2. ``TfLiteEvalTensor`` array, then ``NodeAndRegistration`` array,
3. builtin options of every op (``PrepareNodeAndRegistrationDataFromFlatbuffer``),
4. every kernel's ``Init`` (``OpData``, 16-byte aligned),
5. every kernel's ``Prepare`` (per-channel multiplier and shift arrays, 16-byte aligned),
6. scratch-buffer handles (``FinishModelAllocation``),
7. the input pointer array, each input's ``TfLiteTensor`` + quantization, then the same for
   the outputs.

Sizes for the 64-bit host build (what the ``tflite-micro`` package runs) were measured with
TFLM's recording allocator on one-op models, see ``bench/calibrate_tail.py``; with them the
replay reproduces the measured tail to the byte on the test corpus. For 32-bit MCUs the struct
sizes follow from the same structs with 4-byte pointers (documented below); kernel ``OpData``
sizes are kept at their 64-bit values, an upper bound since those structs hold a few pointers.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolchain.ir.graph import Graph

PERSISTENT_BUFFER_ALIGNMENT = 16  # MicroArenaBufferAlignment(), used by AllocatePersistentBuffer


@dataclass(frozen=True)
class KernelTail:
    """What one op kind's reference kernel keeps in the tail on the 64-bit host.

    ``builtin``: the (size, alignment) of each allocation its options parser makes (the
    ``TfLite*Params`` struct); ``init_bytes``: the ``OpData`` its ``Init`` allocates (0: none);
    ``per_channel``: ``Prepare`` allocates int32 multiplier and shift arrays, one entry per output
    channel (``"quantized"``: only when the op's input is not float and its filter, input 1, is
    quantized per channel: TFLM's ``CalculateOpDataFullyConnected`` allocates them only when the
    filter has more than one scale).
    """

    builtin: tuple[tuple[int, int], ...]
    init_bytes: int
    per_channel: bool | str = False
    int16_prepare: tuple[int, ...] = ()  # extra Prepare buffers (16-aligned) for int16 inputs


def _k(builtin_bytes: int, builtin_align: int, init_bytes: int, per_channel: bool | str = False) -> KernelTail:
    builtin = ((builtin_bytes, builtin_align),) if builtin_bytes else ()
    return KernelTail(builtin, init_bytes, per_channel)


# Measured on tflite-micro 0.dev20261023 (host, reference kernels) by bench/calibrate_tail.py.
HOST_KERNELS: dict[str, KernelTail] = {
    "CONV_2D": _k(28, 4, 80, per_channel=True),
    "DEPTHWISE_CONV_2D": _k(28, 4, 80, per_channel=True),
    # The parser makes two allocations: the 16-byte params, then 16 bytes 8-aligned (seen only
    # in multi-op models, where the alignment shows; bench/calibrate_tail.py "f3", resnet8).
    "FULLY_CONNECTED": KernelTail(((16, 4), (16, 8)), 72, per_channel="quantized"),
    "ADD": _k(8, 4, 60),
    "MUL": _k(4, 4, 36),
    "CONCATENATION": _k(8, 4, 80),
    # int16 softmax keeps two 513-entry int16 lookup tables (exp and 1/(1+x)): kernels/softmax_common.cc.
    "SOFTMAX": KernelTail(((4, 4),), 80, int16_prepare=(1026, 1026)),
    "AVERAGE_POOL_2D": _k(40, 4, 32),
    "MAX_POOL_2D": _k(40, 4, 32),
    "MEAN": _k(1, 1, 44),
    "RELU": _k(0, 1, 28),
    "RELU6": _k(0, 1, 8),
    "LOGISTIC": _k(0, 1, 16),
    "HARD_SWISH": _k(0, 1, 20),
    "RESHAPE": _k(36, 4, 0),
    "PAD": _k(0, 1, 56),
    "MAXIMUM": _k(0, 1, 0),
    "MINIMUM": _k(0, 1, 0),
    "TRANSPOSE": _k(0, 1, 0),
    "SHAPE": _k(4, 4, 0),
    "PACK": _k(8, 4, 0),
    "SUB": _k(8, 4, 52),
    "STRIDED_SLICE": _k(24, 4, 84),
    # QUANTIZE + DEQUANTIZE measured together (64 bytes); the split is assumed even.
    "QUANTIZE": _k(0, 1, 32),
    "DEQUANTIZE": _k(0, 1, 32),
}


@dataclass(frozen=True)
class Abi:
    """Struct sizes that depend on the pointer width."""

    pointer_bytes: int
    prefix_bytes: int  # allocator objects carved before the model is read
    eval_tensor_bytes: int  # sizeof(TfLiteEvalTensor)
    node_and_registration_bytes: int  # sizeof(NodeAndRegistration)
    tflite_tensor_bytes: int  # sizeof(TfLiteTensor) in the TF_LITE_STATIC_MEMORY build
    affine_quantization_bytes: int  # sizeof(TfLiteAffineQuantization)
    scratch_handle_bytes: int  # sizeof(ScratchBufferHandle)


# 64-bit host: every figure measured (bench/calibrate_tail.py); the prefix is the tail of a
# one-op model minus everything the replay accounts for.
HOST_ABI = Abi(8, 488, 24, 64, 64, 24, 8)

# 32-bit MCU build, from the struct definitions in tflite-micro (tensorflow/lite/core/c/common.h,
# micro_allocator.h): TfLiteEvalTensor {data*, dims*, type} = 12; NodeAndRegistration =
# TfLiteNode {7 pointers/ints} + registration* = 32; TfLiteTensor (static memory) = 40;
# TfLiteAffineQuantization {scale*, zero_point*, quantized_dimension} = 12; handle {data*} = 4.
# The prefix scales the host's with the pointer-heavy allocator objects: 0.6 x 488, rounded up
# to 16 (an estimate; it cannot be measured without a board).
MCU32_ABI = Abi(4, 304, 12, 32, 40, 12, 4)


def abi_for(pointer_bytes: int) -> Abi:
    return HOST_ABI if pointer_bytes == 8 else MCU32_ABI


# Used for op kinds nobody has measured yet: generous, so that a fit is never promised falsely.
UNKNOWN_KERNEL = _k(64, 8, 128, per_channel=True)


@dataclass
class TailEstimate:
    arena_tail_bytes: int
    exact: bool  # False when an op kind without measured figures was met
    unknown_kinds: list[str]
    by_kind: dict[str, int]  # what each allocation kind used, padding included


def _zero_point_array_bytes(channels: int) -> int:
    return 4 + 4 * channels  # TfLiteIntArray {int size; int data[]}


def kernel_tail(kind: str) -> KernelTail:
    """The tail figures of an op kind (:data:`UNKNOWN_KERNEL` for kinds nobody has measured)."""
    return HOST_KERNELS.get(kind, UNKNOWN_KERNEL)


def op_allocations(graph: Graph, op) -> tuple[list, list, list]:
    """The (size, alignment) tail allocations ``op`` makes, per region, in TFLM's order:
    its builtin options, its ``Init`` data, and what its ``Prepare`` allocates.

    The one statement of an op's tail: :func:`allocation_sequence` lays the regions out for a
    whole graph, and the fast pricer (``moofa.cost``) tabulates them per piece.
    """
    k = kernel_tail(op.kind)
    builtin = list(k.builtin)
    init = [(k.init_bytes, PERSISTENT_BUFFER_ALIGNMENT)] if k.init_bytes else []
    prepare: list[tuple[int, int]] = []
    if k.per_channel == "quantized" and (
        graph.tensors[op.inputs[0]].dtype == "float32"
        or (len(op.inputs) > 1 and op.inputs[1] >= 0 and graph.tensors[op.inputs[1]].quant_channels <= 1)
    ):
        return builtin, init, prepare
    if k.per_channel and op.outputs:
        channels = graph.tensors[op.outputs[0]].shape[-1] if graph.tensors[op.outputs[0]].shape else 1
        prepare += [(4 * channels, PERSISTENT_BUFFER_ALIGNMENT)] * 2
    if k.int16_prepare and op.inputs and graph.tensors[op.inputs[0]].dtype == "int16":
        prepare += [(n, PERSISTENT_BUFFER_ALIGNMENT) for n in k.int16_prepare]
    return builtin, init, prepare


def allocation_sequence(graph: Graph, abi: Abi, scratch_count: int):
    """(kind, size, alignment) of every tail allocation, in TFLM's order."""
    per_op = [op_allocations(graph, op) for op in graph.ops]
    seq = [
        ("TfLiteEvalTensor data", abi.eval_tensor_bytes * len(graph.tensors), abi.pointer_bytes),
        ("NodeAndRegistration struct", abi.node_and_registration_bytes * len(graph.ops), abi.pointer_bytes),
    ]
    seq += [("builtin data", size, align) for builtin, _, _ in per_op for size, align in builtin]
    seq += [("Persistent buffer data", size, align) for _, init, _ in per_op for size, align in init]
    seq += [("Persistent buffer data", size, align) for _, _, prepare in per_op for size, align in prepare]
    if scratch_count:
        seq.append(("scratch handles", abi.scratch_handle_bytes * scratch_count, abi.pointer_bytes))
    for group in (graph.inputs, graph.outputs):
        seq.append(("Persistent buffer data", abi.pointer_bytes * len(group), PERSISTENT_BUFFER_ALIGNMENT))
        for t in group:
            seq.append(("Persistent TfLiteTensor data", abi.tflite_tensor_bytes, abi.pointer_bytes))
            channels = graph.tensors[t].quant_channels
            if channels:
                seq.append(("Persistent TfLiteTensor quantization data", abi.affine_quantization_bytes, abi.pointer_bytes))
                seq.append(("Persistent TfLiteTensor quantization data", _zero_point_array_bytes(channels), 4))
    return seq


def estimate_tail(graph: Graph, pointer_bytes: int = 8, scratch_count: int = 0) -> TailEstimate:
    """Replay TFLM's tail allocations for ``graph`` and return the bytes they take.

    ``scratch_count`` is the number of kernel scratch requests (each gets a handle).
    """
    abi = abi_for(pointer_bytes)
    # The arena end is 16-byte aligned; the tail grows down from it.
    p = -abi.prefix_bytes
    by_kind: dict[str, int] = {"allocator objects": abi.prefix_bytes}
    for kind, size, align in allocation_sequence(graph, abi, scratch_count):
        before = p
        p = (p - size) // align * align
        by_kind[kind] = by_kind.get(kind, 0) + before - p
    unknown = sorted({op.kind for op in graph.ops if op.kind not in HOST_KERNELS})
    return TailEstimate(-p, exact=not unknown and pointer_bytes == 8, unknown_kinds=unknown, by_kind=by_kind)
