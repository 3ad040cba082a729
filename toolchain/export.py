"""Export a static PyTorch network to a full-integer int8 TFLite model.

The path is MCUNet's: rebuild the network in Keras with the PyTorch weights, then quantize with
``tf.lite.TFLiteConverter`` and a representative dataset. We chose it over ONNX + onnx2tf
because it gives the leanest graph: the network is rebuilt directly in NHWC, so there is no
TRANSPOSE; batch-norm is folded into the convolution weights here; a ``F.pad`` whose padding
equals TensorFlow's SAME padding becomes ``padding="same"`` on the convolution instead of a PAD
op; and activations that follow a convolution fuse into it during conversion. onnx2tf on the
same network inserts PAD ops wherever PyTorch's padding is not TF's SAME (reference-facts.md)
and needs its own extra packages at conversion time.

The network is read with ``torch.fx``: any module built from these parts exports, whoever wrote
it: ``nn.Conv2d`` (plain or depthwise), ``nn.BatchNorm2d`` right after a convolution,
``nn.ReLU``/``ReLU6``/``Hardswish``/``Hardsigmoid``/``Sigmoid`` (as modules or ``F`` calls),
``F.pad`` with zeros, ``nn.AdaptiveAvgPool2d(1)``, ``torch.mean`` over H and W, ``flatten``,
``nn.Linear``, ``nn.Identity``/``Dropout`` (dropped) and ``+``/``*`` between tensors.
Anything else raises :class:`InputError` naming the node.

This module consumes a torch module but imports nothing from ``moofa``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolchain.errors import InputError


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


class _Rebuilder:
    """Walks the fx graph once and builds the Keras tensors node by node."""

    def __init__(self, gm, tf, input_shape_chw):
        import torch

        self.torch = torch
        self.gm = gm
        self.tf = tf
        self.L = tf.keras.layers
        self.modules = dict(gm.named_modules())
        self.values = {}  # fx node -> keras tensor (NHWC) or ("pad", tensor, pads)
        self.shapes = {}  # fx node -> NHWC shape without batch
        self.input_shape_chw = input_shape_chw
        self.bn_after_conv = self._find_conv_bn_pairs()

    # -- helpers -------------------------------------------------------------------------------
    def _find_conv_bn_pairs(self) -> dict:
        pairs = {}
        for node in self.gm.graph.nodes:
            if node.op == "call_module" and isinstance(self.modules[node.target], self.torch.nn.BatchNorm2d):
                src = node.args[0]
                if (
                    src.op == "call_module"
                    and isinstance(self.modules[src.target], self.torch.nn.Conv2d)
                    and len(src.users) == 1
                ):
                    pairs[src] = node
        return pairs

    def fail(self, node, why: str):
        raise InputError(f"cannot export node '{node.name}' ({node.op} {node.target}): {why}")

    def arg(self, a):
        v = self.values[a]
        if isinstance(v, tuple) and v[0] == "pad":
            # A pad no convolution absorbed: make it a real ZeroPadding2D.
            _, t, (left, right, top, bottom) = v
            return self.L.ZeroPadding2D(((top, bottom), (left, right)))(t)
        return v

    # -- node kinds ---------------------------------------------------------------------------
    def conv(self, node, conv, bn):
        torch = self.torch
        w = conv.weight.detach().double()
        b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
        if bn is not None:
            scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
            w = w * scale[:, None, None, None]
            b = (b - bn.running_mean.double()) * scale + bn.bias.detach().double()
        src = self.values[node.args[0]]
        pads = None
        if isinstance(src, tuple) and src[0] == "pad":
            _, src, pads = src
        h, wdt, cin = src.shape[1], src.shape[2], src.shape[3]
        kh, kw = conv.kernel_size
        sh, sw = conv.stride
        ph, pw = conv.padding if not isinstance(conv.padding, str) else (None, None)
        if conv.padding_mode != "zeros" or conv.dilation != (1, 1):
            self.fail(node, "only zero padding and dilation 1 export")
        total = (pads or (0, 0, 0, 0))
        if isinstance(conv.padding, str):
            self.fail(node, f"padding='{conv.padding}' is not supported; use F.pad + padding=0")
        left, right, top, bottom = total[0] + pw, total[1] + pw, total[2] + ph, total[3] + ph
        if (left, right, top, bottom) == (0, 0, 0, 0):
            padding = "valid"
        elif (top, bottom) == _same_padding(h, kh, sh) and (left, right) == _same_padding(wdt, kw, sw):
            padding = "same"
        else:
            src = self.L.ZeroPadding2D(((top, bottom), (left, right)))(src)
            padding = "valid"
        groups = conv.groups
        out_c = w.shape[0]
        if groups == 1:
            kernel = w.permute(2, 3, 1, 0).numpy().astype(np.float32)  # (kh, kw, in, out)
            layer = self.L.Conv2D(out_c, (kh, kw), strides=(sh, sw), padding=padding, use_bias=True)
        elif groups == cin and out_c % cin == 0:
            mult = out_c // cin
            # torch (cin*mult, 1, kh, kw) -> keras (kh, kw, cin, mult)
            kernel = w.reshape(cin, mult, kh, kw).permute(2, 3, 0, 1).numpy().astype(np.float32)
            layer = self.L.DepthwiseConv2D((kh, kw), strides=(sh, sw), padding=padding, depth_multiplier=mult, use_bias=True)
        else:
            self.fail(node, f"grouped convolution with groups={groups} is not supported")
        y = layer(src)
        layer.set_weights([kernel, b.numpy().astype(np.float32)])
        return y

    def activation(self, node, kind: str, x):
        L = self.L
        if kind == "relu":
            return L.ReLU()(x)
        if kind == "relu6":
            return L.ReLU(6.0)(x)
        if kind == "hardswish":
            return L.Activation("hard_swish")(x)
        if kind == "hardsigmoid":
            # relu6(x + 3) / 6, PyTorch's definition (Keras 3's hard_sigmoid is the same).
            return L.Activation("hard_sigmoid")(x)
        if kind == "sigmoid":
            return L.Activation("sigmoid")(x)
        self.fail(node, f"activation {kind}")

    def build(self):
        torch, tf, L = self.torch, self.tf, self.L
        F = torch.nn.functional
        act_modules = {
            torch.nn.ReLU: "relu", torch.nn.ReLU6: "relu6", torch.nn.Hardswish: "hardswish",
            torch.nn.Hardsigmoid: "hardsigmoid", torch.nn.Sigmoid: "sigmoid",
        }
        act_functions = {
            F.relu: "relu", F.relu6: "relu6", F.hardswish: "hardswish", F.hardsigmoid: "hardsigmoid",
            torch.sigmoid: "sigmoid", torch.relu: "relu",
        }
        skip = set(self.bn_after_conv.values())
        inputs = None
        output = None
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                if inputs is not None:
                    self.fail(node, "only single-input networks export")
                c, h, w = self.input_shape_chw
                inputs = tf.keras.Input((h, w, c), batch_size=1, name="input")
                self.values[node] = inputs
            elif node.op == "output":
                out = node.args[0]
                if isinstance(out, (tuple, list)):
                    if len(out) != 1:
                        self.fail(node, "only single-output networks export")
                    out = out[0]
                output = self.arg(out)
            elif node.op == "call_module":
                m = self.modules[node.target]
                if node in skip:
                    self.values[node] = self.values[node.args[0]]
                elif isinstance(m, torch.nn.Conv2d):
                    self.values[node] = self.conv(node, m, self.modules[self.bn_after_conv[node].target] if node in self.bn_after_conv else None)
                elif type(m) in act_modules:
                    self.values[node] = self.activation(node, act_modules[type(m)], self.arg(node.args[0]))
                elif isinstance(m, torch.nn.AdaptiveAvgPool2d):
                    size = m.output_size if isinstance(m.output_size, int) else tuple(m.output_size)
                    if size not in (1, (1, 1)):
                        self.fail(node, "only AdaptiveAvgPool2d(1) exports")
                    self.values[node] = L.GlobalAveragePooling2D(keepdims=True)(self.arg(node.args[0]))
                elif isinstance(m, torch.nn.Linear):
                    x = self.arg(node.args[0])
                    if len(x.shape) != 2:
                        self.fail(node, f"Linear on a {len(x.shape)}-D tensor; flatten first")
                    layer = L.Dense(m.out_features, use_bias=True)
                    y = layer(x)
                    bias = m.bias.detach().numpy() if m.bias is not None else np.zeros(m.out_features, np.float32)
                    layer.set_weights([m.weight.detach().numpy().T.astype(np.float32), bias.astype(np.float32)])
                    self.values[node] = y
                elif isinstance(m, (torch.nn.Identity, torch.nn.Dropout)):
                    self.values[node] = self.values[node.args[0]]
                elif isinstance(m, torch.nn.Flatten):
                    self.values[node] = self._flatten(node, self.arg(node.args[0]))
                elif isinstance(m, torch.nn.BatchNorm2d):
                    self.fail(node, "batch-norm not directly after a convolution")
                else:
                    self.fail(node, f"module type {type(m).__name__}")
            elif node.op in ("call_function", "call_method"):
                self.values[node] = self._function(node, act_functions)
            elif node.op == "get_attr":
                self.fail(node, "parameters used outside a layer")
        if inputs is None or output is None:
            raise InputError("cannot export: the network has no input or output")
        return tf.keras.Model(inputs, output)

    def _flatten(self, node, x):
        if len(x.shape) == 2:
            return x
        if len(x.shape) == 4 and x.shape[1] == 1 and x.shape[2] == 1:
            return self.L.Reshape((x.shape[3],))(x)
        self.fail(node, "flatten of a feature map larger than 1x1 (NCHW and NHWC orders differ)")

    def _function(self, node, act_functions):
        torch = self.torch
        F = torch.nn.functional
        t = node.target
        name = t if isinstance(t, str) else getattr(t, "__name__", str(t))
        if t in act_functions:
            return self.activation(node, act_functions[t], self.arg(node.args[0]))
        if name in ("relu", "relu_", "sigmoid", "hardswish", "hardsigmoid") and node.op == "call_method":
            return self.activation(node, name.rstrip("_"), self.arg(node.args[0]))
        if t in (operator.add, torch.add) or name in ("add", "add_"):
            return self.L.Add()([self.arg(node.args[0]), self.arg(node.args[1])])
        if t in (operator.mul, torch.mul) or name in ("mul", "mul_"):
            return self.L.Multiply()([self.arg(node.args[0]), self.arg(node.args[1])])
        if t is F.pad:
            pads = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
            mode = node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant")
            value = node.kwargs.get("value", node.args[3] if len(node.args) > 3 else 0)
            if mode != "constant" or (value or 0) != 0 or len(pads) != 4:
                self.fail(node, "only zero F.pad over H and W exports")
            return ("pad", self.arg(node.args[0]), tuple(int(p) for p in pads))
        if t in (torch.flatten,) or name in ("flatten", "view", "reshape"):
            return self._flatten(node, self.arg(node.args[0]))
        if t in (torch.mean,) or name == "mean":
            dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            keep = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
            if sorted(int(d) % 4 for d in dims) != [2, 3]:
                self.fail(node, "mean over other axes than H and W")
            return self.L.GlobalAveragePooling2D(keepdims=bool(keep))(self.arg(node.args[0]))
        if t is F.adaptive_avg_pool2d:
            return self.L.GlobalAveragePooling2D(keepdims=True)(self.arg(node.args[0]))
        self.fail(node, f"function {name}")


def keras_from_torch(module, input_shape_chw: tuple[int, int, int]):
    """The Keras (NHWC, batch 1) rebuild of ``module`` with its weights, batch-norm folded."""
    import torch
    import torch.fx

    from toolchain._tf import tf_quiet

    tf = tf_quiet()
    module = module.eval()
    try:
        gm = torch.fx.symbolic_trace(module)
    except Exception as e:  # fx raises many kinds on data-dependent control flow
        raise InputError(f"cannot export: torch.fx could not trace the network ({type(e).__name__}: {e})") from None
    return _Rebuilder(gm, tf, input_shape_chw).build()


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
    import torch

    from toolchain._tf import quietly, tf_quiet
    from toolchain.tflite_reader import parse_model

    tf = tf_quiet()
    calibration_nchw = np.asarray(calibration_nchw, dtype=np.float32)
    if calibration_nchw.ndim != 4 or len(calibration_nchw) == 0:
        raise InputError(f"calibration images must be (N, C, H, W), got shape {calibration_nchw.shape}")
    keras_model = keras_from_torch(module, calibration_nchw.shape[1:])
    sample = calibration_nchw[:check_images]
    with torch.no_grad():
        expected = module.eval()(torch.from_numpy(sample)).numpy()
    got = np.concatenate([keras_model(s[None].transpose(0, 2, 3, 1), training=False).numpy() for s in sample])
    diff = float(np.max(np.abs(expected.reshape(got.shape) - got)))
    if not diff < 1e-3 * max(1.0, float(np.max(np.abs(expected)))):
        raise InputError(f"cannot export: the Keras rebuild differs from PyTorch by {diff:.3g} (a layer the exporter misreads)")

    nhwc = calibration_nchw.transpose(0, 2, 3, 1)

    def representative_dataset():
        for image in nhwc:
            yield [image[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    data = quietly(converter.convert)
    graph = parse_model(data, str(out_path))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out_path)
    return ExportResult(out_path, len(data), diff, graph.op_kinds)
