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
6. scratch-buffer handles (``FinishModelAllocation``), then the variable tensors' data,
7. the input pointer array, each input's ``TfLiteTensor`` + quantization, then the same for
   the outputs.

Sizes for the 64-bit host build (what the ``tflite-micro`` package runs) were measured with
TFLM's recording allocator on one-op models, see ``bench/calibrate_tail.py``; with them the
replay reproduces the measured tail to the byte on the test corpus. The 32-bit Cortex-M builds
(TFLM built for cortex-m7 with arm-none-eabi-gcc, run in QEMU: ``toolchain/runtime/cortexm.py``,
``bench/bench_board_arena.py``) were measured the same way: their structs hold 4-byte pointers,
and arm-none-eabi-gcc stores an enum in one byte (``-fshort-enums`` is the bare-metal ABI's
default), so builtin options made of enums and bools shrink and the ``OpData`` of kernels that
keep pointers or enums differ (:data:`MCU32_REFERENCE_KERNELS`, :data:`MCU32_CMSIS_NN_KERNELS`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from toolchain.ir.graph import DTYPE_BYTES, Graph

PERSISTENT_BUFFER_ALIGNMENT = 16  # MicroArenaBufferAlignment(), used by AllocatePersistentBuffer


@dataclass(frozen=True)
class KernelTail:
    """What one op kind's reference kernel keeps in the tail on the 64-bit host.

    ``builtin``: the (size, alignment) of each allocation its options parser makes (the
    ``TfLite*Params`` struct); ``init_bytes``: the ``OpData`` its ``Init`` allocates (0: none);
    ``per_channel``: ``Prepare`` allocates int32 multiplier and shift arrays, one entry per output
    channel (``"quantized"``: only when the op's input is not float and its filter, input 1, is
    quantized per channel: TFLM's ``CalculateOpDataFullyConnected`` allocates them only when the
    filter has more than one scale; ``"integer"``: only when the input is not float).
    """

    builtin: tuple[tuple[int, int], ...]
    init_bytes: int
    per_channel: bool | str = False
    int16_prepare: tuple[int, ...] = ()  # extra Prepare buffers (16-aligned) for int16 inputs
    # What else Prepare allocates, from the op's operands and attributes: (graph, op) -> the sizes
    # of its persistent buffers (16-aligned), in TFLM's order (BATCH_MATMUL's transposed copies).
    shaped_prepare: Callable | None = None
    # What Init allocates when it depends on the op's options: (graph, op) -> sizes (16-aligned),
    # in place of ``init_bytes`` (the signal library's state buffers).
    shaped_init: Callable | None = None


# Where TFLM's signal kernels read an option: by its position among the flexbuffer map's values,
# keys in sorted order (FlexbufferWrapper::ElementAsInt32(index): the kernels' k...Index constants),
# not by its name; a map with other keys shifts what they read. The FFTs' ``T`` and the SSD
# post-processing's options are read by name.
_OPTION_POSITION: dict[str, dict[str, int]] = {
    "CUSTOM:SignalStacker": {"num_channels": 0, "stacker_left_context": 1, "stacker_right_context": 2},
    "CUSTOM:SignalDelay": {"delay_length": 0},
    "CUSTOM:SignalFramer": {"frame_size": 0, "frame_step": 1},
    "CUSTOM:SignalFilterBank": {"num_channels": 0},
    "CUSTOM:SignalFilterBankSpectralSubtraction": {"num_channels": 4},
    "CUSTOM:SignalRfft": {"fft_length": 1},
    "CUSTOM:SignalIrfft": {"fft_length": 1},
    "CUSTOM:SignalOverlapAdd": {"frame_step": 1},
}


def custom_option(op, name: str):
    """The value TFLM's kernel reads as option ``name`` of the custom op ``op`` (its flexbuffer
    options, read by the reader into ``attrs["options"]``), or None when the model has none there."""
    options = op.attrs.get("options")
    if not isinstance(options, dict):
        return None
    position = _OPTION_POSITION.get(op.kind, {}).get(name)
    if position is None:
        return options.get(name)
    keys = sorted(options)
    return options[keys[position]] if position < len(keys) else None


def _option(op, *names: str) -> list[int] | None:
    """The integer options ``names`` of a custom op as its kernel reads them, or None when the
    model's options cannot be read."""
    try:
        return [int(custom_option(op, n)) for n in names]
    except (TypeError, ValueError, OverflowError):
        return None


def _stacker_init(params_bytes: int, circular_buffer_bytes: int) -> Callable:
    """SignalStacker's Init (signal/micro/kernels/stacker.cc): its params struct, then a circular
    buffer's state, CircularBufferGetNeededMemory(capacity) = sizeof(CircularBuffer) + 2 int16 per
    element (signal/src/circular_buffer.cc), capacity = num_channels x (left + right context + 1)
    from the op's options. Options that cannot be read: a generous guess of 1 KiB of state."""

    def init(graph: Graph, op) -> list[int]:
        sizes = _option(op, "num_channels", "stacker_left_context", "stacker_right_context")
        capacity = sizes[0] * (sizes[1] + sizes[2] + 1) if sizes is not None else 256
        return [params_bytes, circular_buffer_bytes + 4 * max(capacity, 0)]

    return init


def _outer_dims(t, inner: int = 1) -> int:
    """The number of rows the signal kernels keep state for: the flat size over the innermost
    ``inner`` dimensions (0 for a tensor a malformed model lacks)."""
    if t is None or len(t.shape) < inner:
        return 0
    size = 1
    for d in t.shape[: len(t.shape) - inner]:
        size *= max(d, 0)
    return size


def _per_row(size: int, rows: int) -> list[int]:
    """``rows`` persistent buffers of ``size`` bytes each, as allocations: the first on its own
    (it may take less, from a tail not yet 16-aligned), the rest as one (each then takes exactly
    ``size`` rounded up to 16 bytes), so that a model with millions of rows stays one number."""
    if rows <= 0:
        return []
    rounded = -(-size // PERSISTENT_BUFFER_ALIGNMENT) * PERSISTENT_BUFFER_ALIGNMENT
    return [size] + ([rounded * (rows - 1)] if rows > 1 else [])


def _circular_buffers_prepare(pointer_bytes: int, circular_buffer_bytes: int, capacity: Callable) -> Callable:
    """The Prepare of SignalDelay and SignalFramer (signal/micro/kernels/delay.cc, framer.cc): two
    arrays of one pointer per outer row of the input (the state buffers, the circular buffers),
    then per row the state of a circular buffer of ``capacity(op, innermost)`` int16 elements
    (CircularBufferGetNeededMemory, signal/src/circular_buffer.cc: the struct, 2 int16 per element).
    Options that cannot be read: a generous guess of 1 KiB of state per row."""

    def prepare(graph: Graph, op) -> list[int]:
        src = _operand(graph, op.inputs, 0)
        rows = _outer_dims(src)
        if rows == 0:
            return []
        elements = capacity(op, src.shape[-1])
        state = circular_buffer_bytes + 4 * max(elements, 0) if elements is not None else 1024
        return [pointer_bytes * rows, pointer_bytes * rows] + _per_row(state, rows)

    return prepare


def _delay_capacity(op, innermost: int) -> int | None:
    delay = _option(op, "delay_length")
    return None if delay is None else innermost + delay[0]


def _framer_capacity(op, innermost: int) -> int | None:
    # The frame size rounded up to a multiple of the frame step (framer.cc FramerPrepare).
    sizes = _option(op, "frame_size", "frame_step")
    if sizes is None or sizes[1] <= 0:
        return None
    size, step = sizes
    return (size + step - 1) // step * step


def _filter_bank_init(params_bytes: int) -> Callable:
    """SignalFilterBank's Init (signal/micro/kernels/filter_bank.cc): its params, then a work area
    of num_channels + 1 uint64 (channel 0 is scratch). Unreadable options: 64 channels."""

    def init(graph: Graph, op) -> list[int]:
        channels = _option(op, "num_channels")
        return [params_bytes, 8 * (max(channels[0], 0) + 1 if channels else 65)]

    return init


def _spectral_subtraction_init(params_bytes: int) -> Callable:
    """SignalFilterBankSpectralSubtraction's Init (filter_bank_spectral_subtraction.cc): its params,
    then the noise estimate, one uint32 per channel. Unreadable options: 64 channels."""

    def init(graph: Graph, op) -> list[int]:
        channels = _option(op, "num_channels")
        return [params_bytes, 4 * (max(channels[0], 0) if channels else 64)]

    return init


# LiteRT TensorType codes of the signal library's FFT types (its ``T`` option): FLOAT32, INT32, INT16.
_FFT_SCALAR_BYTES = {0: 4, 2: 4, 7: 2}


def _fft_init(params_bytes: int, pointer_bytes: int) -> Callable:
    """SignalRfft's and SignalIrfft's Init (signal/micro/kernels/rfft.cc, irfft.cc): their params,
    then the KISS FFT state of a real FFT of ``fft_length`` points of type ``T`` (both from the
    options): kiss_fftr_alloc's memneeded (kissfft tools/kiss_fftr.c) = sizeof(kiss_fftr_state)
    (three pointers) + the complex FFT of n = fft_length / 2 points (kiss_fft.c: sizeof(kiss_fft_state)
    = 2 + 2 x MAXFACTORS (32) ints and one complex, then n - 1 more twiddles) + 3n/2 complex
    values; a complex value is two scalars. Unreadable options: a 512-point int32 FFT."""

    def init(graph: Graph, op) -> list[int]:
        options = _option(op, "T", "fft_length")
        kind, length = options if options is not None and options[0] in _FFT_SCALAR_BYTES else (2, 512)
        n = max(length, 0) // 2
        cpx = 2 * _FFT_SCALAR_BYTES[kind]
        return [params_bytes, 3 * pointer_bytes + 4 * (2 + 2 * 32) + cpx * n + cpx * (n * 3 // 2)]

    return init


def _overlap_add_prepare(pointer_bytes: int) -> Callable:
    """SignalOverlapAdd's Prepare (signal/micro/kernels/overlap_add.cc): one pointer per outer row
    of the (..., frames, frame size) input, then per row a state of frame-size elements of the
    input's type."""

    def prepare(graph: Graph, op) -> list[int]:
        src = _operand(graph, op.inputs, 0)
        rows = _outer_dims(src, inner=2)
        if rows == 0:
            return []
        return [pointer_bytes * rows] + _per_row(max(src.shape[-1], 0) * DTYPE_BYTES.get(src.dtype, 4), rows)

    return prepare


def _k(builtin_bytes: int, builtin_align: int, init_bytes: int, per_channel: bool | str = False) -> KernelTail:
    builtin = ((builtin_bytes, builtin_align),) if builtin_bytes else ()
    return KernelTail(builtin, init_bytes, per_channel)


def _int_array_bytes(rank: int) -> int:
    return 4 + 4 * rank  # TfLiteIntArrayGetSizeInBytes: {int size; int data[]}


def _batch_matmul_prepare(eval_tensor_bytes: int, quantization_first: bool) -> Callable:
    """BATCH_MATMUL's Prepare allocations. The reference kernel (kernels/batch_matmul.cc,
    InitializeTemporaries) allocates, for an int8/int16 lhs, its QuantizationOpDataBatchMatmul
    (seven int32: 28 B), then a transposed copy of the lhs when adj_x and of the rhs unless adj_y
    (AllocInitTransposeTensorFromTfLiteTensor): a TfLiteEvalTensor, its dims array and its data, three
    persistent buffers; last, a writable copy of the output's dims (ReshapeOutputTensor in
    kernels/batch_matmul_common.cc, via CreateWritableTensorDimsWithCopy). CMSIS-NN's
    (kernels/cmsis_nn/batch_matmul.cc) allocates the same, the copies and the dims first and the
    quantization data last, when neither operand is float. An operand a malformed model lacks is
    priced as quantized, with no copy."""

    def prepare(graph: Graph, op) -> list[int]:
        lhs, rhs, out = _operand(graph, op.inputs, 0), _operand(graph, op.inputs, 1), _operand(graph, op.outputs, 0)
        quantized = all(t is None or t.dtype != "float32" for t in ((lhs,) if quantization_first else (lhs, rhs)))
        quant = [28] if quantized else []
        copies = []
        for t, wanted in ((lhs, op.attrs.get("adj_x", False)), (rhs, not op.attrs.get("adj_y", False))):
            if wanted and t is not None:
                copies += [eval_tensor_bytes, _int_array_bytes(len(t.shape)), t.nbytes]
        if out is not None:
            copies.append(_int_array_bytes(len(out.shape)))
        return quant + copies if quantization_first else copies + quant

    return prepare


def _embedding_lookup_prepare(op_data_bytes: int) -> Callable:
    """EMBEDDING_LOOKUP (kernels/embedding_lookup.cc) has no options and no Init; its Prepare makes
    a writable copy of the output's dims (CreateWritableTensorDimsWithCopy), then allocates its
    OpData (a float scale and a size_t column count) in CalculateOpData."""

    def prepare(graph: Graph, op) -> list[int]:
        out = _operand(graph, op.outputs, 0)
        return ([_int_array_bytes(len(out.shape))] if out is not None else []) + [op_data_bytes]

    return prepare


def _output_dims_prepare(graph: Graph, op) -> list[int]:
    """A Prepare that makes a writable copy of its output's dims and nothing else
    (CreateWritableTensorDimsWithCopy: kernels/gather.cc, gather_nd.cc, depth_to_space.cc,
    space_to_depth.cc)."""
    out = _operand(graph, op.outputs, 0)
    return [_int_array_bytes(len(out.shape))] if out is not None else []


def _int8_op_data(op_data_bytes: int, of_output: bool = False) -> Callable:
    """A Prepare that allocates its OpData only for an int8 input (or output): LOG_SOFTMAX
    (kernels/log_softmax.cc CalculateOpData, input), CUMSUM (kernels/cumsum.cc, output). Neither has
    an Init. An operand a malformed model lacks counts as int8."""

    def prepare(graph: Graph, op) -> list[int]:
        t = _operand(graph, op.outputs, 0) if of_output else _operand(graph, op.inputs, 0)
        return [op_data_bytes] if t is None or t.dtype == "int8" else []

    return prepare


def _cmsis_lstm_prepare(graph: Graph, op) -> list[int]:
    """CMSIS-NN's UNIDIRECTIONAL_SEQUENCE_LSTM Prepare (kernels/cmsis_nn/unidirectional_sequence_lstm.cc,
    CMSIS_NN_PortOpData): for an int8 or int16 input with an int16 cell state, eight persistent
    kernel-sum arrays (input and hidden, per gate) of state_dimension bias-type values: int32 for
    int8 inputs, int64 for int16 inputs. state_dimension is dims[1] of the hidden state (input 18).
    A float LSTM allocates none."""
    src, hidden, cell = (_operand(graph, op.inputs, k) for k in (0, 18, 19))
    if src is None or hidden is None or cell is None or cell.dtype != "int16" or src.dtype not in ("int8", "int16"):
        return []
    units = hidden.shape[1] if len(hidden.shape) > 1 else 1
    return [units * (4 if src.dtype == "int8" else 8)] * 8


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
    # The other reduce ops of kernels/reduce.cc: the same TfLiteReducerParams {bool keep_dims} and
    # OpDataReduce (InitReduce, eleven 4-byte fields = 44 B; kernels/reduce.h).
    "SUM": _k(1, 1, 44),
    "REDUCE_MAX": _k(1, 1, 44),
    "REDUCE_MIN": _k(1, 1, 44),
    "RELU": _k(0, 1, 28),
    "RELU6": _k(0, 1, 8),
    "LOGISTIC": _k(0, 1, 16),
    "TANH": _k(0, 1, 16),
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
    # TfLiteTransposeConvParams (padding, two strides, activation, quantized bias type: 20 B);
    # kernels/transpose_conv.cc: Init allocates its OpData (ConvParams, scratch indices and the two
    # per-channel pointers: 88 B measured), Prepare the multiplier and shift arrays, one int32 per
    # filter output channel (dims[0], the output's depth), whatever the input type, float too.
    "TRANSPOSE_CONV": _k(20, 4, 88, per_channel=True),
    # TfLiteBatchMatMulParams (adj_x, adj_y, asymmetric_quantize_inputs: 3 bools); the OpData
    # (OpDataBatchMatmul, kernels/batch_matmul.h: three pointers and three bools = 32 B); Prepare:
    # _batch_matmul_prepare (TfLiteEvalTensor 24 B).
    "BATCH_MATMUL": KernelTail(((3, 1),), 32, shaped_prepare=_batch_matmul_prepare(24, quantization_first=True)),
    "EMBEDDING_LOOKUP": KernelTail((), 0, shaped_prepare=_embedding_lookup_prepare(16)),
    # TfLiteSVDFParams {int rank; activation enum; bool}: 12 B; OpDataSvdf (kernels/svdf.h): nine
    # ints = 36 B. Its activation state is a variable tensor: allocation_sequence puts it in the tail.
    "SVDF": _k(12, 4, 36),
    # UNIDIRECTIONAL_SEQUENCE_LSTM (kernels/unidirectional_sequence_lstm.cc): the parser's
    # TfLiteUnidirectionalSequenceLSTMParams {activation enum, cell_clip, proj_clip, three bools}
    # = 16 B (compiler/mlir/lite/core/c/builtin_op_data.h); Init allocates sizeof(OpDataLSTM)
    # (kernels/lstm_shared.h): LstmSizeInfo 20 + CellStateInfo 12 + the activation enum 4 + four
    # GateParameters (two FullyConnectedParams of 40 B each: 320) + InterGateParameters (three
    # ArithmeticParams of 104 B, 8-aligned for their int64 fields: 312, from offset 360) + four
    # scratch indices = 688 B, measured (bench/calibrate_tail.py lstm*: 'PB - ptrs' = 688).
    # Prepare allocates nothing persistent; its four scratch requests are in scratch.py; the two
    # variable state tensors (inputs 18 and 19) are variable tensors (allocation_sequence).
    "UNIDIRECTIONAL_SEQUENCE_LSTM": _k(16, 4, 688),
    # Control flow (kernels/if.cc, while.cc, call_once.cc): TfLiteIfParams {then, else} and
    # TfLiteWhileParams {cond, body} are two ints, TfLiteCallOnceParams one; every Init allocates
    # its OpData, the same two ints (CALL_ONCE: an int and a bool, 8 B); Prepare nothing. What the
    # subgraphs cost is laid out by allocation_sequence.
    "IF": _k(8, 4, 8),
    "WHILE": _k(8, 4, 8),
    "CALL_ONCE": _k(4, 4, 8),
    # Resource variables (kernels/var_handle.cc, read_variable.cc, assign_variable.cc):
    # TfLiteVarHandleParams {container*, shared_name*}, VAR_HANDLE's OpData {int32 resource_id};
    # READ_VARIABLE and ASSIGN_VARIABLE parse nothing; ASSIGN_VARIABLE's Init allocates its OpData
    # {int scratch_index} only in a build with USE_TFLM_COMPRESSION (the host package's). The
    # first ASSIGN_VARIABLE of each variable allocates its buffer in Prepare: resource_buffers.
    "VAR_HANDLE": _k(16, 8, 4),
    "READ_VARIABLE": _k(0, 1, 0),
    "ASSIGN_VARIABLE": _k(0, 1, 4),
    # Ops without pointers or enums in their structs (the same on 32-bit builds): TfLiteGatherParams
    # {axis, batch_dims}, TfLiteDepthToSpaceParams / TfLiteSpaceToDepthParams / TfLiteSplitParams
    # {one int}, TfLiteResize*Params {two bools}, TfLiteLeakyReluParams {float alpha}
    # (tensorflow/compiler/mlir/lite/core/c/builtin_op_data.h); SLICE and PRELU parse no options.
    # OpData: LeakyReluOpData six int32 = 24 B (kernels/leaky_relu.h), PreluParams seven int32 = 28 B.
    "GATHER": KernelTail(((8, 4),), 0, shaped_prepare=_output_dims_prepare),
    "DEPTH_TO_SPACE": KernelTail(((4, 4),), 0, shaped_prepare=_output_dims_prepare),
    "SPACE_TO_DEPTH": KernelTail(((4, 4),), 0, shaped_prepare=_output_dims_prepare),
    "SPLIT": _k(4, 4, 0),
    "SLICE": _k(0, 1, 0),
    "RESIZE_NEAREST_NEIGHBOR": _k(2, 1, 0),
    "RESIZE_BILINEAR": _k(2, 1, 0),
    "LEAKY_RELU": _k(4, 4, 24),
    "PRELU": _k(0, 1, 28),
    # Options (builtin_op_data.h): TfLiteDivParams / TfLiteL2NormParams {activation enum},
    # TfLiteArgMaxParams / TfLiteArgMinParams {TfLiteType}: 4 B here, 1 B with one-byte enums;
    # TfLiteUnpackParams {num, axis} 8 B, TfLiteSplitVParams {num_splits} 4 B; SQUARED_DIFFERENCE,
    # LOG_SOFTMAX, ELU, SPACE_TO_BATCH_ND, BATCH_TO_SPACE_ND and PADV2 parse none. Init OpData
    # (measured): SQUARED_DIFFERENCE 112 B, DIV 28, L2_NORMALIZATION 4 (L2NormalizationParams),
    # SPACE_TO_BATCH_ND 4 (SpaceToBatchParams), ELU 256 (an int8 lookup table), PADV2 = PAD (pad.cc).
    "SQUARED_DIFFERENCE": _k(0, 1, 112),
    "DIV": _k(4, 4, 28),
    "UNPACK": _k(8, 4, 0),
    "SPLIT_V": _k(4, 4, 0),
    "ARG_MAX": _k(4, 4, 0),
    "ARG_MIN": _k(4, 4, 0),
    "L2_NORMALIZATION": _k(4, 4, 4),
    "LOG_SOFTMAX": KernelTail((), 0, shaped_prepare=_int8_op_data(40)),
    "ELU": _k(0, 1, 256),
    "SPACE_TO_BATCH_ND": _k(0, 1, 4),
    "BATCH_TO_SPACE_ND": _k(0, 1, 0),
    "PADV2": _k(0, 1, 56),
    # Elementwise kernels (kernels/elementwise.cc, floor.cc, ceil.cc, round.cc, neg.cc, logical.cc,
    # cast.cc, comparisons.cc): no options but CAST's TfLiteCastParams (two TfLiteType: 8 B, 2 B with
    # one-byte enums); ABS and RSQRT allocate OpDataAbsRsqrt in Init (four int32, a bool and two
    # enums: 28 B, 20 B with one-byte enums), the comparisons an OpData of ComparisonParams (seven
    # int32 and a bool: 32 B); the rest nothing.
    **{kind: _k(0, 1, 0) for kind in ("SQRT", "SQUARE", "LOG", "SIN", "COS", "FLOOR", "CEIL", "ROUND", "NEG",
                                       "LOGICAL_AND", "LOGICAL_OR", "EXP")},  # EXP: kernels/exp.cc, no Init
    "ABS": _k(0, 1, 28),
    "RSQRT": _k(0, 1, 28),
    "CAST": _k(8, 4, 0),
    **{kind: _k(0, 1, 32) for kind in ("EQUAL", "NOT_EQUAL", "GREATER", "GREATER_EQUAL", "LESS", "LESS_EQUAL")},
    "LOGICAL_NOT": _k(0, 1, 0),
    "GATHER_ND": KernelTail((), 0, shaped_prepare=_output_dims_prepare),  # no options; gather_nd.cc
    # FLOOR_DIV, FLOOR_MOD, REVERSE_V2: nothing. MIRROR_PAD: TfLiteMirrorPaddingParams {mode enum} and
    # OpDataMirrorPad (five ints = 20 B, Init), plus two scratch buffers (scratch.py). SELECT_V2: Init
    # allocates a one-bool OpData (kernels/select.cc).
    "FLOOR_DIV": _k(0, 1, 0),
    "FLOOR_MOD": _k(0, 1, 0),
    "REVERSE_V2": _k(0, 1, 0),
    "MIRROR_PAD": _k(4, 4, 20),
    "SELECT_V2": _k(0, 1, 1),
    # CUMSUM: TfLiteCumsumParams {two bools}; its OpData (nine int32 = 36 B) only for int8 outputs,
    # in Prepare (kernels/cumsum.cc). Measured in float (misc_f) and int8 (cumsum2).
    "CUMSUM": KernelTail(((2, 1),), 0, shaped_prepare=_int8_op_data(36, of_output=True)),
    # Shape and fill kernels (kernels/expand_dims.cc, squeeze.cc, fill.cc, zeros_like.cc): no Init,
    # nothing persistent in Prepare; only SQUEEZE parses options, TfLiteSqueezeParams {int32
    # squeeze_dims[8]; int num_squeeze_dims} = 36 B (builtin_op_data.h; ParseExpandDims, ParseFill
    # and ParseZerosLike allocate nothing: core/api/flatbuffer_conversions.cc).
    "EXPAND_DIMS": _k(0, 1, 0),
    "SQUEEZE": _k(36, 4, 0),
    "FILL": _k(0, 1, 0),
    "ZEROS_LIKE": _k(0, 1, 0),
    # L2_POOL_2D (kernels/l2_pool_2d.cc): ParsePool's TfLitePoolParams (40 B, as the other pools;
    # still 40 with one-byte enums, the padding values being 4-aligned ints), no Init; Prepare makes
    # a writable copy of the output's dims.
    "L2_POOL_2D": KernelTail(((40, 4),), 0, shaped_prepare=_output_dims_prepare),
    # REDUCE_ALL: kernels/reduce.cc, like REDUCE_MAX (TfLiteReducerParams, InitReduce's OpDataReduce;
    # its two scratch requests in scratch.py).
    "REDUCE_ALL": _k(1, 1, 44),
    # BROADCAST_TO, BROADCAST_ARGS (kernels/broadcast_to.cc, broadcast_args.cc) and DYNAMIC_UPDATE_SLICE
    # (dynamic_update_slice.cc): their parsers allocate nothing, no Init, nothing in Prepare.
    "BROADCAST_TO": _k(0, 1, 0),
    "BROADCAST_ARGS": _k(0, 1, 0),
    "DYNAMIC_UPDATE_SLICE": _k(0, 1, 0),
    # The signal library's audio-front-end kernels (signal/micro/kernels/), custom ops: no builtin
    # options (their flexbuffer options stay in the model); Init allocates the parsed options:
    # window.cc {shift, input_size} 8 B, energy.cc {end_index, start_index} 8 B, pcan.cc
    # {snr_shift} 4 B; fft_auto_scale_kernel.cc and filter_bank_square_root.cc have no Init.
    # Prepare allocates nothing persistent in any of them.
    "CUSTOM:SignalWindow": _k(0, 1, 8),
    "CUSTOM:SignalEnergy": _k(0, 1, 8),
    "CUSTOM:SignalPCAN": _k(0, 1, 4),
    "CUSTOM:SignalFftAutoScale": _k(0, 1, 0),
    "CUSTOM:SignalFilterBankSquareRoot": _k(0, 1, 0),
    # TFLMSignalStackerParams {four int32, two size_t, bool, two pointers}: 56 B; CircularBuffer
    # {three size_t, two int32, a pointer}: 40 B.
    "CUSTOM:SignalStacker": KernelTail((), 0, shaped_init=_stacker_init(56, 40)),
    # TFLMSignalFrontendDelayParams {three int32, two pointers}: 32 B; TFLMSignalFramerParams
    # {four int32, bool, two pointers}: 40 B. Both size their circular buffers in Prepare.
    "CUSTOM:SignalDelay": KernelTail((), 32, shaped_prepare=_circular_buffers_prepare(8, 40, _delay_capacity)),
    "CUSTOM:SignalFramer": KernelTail((), 40, shaped_prepare=_circular_buffers_prepare(8, 40, _framer_capacity)),
    # TFLMSignalFilterBankParams {FilterbankConfig {int32, five pointers, two int32}, a pointer}: 64 B.
    "CUSTOM:SignalFilterBank": KernelTail((), 0, shaped_init=_filter_bank_init(64)),
    # TFLMSignalLogParams {two int}: 8 B.
    "CUSTOM:SignalFilterBankLog": _k(0, 1, 8),
    # TFLMSignalSpectralSubtractionParams {SpectralSubtractionConfig {int32, seven uint32, bool}:
    # 36 B, a pointer, a size_t}: 56 B.
    "CUSTOM:SignalFilterBankSpectralSubtraction": KernelTail((), 0, shaped_init=_spectral_subtraction_init(56)),
    # TFLMSignalOverlapAddParams {four int32, an enum, a pointer}: 32 B.
    "CUSTOM:SignalOverlapAdd": KernelTail((), 32, shaped_prepare=_overlap_add_prepare(8)),
    # TfLiteAudioFrontendRfftParams {four int32, an enum, T*, int, int8*}: 48 B (the scratch of
    # fft_length scalars its Prepare asks for is in scratch.py); the Irfft params {four int32, an
    # enum, int8*}: 32 B.
    "CUSTOM:SignalRfft": KernelTail((), 0, shaped_init=_fft_init(48, 8)),
    "CUSTOM:SignalIrfft": KernelTail((), 0, shaped_init=_fft_init(32, 8)),
    # CIRCULAR_BUFFER (kernels/circular_buffer.cc): Init allocates OpDataCircularBuffer {two int}.
    "CUSTOM:CIRCULAR_BUFFER": _k(0, 1, 8),
    # TFLite_Detection_PostProcess (kernels/detection_postprocess.cc): Init allocates its OpData
    # {six int/float, a bool, CenterSizeEncoding (four floats), eleven scratch indices, three
    # TfLiteQuantizationParams {float, int32}}: 112 B, no pointers (the same on 32-bit builds).
    # Its eleven scratch requests are in scratch.py.
    "CUSTOM:TFLite_Detection_PostProcess": _k(0, 1, 112),
    # ADD_N (kernels/add_n.cc): no options, no Init; an int8 Prepare allocates its OpData (ten
    # int32: 40 B). Its pointer scratch is in scratch.py.
    "ADD_N": KernelTail((), 0, shaped_prepare=_int8_op_data(40, of_output=True)),
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
    # sizeof(SubgraphAllocations) {node_and_registrations*, tensors*} and, in a build with
    # USE_TFLM_COMPRESSION, a CompressedTensorList pointer (micro_allocator.h): one per subgraph,
    # the last of the allocator objects (MicroAllocator::StartModelAllocation); the prefix holds one.
    subgraph_allocations_bytes: int
    # sizeof(MicroBuiltinDataAllocator) {vtable*, allocator*}: carved just before the SubgraphAllocations.
    builtin_data_allocator_bytes: int
    # Resource variables (MicroResourceVariables::Create, micro_resource_variable.cc), made by the
    # caller before the interpreter, so between the allocator's own objects and the two above:
    # sizeof(MicroResourceVariables) {array*, int, int}, then an array of MicroResourceVariable
    # {container*, shared_name*, buffer*, size_t bytes, int8 default}, both 16-aligned.
    resource_variables_bytes: int
    resource_variable_bytes: int


# 64-bit host: every figure measured (bench/calibrate_tail.py); the prefix is the tail of a
# one-op model minus everything the replay accounts for. The package's build has compression on:
# each more subgraph adds 24 B (calibration models if_f, while_f).
HOST_ABI = Abi(8, 488, 24, 64, 64, 24, 8, 24, 16, 16, 40)

# 32-bit Cortex-M build, measured (bench/bench_board_arena.py on TFLM built for cortex-m7): the
# allocator objects of firmware's plain MicroAllocator take 132 B (TFLM's RecordingMicroAllocator,
# which measurements use, takes 236); TfLiteEvalTensor {data*, dims*, type} = 12;
# NodeAndRegistration = 32; TfLiteTensor of the TF_LITE_STATIC_MEMORY build = 32 (its enums are
# one byte); TfLiteAffineQuantization {scale*, zero_point*, quantized_dimension} = 12; a scratch
# handle 4; SubgraphAllocations 8 (TFLM's Makefile builds without compression). The prediction is the arena firmware needs: MicroInterpreter::arena_used_bytes().
MCU32_ABI = Abi(4, 132, 12, 32, 32, 12, 4, 8, 8, 12, 20)


def abi_for(pointer_bytes: int) -> Abi:
    return HOST_ABI if pointer_bytes == 8 else MCU32_ABI


def _with(table: dict, **changes: KernelTail) -> dict:
    return {**table, **changes}


# The 32-bit build with reference kernels, measured on one-op models (bench/calibrate_tail.py's,
# run by bench/bench_board_arena.py): what differs from the host. OpData that holds pointers or
# enums: CONV_2D / DEPTHWISE_CONV_2D 56 B, FULLY_CONNECTED 48, SOFTMAX 56, CONCATENATION 24.
# Builtin options of one-byte enums and bools: TfLiteFullyConnectedParams 5 B, TfLiteAddParams
# and TfLiteSubParams 2, TfLiteMulParams 1, all byte-aligned (tensorflow/lite/core/c/builtin_op_data.h).
MCU32_REFERENCE_KERNELS: dict[str, KernelTail] = _with(
    HOST_KERNELS,
    CONV_2D=_k(28, 4, 56, per_channel=True),
    DEPTHWISE_CONV_2D=_k(28, 4, 56, per_channel=True),
    FULLY_CONNECTED=KernelTail(((5, 1),), 48, per_channel="quantized"),
    SOFTMAX=KernelTail(((4, 4),), 56, int16_prepare=(1026, 1026)),
    CONCATENATION=_k(8, 4, 24),
    ADD=_k(2, 1, 60),
    SUB=_k(2, 1, 52),
    MUL=_k(1, 1, 36),
    # TfLiteTransposeConvParams with one-byte enums: 16 B. The OpData (kernels/transpose_conv.cc):
    # ConvParams (56 B), two scratch indices and the two per-channel pointers = 72 B; the host
    # package's 88 B also hold the two decompression scratch indices (USE_TFLM_COMPRESSION).
    TRANSPOSE_CONV=_k(16, 4, 72, per_channel=True),
    # OpDataBatchMatmul with 4-byte pointers: 16 B; its transposed copies hold a 12 B TfLiteEvalTensor.
    BATCH_MATMUL=KernelTail(((3, 1),), 16, shaped_prepare=_batch_matmul_prepare(12, quantization_first=True)),
    EMBEDDING_LOOKUP=KernelTail((), 0, shaped_prepare=_embedding_lookup_prepare(8)),  # {float, size_t}: 8 B
    SVDF=_k(8, 4, 36),  # TfLiteSVDFParams with a one-byte enum: 8 B
    # UNIDIRECTIONAL_SEQUENCE_LSTM: the host figures (inherited), measured on cortex-m7: with a
    # one-byte enum the options stay 16 B (the floats after it are 4-aligned) and OpDataLSTM stays
    # 688 B (no pointers; the enum's padding before the 4-aligned GateParameters; AAPCS aligns int64
    # to 8 as well).
    # One-byte enums: TfLiteDivParams, TfLiteL2NormParams, TfLiteArgMax/MinParams are 1 B;
    # LogSoftmaxOpData holds two size_t: 28 B (40 on the host). OpDataDiv is seven int32 either way.
    DIV=_k(1, 1, 28),
    L2_NORMALIZATION=_k(1, 1, 4),
    ARG_MAX=_k(1, 1, 0),
    ARG_MIN=_k(1, 1, 0),
    LOG_SOFTMAX=KernelTail((), 0, shaped_prepare=_int8_op_data(28)),
    ABS=_k(0, 1, 20),
    RSQRT=_k(0, 1, 20),
    CAST=_k(2, 1, 0),
    MIRROR_PAD=_k(1, 1, 20),
    # The same structs with 4-byte size_t and pointers: 36 B and 24 B.
    # The signal kernels' structs with 4-byte pointers and size_t (each struct's padding as on the
    # host but to 4 bytes): delay params 20 B, framer 28, filter bank 36, spectral subtraction 44,
    # overlap-add 24, CircularBuffer 24.
    **{"CUSTOM:SignalStacker": KernelTail((), 0, shaped_init=_stacker_init(36, 24)),
       "CUSTOM:SignalDelay": KernelTail((), 20, shaped_prepare=_circular_buffers_prepare(4, 24, _delay_capacity)),
       "CUSTOM:SignalFramer": KernelTail((), 28, shaped_prepare=_circular_buffers_prepare(4, 24, _framer_capacity)),
       "CUSTOM:SignalFilterBank": KernelTail((), 0, shaped_init=_filter_bank_init(36)),
       "CUSTOM:SignalFilterBankSpectralSubtraction": KernelTail((), 0, shaped_init=_spectral_subtraction_init(44)),
       "CUSTOM:SignalOverlapAdd": KernelTail((), 24, shaped_prepare=_overlap_add_prepare(4)),
       # One-byte enums (the 32-bit builds' -fshort-enums): Rfft params 32 B, Irfft 24.
       "CUSTOM:SignalRfft": KernelTail((), 0, shaped_init=_fft_init(32, 4)),
       "CUSTOM:SignalIrfft": KernelTail((), 0, shaped_init=_fft_init(24, 4))},
    # TfLiteVarHandleParams of two 4-byte pointers; no ASSIGN_VARIABLE OpData without compression.
    VAR_HANDLE=_k(8, 4, 4),
    ASSIGN_VARIABLE=_k(0, 1, 0),
)

# The 32-bit build with CMSIS-NN kernels (OPTIMIZED_KERNEL_DIR=cmsis_nn on a DSP core, measured
# on cortex-m7): its own OpData for the kernels it replaces (tensorflow/lite/micro/kernels/
# cmsis_nn/*.cc): CONV_2D and DEPTHWISE_CONV_2D 60 B, with the per-channel arrays only for int8
# and int16 inputs (conv.cc, depthwise_conv.cc Prepare); FULLY_CONNECTED 72; SOFTMAX 64;
# AVERAGE_POOL_2D and MAX_POOL_2D 36.
MCU32_CMSIS_NN_KERNELS: dict[str, KernelTail] = _with(
    MCU32_REFERENCE_KERNELS,
    CONV_2D=_k(28, 4, 60, per_channel="integer"),
    DEPTHWISE_CONV_2D=_k(28, 4, 60, per_channel="integer"),
    FULLY_CONNECTED=KernelTail(((5, 1),), 72, per_channel="quantized"),
    SOFTMAX=KernelTail(((4, 4),), 64, int16_prepare=(1026, 1026)),
    AVERAGE_POOL_2D=_k(40, 4, 36),
    MAX_POOL_2D=_k(40, 4, 36),
    # kernels/cmsis_nn/svdf.cc's CmsisNnOpDataSvdf: nine ints and the kernel_sums pointer = 40 B
    # (kernel_sums itself is allocated only where arm_svdf_s8_get_buffer_size is non-zero: MVE cores).
    SVDF=_k(8, 4, 40),
    # kernels/cmsis_nn/transpose_conv.cc's OpData: ConvParams, three scratch indices (CMSIS-NN asks
    # for a second, reversed-filter buffer) and the per-channel pointers = 76 B.
    TRANSPOSE_CONV=_k(16, 4, 76, per_channel=True),
    # kernels/cmsis_nn/batch_matmul.cc's OpData: OpDataBatchMatmul, cmsis_nn_dims and a buffer index
    # = 36 B; quantization data after the copies; no scratch (arm_fully_connected_s8_get_buffer_size
    # is 0 on DSP cores, and a 0-byte buffer is not requested).
    BATCH_MATMUL=KernelTail(((3, 1),), 36, shaped_prepare=_batch_matmul_prepare(12, quantization_first=False)),
    # kernels/cmsis_nn/unidirectional_sequence_lstm.cc: Init allocates its OpData {OpDataLSTM
    # (688 B); cmsis_nn_lstm_params (CMSIS-NN Include/arm_nn_types.h: 15 int32 and four
    # cmsis_nn_lstm_gate of 40 B, five pointers, four int32 and a one-byte enum: 220 B)} = 908, 912
    # with the 8-byte alignment of OpDataLSTM; _cmsis_lstm_prepare: its kernel sums. Measured on
    # cortex-m7 (float and int8 head and tail; 16x8: firmware's arena_used_bytes, calibrate_tail.FAULTS_ON).
    UNIDIRECTIONAL_SEQUENCE_LSTM=KernelTail(((16, 4),), 912, shaped_prepare=_cmsis_lstm_prepare),
)

#: The builds whose tail figures are measured: (pointer bytes, kernel library) -> table.
KERNEL_TAILS: dict[tuple[int, str], dict[str, KernelTail]] = {
    (8, "reference"): HOST_KERNELS,
    (4, "reference"): MCU32_REFERENCE_KERNELS,
    (4, "cmsis-nn"): MCU32_CMSIS_NN_KERNELS,
}


def kernel_tails(pointer_bytes: int, kernel_library: str = "reference") -> dict[str, KernelTail]:
    """The per-op tail table of a build: measured where :data:`KERNEL_TAILS` has it, else the
    reference table of the same pointer width (ESP-NN: not measured)."""
    return KERNEL_TAILS.get((pointer_bytes, kernel_library)) or KERNEL_TAILS[(pointer_bytes if pointer_bytes in (4, 8) else 4, "reference")]


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


def kernel_tail(kind: str, kernels: dict[str, KernelTail] = HOST_KERNELS) -> KernelTail:
    """The tail figures of an op kind (:data:`UNKNOWN_KERNEL` for kinds nobody has measured)."""
    return kernels.get(kind, UNKNOWN_KERNEL)


def _operand(graph: Graph, indices: tuple[int, ...], k: int):
    """The ``k``-th tensor of an op's ``indices``, or None when it is absent (a short list, or
    -1: an optional input left out). A malformed model can have an op without the operands its
    kind needs; the tail is then priced without what they would decide."""
    if k < len(indices) and 0 <= indices[k] < len(graph.tensors):
        return graph.tensors[indices[k]]
    return None


def op_allocations(graph: Graph, op, kernels: dict[str, KernelTail] = HOST_KERNELS) -> tuple[list, list, list]:
    """The (size, alignment) tail allocations ``op`` makes, per region, in TFLM's order:
    its builtin options, its ``Init`` data, and what its ``Prepare`` allocates.

    The one statement of an op's tail: :func:`allocation_sequence` lays the regions out for a
    whole graph, and the fast pricer (``moofa.cost``) tabulates them per piece. Operands an op
    lacks (a malformed model) never fail it: without its input's type the per-channel arrays are
    counted (the larger tail), without an output they are not (no channel count).
    """
    k = kernel_tail(op.kind, kernels)
    builtin = list(k.builtin)
    init = [(k.init_bytes, PERSISTENT_BUFFER_ALIGNMENT)] if k.init_bytes else []
    if k.shaped_init is not None:
        init = [(n, PERSISTENT_BUFFER_ALIGNMENT) for n in k.shaped_init(graph, op)]
    prepare: list[tuple[int, int]] = []
    src, weights, out = _operand(graph, op.inputs, 0), _operand(graph, op.inputs, 1), _operand(graph, op.outputs, 0)
    if k.per_channel == "quantized" and (
        (src is not None and src.dtype == "float32") or (weights is not None and weights.quant_channels <= 1)
    ):
        return builtin, init, prepare
    if k.per_channel == "integer" and src is not None and src.dtype == "float32":
        return builtin, init, prepare
    if k.per_channel and out is not None:
        channels = out.shape[-1] if out.shape else 1
        prepare += [(4 * channels, PERSISTENT_BUFFER_ALIGNMENT)] * 2
    if k.int16_prepare and src is not None and src.dtype == "int16":
        prepare += [(n, PERSISTENT_BUFFER_ALIGNMENT) for n in k.int16_prepare]
    if k.shaped_prepare is not None:
        prepare += [(n, PERSISTENT_BUFFER_ALIGNMENT) for n in k.shaped_prepare(graph, op)]
    return builtin, init, prepare


def resource_variable_count(graph: Graph) -> int:
    """How many resource variables the model's interpreter is made with: the distinct shared
    names of its VAR_HANDLE ops, every subgraph (the host package counts them so,
    ``count_resource_variables`` in tflite_micro's runtime.py; moofa's firmware does the same)."""
    return len({op.attrs.get("shared_name", "") for g in (graph, *graph.subgraphs) for op in g.ops if op.kind == "VAR_HANDLE"})


def resource_buffers(graph: Graph) -> dict[tuple[int, int], int]:
    """(subgraph, op) -> bytes of the resource-variable buffer that op's Prepare allocates.

    ASSIGN_VARIABLE's Prepare allocates its variable's buffer, the size of the value it assigns,
    when the variable has none yet and the handle it is given already holds its id: the handle
    is the output of a VAR_HANDLE prepared before it, in the same subgraph (kernels prepare
    subgraph by subgraph, in op order). A handle passed in from another subgraph holds no id at
    Prepare, and nothing is allocated (kernels/assign_variable.cc)."""
    out: dict[tuple[int, int], int] = {}
    allocated: set[str] = set()
    for k, g in enumerate((graph, *graph.subgraphs)):
        handles: dict[int, str] = {}
        for i, op in enumerate(g.ops):
            if op.kind == "VAR_HANDLE" and op.outputs:
                handles[op.outputs[0]] = op.attrs.get("shared_name", "")
            elif op.kind == "ASSIGN_VARIABLE" and len(op.inputs) >= 2 and op.inputs[0] in handles:
                name = handles[op.inputs[0]]
                value = _operand(g, op.inputs, 1)
                if name not in allocated and value is not None:
                    allocated.add(name)
                    out[(k, i)] = value.nbytes
    return out


def allocation_sequence(graph: Graph, abi: Abi, scratch_count: int, kernels: dict[str, KernelTail] = HOST_KERNELS):
    """(kind, size, alignment) of every tail allocation after the allocator objects, in TFLM's
    order. With control flow, every step runs over the subgraphs in turn (MicroAllocator's
    AllocateTfLiteEvalTensors, AllocateNodeAndRegistrations and AllocateVariables, and
    MicroInterpreterGraph's InitSubgraphs and PrepareSubgraphs loop over them); only the main
    graph's inputs and outputs get TfLiteTensor structs (MicroInterpreter)."""
    every = [graph, *graph.subgraphs]
    per_op = [op_allocations(g, op, kernels) for g in every for op in g.ops]
    variables = resource_buffers(graph)
    if variables:
        keys = [(k, i) for k, g in enumerate(every) for i in range(len(g.ops))]
        per_op = [(b, init, prepare + [(variables[key], PERSISTENT_BUFFER_ALIGNMENT)] if key in variables else prepare)
                  for key, (b, init, prepare) in zip(keys, per_op)]
    seq = []
    if graph.subgraphs:  # the prefix holds one SubgraphAllocations; the array is one allocation
        seq.append(("allocator objects", abi.subgraph_allocations_bytes * len(every), abi.pointer_bytes))
    seq += [("TfLiteEvalTensor data", abi.eval_tensor_bytes * len(g.tensors), abi.pointer_bytes) for g in every]
    seq += [("NodeAndRegistration struct", abi.node_and_registration_bytes * len(g.ops), abi.pointer_bytes) for g in every]
    seq += [("builtin data", size, align) for builtin, _, _ in per_op for size, align in builtin]
    seq += [("Persistent buffer data", size, align) for _, init, _ in per_op for size, align in init]
    seq += [("Persistent buffer data", size, align) for _, _, prepare in per_op for size, align in prepare]
    if scratch_count:
        seq.append(("scratch handles", abi.scratch_handle_bytes * scratch_count, abi.pointer_bytes))
    # Variable tensors (an SVDF's or LSTM's state): MicroAllocator::AllocateVariables, called from
    # CommitStaticMemoryPlan after the scratch handles, gives each one that the offline plan does
    # not place a persistent buffer, in tensor order (micro_allocator.cc).
    for g in every:
        offline = g.offline_offsets
        seq += [("variable tensor data", t.nbytes, PERSISTENT_BUFFER_ALIGNMENT) for k, t in enumerate(g.tensors)
                if t.is_variable and (offline is None or k >= len(offline) or offline[k] == -1)]
    for group in (graph.inputs, graph.outputs):
        seq.append(("Persistent buffer data", abi.pointer_bytes * len(group), PERSISTENT_BUFFER_ALIGNMENT))
        for t in group:
            seq.append(("Persistent TfLiteTensor data", abi.tflite_tensor_bytes, abi.pointer_bytes))
            channels = graph.tensors[t].quant_channels if 0 <= t < len(graph.tensors) else 0
            if channels:
                seq.append(("Persistent TfLiteTensor quantization data", abi.affine_quantization_bytes, abi.pointer_bytes))
                seq.append(("Persistent TfLiteTensor quantization data", _zero_point_array_bytes(channels), 4))
    return seq


def estimate_tail(graph: Graph, pointer_bytes: int = 8, scratch_count: int = 0,
                  kernel_library: str = "reference") -> TailEstimate:
    """Replay TFLM's tail allocations for ``graph`` and return the bytes they take.

    ``scratch_count`` is the number of kernel scratch requests (each gets a handle).
    """
    abi = abi_for(pointer_bytes)
    kernels = kernel_tails(pointer_bytes, kernel_library)
    # The arena end is 16-byte aligned; the tail grows down from it.
    p = -abi.prefix_bytes
    by_kind: dict[str, int] = {"allocator objects": abi.prefix_bytes}
    variables = resource_variable_count(graph)
    if variables:  # made between the allocator's objects and the builtin-data allocator
        p += abi.builtin_data_allocator_bytes + abi.subgraph_allocations_bytes
        for size in (abi.resource_variables_bytes, abi.resource_variable_bytes * variables):
            p = (p - size) // PERSISTENT_BUFFER_ALIGNMENT * PERSISTENT_BUFFER_ALIGNMENT
        p = (p - abi.builtin_data_allocator_bytes - abi.subgraph_allocations_bytes) // abi.pointer_bytes * abi.pointer_bytes
        by_kind["resource variables"] = -p - abi.prefix_bytes
    if graph.subgraphs:  # allocation_sequence lays out the whole SubgraphAllocations array
        p += abi.subgraph_allocations_bytes
        by_kind["allocator objects"] -= abi.subgraph_allocations_bytes
    for kind, size, align in allocation_sequence(graph, abi, scratch_count, kernels):
        before = p
        p = (p - size) // align * align
        by_kind[kind] = by_kind.get(kind, 0) + before - p
    unknown = sorted({op.kind for g in (graph, *graph.subgraphs) for op in g.ops if op.kind not in kernels})
    measured = (pointer_bytes, kernel_library) in KERNEL_TAILS
    return TailEstimate(-p, exact=not unknown and measured, unknown_kinds=unknown, by_kind=by_kind)
