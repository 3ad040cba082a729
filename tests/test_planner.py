"""The planner on hand-built graphs whose plans are worked out by hand below."""

import pytest

from toolchain.ir.graph import Graph, Tensor
from toolchain.memory.planner import (
    ARENA_ALIGNMENT,
    Buffer,
    ScratchRequest,
    align_up,
    arena_buffers,
    check_no_overlap,
    greedy_offsets,
    plan_graph,
    tensor_lifetimes,
)


def chain(*sizes: int) -> Graph:
    """x0 -> op -> x1 -> op -> x2 ...: each op reads the previous tensor, writes the next."""
    g = Graph([], [], [], [])
    for i, n in enumerate(sizes):
        g.add_tensor(Tensor(f"x{i}", (n,), "int8"))
    for i in range(len(sizes) - 1):
        w = g.add_tensor(Tensor(f"w{i}", (4,), "int8", is_constant=True))
        g.add_op("CONV_2D", [i, w], [i + 1])
    g.inputs, g.outputs = [0], [len(sizes) - 1]
    return g


def test_align_up_is_16_bytes():
    assert ARENA_ALIGNMENT == 16
    assert [align_up(n) for n in (0, 1, 16, 17, 33)] == [0, 16, 16, 32, 48]


def test_lifetimes_follow_tflm_allocation_scopes():
    g = chain(100, 200, 300)
    # input created at scope 0, read by op 0 (scope 1); x1 made in scope 1, read in scope 2;
    # the graph output lives to the last scope.
    # (weights are read but never created: TFLM leaves their first scope at -1.)
    activations = {t: life for t, life in tensor_lifetimes(g).items() if not g.tensors[t].is_constant}
    assert activations == {0: (0, 1), 1: (1, 2), 2: (2, 2)}


def test_constants_take_no_arena_and_sizes_are_aligned():
    buffers = arena_buffers(chain(100, 200, 300))
    assert [(b.tensor, b.size_bytes) for b in buffers] == [(0, 112), (1, 208), (2, 304)]


def test_chain_plan_by_hand():
    # Order: sizes descending -> x2 (304), x1 (208), x0 (112).
    # x2 at 0. x1 overlaps x2 (scope 2): gap before x2 is 0 -> after it, 304.
    # x0 overlaps x1 only (scope 1): x1 at 304 leaves a gap of 304 >= 112 at 0 -> 0.
    plan = plan_graph(chain(100, 200, 300))
    assert plan.offsets == [0, 304, 0]
    assert plan.head_bytes == 512
    assert plan.lower_bound_bytes == 512  # scope 2: 208 + 304
    assert plan.op_profile == [112 + 208, 208 + 304]


def test_equal_sizes_place_the_later_tensor_first():
    # TFLM lists online buffers in reverse order before its stable sort, so among equal sizes
    # the highest index is placed first (at offset 0).
    plan = plan_graph(chain(64, 64, 64))
    assert plan.offsets == [0, 64, 0]


def test_first_gap_that_fits_wins():
    # Three buffers alive at once placed 0..96 with a hole; a fourth, later one drops in the hole.
    buffers = [
        Buffer(64, 0, 3, tensor=0),
        Buffer(48, 0, 1, tensor=1),
        Buffer(32, 0, 3, tensor=2),
        Buffer(32, 2, 3, tensor=3),
    ]
    # Order by size: 0 (64) at 0; 1 (48) after it at 64; 2 (32) at 112; 3 (32) overlaps 0 and 2
    # only, and the gap between 0's end (64) and 2 (112) is 48 >= 32 -> 64.
    offsets = greedy_offsets(buffers)
    assert offsets == [0, 64, 112, 64]
    check_no_overlap(buffers, offsets)


def test_offline_offsets_are_kept_and_planned_first():
    buffers = [Buffer(32, 0, 1, tensor=0, offline_offset=64), Buffer(32, 0, 1, tensor=1)]
    assert greedy_offsets(buffers) == [64, 0]


def test_scratch_lives_during_its_op_only():
    g = chain(100, 200, 300)
    plan = plan_graph(g, [ScratchRequest(op_index=0, size_bytes=40)])
    scratch = [b for b in plan.buffers if b.scratch]
    assert [(b.first_scope, b.last_scope, b.size_bytes) for b in scratch] == [(1, 1, 48)]
    assert plan.lower_bound_bytes == 512  # scope 1: 112 + 208 + 48 = 368 < 512
    check_no_overlap(plan.buffers, plan.offsets)


def test_residual_keeps_the_skip_tensor_alive():
    g = Graph([], [], [0], [3])
    for name in ("x", "a", "b", "y"):
        g.add_tensor(Tensor(name, (1, 8, 8, 16), "int8"))
    g.add_op("CONV_2D", [0], [1])
    g.add_op("CONV_2D", [1], [2])
    g.add_op("ADD", [0, 2], [3])
    assert tensor_lifetimes(g)[0] == (0, 3)
    plan = plan_graph(g)
    assert plan.lower_bound_bytes == 3 * 1024
    assert plan.head_bytes == 3 * 1024
    check_no_overlap(plan.buffers, plan.offsets)


def test_overlap_checker_catches_a_bad_plan():
    buffers = [Buffer(32, 0, 1, tensor=0), Buffer(32, 1, 2, tensor=1)]
    with pytest.raises(ValueError):
        check_no_overlap(buffers, [0, 16])
