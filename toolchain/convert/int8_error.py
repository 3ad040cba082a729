"""Where a full-int8 export loses accuracy: every op's output in the int8 model against the same
tensor of the float model, on the same images.

Both models are converted from the one frozen graph function :func:`export.checked_graph` makes,
the int8 one exactly as :func:`export.export_int8` converts it, so they have the same ops in the
same order and each op's output carries the same name (checked: a mismatch is an error, not a
guess). Each op's int8 output is dequantized with its own scale and zero point and compared with
the float model's output of that op. The figure is the signal-to-quantization-noise ratio,
``SQNR = 10 log10(sum f^2 / sum (q - f)^2)`` over all images and elements (higher is better): the
error the int8 model carries at that point, accumulated from the input on. ``drop_db`` is how
much an op lowers it: the lowest SQNR among the op's activation inputs (the model input counts,
with the error of its own int8 rounding) minus the SQNR of its output. The op with the largest
drop is where to look first. For scale: rounding a signal that fills the int8 range uniformly
costs about 6 dB per bit, i.e. about 48 dB (the standard uniform-quantizer result).

An op's output has one int8 scale for all its channels (per-tensor activations), so a channel
whose values span a small part of the tensor's range keeps only a few int8 steps.
``narrowest_steps`` says how few: the smallest, over the output's channels (its last axis), of
that channel's float range on these images divided by the scale. A channel that never changes
(range 0: it carries no information) does not count. A few steps in a narrow layer is where
precision goes even when the tensor's SQNR, dominated by its widest channels, looks fine.

The float model runs LiteRT's float kernels and the int8 one its built-in int8 kernels (not
TFLM's; they can differ by a quantization step or two), with every intermediate tensor kept.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from toolchain.errors import InputError


@dataclass(frozen=True)
class OpError:
    index: int  # position in the model's op list (execution order)
    kind: str  # TFLite builtin name, e.g. CONV_2D
    output: str  # the output tensor's name: the Keras layers fused into this op
    shape: tuple[int, ...]  # of the output, batch 1
    scale: float  # the output's int8 quantization scale
    sqnr_db: float  # of the output (inf where the int8 output equals the float one)
    drop_db: float  # lowest SQNR among the activation inputs minus sqnr_db
    narrowest_steps: float  # int8 steps the narrowest varying channel spans (nan: none varies)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        for k in ("sqnr_db", "drop_db", "narrowest_steps"):
            d[k] = _rounded(d[k])
        return d


@dataclass(frozen=True)
class Int8Errors:
    input_sqnr_db: float  # of the int8 input against the float images
    ops: list[OpError]
    images: int

    @property
    def output_sqnr_db(self) -> float:
        return self.ops[-1].sqnr_db if self.ops else self.input_sqnr_db

    def worst(self, n: int = 5) -> list[OpError]:
        """The ``n`` ops with the largest drop, largest first (ties: earlier op first)."""
        return sorted(self.ops, key=lambda e: (-_finite(e.drop_db), e.index))[:n]

    def to_dict(self) -> dict:
        return {"images": self.images, "input_sqnr_db": _rounded(self.input_sqnr_db), "output_sqnr_db": _rounded(self.output_sqnr_db),
                "ops": [e.to_dict() for e in self.ops]}


def _finite(x: float) -> float:
    return -1e9 if math.isnan(x) else max(min(x, 1e9), -1e9)


def _rounded(x: float) -> float | None:
    return None if math.isinf(x) or math.isnan(x) else round(x, 2)


def _sqnr(signal: float, noise: float) -> float:
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def _narrowest_steps(low, high, scale) -> float:
    """Int8 steps of the narrowest channel whose float values vary (see the module docstring)."""
    if not scale:
        return math.nan
    spans = (high - low)[high > low]
    return float(spans.min() / scale) if spans.size else math.nan


def _interpreter(data: bytes):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=data, num_threads=1, experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    return it


def int8_errors(module, calibration_nchw: np.ndarray, images_nchw: np.ndarray) -> Int8Errors:
    """Per-op SQNR of ``module``'s full-int8 export (calibrated on ``calibration_nchw``, as
    :func:`export.export_int8` would) on ``images_nchw`` (float32 N, C, H, W, normalised as the
    network expects; e.g. a few hundred validation images)."""
    from toolchain.convert.export import checked_graph, int8_converter
    from toolchain.runtime.tf import quietly
    from toolchain.tflite.reader import parse_model

    calibration_nchw = np.asarray(calibration_nchw, dtype=np.float32)
    images_nchw = np.asarray(images_nchw, dtype=np.float32)
    if images_nchw.ndim != 4 or len(images_nchw) == 0 or images_nchw.shape[1:] != calibration_nchw.shape[1:]:
        raise InputError(f"images must be (N, C, H, W) like the calibration images {calibration_nchw.shape[1:]}, got {images_nchw.shape}")
    tf, graph_fn, _ = checked_graph(module, calibration_nchw)
    qdata = quietly(int8_converter(tf, graph_fn, calibration_nchw).convert)
    fdata = quietly(tf.lite.TFLiteConverter.from_concrete_functions([graph_fn]).convert)
    qg, fg = parse_model(qdata, "int8 export"), parse_model(fdata, "float export")
    if [o.kind for o in qg.ops] != [o.kind for o in fg.ops] or any(
            qg.tensors[q.outputs[0]].name != fg.tensors[f.outputs[0]].name for q, f in zip(qg.ops, fg.ops)):
        raise InputError("cannot compare: the float and int8 conversions of this network have different ops")

    qi, fi = _interpreter(qdata), _interpreter(fdata)
    q_in, f_in = qg.inputs[0], fg.inputs[0]
    in_scale, in_zero = qg.tensors[q_in].scale, qg.tensors[q_in].zero_point
    outs = [(q.outputs[0], f.outputs[0]) for q, f in zip(qg.ops, fg.ops)]
    signal = np.zeros(len(outs) + 1)
    noise = np.zeros(len(outs) + 1)
    channels = [(qg.tensors[qt].shape or (1,))[-1] for qt, _ in outs]
    lows = [np.full(c, np.inf) for c in channels]  # per output: each channel's float minimum and maximum so far
    highs = [np.full(c, -np.inf) for c in channels]
    for image in images_nchw:
        x = image.transpose(1, 2, 0)[None]
        xq = np.clip(np.round(x / in_scale) + in_zero, -128, 127).astype(np.int8)
        fi.set_tensor(f_in, x)
        qi.set_tensor(q_in, xq)
        fi.invoke()
        qi.invoke()
        signal[0] += float(np.sum(np.square(x, dtype=np.float64)))
        noise[0] += float(np.sum(np.square((xq.astype(np.float64) - in_zero) * in_scale - x)))
        for k, (qt, ft) in enumerate(outs, start=1):
            t = qg.tensors[qt]
            f = fi.get_tensor(ft).astype(np.float64)
            q = (qi.get_tensor(qt).astype(np.float64) - (t.zero_point or 0)) * (t.scale or 1.0)
            signal[k] += float(np.sum(f * f))
            noise[k] += float(np.sum(np.square(q - f)))
            per_channel = f.reshape(-1, f.shape[-1]) if f.ndim else f.reshape(1, 1)
            np.minimum(lows[k - 1], per_channel.min(axis=0), out=lows[k - 1])
            np.maximum(highs[k - 1], per_channel.max(axis=0), out=highs[k - 1])

    sqnr = [_sqnr(s, n) for s, n in zip(signal, noise)]
    produced = {q.outputs[0]: k for k, q in enumerate(qg.ops, start=1)}  # tensor -> its SQNR slot
    produced[q_in] = 0
    ops = []
    for k, op in enumerate(qg.ops, start=1):
        inputs = [sqnr[produced[t]] for t in op.inputs if t in produced]
        before = min(inputs) if inputs else math.inf
        drop = before - sqnr[k] if not (math.isinf(before) and math.isinf(sqnr[k])) else 0.0
        out = qg.tensors[op.outputs[0]]
        ops.append(OpError(k - 1, op.kind, out.name, tuple(out.shape), float(out.scale or 0.0), sqnr[k], drop,
                           _narrowest_steps(lows[k - 1], highs[k - 1], out.scale)))
    return Int8Errors(sqnr[0], ops, len(images_nchw))
