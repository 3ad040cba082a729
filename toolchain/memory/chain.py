"""TFLM's greedy arena plan of a chain of pieces, computed piece by piece.

TFLM's planner (:mod:`toolchain.memory.planner`) is global: buffers are placed largest first, each at
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

The search prices thousands of subnets per second, so a subnet costs one memo look-up per
boundary (:class:`BoundaryMemo`, keyed on the two pieces and the neighbouring offsets that
precede the boundary; shared by every subnet, since pieces repeat across subnets): the entry
holds the boundary's offset and the highest end of the piece(s) it completes, and the head is
the largest of those. :func:`chain_steps` (the boundaries in TFLM's order, cached per chain
shape by the caller) tells which neighbouring offsets each look-up reads.

TFLM's order between two buffers of one piece is the same in the piece's own graph as in the
whole graph (tensors keep their relative index; scratch buffers come after all tensors in
both), so each piece is modelled from its standalone graph (:func:`toolchain.memory.planner.arena_buffers`).
TFLM's first-fit scan returns the lowest offset, among 0 and the ends of the placed buffers
alive at the same time, that clears all of them; :func:`_first_fit` is that scan.
The tests compare the result with :func:`toolchain.memory.planner.plan_graph` on random subnets.
"""

from __future__ import annotations

from toolchain.ir.graph import Graph
from toolchain.memory.planner import ScratchRequest, arena_buffers


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
        order.sort(key=lambda i: -self.sizes[i])  # stable, as toolchain.memory.planner.greedy_offsets
        self.order = order
        self.neighbours = [
            [j for j in range(n) if j != i and not (spans[i][0] > spans[j][1] or spans[j][0] > spans[i][1])] for i in range(n)
        ]
        rank = {i: r for r, i in enumerate(order)}
        # The neighbours placed before each buffer: all a first fit has to clear.
        self._earlier = [[j for j in self.neighbours[i] if rank[j] < rank[i]] for i in range(n)]
        by_tensor = {b.tensor: i for i, b in enumerate(buffers) if b.tensor >= 0}
        self.left = by_tensor[graph.inputs[0]] if left else None
        self.right = by_tensor[graph.outputs[0]] if right else None
        both = self.left is not None and self.right is not None
        # Whether the other boundary is placed before this one (only then does its offset
        # matter): the input before the output, or the output before the input.
        self.input_first = both and rank[self.left] < rank[self.right]
        self.output_first = both and rank[self.right] < rank[self.left]
        self.left_size = self.sizes[self.left] if self.left is not None else 0
        self.right_size = self.sizes[self.right] if self.right is not None else 0
        # Buffers ahead of both boundaries in TFLM's order do not depend on them: placed once.
        boundaries = [rank[b] for b in (self.left, self.right) if b is not None]
        self._free = self._place_from({}, order[: min(boundaries, default=n)], {})
        # What the boundary memo keys this piece by as the left one (BoundaryMemo.share).
        self.right_key = self
        self._before_left: dict = {}
        self._before_right: dict = {}
        self._full: dict = {}
        self._canonical: dict = {}

    def _place_from(self, offsets: dict[int, int], buffers: list[int], fixed: dict[int, int]) -> dict[int, int]:
        """Place ``buffers`` (a stretch of TFLM's order) after those in ``offsets``."""
        sizes, earlier = self.sizes, self._earlier
        for i in buffers:
            if i in fixed:
                offsets[i] = fixed[i]
            else:
                placed = [(offsets[j], sizes[j]) for j in earlier[i]]
                offsets[i] = _first_fit(sizes[i], placed) if placed else 0
        return offsets

    def _place(self, stop: int | None, fixed: dict[int, int]) -> dict[int, int]:
        """Offsets of the buffers TFLM places before ``stop`` (all if ``None``), boundaries
        in ``fixed`` at their given offsets."""
        rest = self.order[len(self._free):]
        if stop is not None:
            rest = rest[: rest.index(stop)]
        return self._place_from(dict(self._free), rest, fixed)

    def before(self, side: str, other_offset: int | None) -> tuple[tuple[int, int], ...]:
        """(offset, size) of this piece's buffers placed before boundary ``side`` ("left" or
        "right") and overlapping it, sorted, given the other boundary's offset (used only if
        the other boundary precedes it, which is exactly when the caller knows it). Equal
        answers are one object, so that callers can memoize on them by identity."""
        left = side == "left"
        if not (self.output_first if left else self.input_first):
            other_offset = None
        memo = self._before_left if left else self._before_right
        hit = memo.get(other_offset)
        if hit is None:
            stop, other = (self.left, self.right) if left else (self.right, self.left)
            fixed = {other: other_offset} if other is not None and other_offset is not None else {}
            offsets = self._place(stop, fixed)
            near = set(self.neighbours[stop])
            hit = tuple(sorted((o, self.sizes[j]) for j, o in offsets.items() if j in near))
            hit = memo[other_offset] = self._canonical.setdefault(hit, hit)
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


def boundary_order(pieces: list) -> list[int]:
    """TFLM's order of the chain's boundaries: larger first; of equal size the later first."""
    sizes = [0] + [pieces[i].left_size for i in range(1, len(pieces))]
    return sorted(range(1, len(pieces)), key=lambda i: (-sizes[i], -i))


def chain_steps(pieces: list) -> tuple[tuple[int, int, int], ...]:
    """The chain's boundaries in TFLM's order, each as ``(i, a, b)``: boundary ``i`` and the
    neighbouring boundaries whose offsets its placement reads -- ``a = i - 1`` if that one is
    placed before it (``pieces[i - 1].input_first``), ``b = i + 1`` likewise
    (``pieces[i].output_first``), else ``len(pieces) + 1``, a slot that stays ``None``.

    It depends only on the boundary sizes and the pieces' two flags, so a caller caches it per
    chain shape (for subnets: per resolution and depths)."""
    skip = len(pieces) + 1
    return tuple(
        (i, i - 1 if pieces[i - 1].input_first else skip, i + 1 if pieces[i].output_first else skip)
        for i in boundary_order(pieces)
    )


class _Blockers:
    """Stands for every piece that places its output boundary the same way: its input is placed
    after its output, so all it contributes is its buffers placed before the output (``blockers``,
    offset-independent), and the boundary memo has one entry for all of them."""

    __slots__ = ("blockers",)

    def __init__(self, blockers):
        self.blockers = blockers


class BoundaryMemo(dict):
    """``memo[left.right_key, right, left_offset, right_offset]``: where TFLM places the
    boundary between pieces ``left`` and ``right`` given the neighbouring boundaries' offsets
    that precede it, and the highest end of whichever of the two pieces has both of its
    boundaries known once this one is placed (0 if neither). Computed on first use; one memo
    serves every chain built from the same pieces."""

    def __init__(self):
        super().__init__()
        # First-fit answers by (size, the two pieces' buffers in the way): many keys above
        # share one, so a new key mostly costs a few look-ups.
        self._fits: dict = {}
        self._blockers: dict = {}

    def share(self, piece) -> None:
        """Key ``piece`` as a left piece by what it contributes, where that is only its
        buffers (see _Blockers): pieces that differ only in buffers that never meet their
        output (a depthwise kernel's scratch, say) then share memo entries."""
        if piece.left is not None and piece.right is not None and not piece.input_first:
            blockers = piece.before("right", None)
            piece.right_key = self._blockers.setdefault(blockers, _Blockers(blockers))

    def __missing__(self, key):
        left, right, left_offset, right_offset = key
        # (The steps pass a neighbour's offset only where it precedes this boundary, which is
        # what before() and head() would otherwise check; their memos are read directly.)
        if type(left) is _Blockers:
            from_left = left.blockers
        else:
            from_left = left._before_right.get(left_offset) or left.before("right", left_offset)
        from_right = right._before_left.get(right_offset) or right.before("left", right_offset)
        size = right.left_size
        in_the_way = (size, id(from_left), id(from_right))  # canonical objects, kept alive by the pieces
        offset = self._fits.get(in_the_way)
        if offset is None:
            placed = from_left + from_right
            offset = self._fits[in_the_way] = _first_fit(size, placed) if placed else 0
        end = 0
        # A piece's two boundaries are placed one after the other; its own buffers are settled
        # when the later one is, and the earlier one's offset is then part of the key.
        if type(left) is not _Blockers and (left.left is None or left.input_first):
            end = left.head(left_offset, offset)
        if right.right is None or right.output_first:
            end = max(end, right.head(offset, right_offset))
        found = self[key] = (offset, end)
        return found


def chain_head_bytes(pieces: list, steps: tuple | None = None, memo: BoundaryMemo | None = None) -> int:
    """The head TFLM's greedy planner gives the chain ``pieces[0] -> ... -> pieces[-1]``
    (the first piece owns the graph input, the last the graph output).

    ``steps`` is :func:`chain_steps` if the caller has it cached. Each boundary is one look-up
    in ``memo`` (pass the same one across calls to share it), keyed on its two pieces and the
    neighbouring offsets that precede it; the entry holds the boundary's offset and the highest
    end of the piece(s) it completes, so every piece's end is counted exactly once (a middle
    piece at the later of its two boundaries, the first and last at their only one).
    """
    n = len(pieces)
    if n == 1:
        return pieces[0].head(None, None)
    if steps is None:
        steps = chain_steps(pieces)
    if memo is None:
        memo = BoundaryMemo()
    offsets: list = [None] * (n + 2)
    head = 0
    for i, a, b in steps:
        offsets[i], end = memo[pieces[i - 1].right_key, pieces[i], offsets[a], offsets[b]]
        if end > head:
            head = end
    return head
