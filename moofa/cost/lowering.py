"""
:func:`subnet_graph` writes the graph of exactly the ops and tensors the exported int8 TFLite
model has (batch 1, NHWC, int8 activations with per-tensor quantization, int8 weights with
per-channel quantization, int32 biases), the way ``TFLiteConverter`` lowers a Keras MobileNetV3
block:

- conv + batch norm + ReLU fold into one ``CONV_2D`` / ``DEPTHWISE_CONV_2D`` (ReLU fused);
  h_swish is its own ``HARD_SWISH`` op after a conv with no fused activation;
- every conv has an int32 bias, also where the PyTorch conv has none (the converter adds zeros);
- squeeze-excite is ``MEAN`` (keepdims, int32 axis constant [1, 2]) -> ``CONV_2D`` 1x1 (ReLU)
  -> ``CONV_2D`` 1x1 -> hard sigmoid -> ``MUL`` with the feature map. The hard sigmoid
  ``relu6(x + 3) / 6`` is exported as: the +3 folded into the second conv's bias with ReLU6
  fused, then ``MUL`` by an int8 scalar constant 1/6 (what the exporter makes of the
  supernet's ``Conv(shift=3, relu6)`` + ``Scale(1/6)``: one extra MUL per SE, no float op).
- the residual is ``ADD``; the head is ``MEAN`` -> ``CONV_2D`` (feature mix) -> ``HARD_SWISH``
  -> ``FULLY_CONNECTED`` on the [1, 1, 1, C] map (per-channel weights) producing int8 logits.
  No RESHAPE, softmax, quantize or dequantize; 1x1 convolutions have VALID padding, larger
  ones SAME; the MEAN axes and the 1/6 are each one constant tensor the whole model shares.

This is what :func:`toolchain.convert.export.export_int8` makes of :meth:`moofa.nn.supernet.Supernet.extract`'s
module: the same op sequence, tensor count, constant bytes, quantization and arena
(``tests/test_moofa_export_check.py``; by hand on six more subnets of both layouts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from moofa.arch.blocks import (
    FIRST_CONV_KERNEL,
    BlockSpec,
    SubnetSpec,
    same_output_size,
    subnet_spec,
)
from toolchain.ir.graph import Graph, Tensor

if TYPE_CHECKING:  # pragma: no cover
    from moofa.arch.layouts import Layout
    from moofa.arch.space import SubnetConfig

# Constants stored once per model however many ops read them.
SHARED_PREFIX = "shared/"
SHARED_MEAN_AXES = SHARED_PREFIX + "mean_axes"
SHARED_ONE_SIXTH = SHARED_PREFIX + "one_sixth"


# --- graph building ----------------------------------------------------------------------------
class GraphWriter:
    """Appends int8 ops to a graph, one helper per exported op pattern."""

    def __init__(self, name: str):
        self.graph = Graph([], [], [], [], name)
        self.shared: dict[str, int] = {}  # name -> tensor of constants the converter dedups

    def shared_constant(self, name: str, shape, dtype: str, quant_channels: int = 0) -> int:
        """A constant every op that needs it shares: the converter stores equal constants once
        (the MEAN axes [1, 2], the hard sigmoid's 1/6)."""
        if name not in self.shared:
            self.shared[name] = self.constant(name, shape, dtype, quant_channels)
        return self.shared[name]

    def activation(self, name: str, shape) -> int:
        return self.graph.add_tensor(Tensor(name, tuple(shape), "int8", quant_channels=1))

    def constant(self, name: str, shape, dtype: str, quant_channels: int = 0) -> int:
        return self.graph.add_tensor(Tensor(name, tuple(shape), dtype, is_constant=True, quant_channels=quant_channels))

    def shape(self, t: int) -> tuple[int, ...]:
        return self.graph.tensors[t].shape

    def conv(self, x: int, name: str, out_channels: int, kernel: int, stride: int, act: str | None, depthwise: bool = False, fused: str | None = None, zero_bias: bool = False) -> int:
        """Conv (+ folded BN) with ``act`` ("relu" fused, "h_swish" as a separate op, None);
        ``zero_bias``: the PyTorch conv has neither bias nor BN, so its int32 bias is zeros."""
        _, h, w, c = self.shape(x)
        ho, wo = same_output_size(h, stride), same_output_size(w, stride)
        if depthwise:
            weights = self.constant(f"{name}/depthwise_weights", (1, kernel, kernel, c), "int8", c)
            kind, out_channels = "DEPTHWISE_CONV_2D", c
        else:
            weights = self.constant(f"{name}/weights", (out_channels, kernel, kernel, c), "int8", out_channels)
            kind = "CONV_2D"
        bias = self.constant(f"{name}/bias", (out_channels,), "int32", out_channels)
        y = self.activation(name, (1, ho, wo, out_channels))
        attrs = {
            "stride": (stride, stride),
            "padding": "SAME" if kernel > 1 else "VALID",
            "dilation": (1, 1),
            "fused_activation": fused or ("RELU" if act == "relu" else "NONE"),
        }
        if depthwise:
            attrs["depth_multiplier"] = 1
        if zero_bias:
            attrs["zero_bias"] = True  # named differently in the .tflite (see tflite_name_lengths)
        self.graph.add_op(kind, (x, weights, bias), (y,), **attrs)
        if act == "h_swish":
            z = self.activation(f"{name}/hard_swish", (1, ho, wo, out_channels))
            self.graph.add_op("HARD_SWISH", (y,), (z,))
            return z
        return y

    def mean(self, x: int, name: str) -> int:
        _, _, _, c = self.shape(x)
        axis = self.shared_constant(SHARED_MEAN_AXES, (2,), "int32")
        y = self.activation(name, (1, 1, 1, c))
        self.graph.add_op("MEAN", (x, axis), (y,), keep_dims=True)
        return y

    def block(self, x: int, b: BlockSpec) -> int:
        n = b.name
        h = self.conv(x, f"{n}/expand", b.mid_channels, 1, 1, b.act) if b.has_expand else x
        h = self.conv(h, f"{n}/depthwise", b.mid_channels, b.kernel, b.stride, b.act, depthwise=True)
        if b.se_channels:
            s = self.mean(h, f"{n}/se/squeeze")
            s = self.conv(s, f"{n}/se/reduce", b.se_channels, 1, 1, "relu")
            s = self.conv(s, f"{n}/se/expand", b.mid_channels, 1, 1, None, fused="RELU6")
            sixth = self.shared_constant(SHARED_ONE_SIXTH, (), "int8", 1)
            gate = self.activation(f"{n}/se/gate", self.shape(s))
            self.graph.add_op("MUL", (s, sixth), (gate,))
            scaled = self.activation(f"{n}/se/scale", self.shape(h))
            self.graph.add_op("MUL", (h, gate), (scaled,))
            h = scaled
        y = self.conv(h, f"{n}/project", b.out_channels, 1, 1, None)
        if b.residual:
            out = self.activation(f"{n}/add", self.shape(y))
            self.graph.add_op("ADD", (x, y), (out,))
            y = out
        return y

    def stem(self, x: int, spec: SubnetSpec) -> int:
        return self.conv(x, "first_conv", spec.first_conv_width, FIRST_CONV_KERNEL, spec.first_conv_stride, spec.first_conv_act)

    def head(self, x: int, spec: SubnetSpec) -> int:
        h = self.conv(x, "final_expand", spec.final_expand_width, 1, 1, "h_swish")
        h = self.mean(h, "pool")
        h = self.conv(h, "feature_mix", spec.feature_mix_width, 1, 1, "h_swish", zero_bias=True)
        # The classifier reads the 1x1 map directly (no RESHAPE: FULLY_CONNECTED flattens).
        weights = self.constant("classifier/weights", (spec.num_classes, spec.feature_mix_width), "int8", spec.num_classes)
        bias = self.constant("classifier/bias", (spec.num_classes,), "int32", spec.num_classes)
        logits = self.activation("logits", (1, spec.num_classes))
        self.graph.add_op("FULLY_CONNECTED", (h, weights, bias), (logits,), fused_activation="NONE")
        return logits


def spec_graph(spec: SubnetSpec, name: str = "subnet") -> Graph:
    """The int8 graph of a subnet spec (see the module docstring for the op patterns)."""
    w = GraphWriter(name)
    x = w.activation("input", (1, *spec.in_size, spec.in_channels))
    w.graph.inputs.append(x)
    h = w.stem(x, spec)
    for b in spec.blocks:
        h = w.block(h, b)
    w.graph.outputs.append(w.head(h, spec))
    return w.graph


def subnet_graph(layout: "Layout", config: "SubnetConfig") -> Graph:
    return spec_graph(subnet_spec(layout, config), name=f"{layout.name}-r{config.resolution}")


def block_graph(b: BlockSpec) -> Graph:
    """One block on its own: its input a graph input, its output a graph output."""
    w = GraphWriter(b.name)
    x = w.activation("input", (1, *b.in_size, b.in_channels))
    w.graph.inputs.append(x)
    w.graph.outputs.append(w.block(x, b))
    return w.graph


def piece_graphs(spec: SubnetSpec) -> tuple[Graph, Graph]:
    """The stem and the head as standalone graphs (used to price them)."""
    w = GraphWriter("stem")
    x = w.activation("input", (1, *spec.in_size, spec.in_channels))
    w.graph.inputs.append(x)
    w.graph.outputs.append(w.stem(x, spec))
    stem = w.graph
    w = GraphWriter("head")
    x = w.activation("features", (1, *spec.last_size, spec.last_channels))
    w.graph.inputs.append(x)
    w.graph.outputs.append(w.head(x, spec))
    return stem, w.graph
