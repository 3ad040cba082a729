"""Peak SRAM of a model on a board: the TFLM arena, predicted.

``arena = head + tail``: the head is the greedy plan of every non-constant tensor and every
kernel scratch buffer (:mod:`toolchain.memory.planner`, :mod:`toolchain.memory.scratch`), the tail the
persistent allocations (:mod:`toolchain.memory.persistent`). ``scratch_bytes`` reports how much of the
bytes the board's kernel library's scratch buffers request; they are planned inside the head
(often in gaps between tensors), so ``arena = head + tail`` already counts them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from toolchain.ir.graph import Graph
from toolchain.memory.persistent import estimate_tail
from toolchain.memory.planner import MemoryPlan, plan_graph
from toolchain.memory.scratch import scratch_requests


@dataclass
class ArenaEstimate:
    arena_head_bytes: int
    arena_tail_bytes: int
    scratch_bytes: int
    lower_bound_bytes: int
    tail_exact: bool
    plan: MemoryPlan

    @property
    def arena_bytes(self) -> int:
        return self.arena_head_bytes + self.arena_tail_bytes

    def to_dict(self) -> dict:
        return {
            "arena_bytes": self.arena_bytes,
            "arena_head_bytes": self.arena_head_bytes,
            "arena_tail_bytes": self.arena_tail_bytes,
            "scratch_bytes": self.scratch_bytes,
            "lower_bound_bytes": self.lower_bound_bytes,
            "tail_exact": self.tail_exact,
        }


def estimate_arena(graph: Graph, pointer_bytes: int = 8, kernel_library: str = "reference") -> ArenaEstimate:
    """The arena TFLM needs for ``graph`` on a build with this pointer width and kernel library."""
    scratch = scratch_requests(graph, kernel_library, pointer_bytes)
    for k, sub in enumerate(graph.subgraphs, start=1):  # control flow: kernels prepare subgraph by subgraph
        scratch += [replace(r, subgraph=k) for r in scratch_requests(sub, kernel_library, pointer_bytes)]
    plan = plan_graph(graph, scratch)
    tail = estimate_tail(graph, pointer_bytes, scratch_count=len(scratch), kernel_library=kernel_library)
    return ArenaEstimate(
        arena_head_bytes=plan.head_bytes,
        arena_tail_bytes=tail.arena_tail_bytes,
        scratch_bytes=sum(b.size_bytes for b in plan.buffers if b.scratch is not None),
        lower_bound_bytes=plan.lower_bound_bytes,
        tail_exact=tail.exact,
        plan=plan,
    )


def estimate_for_target(graph: Graph, target) -> ArenaEstimate:
    return estimate_arena(graph, target.pointer_bytes, target.kernel_library)
