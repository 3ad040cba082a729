"""Export a static PyTorch network to a full-integer int8 TFLite model.

The path is MCUNet's: rebuild the network in Keras with the PyTorch weights, then quantize with
``tf.lite.TFLiteConverter`` and a representative dataset. We chose it over ONNX + onnx2tf
because it gives the leanest graph: the network is rebuilt directly in NHWC, so there is no
TRANSPOSE; batch-norm is folded into the convolution weights here; a ``F.pad`` whose padding
equals TensorFlow's SAME padding becomes ``padding="same"`` on the convolution instead of a PAD
op; and activations that follow a convolution fuse into it during conversion. onnx2tf on the
same network inserts PAD ops wherever PyTorch's padding is not TF's SAME (onnx2tf 1.x)
and needs its own extra packages at conversion time.

The network is read by running it once on a zero image and recording every tensor operation
(``torch.overrides.TorchFunctionMode``), so padding computed from ``x.shape`` and Python control
flow just work. Operations that export: 2-D convolution (plain or depthwise), batch-norm right
after a convolution (folded), a constant added right after a convolution (folded into its
bias), ReLU, ReLU6, hard-swish, hard-sigmoid, sigmoid, zero ``F.pad``, mean or adaptive average
pooling over H and W, flatten of a 1x1 map, linear, dropout (dropped), and ``+``/``*`` between
tensors or with a constant. Anything else raises :class:`InputError` naming the operation.

This module consumes a torch module but imports nothing from ``moofa``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from toolchain.errors import InputError
from toolchain.files import write_atomically


@dataclass
class ExportResult:
    path: Path
    model_bytes: int
    float_max_abs_diff: float  # Keras rebuild vs PyTorch, float32, on the calibration images
    op_kinds: list[str]


def _same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    k = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


@dataclass
class _Op:
    """One recorded torch call: the function's name, its arguments and its output tensor."""

    name: str
    args: tuple
    kwargs: dict
    out: object


def _record(module, example):
    """Run ``module`` once on ``example`` and record every call that made a tensor, outermost only.

    Recording by execution (``TorchFunctionMode``) instead of symbolic tracing means shapes are
    concrete: padding computed from ``x.shape``, Python control flow and helper functions all
    just run, and only the tensor operations they end in are seen.
    """
    import torch
    from torch.overrides import TorchFunctionMode

    ops: list[_Op] = []

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            if isinstance(out, torch.Tensor):
                name = getattr(func, "__name__", None) or str(func)
                ops.append(_Op(name, args, kwargs, out))
            return out

    with torch.no_grad(), Recorder():
        output = module(example)
    return ops, output


class _PendingConv:
    """A convolution whose batch-norm and constant shift may still be folded in."""

    def __init__(self, src, pads, weight, bias, stride, groups):
        self.src, self.pads, self.weight, self.bias, self.stride, self.groups = src, pads, weight, bias, stride, groups


class _Rebuilder:
    """Turns the recorded calls into a network of a backend's layers (batch 1) carrying the weights.

    The interpretation (what each torch call means, what folds into what) is here once; a backend
    (:class:`_KerasBackend`, :class:`_OnnxBackend`) only makes layers. Backend values carry their
    shape in NHWC order whatever the backend's own layout.
    """

    IDENTITY = frozenset({"contiguous", "clone", "detach", "dropout", "to", "float", "identity"})

    def __init__(self, backend, ops, example, output):
        import torch

        self.torch, self.B = torch, backend
        self.ops = ops
        self.values = {}
        self.uses: dict[int, int] = {}
        for op in ops:
            for a in self._tensor_args(op):
                self.uses[id(a)] = self.uses.get(id(a), 0) + 1
        self.uses[id(output)] = self.uses.get(id(output), 0) + 1
        self.example, self.output = example, output

    def _tensor_args(self, op):
        flat = list(op.args) + list(op.kwargs.values())
        return [a for a in flat if isinstance(a, self.torch.Tensor)]

    def fail(self, op: _Op, why: str):
        raise InputError(f"cannot export '{op.name}': {why}")

    def value(self, t, op=None):
        """The backend value for a torch tensor, materializing pending pads and convolutions."""
        v = self.values.get(id(t))
        if v is None:
            raise InputError(f"cannot export '{op.name if op else '?'}': it uses a constant tensor of shape {tuple(t.shape)} as an activation")
        if isinstance(v, tuple) and v[0] == "pad":
            _, src, pads = v
            v = self.B.pad(src, pads)
            self.values[id(t)] = v
        elif isinstance(v, _PendingConv):
            v = self._conv_layer(v)
            self.values[id(t)] = v
        return v

    def _conv_layer(self, c: _PendingConv):
        cin, out_c = c.src.shape[3], c.weight.shape[0]
        if c.groups != 1 and not (c.groups == cin and out_c % cin == 0):
            raise InputError(f"cannot export a grouped convolution with groups={c.groups}")
        return self.B.conv(c.src, c.pads, c.weight.detach().float().numpy(), c.bias.detach().numpy().astype(np.float32), c.stride, c.groups)

    def build(self):
        if self.example.dim() != 4 or self.example.shape[0] != 1:
            raise InputError("cannot export: the example input must be one NCHW image")
        _, c, h, w = self.example.shape
        inputs = self.B.input(int(c), int(h), int(w))
        self.values[id(self.example)] = inputs
        for op in self.ops:
            self.values[id(op.out)] = self._op(op)
        return self.B.finish(inputs, self.value(self.output))

    def _single_use(self, t) -> bool:
        return self.uses.get(id(t), 0) == 1

    def _op(self, op: _Op):
        torch, B = self.torch, self.B
        name = op.name.strip("_") if op.name.startswith("__") else op.name
        args, kw = op.args, op.kwargs
        x = args[0] if args else None
        if name in self.IDENTITY:
            return self.values.get(id(x)) if isinstance(x, torch.Tensor) else self.fail(op, "no tensor input")
        if name == "pad":
            pads = tuple(int(p) for p in (args[1] if len(args) > 1 else kw["pad"]))
            mode = kw.get("mode", args[2] if len(args) > 2 else "constant")
            fill = kw.get("value", args[3] if len(args) > 3 else None) or 0
            if len(pads) != 4 or mode != "constant" or fill != 0:
                self.fail(op, "only zero padding of H and W exports")
            return ("pad", self.value(x, op), pads)
        if name == "conv2d":
            weight = args[1].detach().double()
            bias = args[2] if len(args) > 2 else kw.get("bias")
            stride = _pair(args[3] if len(args) > 3 else kw.get("stride", 1))
            padding = args[4] if len(args) > 4 else kw.get("padding", 0)
            dilation = _pair(args[5] if len(args) > 5 else kw.get("dilation", 1))
            groups = args[6] if len(args) > 6 else kw.get("groups", 1)
            if isinstance(padding, str) or dilation != (1, 1):
                self.fail(op, "string padding and dilation are not supported; pad with F.pad")
            ph, pw = _pair(padding)
            src = self.values.get(id(x))
            pads = (0, 0, 0, 0)
            if isinstance(src, tuple) and src[0] == "pad" and self._single_use(x):
                _, src, pads = src
            else:
                src = self.value(x, op)
            pads = (pads[0] + pw, pads[1] + pw, pads[2] + ph, pads[3] + ph)
            b = bias.detach().double() if bias is not None else torch.zeros(weight.shape[0], dtype=torch.float64)
            return _PendingConv(src, pads, weight, b, stride, groups)
        if name == "batch_norm":
            pending = self.values.get(id(x))
            mean, var = args[1].detach().double(), args[2].detach().double()
            gamma = (args[3] if len(args) > 3 else kw.get("weight"))
            beta = (args[4] if len(args) > 4 else kw.get("bias"))
            eps = kw.get("eps", args[7] if len(args) > 7 else 1e-5)
            if not isinstance(pending, _PendingConv) or not self._single_use(x):
                self.fail(op, "batch-norm must directly follow the convolution it normalises")
            scale = (gamma.detach().double() if gamma is not None else 1.0) / torch.sqrt(var + eps)
            shift = beta.detach().double() if beta is not None else 0.0
            return _PendingConv(pending.src, pending.pads, pending.weight * scale[:, None, None, None],
                                (pending.bias - mean) * scale + shift, pending.stride, pending.groups)
        if name in ("add", "iadd", "radd", "sub", "rsub") and len(args) == 2:
            a, b = args
            if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
                if name != "add" and name != "iadd" and name != "radd":
                    self.fail(op, "subtraction of tensors")
                return self._binary(op, "add", a, b)
            t, k = (a, b) if isinstance(a, torch.Tensor) else (b, a)
            k = float(k) if name in ("add", "iadd", "radd") else (-float(k) if name == "sub" else None)
            if k is None:
                self.fail(op, "constant minus tensor")
            pending = self.values.get(id(t))
            if isinstance(pending, _PendingConv) and self._single_use(t):
                return _PendingConv(pending.src, pending.pads, pending.weight, pending.bias + k, pending.stride, pending.groups)
            return B.rescale(self.value(t, op), 1.0, k)
        if name in ("mul", "imul", "rmul") and len(args) == 2:
            a, b = args
            if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
                return self._binary(op, "mul", a, b)
            t, k = (a, b) if isinstance(a, torch.Tensor) else (b, a)
            return B.rescale(self.value(t, op), float(k), 0.0)
        if name in ("relu", "relu_"):
            return B.activation(self.value(x, op), "relu")
        if name == "relu6" or (name == "hardtanh" and tuple(args[1:3]) == (0.0, 6.0)):
            return B.activation(self.value(x, op), "relu6")
        if name in ("hardswish", "hardsigmoid", "sigmoid"):  # hard sigmoid: relu6(x + 3) / 6 in both
            return B.activation(self.value(x, op), name)
        if name == "mean":
            dims = args[1] if len(args) > 1 else kw.get("dim")
            keep = kw.get("keepdim", args[2] if len(args) > 2 else False)
            if dims is None or sorted(int(d) % 4 for d in (dims if isinstance(dims, (tuple, list)) else [dims])) != [2, 3]:
                self.fail(op, "mean over other axes than height and width")
            return B.global_pool(self.value(x, op), bool(keep))
        if name == "adaptive_avg_pool2d":
            size = args[1] if len(args) > 1 else kw.get("output_size")
            if size not in (1, (1, 1), [1, 1]):
                self.fail(op, "only a pool to 1x1 exports")
            return B.global_pool(self.value(x, op), True)
        if name in ("flatten", "view", "reshape"):
            v = self.value(x, op)
            if tuple(op.out.shape) == (1, int(np.prod(v.shape[1:]))) and (len(v.shape) == 2 or tuple(v.shape[1:3]) == (1, 1)):
                return v if len(v.shape) == 2 else B.flatten(v)
            self.fail(op, "flatten of a feature map larger than 1x1 (NCHW and NHWC orders differ)")
        if name == "linear":
            weight, bias = args[1], (args[2] if len(args) > 2 else kw.get("bias"))
            b = bias.detach().numpy() if bias is not None else np.zeros(weight.shape[0], np.float32)
            return B.dense(self.value(x, op), weight.detach().numpy().astype(np.float32), b.astype(np.float32))
        self.fail(op, "not an operation the int8 exporter knows")

    def _binary(self, op: _Op, kind: str, a, b):
        va, vb = self.value(a, op), self.value(b, op)
        if len(va.shape) != len(vb.shape):  # NCHW and NHWC broadcast differently across ranks
            self.fail(op, f"{kind} of tensors of different ranks")
        return self.B.binary(kind, va, vb)


class _KerasBackend:
    """Keras layers, NHWC, batch 1: what the TFLite converter turns into one op each."""

    def __init__(self, tf):
        self.tf, self.L = tf, tf.keras.layers

    def input(self, c: int, h: int, w: int):
        return self.tf.keras.Input((h, w, c), batch_size=1, name="input")

    def finish(self, inputs, output):
        return self.tf.keras.Model(inputs, output)

    def pad(self, src, pads):
        left, right, top, bottom = pads
        return self.L.ZeroPadding2D(((top, bottom), (left, right)))(src)

    def conv(self, src, pads, weight, bias, stride, groups):
        L = self.L
        h, w, cin = src.shape[1], src.shape[2], src.shape[3]
        out_c, _, kh, kw = weight.shape
        sh, sw = stride
        left, right, top, bottom = pads
        if (left, right, top, bottom) == (0, 0, 0, 0):
            padding = "valid"
        elif (top, bottom) == _same_padding(h, kh, sh) and (left, right) == _same_padding(w, kw, sw):
            padding = "same"  # TF's SAME: no PAD op
        else:
            src = self.pad(src, pads)
            padding = "valid"
        if groups == 1:
            kernel = weight.transpose(2, 3, 1, 0)  # (kh, kw, in, out)
            layer = L.Conv2D(out_c, (kh, kw), strides=(sh, sw), padding=padding)
        else:
            mult = out_c // cin
            kernel = weight.reshape(cin, mult, kh, kw).transpose(2, 3, 0, 1)
            layer = L.DepthwiseConv2D((kh, kw), strides=(sh, sw), padding=padding, depth_multiplier=mult)
        y = layer(src)
        layer.set_weights([np.ascontiguousarray(kernel), bias])
        return y

    def binary(self, kind: str, a, b):
        return (self.L.Add() if kind == "add" else self.L.Multiply())([a, b])

    def rescale(self, x, scale: float, offset: float):
        return self.L.Rescaling(scale, offset=offset)(x)

    def activation(self, x, kind: str):
        L = self.L
        if kind in ("relu", "relu6"):
            return L.ReLU(6.0 if kind == "relu6" else None)(x)
        return L.Activation({"hardswish": "hard_swish", "hardsigmoid": "hard_sigmoid"}.get(kind, kind))(x)

    def global_pool(self, x, keep: bool):
        return self.L.GlobalAveragePooling2D(keepdims=keep)(x)

    def flatten(self, x):
        return self.L.Reshape((x.shape[-1],))(x)

    def dense(self, x, weight, bias):
        layer = self.L.Dense(weight.shape[0])
        y = layer(x)
        layer.set_weights([np.ascontiguousarray(weight.T), bias])
        return y


@dataclass(frozen=True)
class _OnnxValue:
    name: str
    shape: tuple  # NHWC (or (1, features)), as the rebuilder reads shapes


class _OnnxBackend:
    """ONNX nodes (NCHW, batch 1, float32), named in order of creation so the bytes are stable."""

    _ACT: ClassVar[dict] = {"relu": "Relu", "hardswish": "HardSwish", "sigmoid": "Sigmoid"}

    def __init__(self, opset: int):
        import onnx
        from onnx import helper, numpy_helper

        self.onnx, self.helper, self.numpy_helper, self.opset = onnx, helper, numpy_helper, opset
        self.nodes, self.initializers, self.count = [], [], 0

    def _fresh(self, kind: str) -> str:
        self.count += 1
        return f"{kind}_{self.count}"

    def _const(self, array: np.ndarray, kind: str) -> str:
        name = self._fresh(kind)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def _node(self, op_type: str, inputs: list, shape: tuple, **attrs) -> _OnnxValue:
        out = self._fresh(op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return _OnnxValue(out, tuple(int(d) for d in shape))

    def input(self, c: int, h: int, w: int):
        self.input_info = self.helper.make_tensor_value_info("input", self.onnx.TensorProto.FLOAT, [1, c, h, w])
        return _OnnxValue("input", (1, h, w, c))

    def finish(self, inputs, output: _OnnxValue):
        nchw = output.shape if len(output.shape) != 4 else (output.shape[0], output.shape[3], output.shape[1], output.shape[2])
        if self.nodes and self.nodes[-1].output[0] == output.name:
            self.nodes[-1].output[0] = "logits"
        else:
            self.nodes.append(self.helper.make_node("Identity", [output.name], ["logits"], name="logits"))
        out_info = self.helper.make_tensor_value_info("logits", self.onnx.TensorProto.FLOAT, list(nchw))
        graph = self.helper.make_graph(self.nodes, "moofa", [self.input_info], [out_info], initializer=self.initializers)
        return self.helper.make_model(graph, producer_name="moofa", opset_imports=[self.helper.make_opsetid("", self.opset)])

    def pad(self, src, pads):
        left, right, top, bottom = pads
        n, h, w, c = src.shape
        amounts = self._const(np.array([0, 0, top, left, 0, 0, bottom, right], np.int64), "pads")
        return self._node("Pad", [src.name, amounts], (n, h + top + bottom, w + left + right, c))

    def conv(self, src, pads, weight, bias, stride, groups):
        left, right, top, bottom = pads
        n, h, w, _ = src.shape
        out_c, _, kh, kw = weight.shape
        sh, sw = stride
        shape = (n, (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1, out_c)
        return self._node("Conv", [src.name, self._const(weight, "weight"), self._const(bias, "bias")], shape,
                          kernel_shape=[kh, kw], strides=[sh, sw], pads=[top, left, bottom, right], group=int(groups))

    def binary(self, kind: str, a, b):
        shape = tuple(max(x, y) for x, y in zip(a.shape, b.shape))
        return self._node("Add" if kind == "add" else "Mul", [a.name, b.name], shape)

    def rescale(self, x, scale: float, offset: float):
        if scale != 1.0:
            x = self._node("Mul", [x.name, self._const(np.array(scale, np.float32), "scale")], x.shape)
        if offset != 0.0:
            x = self._node("Add", [x.name, self._const(np.array(offset, np.float32), "offset")], x.shape)
        return x

    def activation(self, x, kind: str):
        if kind == "relu6":
            return self._node("Clip", [x.name, self._const(np.array(0.0, np.float32), "min"), self._const(np.array(6.0, np.float32), "max")], x.shape)
        if kind == "hardsigmoid":
            return self._node("HardSigmoid", [x.name], x.shape, alpha=1.0 / 6.0, beta=0.5)
        return self._node(self._ACT[kind], [x.name], x.shape)

    def global_pool(self, x, keep: bool):
        y = self._node("GlobalAveragePool", [x.name], (x.shape[0], 1, 1, x.shape[3]))
        return y if keep else self.flatten(y)

    def flatten(self, x):
        return self._node("Flatten", [x.name], (x.shape[0], x.shape[-1]), axis=1)

    def dense(self, x, weight, bias):
        return self._node("Gemm", [x.name, self._const(weight, "weight"), self._const(bias, "bias")], (x.shape[0], weight.shape[0]), transB=1)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def keras_from_torch(module, input_shape_chw: tuple[int, int, int]):
    """The Keras (NHWC, batch 1) rebuild of ``module`` with its weights, batch-norm folded."""
    from toolchain.runtime.tf import tf_quiet

    tf = tf_quiet()
    # Layer names come from process-wide counters and end up in the .tflite's tensor names: reset
    # them so that the same network always gives the same bytes.
    tf.keras.backend.clear_session()
    return _rebuild(module, input_shape_chw, _KerasBackend(tf))


def _rebuild(module, input_shape_chw, backend):
    """Record ``module`` on a zero image of ``input_shape_chw`` and rebuild it with ``backend``."""
    import torch

    example = torch.zeros((1, *input_shape_chw))
    ops, output = _record(module.eval(), example)
    if not isinstance(output, torch.Tensor):
        raise InputError("cannot export: the network must return one tensor")
    return _Rebuilder(backend, ops, example, output).build()


def _max_diff(expected: np.ndarray, got: np.ndarray) -> tuple[float, bool]:
    """Largest |got - expected|, and whether it is within 1e-3 of the outputs' scale (at least 1)."""
    diff = float(np.max(np.abs(got - expected.reshape(got.shape))))
    return diff, diff < 1e-3 * max(1.0, float(np.max(np.abs(expected))))


def _frozen(tf, keras_model, input_shape_chw):
    """``keras_model`` as one graph function of a (1, H, W, C) ``input`` with its weights frozen."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    c, h, w = (int(d) for d in input_shape_chw)
    fn = tf.function(lambda x: keras_model(x, training=False), input_signature=[tf.TensorSpec((1, h, w, c), tf.float32, name="input")])
    return convert_variables_to_constants_v2(fn.get_concrete_function())


def checked_graph(module, calibration_nchw: np.ndarray, check_images: int = 16):
    """(tf, graph function, max |Keras - PyTorch|): ``module`` rebuilt in Keras and frozen into the
    one graph function that gets converted, checked against PyTorch on the first
    ``check_images`` calibration images (an :class:`InputError` when they differ)."""
    import torch

    from toolchain.runtime.tf import tf_quiet

    tf = tf_quiet()
    if calibration_nchw.ndim != 4 or len(calibration_nchw) == 0:
        raise InputError(f"calibration images must be (N, C, H, W), got shape {calibration_nchw.shape}")
    keras_model = keras_from_torch(module, calibration_nchw.shape[1:])
    # One frozen graph function (weights as constants) is what gets checked and converted: the
    # converter's Keras entry point saves and reloads a SavedModel of the whole Keras object graph
    # first, several times the conversion's own time (docs/BENCHMARKS.md), for the same bytes
    # apart from the input and output tensor names.
    graph_fn = _frozen(tf, keras_model, calibration_nchw.shape[1:])
    sample = calibration_nchw[:check_images]
    with torch.no_grad():
        expected = module.eval()(torch.from_numpy(sample)).numpy()
    got = np.concatenate([graph_fn(tf.constant(s[None].transpose(0, 2, 3, 1)))[0].numpy() for s in sample])
    diff, close = _max_diff(expected, got)
    if not close:
        raise InputError(f"cannot export: the Keras rebuild differs from PyTorch by {diff:.3g} (a layer the exporter misreads)")
    return tf, graph_fn, diff


def int8_converter(tf, graph_fn, calibration_nchw: np.ndarray):
    """The full-int8 converter of :func:`export_int8` for ``graph_fn``, calibrated on the images."""
    nhwc = calibration_nchw.transpose(0, 2, 3, 1)

    def representative_dataset():
        for image in nhwc:
            yield [image[None]]

    converter = tf.lite.TFLiteConverter.from_concrete_functions([graph_fn])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter


def export_int8(
    module,
    calibration_nchw: np.ndarray,
    out_path: Path,
    check_images: int = 16,
) -> ExportResult:
    """Rebuild ``module`` in Keras, check it against PyTorch, and write a full-int8 .tflite.

    ``calibration_nchw``: float32 images (N, C, H, W), already normalised as the network expects;
    a few hundred training images calibrate the activation ranges. Input and output are int8,
    weights per-channel int8, biases int32.
    """
    from toolchain.runtime.tf import quietly
    from toolchain.tflite.reader import parse_model

    calibration_nchw = np.asarray(calibration_nchw, dtype=np.float32)
    tf, graph_fn, diff = checked_graph(module, calibration_nchw, check_images)
    data = quietly(int8_converter(tf, graph_fn, calibration_nchw).convert)
    graph = parse_model(data, str(out_path))
    out_path = write_atomically(out_path, data)
    return ExportResult(out_path, len(data), diff, graph.op_kinds)


@dataclass
class OnnxExport:
    path: Path
    model_bytes: int
    opset: int
    max_abs_diff: float | None  # onnxruntime vs PyTorch on the check images; None without onnxruntime


def export_onnx(module, check_nchw: np.ndarray, out_path: Path, opset: int = 18) -> OnnxExport:
    """Write ``module`` as an ONNX file (float32, NCHW input ``input`` of batch 1, output ``logits``).

    The same recording and interpretation as the int8 export, emitted as ONNX nodes
    (:class:`_OnnxBackend`): batch-norm folded into the convolutions, SAME padding as the
    convolutions' explicit pads, so the ONNX graph has the TFLite graph's shape. Written by us
    rather than ``torch.onnx.export``: much faster than the dynamo exporter (docs/BENCHMARKS.md),
    and the TorchScript exporter (``dynamo=False``) traces ``x.shape`` as tensors
    and exports ``-(-size // stride)`` (the SAME-padding output size) as a truncating ``Div``, so
    a stride-2 convolution on an odd size loses a row and column (wrong outputs). The same operations as :func:`export_int8` are supported.
    ``check_nchw`` (N, C, H, W): a few normalised images; onnxruntime's outputs on them must
    match PyTorch's (checked when onnxruntime is installed). Same weights, same bytes."""
    import torch

    check_nchw = np.asarray(check_nchw, dtype=np.float32)
    if check_nchw.ndim != 4 or len(check_nchw) == 0:
        raise InputError(f"check images must be (N, C, H, W), got shape {check_nchw.shape}")
    module = module.eval()
    model = _rebuild(module, check_nchw.shape[1:], _OnnxBackend(opset))
    data = model.SerializeToString()
    diff = None
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    if ort is not None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        with torch.no_grad():
            expected = module(torch.from_numpy(check_nchw)).numpy()
        got = np.concatenate([session.run(None, {"input": s[None]})[0] for s in check_nchw])
        diff, close = _max_diff(expected, got)
        if not close:
            raise InputError(f"cannot export ONNX: onnxruntime differs from PyTorch by {diff:.3g}")
    out_path = write_atomically(out_path, data)
    return OnnxExport(out_path, len(data), opset, diff)
