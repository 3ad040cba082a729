"""A subnet config, priced without building it: graph IR, arena, flash, MACs, parameters.

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

This is what :func:`toolchain.export.export_int8` makes of :meth:`moofa.supernet.Supernet.extract`'s
module: the same op sequence, tensor count, constant bytes, quantization and arena
(``tests/test_moofa_export_check.py``; by hand on six more subnets of both layouts).

:class:`Pricer` is the search's inner loop, and gives exactly what :func:`price` (graph +
:func:`toolchain.memory.estimate_arena`) gives, without building the graph. A subnet's graph
is a chain of pieces (stem, blocks, head) whose tensors never outlive the piece that reads
them. So the liveness lower bound is the largest piece's -- but TFLM's greedy plan does not
always reach it (on random subnets of both layouts it exceeds it about one time in ten, by up
to ~11%), so the head is TFLM's greedy plan replayed piece by piece with memoized boundary
offsets (:mod:`moofa.chainplan`). The persistent tail follows TFLM's allocation order region by
region, each piece's part of a region a table over the pointer's residue modulo 16. Pieces are
built once per (resolution, stage, first-or-not, kernel, expand); a config, new or not, then
costs about thirty dictionary look-ups (tens of thousands of subnets per second,
``bench/bench_moofa_pricing.py``). The tests hold it equal to :func:`price` on hundreds of random
subnets of both layouts, at several resolutions, for every kernel library and pointer width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, NamedTuple

from moofa.chainplan import BoundaryMemo, PieceModel, chain_head_bytes, chain_steps
from moofa.blocks import FIRST_CONV_KERNEL, BlockSpec, SubnetSpec, make_block, same_output_size, subnet_spec
from toolchain.graph import Graph, Tensor
from toolchain.planner import align_up

if TYPE_CHECKING:  # pragma: no cover
    from moofa.layouts import Layout
    from moofa.space import SubnetConfig

# Flash: the .tflite file's bytes. Every tensor costs its constant data (exact), its quantization
# (a float32 scale + an int64 zero point per channel: 12 bytes), its name (a flatbuffer string:
# 4-byte length + bytes + NUL, padded to 4) and a fixed share of flatbuffer tables (the Tensor
# and Buffer tables, shape vector, its place in the op's input/output vectors). TENSOR_BYTES and
# MODEL_BYTES are the least-squares fit of file size - data - quantization - names on 12 subnets
# exported by toolchain.export.export_int8 with trained (or trained-like: non-zero BN statistics)
# weights (TensorFlow 2.21; OFA and MOOFA, 20x20 to 96x96, 10 to 1000 classes, 193 to 363
# tensors, 0.2 to 7.4 MB): every estimate within 69 bytes (0.011%) of the real file
# (bench/bench_flash_estimate.py). Constant data is counted per tensor: the converter stores
# equal constants once, which only happens with untrained weights (below).
QUANT_PARAM_BYTES_PER_CHANNEL = 12
TENSOR_BYTES = 111
MODEL_BYTES = 518

# The names TFLiteConverter gives the tensors (TensorFlow 2.21, Keras 3) are 84-86 bytes on
# average, 4-7% of a subnet's file: each names the Keras layers it was fused from, as
# "functional_1/<layer scope>/<op>" joined with ";", where a layer's scope is its class name and
# counter ("conv2d_44_1"; the first two of a class are "conv2d_1" and "conv2d_1_2"); the input is
# "input" and the output "Identity" (toolchain.export converts a frozen graph function). A conv's bias
# is "[<relu scope>/Relu;]<conv scope>/BiasAdd;<conv scope>/convolution;<conv scope>/Squeeze"
# and its output the same + "1". Each name is predicted from the op that makes or reads the
# tensor, with two-digit counters: the few layers numbered below 10 make the predictions 284
# bytes long in total on every subnet measured, and MODEL_BYTES absorbs that.
# A conv whose bias is all zeros (the feature mix, which has none; and every BN-folded conv of an
# untrained supernet, whose BN statistics are still 0 and 1) loses its BiasAdd in conversion:
# its bias becomes "arith.constantN" and its output "<scope>/convolution1", ~55 bytes shorter,
# and equal zero biases share one buffer. An untrained supernet's export is therefore smaller
# than the estimate (5.9% on a 193-tensor subnet): the estimate is an upper bound there. (The
# constants before this model -- 130 B per tensor, 11.5 B per channel -- came within 0.5% of
# such exports but under-estimated trained ones by 4-5%: 700,162 B for the 730,680 B subnet
# moofa-deploy picked for nucleo-f746zg, which this model puts at 730,638 B.)
_LAYER_PREFIX = len("functional_1/")
_SCOPE = {  # class name + "_NN_1"
    "conv": len("conv2d_NN_1"),
    "depthwise": len("depthwise_conv2d_NN_1"),
    "relu": len("re_lu_NN_1"),
    "hard_swish": len("activation_NN_1"),
    "add": len("add_NN_1"),
    "multiply": len("multiply_NN_1"),
    "rescaling": len("rescaling_NN_1"),
    "mean": len("global_average_pooling2d_NN_1"),
}


def _layer_op(scope: str, op: str) -> int:
    """len("functional_1/<scope>/<op>")."""
    return _LAYER_PREFIX + _SCOPE[scope] + len(op)


def tflite_name_lengths(graph: Graph) -> list[int]:
    """The predicted length of each tensor's name in the exported .tflite (see above)."""
    lengths = [len("input")] * len(graph.tensors)  # what no op makes: the input
    for op in graph.ops:
        kind, inputs, outputs = op.kind, op.inputs, op.outputs
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            scope, conv = ("depthwise", "/depthwise") if kind == "DEPTHWISE_CONV_2D" else ("conv", "/convolution")
            lengths[inputs[1]] = _layer_op(scope, conv)
            if op.attrs.get("zero_bias"):
                lengths[inputs[2]] = len("arith.constantN")
                lengths[outputs[0]] = _layer_op(scope, conv + "1")
                continue
            bias = 3 * _LAYER_PREFIX + 3 * _SCOPE[scope] + len("/BiasAdd;" + conv + ";/Squeeze")
            act = op.attrs.get("fused_activation", "NONE")
            if act in ("RELU", "RELU6"):
                bias += _layer_op("relu", "/" + act.capitalize() + ";")  # "/Relu;" or "/Relu6;"
            lengths[inputs[2]], lengths[outputs[0]] = bias, bias + 1
        elif kind == "HARD_SWISH":
            lengths[outputs[0]] = 4 * _LAYER_PREFIX + 4 * _SCOPE["hard_swish"] + len("/mul;;/Relu6;/add;/truediv")
        elif kind == "MEAN":
            lengths[outputs[0]] = _layer_op("mean", "/Mean")
            lengths[inputs[1]] = len("arith.constant")
        elif kind == "MUL" and graph.tensors[inputs[1]].is_constant:  # Rescaling by 1/6
            lengths[outputs[0]] = _layer_op("rescaling", "/mul")
            lengths[inputs[1]] = len("arith.constantN")
        elif kind == "MUL":
            lengths[outputs[0]] = _layer_op("multiply", "/Mul")
        elif kind == "ADD":
            lengths[outputs[0]] = _layer_op("add", "/Add")
        elif kind == "FULLY_CONNECTED":
            lengths[inputs[1]] = len("functional_1/dense_1/MatMul")
            lengths[inputs[2]] = len("functional_1/dense_1/BiasAdd")
            lengths[outputs[0]] = len("Identity")
    return lengths


def _string_bytes(length: int) -> int:
    return (4 + length + 1 + 3) // 4 * 4


def _tensor_flash_bytes(t: Tensor, name_length: int) -> int:
    return (t.nbytes if t.is_constant else 0) + QUANT_PARAM_BYTES_PER_CHANNEL * t.quant_channels + TENSOR_BYTES + _string_bytes(name_length)


# Constants stored once per model however many ops read them.
SHARED_PREFIX = "shared/"
SHARED_MEAN_AXES = SHARED_PREFIX + "mean_axes"
SHARED_ONE_SIXTH = SHARED_PREFIX + "one_sixth"


# --- graph building ----------------------------------------------------------------------------
class _GraphWriter:
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
    w = _GraphWriter(name)
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
    w = _GraphWriter(b.name)
    x = w.activation("input", (1, *b.in_size, b.in_channels))
    w.graph.inputs.append(x)
    w.graph.outputs.append(w.block(x, b))
    return w.graph


def _piece_graphs(spec: SubnetSpec) -> tuple[Graph, Graph]:
    """The stem and the head as standalone graphs (used to price them)."""
    w = _GraphWriter("stem")
    x = w.activation("input", (1, *spec.in_size, spec.in_channels))
    w.graph.inputs.append(x)
    w.graph.outputs.append(w.stem(x, spec))
    stem = w.graph
    w = _GraphWriter("head")
    x = w.activation("features", (1, *spec.last_size, spec.last_channels))
    w.graph.inputs.append(x)
    w.graph.outputs.append(w.head(x, spec))
    return stem, w.graph


# --- parameters and MACs (PyTorch's count, from the spec) ---------------------------------------
def _conv_params(cin: int, cout: int, k: int, groups: int = 1, bias: bool = False, bn: bool = True) -> int:
    return k * k * (cin // groups) * cout + (cout if bias else 0) + (2 * cout if bn else 0)


def block_params_macs(b: BlockSpec) -> tuple[int, int]:
    """Trainable parameters (conv weights, BN affine, SE biases) and multiply-accumulates."""
    (hi, wi), (ho, wo) = b.in_size, b.out_size
    params = macs = 0
    if b.has_expand:
        params += _conv_params(b.in_channels, b.mid_channels, 1)
        macs += b.in_channels * b.mid_channels * hi * wi
    params += _conv_params(b.mid_channels, b.mid_channels, b.kernel, groups=b.mid_channels)
    macs += b.kernel * b.kernel * b.mid_channels * ho * wo
    if b.se_channels:
        params += 2 * b.mid_channels * b.se_channels + b.se_channels + b.mid_channels
        macs += 2 * b.mid_channels * b.se_channels
    params += _conv_params(b.mid_channels, b.out_channels, 1)
    macs += b.mid_channels * b.out_channels * ho * wo
    return params, macs


def stem_params_macs(spec: SubnetSpec) -> tuple[int, int]:
    k, (h, w) = FIRST_CONV_KERNEL, spec.first_conv_out_size
    return _conv_params(spec.in_channels, spec.first_conv_width, k), k * k * spec.in_channels * spec.first_conv_width * h * w


def head_params_macs(spec: SubnetSpec) -> tuple[int, int]:
    (h, w), c = spec.last_size, spec.last_channels
    fe, fm, n = spec.final_expand_width, spec.feature_mix_width, spec.num_classes
    params = _conv_params(c, fe, 1) + _conv_params(fe, fm, 1, bn=False) + fm * n + n
    macs = c * fe * h * w + fe * fm + fm * n
    return params, macs


def params_macs(spec: SubnetSpec) -> tuple[int, int]:
    parts = [stem_params_macs(spec), head_params_macs(spec)] + [block_params_macs(b) for b in spec.blocks]
    return sum(p for p, _ in parts), sum(m for _, m in parts)


# --- pricing -------------------------------------------------------------------------------------
class SubnetCost(NamedTuple):
    """What a subnet costs on a board (bytes; MACs and parameters as counts).

    A named tuple because the search makes tens of thousands per second."""

    arena_head_bytes: int
    arena_tail_bytes: int
    scratch_bytes: int
    weight_bytes: int  # constant tensor data, exact
    flash_bytes: int  # the .tflite's size: weight bytes + quantization + names + tables (estimate, ~0.01%)
    macs: int
    params: int

    @property
    def arena_bytes(self) -> int:
        return self.arena_head_bytes + self.arena_tail_bytes

    def to_dict(self) -> dict:
        return {
            "arena_bytes": self.arena_bytes,
            "arena_head_bytes": self.arena_head_bytes,
            "arena_tail_bytes": self.arena_tail_bytes,
            "scratch_bytes": self.scratch_bytes,
            "weight_bytes": self.weight_bytes,
            "flash_bytes": self.flash_bytes,
            "macs": self.macs,
            "params": self.params,
        }


def flash_estimate(graph: Graph) -> int:
    """Bytes of the .tflite: constant data exactly, quantization, names and tables estimated
    (within 0.01% on trained subnets; see TENSOR_BYTES)."""
    names = tflite_name_lengths(graph)
    return sum(_tensor_flash_bytes(t, n) for t, n in zip(graph.tensors, names)) + MODEL_BYTES


def price(config: "SubnetConfig", target, layout: "Layout") -> SubnetCost:
    """Reference pricing: build the graph and ask the toolchain's memory model (slow, exact).

    ``target`` is a :class:`toolchain.targets.Target` (or anything with ``pointer_bytes`` and
    ``kernel_library``).
    """
    from toolchain.memory import estimate_arena

    spec = subnet_spec(layout, config)
    graph = spec_graph(spec)
    est = estimate_arena(graph, target.pointer_bytes, target.kernel_library)
    params, macs = params_macs(spec)
    return SubnetCost(
        arena_head_bytes=est.arena_head_bytes,
        arena_tail_bytes=est.arena_tail_bytes,
        scratch_bytes=est.scratch_bytes,
        weight_bytes=graph.constant_bytes(),
        flash_bytes=flash_estimate(graph),
        macs=macs,
        params=params,
    )


# --- fast pricing -------------------------------------------------------------------------------
# Tail allocations are aligned to at most 16 bytes, so how many bytes a run of them takes
# depends only on the pointer's residue modulo 16 when the run starts.
_RESIDUES = 16
_TAIL_REGIONS = ("builtin options", "kernel Init data", "Prepare's per-channel arrays")


def _run_table(items) -> tuple[int, ...]:
    """Bytes a run of (size, alignment) tail allocations takes, for each entry residue."""
    table = []
    for r in range(_RESIDUES):
        p = r - (1 << 30)  # any pointer with residue r
        start = p
        for size, align in items:
            p = (p - size) // align * align
        table.append(start - p)
    return tuple(table)


def _grain(table: tuple[int, ...]) -> int:
    """The alignments g (a bit mask of g in 1, 2, 4, 8, 16) at which a run is *stable*: entered
    at any g-aligned address it takes table[0] bytes and leaves the address g-aligned. A run of
    stable blocks entered g-aligned is then a plain sum (blocks are stable at g = 4 for builtin
    options -- 4-byte aligned structs, MEAN's 1-byte one absorbed by the next -- and g = 16
    for the 16-byte aligned Init and Prepare buffers)."""
    mask = 0
    for g in (1, 2, 4, 8, 16):
        if all(table[r] == table[0] and (r - table[r]) % g == 0 for r in range(0, _RESIDUES, g)):
            mask |= g
    return mask


# A piece's additive figures travel packed into one Python int, _FIELD_BITS bits per figure, so
# that a subnet's totals are a few big-int additions instead of a sum per figure. Every figure
# is a non-negative integer far below 2**48 (MACs of the largest 224x224 subnet with 1000
# classes: ~2**30), so no field carries into the next.
_FIELDS = ("tensors", "ops", "scratch_requests", "scratch_bytes", "weight_bytes", "flash_bytes", "params", "macs",
           "block tail: builtin", "block tail: init", "block tail: per-channel")
_TENSORS, _OPS, _SCRATCH, _SCRATCH_BYTES, _WEIGHTS, _FLASH, _PARAMS, _MACS, _BLOCK_TAIL = range(9)
_FIELD_BITS = 64
_FIELD_MASK = (1 << _FIELD_BITS) - 1
# After the figures, one field per shared constant counts the pieces that read it.
SHARED_CONSTANTS = (SHARED_MEAN_AXES, SHARED_ONE_SIXTH)
_READERS_SHIFT = _FIELD_BITS * len(_FIELDS)


def _pack(values) -> int:
    assert all(0 <= v < 1 << 48 for v in values), values
    return sum(v << (_FIELD_BITS * i) for i, v in enumerate(values))


def _unpack(packed: int, n: int = len(_FIELDS)) -> list[int]:
    return [(packed >> (_FIELD_BITS * i)) & _FIELD_MASK for i in range(n)]


class _Piece(PieceModel):
    """One piece of the chain (stem, block, head): its arena buffers as a
    :class:`~moofa.chainplan.PieceModel` (the kernel library's scratch buffers included), plus
    what it adds to the subnet's cost.

    ``packed``: its additive figures (:data:`_FIELDS`, then its shared-constant readers);
    ``tails``: for each of TFLM's tail regions (builtin options, kernel ``Init`` data,
    ``Prepare``'s per-channel arrays; see :func:`toolchain.persistent.allocation_sequence`) the
    bytes its allocations take per entry residue modulo 16; ``grains``: :func:`_grain` of each.
    """

    def __init__(self, graph: Graph, scratch, left: bool, right: bool, packed: int, tails):
        super().__init__(graph, scratch, left, right)
        self.packed = packed
        self.tails = tuple(_run_table(items) for items in tails)
        self.grains = tuple(_grain(t) for t in self.tails)


_packed_of = attrgetter("packed")
_lower_bound_of = attrgetter("lower_bound_bytes")


class _PieceTable(dict):
    """Pieces of one (resolution, stage, first block or not) by (kernel, expand), built on
    first use."""

    def __init__(self, build):
        super().__init__()
        self._build = build

    def __missing__(self, kernel_expand):
        piece = self[kernel_expand] = self._build(*kernel_expand)
        return piece


class _StageTable(dict):
    """``table[kernels][expands]``: one stage's (block pieces, their packed figures summed),
    built on first use from the stage's two piece tables (a look-up per block). Nested by
    kernels, then expands, which makes a new stage cheaper to add than one flat table would."""

    def __init__(self, first: _PieceTable, rest: _PieceTable):
        super().__init__()
        self._first, self._rest = first, rest

    def __missing__(self, kernels):
        found = self[kernels] = _StageExpands(self._first, self._rest, kernels)
        return found


class _StageExpands(dict):
    """The stages of one kernels tuple, by expands tuple (see _StageTable)."""

    def __init__(self, first: _PieceTable, rest: _PieceTable, kernels: tuple):
        super().__init__()
        self._first, self._rest, self._kernels = first, rest, kernels

    def __missing__(self, expands):
        blocks = zip(self._kernels, expands)
        pieces = (self._first[next(blocks)], *map(self._rest.__getitem__, blocks))
        found = self[expands] = (pieces, sum(map(_packed_of, pieces)))
        return found


@dataclass
class _Resolution:
    """Everything of one input resolution: the fixed pieces and each stage's table."""

    stem: _Piece
    first_block: _Piece
    head: _Piece
    stages: list[_StageTable]
    fixed_packed: int  # stem + first block + head
    tail_rest: dict = field(default_factory=dict)  # see Pricer._tail

    def parts(self, config: "SubnetConfig") -> tuple[list[_Piece], int]:
        """The subnet's pieces (stem, first block, every active block, head) and their packed
        figures summed."""
        pieces = [self.stem, self.first_block]
        packed = self.fixed_packed
        for table, kernels, expands in zip(self.stages, config.kernels, config.expands):
            stage, stage_packed = table[kernels][expands]
            pieces += stage
            packed += stage_packed
        pieces.append(self.head)
        return pieces, packed


class Pricer:
    """Fast, exact pricing of a layout's subnets for one board (pointer width + kernel library).

    ``Pricer(layout, target)`` or ``Pricer(layout, pointer_bytes=8, kernel_library="reference")``;
    ``pricer(config)`` returns the :class:`SubnetCost` :func:`price` returns; ``fits`` answers
    the budget question, faster on subnets that do not fit; ``price_many`` prices a list.

    A subnet is a chain of pieces (stem, first block, each active block, head), each built once
    per (resolution, stage, first-or-not, kernel, expand) -- a few dozen per board. Pricing a
    subnet, new or not, is then: a look-up per stage for its pieces and their packed figures
    (:class:`_StageTable`, built from per-block pieces on first sight of a stage), one memo
    look-up per boundary for TFLM's greedy plan (:func:`moofa.chainplan.chain_head_bytes`; the
    memo is keyed on piece pairs and offsets, so every subnet shares it), and a dozen
    table look-ups for the persistent tail.
    """

    def __init__(self, layout: "Layout", target=None, pointer_bytes: int = 8, kernel_library: str = "reference"):
        from toolchain.persistent import HOST_KERNELS, UNKNOWN_KERNEL, abi_for, allocation_sequence
        from toolchain.scratch import scratch_requests

        if target is not None:
            pointer_bytes, kernel_library = target.pointer_bytes, target.kernel_library
        self.layout = layout
        self.pointer_bytes = pointer_bytes
        self.kernel_library = kernel_library
        self._abi = abi_for(pointer_bytes)
        self._kernels, self._unknown = HOST_KERNELS, UNKNOWN_KERNEL
        self._scratch_requests = scratch_requests
        # Inputs' and outputs' tail allocations: what allocation_sequence adds for a graph
        # with one int8 input and one int8 output and no ops (after the two struct arrays).
        io = Graph([Tensor("in", (1,), "int8", quant_channels=1), Tensor("out", (1,), "int8", quant_channels=1)], [], [0], [1])
        self._io_allocations = [(size, align) for _, size, align in allocation_sequence(io, self._abi, 0)[2:]]
        self._resolutions: dict[int, _Resolution] = {}
        self._chain_steps: dict[tuple, tuple] = {}  # (resolution, *depths) -> chain_steps
        self._boundary_memo = BoundaryMemo()  # shared by every subnet of every resolution
        self._shared: dict[str, tuple[int, int]] = {}  # name -> (bytes, flash bytes)
        self._shared_sums: dict[int, tuple[int, int, int]] = {}  # readers field -> (tensors, bytes, flash)
        # Per tail region, the alignments every stage block built so far is stable at (see
        # _grain; all of them while there is none), and the smallest of them less one, or -1 if
        # there is none: then the tail is replayed piece by piece.
        self._block_grains = [31, 31, 31]
        self._block_grain_masks = [0, 0, 0]
        abi = self._abi  # Pricer._tail counts on these being whole pointers
        assert abi.prefix_bytes % pointer_bytes == abi.eval_tensor_bytes % pointer_bytes == abi.node_and_registration_bytes % pointer_bytes == 0

    # pieces ---------------------------------------------------------------------------------
    def _piece(self, graph: Graph, params: int, macs: int, owns_input: bool = False, owns_output: bool = False,
               stage_block: bool = False) -> _Piece:
        scratch = self._scratch_requests(graph, self.kernel_library)
        tails: tuple[list, list, list] = ([], [], [])
        for op in graph.ops:
            # Mirrors toolchain.persistent.allocation_sequence, op by op (the tests compare
            # the result with estimate_tail on whole graphs).
            k = self._kernels.get(op.kind, self._unknown)
            tails[0].extend(k.builtin)
            if k.init_bytes:
                tails[1].append((k.init_bytes, 16))
            float_input = graph.tensors[op.inputs[0]].dtype == "float32"
            if k.per_channel and not (k.per_channel == "quantized" and float_input):
                shape = graph.tensors[op.outputs[0]].shape
                tails[2].extend([(4 * (shape[-1] if shape else 1), 16)] * 2)
        names = tflite_name_lengths(graph)
        own = [(t, n) for i, (t, n) in enumerate(zip(graph.tensors, names)) if owns_input or i != graph.inputs[0]]
        # Constants the whole model shares are counted once per subnet, not per piece.
        shared = [(t, n) for t, n in own if t.name.startswith(SHARED_PREFIX)]
        own = [(t, n) for t, n in own if not t.name.startswith(SHARED_PREFIX)]
        readers = [0] * len(SHARED_CONSTANTS)
        for t, n in shared:
            self._shared[t.name] = (t.nbytes, _tensor_flash_bytes(t, n))
            readers[SHARED_CONSTANTS.index(t.name)] = 1
        figures = [0] * len(_FIELDS)
        figures[_TENSORS] = len(own)
        figures[_OPS] = len(graph.ops)
        figures[_SCRATCH] = len(scratch)
        figures[_SCRATCH_BYTES] = sum(align_up(r.size_bytes) for r in scratch)
        figures[_WEIGHTS] = sum(t.nbytes for t, _ in own if t.is_constant)
        figures[_FLASH] = sum(_tensor_flash_bytes(t, n) for t, n in own)
        figures[_PARAMS], figures[_MACS] = params, macs
        piece = _Piece(graph, scratch, not owns_input, not owns_output, 0, tails)
        self._boundary_memo.share(piece)
        if stage_block:
            # What a stage block adds to each tail region when entered at a stable alignment.
            for region, (table, grain) in enumerate(zip(piece.tails, piece.grains)):
                figures[_BLOCK_TAIL + region] = table[0]
                g = self._block_grains[region] & grain
                if g != self._block_grains[region]:
                    self._block_grains[region] = g
                    self._block_grain_masks[region] = (g & -g) - 1 if g else -1  # the smallest stable g
                    for res in self._resolutions.values():
                        res.tail_rest.clear()  # its entries assumed the blocks built so far
        piece.packed = _pack(figures) + (_pack(readers) << _READERS_SHIFT)
        return piece

    def _resolution(self, resolution: int) -> _Resolution:
        """The pieces of a resolution: stem, first block and head, and each stage's table."""
        found = self._resolutions.get(resolution)
        if found is not None:
            return found
        from moofa.space import SubnetConfig

        lay = self.layout
        # The smallest legal config fixes everything but the stage blocks.
        d = min(lay.depth_choices)
        probe = SubnetConfig(lay.name, resolution, ((lay.kernel_choices[0],) * d,) * len(lay.stages), ((lay.expand_choices[0],) * d,) * len(lay.stages))
        spec = subnet_spec(lay, probe)
        stem_g, head_g = _piece_graphs(spec)
        first = spec.blocks[0]
        stages = []
        channels, size = first.out_channels, first.out_size
        for s, st in enumerate(lay.stages):
            out_size = (same_output_size(size[0], st.stride), same_output_size(size[1], st.stride))
            stages.append(_StageTable(
                _PieceTable(self._block_builder(s, True, channels, size)),
                _PieceTable(self._block_builder(s, False, st.width, out_size)),
            ))
            channels, size = st.width, out_size
        stem = self._piece(stem_g, *stem_params_macs(spec), owns_input=True)
        first_block = self._piece(block_graph(first), *block_params_macs(first))
        head = self._piece(head_g, *head_params_macs(spec), owns_output=True)
        found = self._resolutions[resolution] = _Resolution(stem, first_block, head, stages, stem.packed + first_block.packed + head.packed)
        return found

    def _block_builder(self, s: int, first: bool, channels: int, size):
        st = self.layout.stages[s]

        def build(kernel, expand) -> _Piece:
            spec = make_block(f"stage{s + 1}.block", channels, st.width, expand, kernel, st.stride if first else 1, st.act, st.se, size)
            return self._piece(block_graph(spec), *block_params_macs(spec), stage_block=True)

        return build

    def pieces(self, config: "SubnetConfig") -> list[_Piece]:
        """Stem, first block, every active block, head."""
        return self._parts(config)[0]

    def _parts(self, config: "SubnetConfig") -> tuple[list[_Piece], int]:
        res = self._resolutions.get(config.resolution) or self._resolution(config.resolution)
        return res.parts(config)

    # costs ----------------------------------------------------------------------------------
    def _head(self, config: "SubnetConfig", pieces: list[_Piece]) -> int:
        # The chain's shape (boundary sizes, the pieces' flags) follows from the resolution and
        # the depths, so its steps serve every subnet of that shape.
        key = (config.resolution, *map(len, config.kernels))
        steps = self._chain_steps.get(key)
        if steps is None:
            steps = self._chain_steps[key] = chain_steps(pieces)
        return chain_head_bytes(pieces, steps, self._boundary_memo)

    def _tail(self, res: _Resolution, pieces: list[_Piece], packed: int, tensors: int, ops: int, scratch: int) -> int:
        """TFLM's tail allocations, in toolchain.persistent's order: the allocator's objects and
        the two struct arrays (whole multiples of the pointer width, so no padding), then per
        region the stem, first block, stage blocks and head, then the scratch handles and the
        I/O structs. The stage blocks take a plain sum per region when entered at an alignment
        they are all stable at (see _grain; always, on the layouts here); everything else
        depends only on the residues modulo 16 at which it is entered, so it is memoized on
        them. Otherwise the allocations are replayed piece by piece."""
        abi = self._abi
        arrays = abi.prefix_bytes + abi.eval_tensor_bytes * tensors + abi.node_and_registration_bytes * ops
        b0 = (packed >> (_FIELD_BITS * _BLOCK_TAIL)) & _FIELD_MASK
        b1 = (packed >> (_FIELD_BITS * (_BLOCK_TAIL + 1))) & _FIELD_MASK
        b2 = (packed >> (_FIELD_BITS * (_BLOCK_TAIL + 2))) & _FIELD_MASK
        key = (arrays & 15, b0 & 15, b1 & 15, b2 & 15, scratch)
        rest = res.tail_rest.get(key)
        if rest is None:
            rest = res.tail_rest[key] = self._tail_rest(pieces, key)
        if rest >= 0:
            return arrays + b0 + b1 + b2 + rest
        return self._replay_tail(pieces, -arrays, scratch)

    def _tail_rest(self, pieces: list[_Piece], key: tuple) -> int:
        """For Pricer._tail: the bytes taken by the stem, first block and head and by the
        handles and I/O structs, entered at the residues of ``key``; -1 if the stage blocks
        are not entered at an alignment they are stable at."""
        arrays_residue, *block_residues, scratch = key
        p = start = -arrays_residue - (1 << 30)
        stem, first, last = pieces[0].tails, pieces[1].tails, pieces[-1].tails
        for region, (mask, blocks) in enumerate(zip(self._block_grain_masks, block_residues)):
            p -= stem[region][p & 15]
            p -= first[region][p & 15]
            if mask < 0 or p & mask:
                return -1
            p -= blocks  # only the residue of the blocks' bytes matters from here on
            p -= last[region][p & 15]
        return start - p - sum(block_residues) + self._tail_end(p, scratch)

    def _tail_end(self, p: int, scratch: int) -> int:
        """Scratch handles, then the inputs' and outputs' structs, from address ``p``."""
        abi = self._abi
        q = start = (p & 15) - (1 << 30)
        items = ([(abi.scratch_handle_bytes * scratch, abi.pointer_bytes)] if scratch else []) + self._io_allocations
        for size, align in items:
            q = (q - size) // align * align
        return start - q

    def _replay_tail(self, pieces: list[_Piece], p: int, scratch: int) -> int:
        """The tail by replaying every piece's allocations (see Pricer._tail)."""
        for region in range(len(_TAIL_REGIONS)):
            for piece in pieces:
                p -= piece.tails[region][p & 15]
        return self._tail_end(p, scratch) - p

    def _shared_sums_of(self, readers: int) -> tuple[int, int, int]:
        """Tensors, bytes and flash bytes of the shared constants some piece reads."""
        found = self._shared_sums.get(readers)
        if found is None:
            names = [n for n, count in zip(SHARED_CONSTANTS, _unpack(readers, len(SHARED_CONSTANTS))) if count]
            found = self._shared_sums[readers] = (len(names), sum(self._shared[n][0] for n in names), sum(self._shared[n][1] for n in names))
        return found

    def _flash_and_tail(self, res: _Resolution, pieces: list[_Piece], packed: int) -> tuple[int, int, int]:
        """Flash bytes, tail bytes and the shared constants' bytes of a subnet's pieces."""
        shared_tensors, shared_bytes, shared_flash = self._shared_sums_of(packed >> _READERS_SHIFT)
        flash = ((packed >> (_FIELD_BITS * _FLASH)) & _FIELD_MASK) + shared_flash + MODEL_BYTES
        tensors = (packed & _FIELD_MASK) + shared_tensors
        ops = (packed >> (_FIELD_BITS * _OPS)) & _FIELD_MASK
        scratch = (packed >> (_FIELD_BITS * _SCRATCH)) & _FIELD_MASK
        return flash, self._tail(res, pieces, packed, tensors, ops, scratch), shared_bytes

    def __call__(self, config: "SubnetConfig", head_only: bool = False) -> SubnetCost:
        """The subnet's cost (``head_only=True``: just the arena head, an int)."""
        res = self._resolutions.get(config.resolution) or self._resolution(config.resolution)
        pieces, packed = res.parts(config)
        if head_only:
            return self._head(config, pieces)
        flash, tail, shared_bytes = self._flash_and_tail(res, pieces, packed)
        return SubnetCost(
            self._head(config, pieces),
            tail,
            (packed >> (_FIELD_BITS * _SCRATCH_BYTES)) & _FIELD_MASK,
            ((packed >> (_FIELD_BITS * _WEIGHTS)) & _FIELD_MASK) + shared_bytes,
            flash,
            (packed >> (_FIELD_BITS * _MACS)) & _FIELD_MASK,
            (packed >> (_FIELD_BITS * _PARAMS)) & _FIELD_MASK,
        )

    def fits(self, config: "SubnetConfig", sram_budget_bytes: int, flash_budget_bytes: int | None = None) -> bool:
        """Whether arena (head + tail) <= ``sram_budget_bytes`` and flash <= ``flash_budget_bytes``:
        the same answer as pricing, faster on subnets that do not fit. The head is never below
        the liveness lower bound (the largest piece's), so a bound over budget settles it;
        only otherwise is the greedy plan replayed."""
        res = self._resolutions.get(config.resolution) or self._resolution(config.resolution)
        pieces, packed = res.parts(config)
        flash, tail, _ = self._flash_and_tail(res, pieces, packed)
        if flash_budget_bytes is not None and flash > flash_budget_bytes:
            return False
        budget = sram_budget_bytes - tail
        return max(map(_lower_bound_of, pieces)) <= budget and self._head(config, pieces) <= budget

    def arena_head_bytes(self, config: "SubnetConfig") -> int:
        """Just the planned head (scratch included)."""
        return self(config, head_only=True)

    def price_many(self, configs) -> list[SubnetCost]:
        """The cost of each config, in order (the search prices its candidates one by one, so
        this is a convenience, not a faster path)."""
        return [self(c) for c in configs]
