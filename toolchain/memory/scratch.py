"""Scratch buffers that kernels request in the arena head, per kernel library.

A kernel asks for scratch in its ``Prepare`` (``RequestScratchBufferInArena``); the buffer lives
for that op only and is planned with the tensors. What is asked depends on the kernel library
the board's firmware links, named by the board file's ``kernel_library``:

- ``reference``: TFLM's portable kernels, which the ``tflite-micro`` host build runs. Of the ops
  moofa models, ``MEAN`` asks (int8/int16 only) an int32 accumulator per output element,
  then one int per input dimension and one per reduced axis (tflite-micro
  ``kernels/reduce_common.cc``; the three requests were confirmed by the measured arena; SUM
  asks the same, REDUCE_MAX, REDUCE_MIN and REDUCE_ALL the last two), and
  ``TRANSPOSE_CONV`` an int32 accumulator per output element for int8 inputs
  (``kernels/transpose_conv.cc``), ``SVDF`` one or two int32 buffers (:func:`_svdf_requests`);
  measured on the host and the 32-bit builds. ``UNIDIRECTIONAL_SEQUENCE_LSTM`` four buffers the
  size of its cell state (:func:`_lstm_requests`), measured on the host and the 32-bit builds.
  ``ADD_N`` one pointer per input (float32 and int8: every library runs TFLM's own kernel, so
  the request is the pointer width times the inputs; measured on the host and the 32-bit builds).
  The custom ops SignalRfft (fft_length scalars) and TFLite_Detection_PostProcess (eleven
  buffers) ask the same on every library, sized from their options (measured on the same builds).
- ``cmsis-nn``: Arm's CMSIS-NN kernels for Cortex-M with the DSP extension (not MVE):
  ``arm_convolve_s8_get_buffer_size`` = 2 x (kernel_h x kernel_w x in_channels) int16 im2col
  columns, none for 1x1 stride-1 unpadded convolutions (``arm_convolve_1x1_s8_fast``);
  ``arm_depthwise_conv_s8_opt_get_buffer_size`` = in_channels x kernel_h x kernel_w int16 for
  depth multiplier 1, except 3x3 kernels with padding <= 1 (``arm_depthwise_conv_3x3_s8``, none);
  ``arm_avgpool_s8_get_buffer_size`` = in_channels int32; fully connected none on DSP cores;
  transpose convolution two requests (:func:`_cmsis_transpose_conv_requests`, measured).
  (CMSIS-NN ``Source/*/arm_*_get_buffer_size*.c``; TFLM ``kernels/cmsis_nn/*.cc`` requests them.)
- ``esp-nn``: Espressif's ESP32-S3 kernels. ``esp_nn_get_conv_scratch_size_esp32s3`` =
  2 x (filter + input + 8 x in_channels) + 32 bytes for convolutions that are not 1x1;
  depthwise = 2 x (padded input + filter) + 32 bytes (esp-nn ``src/convolution/*_esp32s3.c``).
  These are estimates of a library that changes between releases; cmsis-nn and esp-nn figures
  cannot be measured on this machine and are documented, not verified.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from toolchain.ir.graph import Graph, Tensor
from toolchain.memory.persistent import custom_option
from toolchain.memory.planner import ScratchRequest


def _operand(graph: Graph, indices: tuple[int, ...], k: int) -> Tensor | None:
    """The ``k``-th tensor of an op's ``indices``; None when absent (a short list, or -1: an
    optional input left out). A malformed model can lack operands its op kind needs; TFLM's
    ``Prepare`` would refuse such an op, so it asks for no scratch here rather than fail."""
    if k < len(indices) and 0 <= indices[k] < len(graph.tensors):
        return graph.tensors[indices[k]]
    return None


def _channels(t: Tensor) -> int:
    return t.shape[-1] if t.shape else 1  # a scalar is one channel


def _mean_requests(graph: Graph, i: int) -> list[ScratchRequest]:
    op = graph.ops[i]
    src, out = _operand(graph, op.inputs, 0), _operand(graph, op.outputs, 0)
    if src is None or out is None:
        return []
    axes_tensor = _operand(graph, op.inputs, 1)
    axes = axes_tensor.element_count if axes_tensor is not None else 1
    requests = [
        ScratchRequest(i, 4 * len(src.shape), "MEAN input dims"),
        ScratchRequest(i, 4 * axes, "MEAN resolved axes"),
    ]
    if src.dtype in ("int8", "uint8", "int16"):
        requests.insert(0, ScratchRequest(i, 4 * out.element_count, "MEAN int32 accumulators"))
    return requests


def _transpose_conv_requests(graph: Graph, i: int) -> list[ScratchRequest]:
    """The reference TRANSPOSE_CONV (kernels/transpose_conv.cc, Prepare): an int32 accumulator per
    output element for int8 inputs, an int64 one for int16 inputs, and for int16 inputs with an
    int16 bias one int64 per bias element (CalculateOpData converts the bias). Its operands are
    (output shape, filter, input, bias). Measured for int8 and 16x8 inputs; not the int16-bias case
    (TensorFlow's converter writes 16x8 biases as int64)."""
    op = graph.ops[i]
    src, out, bias = _operand(graph, op.inputs, 2), _operand(graph, op.outputs, 0), _operand(graph, op.inputs, 3)
    if src is None or out is None:
        return []
    if src.dtype == "int8":
        return [ScratchRequest(i, 4 * out.element_count, "TRANSPOSE_CONV int32 accumulators")]
    if src.dtype == "int16":
        requests = [ScratchRequest(i, 8 * out.element_count, "TRANSPOSE_CONV int64 accumulators")]
        if bias is not None and bias.dtype == "int16":
            requests.append(ScratchRequest(i, 8 * bias.element_count, "TRANSPOSE_CONV int64 bias"))
        return requests
    return []


def _svdf_requests(graph: Graph, i: int) -> list[ScratchRequest]:
    """SVDF (TFLM kernels/svdf_common.cc PrepareSvdf; kernels/cmsis_nn/svdf.cc asks the same, its
    arm_svdf_s8_get_buffer_size being 0 on DSP cores): an int32 (float) per batch x filter, and for
    int8 inputs an int32 per batch x unit too. Filters come from the feature weights (input 1), units
    from the output."""
    op = graph.ops[i]
    src, feature, out = _operand(graph, op.inputs, 0), _operand(graph, op.inputs, 1), _operand(graph, op.outputs, 0)
    if src is None or feature is None or not feature.shape:
        return []
    batch = src.shape[0] if src.shape else 1
    requests = [ScratchRequest(i, 4 * batch * feature.shape[0], "SVDF per-filter state")]
    if src.dtype == "int8" and out is not None:
        requests.append(ScratchRequest(i, 4 * batch * _channels(out), "SVDF int32 output"))
    return requests


def _lstm_requests(graph: Graph, i: int, cmsis_nn: bool = False) -> list[ScratchRequest]:
    """UNIDIRECTIONAL_SEQUENCE_LSTM (TFLM kernels/unidirectional_sequence_lstm.cc, Prepare): four
    buffers of batch_size x state_dimension cell-state elements (TfLiteTypeGetSize of the cell
    state, input 19: float32 or int16). ValidateTensorSize (kernels/lstm_eval_common.cc) holds
    the cell state to exactly batch x state elements, so each is the cell state's size, whatever
    time_major says. CMSIS-NN (kernels/cmsis_nn/unidirectional_sequence_lstm.cc) asks three of them
    for an int8 or int16 input with an int16 cell state, four otherwise."""
    op = graph.ops[i]
    src, cell = _operand(graph, op.inputs, 0), _operand(graph, op.inputs, 19)
    if src is None or cell is None:
        return []
    count = 3 if cmsis_nn and cell.dtype == "int16" and src.dtype in ("int8", "int16") else 4
    return [ScratchRequest(i, cell.nbytes, f"LSTM gate buffer {k}") for k in range(count)]


def _reduce_requests(graph: Graph, i: int) -> list[ScratchRequest]:
    """The reduce ops every library takes from TFLM's kernels/reduce_common.cc: MEAN and SUM
    (PrepareMeanOrSumHelper) ask what :func:`_mean_requests` says; REDUCE_MAX and REDUCE_MIN
    (PrepareMinMaxHelper) and REDUCE_ALL (PrepareAllHelper) one int per input dimension and one
    per axis, no accumulators."""
    op = graph.ops[i]
    if op.kind in ("MEAN", "SUM"):
        return _mean_requests(graph, i)
    src, out = _operand(graph, op.inputs, 0), _operand(graph, op.outputs, 0)
    if src is None or out is None:
        return []
    axes_tensor = _operand(graph, op.inputs, 1)
    axes = axes_tensor.element_count if axes_tensor is not None else 1
    return [ScratchRequest(i, 4 * len(src.shape), f"{op.kind} input dims"),
            ScratchRequest(i, 4 * axes, f"{op.kind} resolved axes")]


_REDUCE_KINDS = frozenset({"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_ALL"})


def _mirror_pad_requests(graph: Graph, i: int) -> list[ScratchRequest]:
    """MIRROR_PAD (TFLM kernels/mirror_pad.cc, every library): two int arrays of the input's rank."""
    src = _operand(graph, graph.ops[i].inputs, 0)
    if src is None:
        return []
    return [ScratchRequest(i, 4 * len(src.shape), "MIRROR_PAD output dims"),
            ScratchRequest(i, 4 * len(src.shape), "MIRROR_PAD input dims")]


def _conv_geometry(graph: Graph, i: int):
    """(op, input, weights, kernel h, kernel w, input h, input w, input channels), or None when
    the op has no input or no weights."""
    op = graph.ops[i]
    src, weights = _operand(graph, op.inputs, 0), _operand(graph, op.inputs, 1)
    if src is None or weights is None:
        return None
    _, kh, kw, _ = weights.shape if len(weights.shape) == 4 else (0, 1, 1, 0)
    in_h, in_w, in_c = (src.shape[1], src.shape[2], src.shape[3]) if len(src.shape) == 4 else (1, 1, _channels(src))
    return op, src, weights, kh, kw, in_h, in_w, in_c


def _int8_input(graph: Graph, i: int) -> bool:
    src = _operand(graph, graph.ops[i].inputs, 0)
    return src is not None and src.dtype == "int8"


def _cmsis_transpose_conv_requests(graph: Graph, i: int) -> list[ScratchRequest]:
    """CMSIS-NN's TRANSPOSE_CONV (TFLM kernels/cmsis_nn/transpose_conv.cc, Prepare). int8 asks
    twice: ``arm_transpose_conv_s8_get_buffer_size``, then
    ``arm_transpose_conv_s8_get_reverse_conv_buffer_size`` (CMSIS-NN
    ``arm_transpose_conv_get_buffer_sizes_s8.c``, DSP build). With both strides <= 2 and more than 16
    input channels (``REVERSE_TCOL_EFFICIENT_THRESHOLD``) it runs as a convolution over the
    stride-dilated input: an im2col of 2 x (kh x kw x Cin rounded up to 4) int16
    (``arm_convolve_s8_get_buffer_size``), and Cout x kh x kw x Cin bytes for the reversed filter.
    Otherwise an int32 column buffer of ((in_w - 1) x stride_w + max(kw, stride_h)) x Cout x
    max(kh, stride_h) (CMSIS-NN uses stride_h in both maxima), and a reverse buffer of 0 bytes,
    still a request. int16 inputs ask what the reference kernel asks."""
    op = graph.ops[i]
    src, weights, out = _operand(graph, op.inputs, 2), _operand(graph, op.inputs, 1), _operand(graph, op.outputs, 0)
    if src is None or out is None or src.dtype != "int8":
        return _transpose_conv_requests(graph, i)
    if weights is None or len(weights.shape) != 4 or len(src.shape) != 4:
        return []
    c_out, kh, kw, _ = weights.shape
    _, _, in_w, c_in = src.shape
    sh, sw = (max(1, int(x)) for x in op.attrs.get("stride", (1, 1)))  # a corrupt stride: priced as 1
    if sh <= 2 and sw <= 2 and c_in > 16:
        cols = kh * kw * c_in
        cols += -cols % 4
        return [ScratchRequest(i, 2 * cols * 2, "CMSIS-NN transpose conv im2col"),
                ScratchRequest(i, c_in * kw * kh * c_out, "CMSIS-NN transpose conv reversed filter")]
    columns = max(0, ((in_w - 1) * sw + max(kw, sh)) * c_out * max(kh, sh) * 4)
    return [ScratchRequest(i, columns, "CMSIS-NN transpose conv columns"),
            ScratchRequest(i, 0, "CMSIS-NN transpose conv reversed filter (none)")]


def _add_n_requests(graph: Graph, i: int, pointer_bytes: int) -> list[ScratchRequest]:
    """ADD_N (TFLM kernels/add_n.cc CalculateOpData, every library): one pointer per input, for
    float32 and int8 outputs (the kernel runs no other type)."""
    op = graph.ops[i]
    out = _operand(graph, op.outputs, 0)
    if out is None or out.dtype not in ("float32", "int8"):
        return []
    return [ScratchRequest(i, pointer_bytes * len(op.inputs), "ADD_N input pointers")]


def _rfft_requests(graph: Graph, i: int) -> list[ScratchRequest]:
    """SignalRfft (signal/micro/kernels/rfft.cc, Prepare): a work area of fft_length scalars of
    the input's type (its ``fft_length`` option, read by the reader)."""
    op = graph.ops[i]
    src = _operand(graph, op.inputs, 0)
    try:
        length = int(custom_option(op, "fft_length"))
    except (TypeError, ValueError, OverflowError):
        return []
    if src is None or length <= 0:
        return []
    return [ScratchRequest(i, length * (2 if src.dtype == "int16" else 4), "SignalRfft work area")]


def _detection_requests(graph: Graph, i: int) -> list[ScratchRequest]:
    """TFLite_Detection_PostProcess (TFLM kernels/detection_postprocess.cc, Prepare): eleven
    buffers from the number of boxes (box encodings' dimension 1), the class predictions' shape
    and the options max_detections and num_classes (read by the reader), in the kernel's order."""
    op = graph.ops[i]
    boxes, classes = _operand(graph, op.inputs, 0), _operand(graph, op.inputs, 1)
    try:
        detections, num_classes = int(custom_option(op, "max_detections")), int(custom_option(op, "num_classes"))
    except (TypeError, ValueError, OverflowError):
        return []
    if boxes is None or classes is None or len(boxes.shape) != 3 or len(classes.shape) != 3:
        return []
    n, detections, num_classes = max(boxes.shape[1], 0), max(detections, 0), max(num_classes, 0)
    sizes = [("active candidates", n), ("decoded boxes", 16 * n), ("scores", 4 * max(classes.shape[1] * classes.shape[2], 0)),
             ("score buffer", 4 * n), ("keep scores", 4 * n), ("scores after NMS", 4 * detections * n),
             ("sorted values", 4 * detections * n), ("keep indices", 4 * n), ("sorted indices", 4 * detections * n),
             ("buffer", 4 * max(num_classes, detections) * n), ("selected", 4 * min(n, detections) * n)]
    return [ScratchRequest(i, size, f"detection post-process {why}") for why, size in sizes]


def _portable_requests(graph: Graph, i: int, pointer_bytes: int) -> list[ScratchRequest] | None:
    """What the kernels every library takes from TFLM's portable ones ask for; None for an op
    whose kernel is the library's own (or asks for nothing)."""
    kind = graph.ops[i].kind
    if kind in _REDUCE_KINDS:
        return _reduce_requests(graph, i)
    if kind == "MIRROR_PAD":
        return _mirror_pad_requests(graph, i)
    if kind == "ADD_N":
        return _add_n_requests(graph, i, pointer_bytes)
    if kind == "CUSTOM:SignalRfft":
        return _rfft_requests(graph, i)
    if kind == "CUSTOM:TFLite_Detection_PostProcess":
        return _detection_requests(graph, i)
    return None


def _cmsis_requests(graph: Graph, i: int) -> list[ScratchRequest]:
    op = graph.ops[i]
    if op.kind == "TRANSPOSE_CONV":
        return _cmsis_transpose_conv_requests(graph, i)
    if op.kind == "SVDF":
        return _svdf_requests(graph, i)
    if op.kind == "UNIDIRECTIONAL_SEQUENCE_LSTM":
        return _lstm_requests(graph, i, cmsis_nn=True)
    if not _int8_input(graph, i):
        return []
    if op.kind == "CONV_2D":
        geometry = _conv_geometry(graph, i)
        if geometry is None:
            return []
        op, src, w, kh, kw, _, _, in_c = geometry
        unpadded = op.attrs.get("padding") == "VALID" or (kh == 1 and kw == 1)
        if kh == 1 and kw == 1 and op.attrs.get("stride", (1, 1)) == (1, 1) and unpadded:
            return []
        return [ScratchRequest(i, 2 * kh * kw * in_c * 2, "CMSIS-NN im2col")]
    if op.kind == "DEPTHWISE_CONV_2D":
        geometry = _conv_geometry(graph, i)
        if geometry is None:
            return []
        op, src, w, kh, kw, _, _, in_c = geometry
        if op.attrs.get("depth_multiplier", 1) != 1:
            return []
        if (kh, kw) == (3, 3) and op.attrs.get("dilation", (1, 1)) == (1, 1):
            return []
        return [ScratchRequest(i, in_c * kh * kw * 2, "CMSIS-NN depthwise opt")]
    if op.kind == "AVERAGE_POOL_2D":
        return [ScratchRequest(i, 4 * _channels(_operand(graph, op.inputs, 0)), "CMSIS-NN avgpool")]
    return []


def _esp_requests(graph: Graph, i: int) -> list[ScratchRequest]:
    op = graph.ops[i]
    if op.kind not in ("CONV_2D", "DEPTHWISE_CONV_2D") or not _int8_input(graph, i):
        return []
    geometry = _conv_geometry(graph, i)
    if geometry is None:
        return []
    op, src, w, kh, kw, in_h, in_w, in_c = geometry
    if op.kind == "CONV_2D":
        if kh == 1 and kw == 1:
            return []
        return [ScratchRequest(i, 2 * (w.element_count + src.element_count + 8 * in_c) + 32, "ESP-NN conv")]
    padded = (in_h + kh - 1) * (in_w + kw - 1) * in_c
    return [ScratchRequest(i, 2 * (padded + w.element_count) + 32, "ESP-NN depthwise")]


@dataclass(frozen=True)
class KernelLibrary:
    """A kernel library a board's firmware can link: what its kernels ask for, and how TFLM builds it."""

    name: str  # as a board file's ``kernel_library`` says it
    optimized_kernel_dir: str  # TFLM Makefile's OPTIMIZED_KERNEL_DIR ("" = the reference kernels)
    requests: Callable[[Graph, int], list[ScratchRequest]]  # the scratch op ``i`` asks for


def _reference_requests(graph: Graph, i: int) -> list[ScratchRequest]:
    kind = graph.ops[i].kind
    if kind == "TRANSPOSE_CONV":
        return _transpose_conv_requests(graph, i)
    if kind == "SVDF":
        return _svdf_requests(graph, i)
    if kind == "UNIDIRECTIONAL_SEQUENCE_LSTM":
        return _lstm_requests(graph, i)
    return []


#: The kernel libraries moofa models: the one list boards, the CLI and the planner take names from.
KERNEL_LIBRARIES: dict[str, KernelLibrary] = {
    lib.name: lib
    for lib in (
        KernelLibrary("reference", "", _reference_requests),
        KernelLibrary("cmsis-nn", "cmsis_nn", _cmsis_requests),
        KernelLibrary("esp-nn", "esp_nn", _esp_requests),
    )
}


def scratch_requests(graph: Graph, kernel_library: str = "reference", pointer_bytes: int = 8) -> list[ScratchRequest]:
    """Every scratch request the given kernel library's kernels make for ``graph``, in op order,
    on a build with this pointer width (ADD_N asks for a pointer per input)."""
    if kernel_library not in KERNEL_LIBRARIES:
        raise ValueError(f"unknown kernel library {kernel_library!r}; known: {', '.join(KERNEL_LIBRARIES)}")
    per_op = KERNEL_LIBRARIES[kernel_library].requests
    requests: list[ScratchRequest] = []
    for i in range(len(graph.ops)):
        portable = _portable_requests(graph, i, pointer_bytes)
        requests += portable if portable is not None else per_op(graph, i)
    return requests
