"""Liveness and arena planning: the heart of moofa's memory model.

TFLM keeps every non-constant tensor of a model in one "tensor arena". The head of the arena
holds the buffers that are alive only part of the time (activations, kernel scratch); TFLM
places them with a greedy planner ahead of the first inference. To predict the arena a model
needs, byte for byte, we reproduce that planner here. The algorithm, as TFLM implements it
(``tensorflow/lite/micro/memory_planner/greedy_memory_planner.cc`` and
``micro_allocation_info.cc`` in the tflite-micro repository):

1. Lifetimes. Time is counted in "allocation scopes": scope 0 is before the first op, op ``i``
   runs in scope ``i + 1``. Graph inputs are created at scope 0; every op's outputs are created
   in its scope; a tensor's last use is the last scope in which an op reads or writes it; graph
   outputs live to the last scope. A kernel's scratch buffer lives in its op's scope only.
2. Buffers. A tensor needs a buffer when it has no data in the model (not constant), is not a
   variable (those go to the persistent tail) and has a non-zero size. Sizes are rounded up to
   ``ARENA_ALIGNMENT`` (16) bytes. Tensors come first in tensor-index order, then the scratch
   requests in the order the kernels made them.
3. Order. Buffers with an offline offset keep it and come first, in index order. The others are
   listed in *reverse* index order and then stably sorted by decreasing size, so that among
   buffers of one size the later-indexed goes first.
4. Placement. Each buffer in that order is put at the lowest offset where it fits between the
   already-placed buffers that overlap it in time, scanning them by increasing offset (the
   first gap that is large enough wins; otherwise it goes after the last one).
5. The head is the largest ``offset + size`` of all placed buffers.

A model with control flow (``IF``, ``WHILE``, ``CALL_ONCE``: several subgraphs) is planned as
TFLM plans it, all subgraphs in one arena with one clock (``MarkAllocationLifetimes`` and
``MarkSubgraphLifetimesIfNecessary`` in ``micro_allocation_info.cc``): the walk starts at
subgraph 0, and at a control-flow op, after its outputs are created, the clock steps once per
subgraph the op runs (IF: then, else; WHILE: cond, body; CALL_ONCE: init) and walks that subgraph
in turn, its inputs created and used at the scope it starts in, its outputs used at the scope it
ends in. The op's inputs and outputs, and its scratch buffers, then live until the scope after its
last subgraph. Buffers are added subgraph by subgraph in tensor order, then every scratch request
(kernels prepare subgraph 0's ops first, then subgraph 1's, ...). A subgraph no op runs keeps the
lifetime (-1, -1), and is still placed.

The same module gives the liveness lower bound (the largest total size of buffers alive in one
scope, a floor no planner can beat) and the per-op live-memory profile.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from toolchain.ir.graph import Graph

# TFLM aligns every arena buffer to 16 bytes (MicroArenaBufferAlignment() in
# tensorflow/lite/micro/micro_arena_constants.h).
ARENA_ALIGNMENT = 16

ONLINE = -1  # offline offset value meaning "let the planner choose"


def align_up(n: int, alignment: int = ARENA_ALIGNMENT) -> int:
    return (n + alignment - 1) // alignment * alignment


@dataclass(frozen=True)
class ScratchRequest:
    """A kernel's request for a temporary buffer during one op (``RequestScratchBufferInArena``)."""

    op_index: int
    size_bytes: int
    why: str = ""
    subgraph: int = 0  # the subgraph whose op made it (control flow)


@dataclass(frozen=True)
class Buffer:
    """One arena buffer: a tensor (``tensor >= 0``) or a scratch request (``tensor == -1``)."""

    size_bytes: int  # aligned
    first_scope: int
    last_scope: int
    tensor: int = -1
    scratch: ScratchRequest | None = None
    offline_offset: int = ONLINE
    subgraph: int = 0  # the tensor's subgraph (control flow); 0 for the main graph

    def overlaps(self, other: "Buffer") -> bool:
        return not (self.first_scope > other.last_scope or other.first_scope > self.last_scope)

    @property
    def label(self) -> str:
        where = f"s{self.subgraph}:" if self.subgraph else ""
        if self.tensor >= 0:
            return f"{where}t{self.tensor}"
        if self.scratch is None:
            return "scratch"
        return f"scratch@{'s%d:' % self.scratch.subgraph if self.scratch.subgraph else ''}op{self.scratch.op_index}"


def tensor_lifetimes(graph: Graph) -> dict[int, tuple[int, int]]:
    """First and last allocation scope of every tensor an op or the graph touches (step 1)."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}

    def created(t: int, scope: int) -> None:
        first[t] = scope
        last[t] = scope

    for t in graph.inputs:
        created(t, 0)
    for t in graph.outputs:
        created(t, 0)
    for i, op in enumerate(graph.ops):
        scope = i + 1
        for t in op.outputs:
            created(t, scope)
        for t in op.inputs:
            if t >= 0:
                last[t] = scope
                first.setdefault(t, -1)  # read but never created: TFLM leaves it at -1
        for t in op.outputs:
            last[t] = scope
    end = len(graph.ops)
    for t in graph.outputs:
        last[t] = end
    return {t: (first[t], last[t]) for t in first}


#: The ops that run other subgraphs; ``Op.attrs["subgraphs"]`` lists them in the order TFLM walks
#: them (:mod:`toolchain.tflite.reader`).
CONTROL_FLOW_OPS = frozenset({"IF", "WHILE", "CALL_ONCE"})


def called_subgraphs(op) -> tuple[int, ...]:
    """The subgraph indices a control-flow op runs (none for any other op)."""
    return tuple(op.attrs.get("subgraphs", ())) if op.kind in CONTROL_FLOW_OPS else ()


@dataclass
class ModelLifetimes:
    """One clock over every subgraph (control flow): each subgraph's tensor lifetimes, the scopes
    each op's scratch buffers live in, and the number of scopes."""

    tensors: list[dict[int, tuple[int, int]]]
    ops: dict[tuple[int, int], tuple[int, int]]
    num_scopes: int


def model_lifetimes(graph: Graph) -> ModelLifetimes:
    """Lifetimes of the tensors of every subgraph of ``graph`` as TFLM's AllocationInfoBuilder
    marks them: a walk from subgraph 0 into the subgraphs its control-flow ops run. The reader
    refuses a model whose subgraphs run themselves (TFLM would recurse without end)."""
    subgraphs = [graph, *graph.subgraphs]
    first: list[dict[int, int]] = [{} for _ in subgraphs]
    last: list[dict[int, int]] = [{} for _ in subgraphs]
    op_first: dict[tuple[int, int], int] = {}
    op_last: dict[tuple[int, int], int] = {}
    scope = 0

    def walk(k: int) -> None:
        nonlocal scope
        g, f, l = subgraphs[k], first[k], last[k]
        for t in g.inputs:
            f.setdefault(t, scope)
            l[t] = scope
        for i, op in enumerate(g.ops):
            scope += 1
            for t in op.outputs:
                f.setdefault(t, scope)
            start = scope
            for child in called_subgraphs(op):
                if 0 <= child < len(subgraphs):
                    scope += 1
                    walk(child)
            for t in op.inputs:
                if t >= 0:
                    l[t] = scope  # read but never created: its first scope stays -1, as in TFLM
            for t in op.outputs:
                l[t] = scope
            op_first.setdefault((k, i), start)
            op_last[(k, i)] = scope
        for t in g.outputs:
            f.setdefault(t, scope)
            l[t] = scope

    walk(0)
    tensors = [{t: (f.get(t, -1), l[t]) for t in l} for f, l in zip(first, last)]
    return ModelLifetimes(tensors, {key: (op_first[key], op_last[key]) for key in op_first}, scope + 1)


def _tensor_buffers(graph: Graph, lifetimes: dict[int, tuple[int, int]], subgraph: int = 0) -> list[Buffer]:
    offline = graph.offline_offsets
    # A VAR_HANDLE's output points at the kernel's OpData once it is prepared (var_handle.cc),
    # before TFLM plans the arena: it needs no buffer.
    handles = {t for op in graph.ops if op.kind == "VAR_HANDLE" for t in op.outputs}
    buffers = []
    for index, tensor in enumerate(graph.tensors):
        if index in handles:
            continue
        # A variable tensor lives in the tail, unless the offline plan places it (TFLM
        # micro_allocation_info.cc: an offline-planned variable needs allocating in the head).
        placed_offline = offline is not None and index < len(offline) and offline[index] != ONLINE
        if tensor.is_constant or (tensor.is_variable and not placed_offline) or tensor.nbytes == 0:
            continue
        if index not in lifetimes:
            # TFLM gives a tensor no op touches the lifetime (-1, -1); it is still placed.
            first, last = -1, -1
        else:
            first, last = lifetimes[index]
        buffers.append(
            Buffer(
                size_bytes=align_up(tensor.nbytes),
                first_scope=first,
                last_scope=last,
                tensor=index,
                offline_offset=offline[index] if offline else ONLINE,
                subgraph=subgraph,
            )
        )
    return buffers


def arena_buffers(graph: Graph, scratch: list[ScratchRequest] | tuple = ()) -> list[Buffer]:
    """The buffers TFLM plans for ``graph``, in the order it adds them (step 2); with control
    flow, those of every subgraph (``ScratchRequest.subgraph`` says whose op made a request)."""
    if graph.subgraphs:
        return _model_buffers(graph, scratch, model_lifetimes(graph))
    buffers = _tensor_buffers(graph, tensor_lifetimes(graph))
    for request in scratch:
        scope = request.op_index + 1
        buffers.append(Buffer(align_up(request.size_bytes), scope, scope, scratch=request))
    return buffers


def _model_buffers(graph: Graph, scratch, lifetimes: ModelLifetimes) -> list[Buffer]:
    buffers = []
    for k, sub in enumerate([graph, *graph.subgraphs]):
        buffers += _tensor_buffers(sub, lifetimes.tensors[k], k)
    for request in scratch:
        # A request of an op the walk never reaches keeps TFLM's (-1, -1).
        first, last = lifetimes.ops.get((request.subgraph, request.op_index), (-1, -1))
        buffers.append(Buffer(align_up(request.size_bytes), first, last, scratch=request))
    return buffers


def greedy_offsets(buffers: list[Buffer]) -> list[int]:
    """Arena offset of each buffer as TFLM's greedy planner chooses it (steps 3 and 4)."""
    if not buffers:
        return []
    sizes = [b.size_bytes for b in buffers]
    firsts = [b.first_scope for b in buffers]
    lasts = [b.last_scope for b in buffers]
    offline = [i for i, b in enumerate(buffers) if b.offline_offset != ONLINE]
    online = [i for i in reversed(range(len(buffers))) if buffers[i].offline_offset == ONLINE]
    # Python's sort is stable, like TFLM's bubble sort, so equal sizes keep the reversed order.
    online.sort(key=lambda i: -sizes[i])

    offsets = [ONLINE] * len(buffers)
    placed: list[int] = []  # buffer indices sorted by offset; equal offsets keep insertion order
    placed_offsets: list[int] = []
    for i in offline + online:
        if buffers[i].offline_offset != ONLINE:
            candidate = buffers[i].offline_offset
        else:
            size, first, last = sizes[i], firsts[i], lasts[i]
            candidate = 0
            for j in placed:
                if firsts[j] > last or first > lasts[j]:
                    continue  # not alive at the same time
                if offsets[j] - candidate >= size:
                    break
                end = offsets[j] + sizes[j]
                if end > candidate:
                    candidate = end
        offsets[i] = candidate
        # TFLM inserts before the first entry with a strictly greater offset.
        pos = bisect.bisect_right(placed_offsets, candidate)
        placed.insert(pos, i)
        placed_offsets.insert(pos, candidate)
    return offsets


def head_bytes(buffers: list[Buffer], offsets: list[int]) -> int:
    return max((o + b.size_bytes for b, o in zip(buffers, offsets)), default=0)


def live_profile(buffers: list[Buffer], num_scopes: int) -> list[int]:
    """Total bytes of the buffers alive in each allocation scope 0..num_scopes-1."""
    profile = [0] * num_scopes
    for b in buffers:
        for scope in range(max(b.first_scope, 0), min(b.last_scope, num_scopes - 1) + 1):
            profile[scope] += b.size_bytes
    return profile


def check_no_overlap(buffers: list[Buffer], offsets: list[int]) -> None:
    """Raise ValueError if two buffers alive at once share arena bytes."""
    for i, a in enumerate(buffers):
        for j in range(i + 1, len(buffers)):
            b = buffers[j]
            if a.overlaps(b) and offsets[i] < offsets[j] + b.size_bytes and offsets[j] < offsets[i] + a.size_bytes:
                raise ValueError(f"{a.label} and {b.label} overlap in time and in the arena")


@dataclass
class MemoryPlan:
    """A placed arena: every buffer with its offset, and the figures derived from them."""

    buffers: list[Buffer]
    offsets: list[int]
    num_scopes: int
    planner: str = "tflm-greedy"
    profile: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.profile = live_profile(self.buffers, self.num_scopes)

    @property
    def head_bytes(self) -> int:
        return head_bytes(self.buffers, self.offsets)

    @property
    def lower_bound_bytes(self) -> int:
        """No plan can use less: the most bytes alive in any one scope."""
        return max(self.profile, default=0)

    @property
    def op_profile(self) -> list[int]:
        """Live bytes while each op runs (scopes 1..N)."""
        return self.profile[1:]

    def offset_of_tensor(self) -> dict[int, int]:
        """Arena offset of each planned tensor of the main graph (subgraph 0)."""
        return {b.tensor: o for b, o in zip(self.buffers, self.offsets) if b.tensor >= 0 and b.subgraph == 0}

    def render(self, width: int = 72) -> str:
        """A text picture of the plan, one row per scope (for ``--debug``)."""
        head = max(self.head_bytes, 1)
        lines = [f"arena head {self.head_bytes} B, lower bound {self.lower_bound_bytes} B ({self.planner})"]
        for i, (b, o) in enumerate(zip(self.buffers, self.offsets)):
            lines.append(f"  {i:3d} {b.label:>14}  size {b.size_bytes:8d}  offset {o:8d}  scopes {b.first_scope}..{b.last_scope}")
        for scope in range(self.num_scopes):
            row = ["."] * width
            for i, (b, o) in enumerate(zip(self.buffers, self.offsets)):
                if b.first_scope <= scope <= b.last_scope:
                    start, end = o * width // head, max((o + b.size_bytes) * width // head, o * width // head + 1)
                    for c in range(start, min(end, width)):
                        row[c] = "!" if row[c] != "." else "0123456789abcdefghijklmnopqrstuvwxyz"[i % 36]
            lines.append(f"{scope:4d} {''.join(row)} {self.profile[scope] / 1024:8.1f} KiB")
        return "\n".join(lines)


def plan_graph(graph: Graph, scratch: list[ScratchRequest] | tuple = ()) -> MemoryPlan:
    """Plan ``graph``'s arena head exactly as TFLM's greedy planner does."""
    if graph.subgraphs:  # one walk gives both the buffers and the number of scopes
        lifetimes = model_lifetimes(graph)
        buffers, scopes = _model_buffers(graph, scratch, lifetimes), lifetimes.num_scopes
    else:
        buffers, scopes = arena_buffers(graph, scratch), len(graph.ops) + 1
    return MemoryPlan(buffers, greedy_offsets(buffers), num_scopes=scopes)
