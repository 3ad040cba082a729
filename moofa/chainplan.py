"""TFLM's greedy arena plan of a chain of pieces, computed piece by piece.

TFLM's planner (:mod:`toolchain.planner`) is global: buffers are placed largest first, each at
the lowest offset that clears the already-placed buffers alive at the same time. On a subnet
the plan does *not* always reach the liveness lower bound (on random OFA/MOOFA subnets it
exceeds it in roughly one case in ten, by up to ~11%), so the search cannot price with the
lower bound; it must replay the greedy plan. Replaying it on the whole graph costs
milliseconds. This module gets the same offsets from cached per-piece work.

Why it works. A subnet's graph is a chain of pieces (stem, blocks, head). A buffer inside a
piece is alive only while that piece runs, so it overlaps in time only the piece's other
buffers and the two *boundary* tensors: the piece's input ``x_j`` (the previous piece's
output) and its output ``x_{j+1}``. A buffer's offset depends only on the buffers that overlap
it in time and were placed before it, so:

1. once the boundary offsets are known, each piece's own placement is a function of its two
   boundary offsets -- cached per (piece, left offset, right offset);
2. a boundary ``x_i`` is placed after every buffer that precedes it in TFLM's order (larger, or
   as large with a higher index); those in the neighbouring pieces depend on ``x_{i-1}`` or
   ``x_{i+1}`` only if that boundary precedes ``x_i`` too. Visiting the boundaries in TFLM's
   order therefore finds every offset it needs already known -- each step a cached replay of
   one piece's placement up to the boundary.

TFLM's order between two buffers of one piece is the same in the piece's own graph as in the
whole graph (tensors keep their relative index; scratch buffers come after all tensors in
both), so each piece is modelled from its standalone graph (:func:`toolchain.planner.arena_buffers`).
TFLM's first-fit scan returns the lowest offset, among 0 and the ends of the placed buffers
alive at the same time, that clears all of them; :func:`_first_fit` is that scan.
The tests compare the result with :func:`toolchain.planner.plan_graph` on random subnets.
"""

from __future__ import annotations

from toolchain.graph import Graph
from toolchain.planner import ScratchRequest, arena_buffers


def _first_fit(size: int, placed: list[tuple[int, int]]) -> int:
    """TFLM's scan: the first gap, in offset order, among ``placed`` (offset, size) pairs."""
    candidate = 0
    for offset, other in sorted(placed):
        if offset - candidate >= size:
            break
        candidate = max(candidate, offset + other)
    return candidate


class PieceModel:
    """One piece's buffers in TFLM's placement order, with its boundary buffers marked.

    ``left`` is the buffer of the piece's input tensor (``None`` when the input is the
    graph's own, as for the stem), ``right`` the buffer of its output (``None`` for the head).
    """

    def __init__(self, graph: Graph, scratch: list[ScratchRequest] | tuple = (), left: bool = True, right: bool = True):
        buffers = arena_buffers(graph, scratch)
        self.sizes = [b.size_bytes for b in buffers]
        spans = [(b.first_scope, b.last_scope) for b in buffers]
        n = len(buffers)
        # The liveness lower bound of the piece: most bytes alive while one of its ops runs.
        scopes = range(1, len(graph.ops) + 1)
        self.lower_bound_bytes = max(sum(sz for sz, (a, b) in zip(self.sizes, spans) if a <= t <= b) for t in scopes)
        order = list(reversed(range(n)))
        order.sort(key=lambda i: -self.sizes[i])  # stable, as toolchain.planner.greedy_offsets
        self.order = order
        self.neighbours = [
            [j for j in range(n) if j != i and not (spans[i][0] > spans[j][1] or spans[j][0] > spans[i][1])] for i in range(n)
        ]
        by_tensor = {b.tensor: i for i, b in enumerate(buffers) if b.tensor >= 0}
        self.left = by_tensor[graph.inputs[0]] if left else None
        self.right = by_tensor[graph.outputs[0]] if right else None
        rank = {i: r for r, i in enumerate(order)}
        # Whether the other boundary is placed before this one (only then does its offset matter).
        self._other_first = {
            "left": self.left is not None and self.right is not None and rank[self.right] < rank[self.left],
            "right": self.left is not None and self.right is not None and rank[self.left] < rank[self.right],
        }
        # The same two flags as plain attributes, for chain_head_bytes's inner loop.
        self.output_first = self._other_first["left"]
        self.input_first = self._other_first["right"]
        self._partial: dict = {}
        self._full: dict = {}

    @property
    def left_size(self) -> int:
        return self.sizes[self.left]

    @property
    def right_size(self) -> int:
        return self.sizes[self.right]

    def _place(self, stop: int | None, fixed: dict[int, int]) -> dict[int, int]:
        offsets: dict[int, int] = {}
        sizes, neighbours = self.sizes, self.neighbours
        for i in self.order:
            if i == stop:
                break
            if i in fixed:
                offsets[i] = fixed[i]
                continue
            placed = [(offsets[j], sizes[j]) for j in neighbours[i] if j in offsets]
            offsets[i] = _first_fit(sizes[i], placed) if placed else 0
        return offsets

    def before(self, side: str, other_offset: int | None) -> list[tuple[int, int]]:
        """(offset, size) of this piece's buffers placed before boundary ``side`` ("left" or
        "right") and overlapping it, given the other boundary's offset (used only if the other
        boundary precedes it, which is exactly when the caller knows it)."""
        if not self._other_first[side]:
            other_offset = None
        key = (side, other_offset)
        hit = self._partial.get(key)
        if hit is None:
            stop, other = (self.left, self.right) if side == "left" else (self.right, self.left)
            fixed = {other: other_offset} if other is not None and other_offset is not None else {}
            offsets = self._place(stop, fixed)
            near = set(self.neighbours[stop])
            hit = [(o, self.sizes[j]) for j, o in offsets.items() if j in near]
            self._partial[key] = hit
        return hit

    def head(self, left_offset: int | None, right_offset: int | None) -> int:
        """Highest end of this piece's buffers once both boundaries sit at the given offsets."""
        key = (left_offset, right_offset)
        hit = self._full.get(key)
        if hit is None:
            fixed = {}
            if self.left is not None:
                fixed[self.left] = left_offset
            if self.right is not None:
                fixed[self.right] = right_offset
            offsets = self._place(None, fixed)
            hit = max((o + self.sizes[i] for i, o in offsets.items()), default=0)
            self._full[key] = hit
        return hit


class ChainPiece:
    """A chain of pieces seen as one piece (its boundaries: the first piece's input and the
    last piece's output), so that a whole stage is resolved once per pair of boundary offsets
    and a subnet's top-level chain has only the few boundaries between stages."""

    def __init__(self, pieces: list, memo: dict | None = None):
        self.pieces = pieces
        self.memo = {} if memo is None else memo  # boundary offsets, shareable between chains
        k = len(pieces)
        self.left, self.right = pieces[0].left, pieces[-1].right
        self.left_size = pieces[0].left_size if self.left is not None else 0
        self.right_size = pieces[-1].right_size if self.right is not None else 0
        # Internal boundary m (1..k-1) is pieces[m-1]'s output, in TFLM's order.
        self.sizes = [0] + [pieces[m].left_size for m in range(1, k)]
        self.order = boundary_order(pieces)
        both = self.left is not None and self.right is not None
        # Of this piece's own two boundaries the output (higher index) goes first if not smaller.
        self.output_first = both and self.right_size >= self.left_size
        self.input_first = both and not self.output_first
        self._partial: dict = {}
        self._full: dict = {}

    def _precedes(self, m: int, side: str) -> bool:
        """Whether internal boundary m is placed before this piece's boundary ``side``."""
        if side == "left":
            return self.sizes[m] >= self.left_size  # m has the higher index
        return self.sizes[m] > self.right_size

    def _resolve(self, left_offset, right_offset, side: str | None) -> list:
        pieces, sizes = self.pieces, self.sizes
        k = len(pieces)
        offsets: list = [None] * (k + 1)
        offsets[0], offsets[k] = left_offset, right_offset
        for m in self.order:
            if side is not None and not self._precedes(m, side):
                continue
            left, right = pieces[m - 1], pieces[m]
            key = (left, right, offsets[m - 1] if left.input_first else None, offsets[m + 1] if right.output_first else None)
            o = self.memo.get(key)
            if o is None:
                placed = left.before("right", key[2]) + right.before("left", key[3])
                o = self.memo[key] = _first_fit(sizes[m], placed) if placed else 0
            offsets[m] = o
        return offsets

    def before(self, side: str, other_offset: int | None) -> list[tuple[int, int]]:
        """As :meth:`PieceModel.before`: the buffers placed before boundary ``side`` that
        overlap it (they all belong to the end piece on that side)."""
        if not (self.output_first if side == "left" else self.input_first):
            other_offset = None
        key = (side, other_offset)
        hit = self._partial.get(key)
        if hit is None:
            k = len(self.pieces)
            if side == "left":
                offsets = self._resolve(None, other_offset, "left")
                first = self.pieces[0]
                hit = first.before("left", offsets[1] if first.output_first else None)
            else:
                offsets = self._resolve(other_offset, None, "right")
                last = self.pieces[-1]
                hit = last.before("right", offsets[k - 1] if last.input_first else None)
            self._partial[key] = hit
        return hit

    def head(self, left_offset: int | None, right_offset: int | None) -> int:
        key = (left_offset, right_offset)
        hit = self._full.get(key)
        if hit is None:
            offsets = self._resolve(left_offset, right_offset, None)
            hit = self._full[key] = max(p.head(offsets[m], offsets[m + 1]) for m, p in enumerate(self.pieces))
        return hit


def boundary_order(pieces: list) -> list[int]:
    """TFLM's order of the chain's boundaries: larger first; of equal size the later first."""
    sizes = [0] + [pieces[i].left_size for i in range(1, len(pieces))]
    return sorted(range(1, len(pieces)), key=lambda i: (-sizes[i], -i))


def chain_head_bytes(pieces: list, order: list[int] | None = None, memo: dict | None = None) -> int:
    """The head TFLM's greedy planner gives the chain ``pieces[0] -> ... -> pieces[-1]``
    (the first piece owns the graph input, the last the graph output).

    ``order`` is :func:`boundary_order` if the caller has it cached (it depends only on the
    boundary sizes). Each boundary's offset is memoized on (its two pieces, the neighbouring
    boundary offsets that precede it) in ``memo`` (pass the same dict across calls to share
    it), each piece's highest end on its two boundary offsets.
    """
    n = len(pieces)
    if order is None:
        order = boundary_order(pieces)
    offsets: list = [None] * (n + 1)
    if memo is None:
        memo = {}
    get = memo.get
    for i in order:
        left, right = pieces[i - 1], pieces[i]
        key = (left, right, offsets[i - 1] if left.input_first else None, offsets[i + 1] if right.output_first else None)
        o = get(key)
        if o is None:
            placed = left.before("right", key[2]) + right.before("left", key[3])
            o = memo[key] = _first_fit(right.left_size, placed) if placed else 0
        offsets[i] = o
    head = 0
    left_offset = None
    for j, p in enumerate(pieces):
        right_offset = offsets[j + 1]
        end = p._full.get((left_offset, right_offset))
        if end is None:
            end = p.head(left_offset, right_offset)
        if end > head:
            head = end
        left_offset = right_offset
    return head
