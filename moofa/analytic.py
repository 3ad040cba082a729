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
offsets (:mod:`moofa.chainplan`). The persistent tail replays TFLM's allocation order region by
region, each piece's part of a region a table over the pointer's residue modulo 16. Pieces are
built once per (resolution, stage, first-or-not, kernel, expand); a config then costs a few
dozen dictionary look-ups. The tests hold it equal to :func:`price` on random subnets of both
layouts, at several resolutions, for every kernel library and pointer width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from moofa.chainplan import ChainPiece, PieceModel, boundary_order, chain_head_bytes
from moofa.blocks import FIRST_CONV_KERNEL, BlockSpec, SubnetSpec, make_block, same_output_size, subnet_spec
from toolchain.graph import Graph, Tensor
from toolchain.planner import align_up

if TYPE_CHECKING:  # pragma: no cover
    from moofa.layouts import Layout
    from moofa.space import SubnetConfig

# Flash of a .tflite beyond its constant data: quantization parameters and flatbuffer tables.
# Least-squares fit of file size - constant bytes = a * quantized channels + b * tensors + c on
# six subnets exported by toolchain.export.export_int8 (TensorFlow 2.21; OFA and MOOFA, 28x28
# and 32x32, 10 and 100 classes; 187 to 259 tensors, 0.2 to 2.8 MB): every estimate within
# 0.25% of the real file. (The schema's float32 scale + int64 zero point would be 12 bytes per
# channel; ops are not a separate term because they grow with the tensors.)
QUANT_PARAM_BYTES_PER_CHANNEL = 11.5
TENSOR_TABLE_BYTES = 130
MODEL_TABLE_BYTES = 5192


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

    def conv(self, x: int, name: str, out_channels: int, kernel: int, stride: int, act: str | None, depthwise: bool = False, fused: str | None = None) -> int:
        """Conv (+ folded BN) with ``act`` ("relu" fused, "h_swish" as a separate op, None)."""
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
        h = self.conv(h, "feature_mix", spec.feature_mix_width, 1, 1, "h_swish")
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
    flash_bytes: int  # the .tflite's size: weight bytes + quantization + tables (estimate, ~0.25%)
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


def _tensor_flash_bytes(t: Tensor) -> float:
    return (t.nbytes if t.is_constant else 0) + QUANT_PARAM_BYTES_PER_CHANNEL * t.quant_channels + TENSOR_TABLE_BYTES


def flash_estimate(graph: Graph) -> int:
    """Bytes of the .tflite: constant data exactly, quantization and tables estimated."""
    return round(sum(_tensor_flash_bytes(t) for t in graph.tensors) + MODEL_TABLE_BYTES)


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


# Tail allocations are aligned to at most 16 bytes, so how many bytes a run of them takes
# depends only on the pointer's residue modulo 16 when the run starts.
_RESIDUES = 16


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


@dataclass
class _Piece:
    """What one piece of the chain (stem, block, stage, head) contributes to a subnet's cost.

    ``sums`` add up; the three ``*_run`` tables chain (TFLM's tail regions: builtin options,
    kernel ``Init`` data, ``Prepare``'s per-channel arrays, see
    :func:`toolchain.persistent.allocation_sequence`); ``model`` places the piece's arena
    buffers, the kernel library's scratch buffers included.
    """

    sums: tuple  # tensors, ops, scratch requests, scratch bytes, weight bytes, flash bytes, params, MACs
    shared: frozenset  # names of the shared constants the piece reads
    builtin_run: tuple[int, ...]
    init_run: tuple[int, ...]
    per_channel_run: tuple[int, ...]
    model: object

    def consumed(self, region: int, residue: int) -> int:
        """Bytes this piece's allocations of a tail region take when entered at ``residue``."""
        return self.runs[region][residue]

    def __post_init__(self):
        self.lower_bound_bytes = self.model.lower_bound_bytes
        self.runs = (self.builtin_run, self.init_run, self.per_channel_run)
        self._consumed = [dict(enumerate(table)) for table in self.runs]


_TENSORS, _OPS, _SCRATCH, _SCRATCH_BYTES, _WEIGHTS, _FLASH, _PARAMS, _MACS = range(8)


class Pricer:
    """Fast, exact pricing of a layout's subnets for one board (pointer width + kernel library).

    ``Pricer(layout, target)`` or ``Pricer(layout, pointer_bytes=8, kernel_library="reference")``;
    ``pricer(config)`` returns the :class:`SubnetCost` :func:`price` returns; ``fits`` answers
    the budget question, faster on subnets that do not fit.

    With ``stage_chains=True`` a stage priced a second time joins the chain as one memoized
    :class:`~moofa.chainplan.ChainPiece`: about 1.5x faster when the same stages come back
    (re-pricing a population), slower on a stream of new subnets (an evolution run makes about
    one new stage per child), where chaining blocks, whose memo entries every subnet shares, wins.
    """

    def __init__(self, layout: "Layout", target=None, pointer_bytes: int = 8, kernel_library: str = "reference", stage_chains: bool = False):
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
        self.stage_chains = stage_chains
        self._blocks: dict = {}
        self._stages: dict = {}
        self._orders: dict = {}
        self._boundary_memo: dict = {}
        self._fixed: dict = {}
        self._fronts: dict = {}
        self._shared: dict[str, tuple[int, float]] = {}  # name -> (bytes, flash bytes)
        self._shared_sums: dict[frozenset, tuple] = {}
        self._tail_ends: dict[tuple, int] = {}

    # pieces ---------------------------------------------------------------------------------
    def _piece(self, graph: Graph, params: int, macs: int, owns_input: bool = False, owns_output: bool = False) -> _Piece:
        scratch = self._scratch_requests(graph, self.kernel_library)
        builtin, init, per_channel = [], [], []
        for op in graph.ops:
            # Mirrors toolchain.persistent.allocation_sequence, op by op (the tests compare
            # the result with estimate_tail on whole graphs).
            k = self._kernels.get(op.kind, self._unknown)
            builtin += k.builtin
            if k.init_bytes:
                init.append((k.init_bytes, 16))
            float_input = graph.tensors[op.inputs[0]].dtype == "float32"
            if k.per_channel and not (k.per_channel == "quantized" and float_input):
                shape = graph.tensors[op.outputs[0]].shape
                per_channel += [(4 * (shape[-1] if shape else 1), 16)] * 2
        flash = sum(_tensor_flash_bytes(t) for t in graph.tensors)
        if not owns_input:  # the input tensor is counted by the piece before
            flash -= TENSOR_TABLE_BYTES + QUANT_PARAM_BYTES_PER_CHANNEL
        tensors = len(graph.tensors) - (0 if owns_input else 1)
        weights = graph.constant_bytes()
        # Constants the whole model shares are counted once per subnet, not per piece.
        shared = [t for t in graph.tensors if t.name.startswith(SHARED_PREFIX)]
        for t in shared:
            self._shared[t.name] = (t.nbytes, _tensor_flash_bytes(t))
            tensors, weights, flash = tensors - 1, weights - t.nbytes, flash - _tensor_flash_bytes(t)
        scratch_bytes = sum(align_up(r.size_bytes) for r in scratch)
        return _Piece(
            sums=(tensors, len(graph.ops), len(scratch), scratch_bytes, weights, flash, params, macs),
            shared=frozenset(t.name for t in shared),
            builtin_run=_run_table(builtin),
            init_run=_run_table(init),
            per_channel_run=_run_table(per_channel),
            model=PieceModel(graph, scratch, not owns_input, not owns_output),
        )

    def _fixed_pieces(self, resolution: int):
        """Stem, first block and head of a resolution, plus each stage's input (channels, size)."""
        if resolution not in self._fixed:
            from moofa.space import SubnetConfig

            lay = self.layout
            # The smallest legal config fixes everything but the stage blocks.
            d = min(lay.depth_choices)
            probe = SubnetConfig(lay.name, resolution, ((lay.kernel_choices[0],) * d,) * len(lay.stages), ((lay.expand_choices[0],) * d,) * len(lay.stages))
            spec = subnet_spec(lay, probe)
            stem_g, head_g = _piece_graphs(spec)
            first = spec.blocks[0]
            stem = self._piece(stem_g, *stem_params_macs(spec), owns_input=True)
            first_block = self._piece(block_graph(first), *block_params_macs(first))
            head = self._piece(head_g, *head_params_macs(spec), owns_output=True)
            stage_inputs = []
            channels, size = first.out_channels, first.out_size
            for st in lay.stages:
                stage_inputs.append((channels, size))
                channels, size = st.width, (same_output_size(size[0], st.stride), same_output_size(size[1], st.stride))
            # Stem and first block as one part for the sums and the tail (the chain keeps both).
            self._fronts[resolution] = _Stage([stem, first_block])
            self._fixed[resolution] = (stem, first_block, head, stage_inputs)
        return self._fixed[resolution]

    def _block(self, resolution: int, s: int, first: bool, k, e, channels: int, size) -> _Piece:
        key = (resolution, s, first, k, e)
        piece = self._blocks.get(key)
        if piece is None:
            st = self.layout.stages[s]
            spec = make_block(f"stage{s + 1}.block", channels, st.width, e, k, st.stride if first else 1, st.act, st.se, size)
            piece = self._blocks[key] = self._piece(block_graph(spec), *block_params_macs(spec))
        return piece

    def _tail(self, pieces: list[_Piece], sums: tuple) -> int:
        """TFLM's tail allocations (toolchain.persistent's order), region by region."""
        abi = self._abi
        p = -abi.prefix_bytes
        align = abi.pointer_bytes
        p = (p - abi.eval_tensor_bytes * sums[_TENSORS]) // align * align
        p = (p - abi.node_and_registration_bytes * sums[_OPS]) // align * align
        for region in range(3):
            for part in pieces:
                r = p % _RESIDUES
                c = part._consumed[region].get(r)
                p -= part.consumed(region, r) if c is None else c
        # Scratch handles, then the inputs' and outputs' structs: memoized per entry residue.
        key = (p % _RESIDUES, sums[_SCRATCH])
        end = self._tail_ends.get(key)
        if end is None:
            q = start = key[0] - (1 << 30)
            items = ([(abi.scratch_handle_bytes * sums[_SCRATCH], align)] if sums[_SCRATCH] else []) + self._io_allocations
            for size, a in items:
                q = (q - size) // a * a
            end = self._tail_ends[key] = start - q
        return end - p

    def _sums(self, parts: list) -> list[int]:
        sums = [sum(v) for v in zip(*[p.sums for p in parts])]
        shared = parts[0].shared
        for p in parts[1:]:
            if not p.shared <= shared:
                shared = shared | p.shared
        extra = self._shared_sums.get(shared)
        if extra is None:  # one entry per distinct set of shared constants (one or two in practice)
            extra = self._shared_sums[shared] = (len(shared), sum(self._shared[n][0] for n in shared), sum(self._shared[n][1] for n in shared))
        sums[_TENSORS] += extra[0]
        sums[_WEIGHTS] += extra[1]
        sums[_FLASH] += extra[2]
        return sums

    def pieces(self, config: "SubnetConfig") -> list[_Piece]:
        """Stem, first block, every active block, head."""
        res = config.resolution
        stem, first, head, _ = self._fixed_pieces(res)
        pieces = [stem, first]
        for s, (ks, es) in enumerate(zip(config.kernels, config.expands)):
            pieces += self._stage(res, s, ks, es).blocks
        pieces.append(head)
        return pieces

    def _stage(self, res: int, s: int, kernels: tuple, expands: tuple) -> "_Stage":
        key = (res, s, kernels, expands)
        stage = self._stages.get(key)
        if stage is None:
            channels, size = self._fixed_pieces(res)[3][s]
            st = self.layout.stages[s]
            blocks = []
            for b, (k, e) in enumerate(zip(kernels, expands)):
                blocks.append(self._block(res, s, b == 0, k, e, channels, size))
                if b == 0:
                    channels, size = st.width, (same_output_size(size[0], st.stride), same_output_size(size[1], st.stride))
            stage = self._stages[key] = _Stage(blocks)
        return stage

    def _order(self, config: "SubnetConfig", models: list, stage_models: list) -> list[int]:
        # The boundary sizes follow from the depths and which stages are chained as blocks.
        key = (config.resolution, tuple(map(len, config.kernels)), tuple(map(len, stage_models)))
        order = self._orders.get(key)
        if order is None:
            order = self._orders[key] = boundary_order(models)
        return order

    def fits(self, config: "SubnetConfig", sram_budget_bytes: int, flash_budget_bytes: int | None = None) -> bool:
        """Whether arena (head + tail) <= ``sram_budget_bytes`` and flash <= ``flash_budget_bytes``:
        the same answer as pricing, faster on subnets that do not fit. The head is never below
        the liveness lower bound (the largest piece's), so a bound over budget settles it;
        only otherwise is the greedy plan replayed."""
        res = config.resolution
        stem, first, head_piece, _ = self._fixed_pieces(res)
        stages = [self._stage(res, s, ks, es) for s, (ks, es) in enumerate(zip(config.kernels, config.expands))]
        parts = [self._fronts[res], *stages, head_piece]
        sums = self._sums(parts)
        if flash_budget_bytes is not None and round(sums[_FLASH] + MODEL_TABLE_BYTES) > flash_budget_bytes:
            return False
        tail = self._tail(parts, sums)
        if max(p.lower_bound_bytes for p in parts) + tail > sram_budget_bytes:
            return False
        return self(config, head_only=True) + tail <= sram_budget_bytes

    def arena_head_bytes(self, config: "SubnetConfig") -> int:
        """Just the planned head (scratch included)."""
        return self(config, head_only=True)

    def __call__(self, config: "SubnetConfig", head_only: bool = False) -> SubnetCost:
        """The subnet's cost (``head_only=True``: just the arena head, an int)."""
        res = config.resolution
        stem, first, head_piece, _ = self._fixed_pieces(res)
        stages = [self._stage(res, s, ks, es) for s, (ks, es) in enumerate(zip(config.kernels, config.expands))]
        models = [stem.model, first.model]
        if self.stage_chains:
            for st in stages:
                if st.uses == 1:
                    st.models = [ChainPiece(st.models, self._boundary_memo)]
                st.uses += 1
        for st in stages:
            models += st.models
        models.append(head_piece.model)
        order = self._order(config, models, [st.models for st in stages])
        head = chain_head_bytes(models, order, self._boundary_memo)
        if head_only:
            return head
        parts = [self._fronts[res], *stages, head_piece]
        sums = self._sums(parts)
        return SubnetCost(
            arena_head_bytes=head,
            arena_tail_bytes=self._tail(parts, sums),
            scratch_bytes=sums[_SCRATCH_BYTES],
            weight_bytes=sums[_WEIGHTS],
            flash_bytes=round(sums[_FLASH] + MODEL_TABLE_BYTES),
            macs=sums[_MACS],
            params=sums[_PARAMS],
        )


class _Stage:
    """A stage's blocks, with their figures summed and their tail tables composed on demand
    (per entry residue, memoized)."""

    def __init__(self, blocks: list[_Piece]):
        self.blocks = blocks
        # The chain takes a stage as its blocks, or (Pricer.stage_chains) from its second use
        # on as one memoized ChainPiece.
        self.models = [b.model for b in blocks]
        self.uses = 0
        self.sums = tuple(sum(v) for v in zip(*[b.sums for b in blocks]))
        self.shared = frozenset().union(*(b.shared for b in blocks))
        self.lower_bound_bytes = max(b.lower_bound_bytes for b in blocks)
        self._tables = [[b.runs[region] for b in blocks] for region in range(3)]
        self._consumed: list[dict[int, int]] = [{}, {}, {}]

    def consumed(self, region: int, residue: int) -> int:
        """Bytes the blocks' allocations of a tail region take when entered at ``residue``."""
        hit = self._consumed[region].get(residue)
        if hit is None:
            p = residue
            for table in self._tables[region]:
                p -= table[p % _RESIDUES]
            hit = self._consumed[region][residue] = residue - p
        return hit
