"""The memory balance: the ``moofa`` layout's widths, solved so that every stage needs the same memory.

- ``moofa``: the memory-balanced layout of the MOOFA paper (Girard et al.), *solved*: starting
  from seed widths (first stage 24; under the ``paper`` definition also first conv 3 and first
  block 8, the published stem; under ``sram`` the stem is solved too), each following stage gets the
  widest channel count whose per-stage memory does not exceed the memory before it, so that
  memory stays constant across the network; expand ratios {2, 3, 4}.

The memory a stage "has" is measured on a reference block (expand ``ref_expand``, kernel
``ref_kernel``, stride 1, full width) at the stage's resolution, under one of two definitions:

- ``paper``: elements, as the paper counts them: a layer's input + output + weights, and a
  stage's memory is the larger of its depthwise layer ``e·c·s² + e·c·k² + e·c·s²`` and its
  expansion layer ``c·s² + e·c² + e·c·s²``. Spatial sizes halve as real numbers and the final
  expand and feature mix widths come from two more halvings, exactly as the authors' code
  (the released MOOFA code), which gives back the published widths at 224×224 RGB.
- ``sram``: int8 bytes: the liveness peak of the reference block's real int8 graph (what the
  TFLM arena must hold while it runs: 16-byte aligned tensors, residual input, squeeze-excite
  intermediates, h_swish outputs), at the real SAME-padded sizes. Every stage is held to the
  first stage's memory (no drift from rounding), widths round *down* to multiples of 8 so that
  none exceeds it, and the final expand is solved the same way on the head's ops (the feature
  mix takes its width). The stem is solved under the same cap: the first conv gets the widest
  width whose graph (input image, conv output, h_swish output) fits it, then the first block the
  widest whose graph (depthwise block on the first conv's output) fits it; only the first stage's
  width (24) is a seed. The ``paper`` definition keeps the published stem (3 and 8). With ``flash_budget_bytes`` the largest subnet's flash (all weights) is
  a second constraint: the memory level of the solved stages is lowered by bisection until it
  fits.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache

from moofa.arch.blocks import FIRST_BLOCK_KERNEL, FIRST_CONV_KERNEL, make_block, make_divisible, same_output_size
from moofa.arch.layouts import (
    MOOFA_DEPTHS,
    MOOFA_EXPANDS,
    MOOFA_FIRST_BLOCK,
    MOOFA_FIRST_CONV_ACT,
    MOOFA_FIRST_CONV_STRIDE,
    MOOFA_KERNELS,
    MOOFA_SEED_WIDTHS,
    MOOFA_STAGES,
    REFERENCE_RESOLUTION,
    Layout,
    StageSpec,
    adapt_strides,
    check_inputs,
)
from moofa.arch.space import SearchSpace
from moofa.cost.flash import flash_estimate
from moofa.cost.lowering import GraphWriter, block_graph, subnet_graph
from toolchain.errors import InputError
from toolchain.memory.planner import plan_graph


# --- memory definitions --------------------------------------------------------------------------
def paper_stage_memory(c: float, s: float, e: float, k: int) -> float:
    """A stage's memory in the paper's elements: max(depthwise layer, expansion layer)."""
    depthwise = e * c * s * s + e * c * k * k + e * c * s * s
    expansion = c * s * s + e * c * c + e * c * s * s
    return max(depthwise, expansion)


def paper_solve_channels(target: float, s: float, e: float, k: int) -> float:
    """The largest real c whose paper memory at size s is ``target`` (both layers' limits)."""
    c_depthwise = target / (e * (2 * s * s + k * k))
    b = s * s * (1 + e)  # expansion: e·c² + (1 + e)·s²·c - target = 0
    c_expansion = (-b + math.sqrt(b * b + 4 * e * target)) / (2 * e)
    return min(c_depthwise, c_expansion)


def _reference_block(c: int, size: int, st_act: str, st_se: bool, e, k: int):
    return make_block("reference", c, c, e, k, 1, st_act, st_se, (size, size))


@lru_cache(maxsize=4096)
def sram_block_memory(c: int, size: int, act: str, se: bool, e, k: int) -> int:
    """Liveness peak (int8 bytes, 16-byte aligned) of a stride-1 reference block's graph."""
    return plan_graph(block_graph(_reference_block(c, size, act, se, e, k))).lower_bound_bytes


@lru_cache(maxsize=4096)
def sram_head_memory(c_last: int, size: int, c_final: int) -> int:
    """Liveness peak of the head's ops when the final expand and feature mix are ``c_final``."""
    w = GraphWriter("head")
    x = w.activation("features", (1, size, size, c_last))
    w.graph.inputs.append(x)
    h = w.conv(x, "final_expand", c_final, 1, 1, "h_swish")
    h = w.mean(h, "pool")
    h = w.conv(h, "feature_mix", c_final, 1, 1, "h_swish")
    w.graph.outputs.append(h)
    return plan_graph(w.graph).lower_bound_bytes


@lru_cache(maxsize=4096)
def sram_stem_memory(in_channels: int, resolution: int, c_first: int, stride: int, act: str) -> int:
    """Liveness peak of the first conv alone (input image, conv output, its activation)."""
    w = GraphWriter("stem")
    x = w.activation("input", (1, resolution, resolution, in_channels))
    w.graph.inputs.append(x)
    w.graph.outputs.append(w.conv(x, "first_conv", c_first, FIRST_CONV_KERNEL, stride, act))
    return plan_graph(w.graph).lower_bound_bytes


@lru_cache(maxsize=4096)
def sram_first_block_memory(c_first: int, size: int, c_block: int, stride: int, act: str, se: bool) -> int:
    """Liveness peak of the first block (depthwise on the first conv's output, then project)."""
    b = make_block("first_block", c_first, c_block, 1, FIRST_BLOCK_KERNEL, stride, act, se, (size, size), first_block=True)
    return plan_graph(block_graph(b)).lower_bound_bytes


def sram_stem_widths(cap: int, resolution: int, in_channels: int, strides: list[int]) -> tuple[int, int]:
    """First conv and first block widths: the widest multiples of 8 whose graphs fit ``cap``."""
    first = widest(lambda c: sram_stem_memory(in_channels, resolution, c, strides[0], MOOFA_FIRST_CONV_ACT) <= cap)
    size = same_output_size(resolution, strides[0])
    _, act, se = MOOFA_FIRST_BLOCK
    block = widest(lambda c: sram_first_block_memory(first, size, c, strides[1], act, se) <= cap)
    return first, block


def widest(fits, start: int = 8, limit: int = 1 << 14) -> int:
    """Largest multiple of 8 in [8, limit] with fits(c) (monotone); 8 if none."""
    lo, hi = start // 8, limit // 8
    if not fits(lo * 8):
        return lo * 8
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid * 8):
            lo = mid
        else:
            hi = mid - 1
    return lo * 8


def stage_memories(lay: Layout, memory: str, ref_expand, ref_kernel) -> tuple:
    """Each stage's memory under ``memory`` (paper: real-valued sizes; sram: SAME sizes)."""
    out = []
    if memory == "paper":
        s = lay.resolution / (lay.first_conv_stride * lay.first_block_stride)
        for st in lay.stages:
            s /= st.stride
            out.append(int(round(paper_stage_memory(st.width, s, ref_expand, ref_kernel))))
    else:
        for st, size in zip(lay.stages, lay.stage_sizes()):
            out.append(sram_block_memory(st.width, size, st.act, st.se, ref_expand, ref_kernel))
    return tuple(out)


def _moofa_layout(resolution, in_channels, num_classes, memory, strides, widths, final_expand, feature_mix,
                  seed_widths, stage_memory=(), notes="") -> Layout:
    """The moofa layout with these solved widths (everything else comes from the MOOFA table)."""
    return Layout(
        name="moofa",
        resolution=resolution,
        in_channels=in_channels,
        num_classes=num_classes,
        first_conv_width=seed_widths[0],
        first_conv_stride=strides[0],
        first_conv_act=MOOFA_FIRST_CONV_ACT,
        first_block_width=seed_widths[1],
        first_block_stride=strides[1],
        first_block_act=MOOFA_FIRST_BLOCK[1],
        first_block_se=MOOFA_FIRST_BLOCK[2],
        stages=tuple(StageSpec(w, s, a, se) for w, s, (_, a, se) in zip(widths, strides[2:], MOOFA_STAGES)),
        final_expand_width=final_expand,
        feature_mix_width=feature_mix,
        kernel_choices=MOOFA_KERNELS,
        expand_choices=MOOFA_EXPANDS,
        depth_choices=MOOFA_DEPTHS,
        memory=memory,
        stage_memory=stage_memory,
        notes=notes,
    )


def paper_widths(resolution: int, strides: list[int], first_stage: int, ref_expand, ref_kernel: int) -> list[int]:
    """The authors' loop: chain from the previous (rounded) stage, real-valued sizes, and two more
    halvings for the final expand and the feature mix. Returns the stage widths, final expand, feature mix."""
    stage_strides = strides[2:]
    s = resolution / (strides[0] * strides[1] * stage_strides[0])
    c = first_stage
    widths = [c]
    for stride in [*stage_strides[1:], 2, 2]:
        target = paper_stage_memory(c, s, ref_expand, ref_kernel)
        s /= stride
        c = make_divisible(paper_solve_channels(target, s, ref_expand, ref_kernel))
        widths.append(c)
    return widths


def sram_widths(cap: int, sizes: list[int], first_stage: int, ref_expand, ref_kernel: int) -> tuple[list[int], int]:
    """Stage widths (the first fixed, each later one the widest multiple of 8 whose int8 reference
    block needs at most ``cap`` bytes) and the final expand width under the same cap."""
    widths = [first_stage]
    for i in range(1, len(sizes)):
        _, act, se = MOOFA_STAGES[i]
        widths.append(widest(lambda c, i=i, act=act, se=se: sram_block_memory(c, sizes[i], act, se, ref_expand, ref_kernel) <= cap))
    max_final = max(MOOFA_EXPANDS)  # the final expand is at most the last stage's widest expansion
    final = widest(lambda c: sram_head_memory(widths[-1], sizes[-1], c) <= cap, limit=max(8, max_final * widths[-1]))
    return widths, final


def lowest_level_that_fits(level: int, flash_of_level, flash_budget_bytes: int) -> int:
    """Bisection on the memory level of the solved stages: the highest one whose largest subnet's
    flash fits ``flash_budget_bytes`` (0 if none)."""
    lo, hi = 0, level
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if flash_of_level(mid) <= flash_budget_bytes:
            lo = mid
        else:
            hi = mid - 1
    return lo


def solve_moofa_layout(
    resolution: int = REFERENCE_RESOLUTION,
    in_channels: int = 3,
    num_classes: int = 1000,
    memory: str = "paper",
    ref_expand=4,
    ref_kernel: int = 7,
    seed_widths: tuple[int, int, int] = MOOFA_SEED_WIDTHS,
    flash_budget_bytes: int | None = None,
) -> Layout:
    """The memory-balanced layout for this input, solved stage by stage (module docstring)."""
    check_inputs(resolution, in_channels, memory)
    strides = adapt_strides([MOOFA_FIRST_CONV_STRIDE, MOOFA_FIRST_BLOCK[0], *(s[0] for s in MOOFA_STAGES)], resolution)
    first_stage = seed_widths[2]

    def layout(widths, final_expand, feature_mix, stage_memory=(), notes="", stem=seed_widths[:2]):
        return _moofa_layout(resolution, in_channels, num_classes, memory, strides, widths, final_expand, feature_mix,
                             (*stem, first_stage), stage_memory, notes)

    if memory == "paper":
        if flash_budget_bytes is not None:
            raise InputError("layout: a flash budget needs --memory sram (the paper's memory counts no total weights)")
        widths = paper_widths(resolution, strides, first_stage, ref_expand, ref_kernel)
        lay = layout(widths[:-2], widths[-2], widths[-1])
        return replace(lay, stage_memory=stage_memories(lay, "paper", ref_expand, ref_kernel))

    sizes = []
    size = same_output_size(same_output_size(resolution, strides[0]), strides[1])
    for st in strides[2:]:
        size = same_output_size(size, st)
        sizes.append(size)
    _, act0, se0 = MOOFA_STAGES[0]
    level = sram_block_memory(first_stage, sizes[0], act0, se0, ref_expand, ref_kernel)
    stem = sram_stem_widths(level, resolution, in_channels, strides)  # the first stage's level, whatever the flash

    def at_level(cap: int) -> Layout:
        widths, final = sram_widths(cap, sizes, first_stage, ref_expand, ref_kernel)
        return layout(widths, final, final, stem=stem)

    lay = at_level(level)
    notes = f"balanced at {level} B per stage"
    if flash_budget_bytes is None:
        notes += "; no flash budget, so nothing but SRAM limits the widths (give one to bound the weights)"
    elif flash_of_largest(lay) > flash_budget_bytes:
        lowered = lowest_level_that_fits(level, lambda cap: flash_of_largest(at_level(cap)), flash_budget_bytes)
        lay = at_level(lowered)
        if flash_of_largest(lay) > flash_budget_bytes:
            raise InputError(
                f"layout: even the narrowest moofa layout needs {flash_of_largest(lay)} B of flash, over the budget of {flash_budget_bytes} B"
            )
        notes = f"balanced at {level} B per stage, lowered to {lowered} B after stage 1 to fit {flash_budget_bytes} B of flash"
    return replace(lay, stage_memory=stage_memories(lay, "sram", ref_expand, ref_kernel), notes=notes)


def flash_of_largest(lay: Layout) -> int:
    """Flash bytes (weights, quantization, tables) of the layout's largest subnet."""
    return flash_estimate(subnet_graph(lay, SearchSpace(lay).max_config()))
