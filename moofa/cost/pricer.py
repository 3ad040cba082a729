""":class:`Pricer` is the search's inner loop, and gives exactly what :func:`price` (graph +
:func:`toolchain.memory.estimate.estimate_arena`) gives, without building the graph. A subnet's graph
is a chain of pieces (stem, blocks, head) whose tensors never outlive the piece that reads
them. So the liveness lower bound is the largest piece's -- but TFLM's greedy plan does not
always reach it (on random subnets of both layouts it exceeds it about one time in ten, by up
to ~11%), so the head is TFLM's greedy plan replayed piece by piece with memoized boundary
offsets (:mod:`toolchain.memory.chain`). The persistent tail follows TFLM's allocation order region by
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

from moofa.arch.blocks import make_block, same_output_size, subnet_spec
from moofa.cost.flash import (
    MODEL_BYTES,
    flash_estimate,
    tensor_flash_bytes,
    tflite_name_lengths,
)
from moofa.cost.lowering import (
    SHARED_MEAN_AXES,
    SHARED_ONE_SIXTH,
    SHARED_PREFIX,
    block_graph,
    piece_graphs,
    spec_graph,
)
from moofa.cost.params import (
    block_params_macs,
    head_params_macs,
    params_macs,
    stem_params_macs,
)
from toolchain.ir.graph import Graph, Tensor
from toolchain.memory.chain import (
    BoundaryMemo,
    PieceModel,
    chain_head_bytes,
    chain_steps,
)
from toolchain.memory.estimate import estimate_arena
from toolchain.memory.persistent import abi_for, allocation_sequence, kernel_tails, op_allocations
from toolchain.memory.planner import align_up
from toolchain.memory.scratch import scratch_requests

if TYPE_CHECKING:  # pragma: no cover
    from moofa.arch.layouts import Layout
    from moofa.arch.space import SubnetConfig

# --- pricing -------------------------------------------------------------------------------------
class SubnetCost(NamedTuple):
    """What a subnet costs on a board (bytes; MACs and parameters as counts).

    A named tuple because the search makes tens of thousands per second."""

    arena_head_bytes: int
    arena_tail_bytes: int
    scratch_bytes: int
    weight_bytes: int  # constant tensor data, exact
    flash_bytes: int  # the .tflite's size: weight bytes + quantization + names + tables (estimate: docs/BENCHMARKS.md)
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


def price(config: "SubnetConfig", target, layout: "Layout") -> SubnetCost:
    """Reference pricing: build the graph and ask the toolchain's memory model (slow, exact).

    ``target`` is a :class:`toolchain.boards.targets.Target` (or anything with ``pointer_bytes`` and
    ``kernel_library``).
    """
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
    :class:`~toolchain.memory.chain.PieceModel` (the kernel library's scratch buffers included), plus
    what it adds to the subnet's cost.

    ``packed``: its additive figures (:data:`_FIELDS`, then its shared-constant readers);
    ``tails``: for each of TFLM's tail regions (builtin options, kernel ``Init`` data,
    ``Prepare``'s per-channel arrays; see :func:`toolchain.memory.persistent.allocation_sequence`) the
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
    look-up per boundary for TFLM's greedy plan (:func:`toolchain.memory.chain.chain_head_bytes`; the
    memo is keyed on piece pairs and offsets, so every subnet shares it), and a dozen
    table look-ups for the persistent tail.
    """

    def __init__(self, layout: "Layout", target=None, pointer_bytes: int = 8, kernel_library: str = "reference"):
        if target is not None:
            pointer_bytes, kernel_library = target.pointer_bytes, target.kernel_library
        self.layout = layout
        self.pointer_bytes = pointer_bytes
        self.kernel_library = kernel_library
        self._abi = abi_for(pointer_bytes)
        self._kernels = kernel_tails(pointer_bytes, kernel_library)
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
        scratch = self._scratch_requests(graph, self.kernel_library, self.pointer_bytes)
        tails: tuple[list, list, list] = ([], [], [])
        for op in graph.ops:  # toolchain.memory.persistent states each op's tail once
            for region, allocations in zip(tails, op_allocations(graph, op, self._kernels)):
                region.extend(allocations)
        names = tflite_name_lengths(graph)
        own = [(t, n) for i, (t, n) in enumerate(zip(graph.tensors, names)) if owns_input or i != graph.inputs[0]]
        # Constants the whole model shares are counted once per subnet, not per piece.
        shared = [(t, n) for t, n in own if t.name.startswith(SHARED_PREFIX)]
        own = [(t, n) for t, n in own if not t.name.startswith(SHARED_PREFIX)]
        readers = [0] * len(SHARED_CONSTANTS)
        for t, n in shared:
            self._shared[t.name] = (t.nbytes, tensor_flash_bytes(t, n))
            readers[SHARED_CONSTANTS.index(t.name)] = 1
        figures = [0] * len(_FIELDS)
        figures[_TENSORS] = len(own)
        figures[_OPS] = len(graph.ops)
        figures[_SCRATCH] = len(scratch)
        figures[_SCRATCH_BYTES] = sum(align_up(r.size_bytes) for r in scratch)
        figures[_WEIGHTS] = sum(t.nbytes for t, _ in own if t.is_constant)
        figures[_FLASH] = sum(tensor_flash_bytes(t, n) for t, n in own)
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
        from moofa.arch.space import SubnetConfig

        lay = self.layout
        # The smallest legal config fixes everything but the stage blocks.
        d = min(lay.depth_choices)
        probe = SubnetConfig(lay.name, resolution, ((lay.kernel_choices[0],) * d,) * len(lay.stages), ((lay.expand_choices[0],) * d,) * len(lay.stages))
        spec = subnet_spec(lay, probe)
        stem_g, head_g = piece_graphs(spec)
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
        """TFLM's tail allocations, in toolchain.memory.persistent's order: the allocator's objects and
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
