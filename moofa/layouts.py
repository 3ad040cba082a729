"""Layouts are data: the widths, strides, activations and squeeze-excite of a supernet.

Two layouts exist:

- ``ofa``: OFA's MobileNetV3 supernet (Cai et al., ICLR 2020), typed in from
  reference-facts.md: first conv 16, first block 16, stages 24/40/80/112/160, final expand 960,
  feature mix 1280; expand ratios {3, 4, 6}.
- ``moofa``: the memory-balanced layout of the MOOFA paper (Girard et al.), *solved*: starting
  from seed widths (first conv 3, first block 8, first stage 24), each following stage gets the
  widest channel count whose per-stage memory does not exceed the memory before it, so that
  memory stays constant across the network; expand ratios {2, 3, 4}.

The memory a stage "has" is measured on a reference block (expand ``ref_expand``, kernel
``ref_kernel``, stride 1, full width) at the stage's resolution, under one of two definitions:

- ``paper``: elements, as the paper counts them: a layer's input + output + weights, and a
  stage's memory is the larger of its depthwise layer ``e·c·s² + e·c·k² + e·c·s²`` and its
  expansion layer ``c·s² + e·c² + e·c·s²``. Spatial sizes halve as real numbers and the final
  expand and feature mix widths come from two more halvings, exactly as the authors' code
  (``ofa_mbv3_ct_v3.py``), which gives back the published widths at 224×224 RGB.
- ``sram``: int8 bytes: the liveness peak of the reference block's real int8 graph (what the
  TFLM arena must hold while it runs: 16-byte aligned tensors, residual input, squeeze-excite
  intermediates, h_swish outputs), at the real SAME-padded sizes. Every stage is held to the
  first stage's memory (no drift from rounding), widths round *down* to multiples of 8 so that
  none exceeds it, and the final expand is solved the same way on the head's ops (the feature
  mix takes its width). With ``flash_budget_bytes`` the largest subnet's flash (all weights) is
  a second constraint: the memory level of the solved stages is lowered by bisection until it
  fits.

Small inputs (Fashion-MNIST 28×28 or 32×32, CIFAR 32×32) keep the layout's stride schedule but
drop stride-2 steps from the end until the last feature map is at least ``MIN_FINAL_SIZE``
pixels wide, so that the deepest depthwise kernels still see neighbours.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache

from moofa.blocks import make_block, make_divisible, same_output_size
from toolchain.errors import InputError

MIN_FINAL_SIZE = 3
MEMORY_DEFINITIONS = ("paper", "sram")
REFERENCE_RESOLUTION = 224

# OFA MobileNetV3 (reference-facts.md).
OFA_FIRST_CONV = (16, 2, "h_swish")
OFA_FIRST_BLOCK = (16, 1, "relu", False)
OFA_STAGES = (  # width, stride, activation, squeeze-excite
    (24, 2, "relu", False),
    (40, 2, "relu", True),
    (80, 2, "h_swish", False),
    (112, 1, "h_swish", True),
    (160, 2, "h_swish", True),
)
OFA_FINAL_EXPAND, OFA_FEATURE_MIX = 960, 1280
OFA_KERNELS, OFA_EXPANDS, OFA_DEPTHS = (3, 5, 7), (3, 4, 6), (2, 3, 4)

# MOOFA (reference-facts.md; seed widths and the schedule from the authors' ofa_mbv3_ct_v3.py).
MOOFA_SEED_WIDTHS = (3, 8, 24)  # first conv, first block, first stage
MOOFA_FIRST_CONV_STRIDE, MOOFA_FIRST_CONV_ACT = 2, "h_swish"
MOOFA_FIRST_BLOCK = (1, "relu", False)  # stride, activation, squeeze-excite
MOOFA_STAGES = ((2, "h_swish", False), (2, "h_swish", True), (2, "h_swish", True), (2, "relu", False), (2, "h_swish", True))
MOOFA_KERNELS, MOOFA_EXPANDS, MOOFA_DEPTHS = (3, 5, 7), (2, 3, 4), (2, 3, 4)
MAX_DEPTH = 4


@dataclass(frozen=True)
class StageSpec:
    width: int
    stride: int
    act: str
    se: bool
    max_depth: int = MAX_DEPTH


@dataclass(frozen=True)
class Layout:
    """A supernet's fixed shape; its elastic choices are the ``*_choices``."""

    name: str
    resolution: int  # the largest input resolution the layout was made for
    in_channels: int
    num_classes: int
    first_conv_width: int
    first_conv_stride: int
    first_conv_act: str
    first_block_width: int
    first_block_stride: int
    first_block_act: str
    first_block_se: bool
    stages: tuple[StageSpec, ...]
    final_expand_width: int
    feature_mix_width: int
    kernel_choices: tuple[int, ...]
    expand_choices: tuple
    depth_choices: tuple[int, ...]
    memory: str = "sram"  # the definition stage_memory is in
    stage_memory: tuple = field(default=(), compare=False)
    notes: str = field(default="", compare=False)

    @property
    def widths(self) -> list[int]:
        """First conv, first block, each stage, final expand, feature mix."""
        return [self.first_conv_width, self.first_block_width, *(s.width for s in self.stages), self.final_expand_width, self.feature_mix_width]

    @property
    def strides(self) -> list[int]:
        """First conv, first block, each stage."""
        return [self.first_conv_stride, self.first_block_stride, *(s.stride for s in self.stages)]

    @property
    def memory_unit(self) -> str:
        return "elements" if self.memory == "paper" else "bytes"

    def stage_sizes(self, resolution: int | None = None) -> list[int]:
        """Spatial size each stage runs at (its blocks' output size)."""
        size = same_output_size(same_output_size(resolution or self.resolution, self.first_conv_stride), self.first_block_stride)
        sizes = []
        for st in self.stages:
            size = same_output_size(size, st.stride)
            sizes.append(size)
        return sizes

    def to_dict(self) -> dict:
        sizes = self.stage_sizes()
        return {
            "name": self.name,
            "resolution": self.resolution,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "widths": self.widths,
            "strides": self.strides,
            "first_conv": {"width": self.first_conv_width, "stride": self.first_conv_stride, "act": self.first_conv_act},
            "first_block": {"width": self.first_block_width, "stride": self.first_block_stride, "act": self.first_block_act, "se": self.first_block_se},
            "stages": [
                {**asdict(st), "size": size, "memory": mem}
                for st, size, mem in zip(self.stages, sizes, self.stage_memory or [None] * len(self.stages))
            ],
            "final_expand_width": self.final_expand_width,
            "feature_mix_width": self.feature_mix_width,
            "kernel_choices": list(self.kernel_choices),
            "expand_choices": list(self.expand_choices),
            "depth_choices": list(self.depth_choices),
            "memory": self.memory,
            "memory_unit": self.memory_unit,
        }


# --- stride schedule -----------------------------------------------------------------------------
def adapt_strides(strides: list[int], resolution: int, min_final: int = MIN_FINAL_SIZE) -> list[int]:
    """Drop stride-2 steps from the end until the last feature map is >= ``min_final`` wide."""
    strides = list(strides)

    def final(ss):
        size = resolution
        for s in ss:
            size = same_output_size(size, s)
        return size

    i = len(strides) - 1
    while final(strides) < min_final and i >= 0:
        if strides[i] > 1:
            strides[i] = 1
        i -= 1
    return strides


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
    from moofa.analytic import block_graph
    from toolchain.planner import plan_graph

    return plan_graph(block_graph(_reference_block(c, size, act, se, e, k))).lower_bound_bytes


@lru_cache(maxsize=4096)
def sram_head_memory(c_last: int, size: int, c_final: int) -> int:
    """Liveness peak of the head's ops when the final expand and feature mix are ``c_final``."""
    from moofa.analytic import _GraphWriter
    from toolchain.planner import plan_graph

    w = _GraphWriter("head")
    x = w.activation("features", (1, size, size, c_last))
    w.graph.inputs.append(x)
    h = w.conv(x, "final_expand", c_final, 1, 1, "h_swish")
    h = w.mean(h, "pool")
    h = w.conv(h, "feature_mix", c_final, 1, 1, "h_swish")
    w.graph.outputs.append(h)
    return plan_graph(w.graph).lower_bound_bytes


def _widest(fits, start: int = 8, limit: int = 1 << 14) -> int:
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


# --- the two layouts -----------------------------------------------------------------------------
def _check_inputs(resolution, in_channels, memory=None):
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 8:
        raise InputError(f"layout: resolution {resolution!r} must be an integer >= 8")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or not 1 <= in_channels <= 16:
        raise InputError(f"layout: channels {in_channels!r} must be an integer from 1 to 16")
    if memory is not None and memory not in MEMORY_DEFINITIONS:
        raise InputError(f"layout: memory definition {memory!r} is not one of {', '.join(MEMORY_DEFINITIONS)}")


def _stage_memories(lay: Layout, memory: str, ref_expand, ref_kernel) -> tuple:
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


def ofa_layout(resolution: int = REFERENCE_RESOLUTION, in_channels: int = 3, num_classes: int = 1000, memory: str = "sram", ref_expand=4, ref_kernel: int = 7) -> Layout:
    """OFA's MobileNetV3 layout for this input; ``memory`` only chooses how stage memory is reported."""
    _check_inputs(resolution, in_channels, memory)
    strides = adapt_strides([OFA_FIRST_CONV[1], OFA_FIRST_BLOCK[1], *(s[1] for s in OFA_STAGES)], resolution)
    lay = Layout(
        name="ofa",
        resolution=resolution,
        in_channels=in_channels,
        num_classes=num_classes,
        first_conv_width=OFA_FIRST_CONV[0],
        first_conv_stride=strides[0],
        first_conv_act=OFA_FIRST_CONV[2],
        first_block_width=OFA_FIRST_BLOCK[0],
        first_block_stride=strides[1],
        first_block_act=OFA_FIRST_BLOCK[2],
        first_block_se=OFA_FIRST_BLOCK[3],
        stages=tuple(StageSpec(w, s, a, se) for (w, _, a, se), s in zip(OFA_STAGES, strides[2:])),
        final_expand_width=OFA_FINAL_EXPAND,
        feature_mix_width=OFA_FEATURE_MIX,
        kernel_choices=OFA_KERNELS,
        expand_choices=OFA_EXPANDS,
        depth_choices=OFA_DEPTHS,
        memory=memory,
    )
    return replace(lay, stage_memory=_stage_memories(lay, memory, ref_expand, ref_kernel))


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
    _check_inputs(resolution, in_channels, memory)
    strides = adapt_strides([MOOFA_FIRST_CONV_STRIDE, MOOFA_FIRST_BLOCK[0], *(s[0] for s in MOOFA_STAGES)], resolution)
    first_conv, first_block, first_stage = seed_widths
    stage_strides = strides[2:]
    acts = [a for _, a, _ in MOOFA_STAGES]
    ses = [se for _, _, se in MOOFA_STAGES]

    def build(widths, final_expand, feature_mix, stage_memory, notes=""):
        return Layout(
            name="moofa",
            resolution=resolution,
            in_channels=in_channels,
            num_classes=num_classes,
            first_conv_width=first_conv,
            first_conv_stride=strides[0],
            first_conv_act=MOOFA_FIRST_CONV_ACT,
            first_block_width=first_block,
            first_block_stride=strides[1],
            first_block_act=MOOFA_FIRST_BLOCK[1],
            first_block_se=MOOFA_FIRST_BLOCK[2],
            stages=tuple(StageSpec(w, s, a, se) for w, s, a, se in zip(widths, stage_strides, acts, ses)),
            final_expand_width=final_expand,
            feature_mix_width=feature_mix,
            kernel_choices=MOOFA_KERNELS,
            expand_choices=MOOFA_EXPANDS,
            depth_choices=MOOFA_DEPTHS,
            memory=memory,
            stage_memory=stage_memory,
            notes=notes,
        )

    if memory == "paper":
        # The authors' loop: chain from the previous (rounded) stage, real-valued sizes, and
        # two more halvings for the final expand and the feature mix.
        s = resolution / (strides[0] * strides[1] * stage_strides[0])
        c = first_stage
        widths = [c]
        for stride in [*stage_strides[1:], 2, 2]:
            target = paper_stage_memory(c, s, ref_expand, ref_kernel)
            s /= stride
            c = make_divisible(paper_solve_channels(target, s, ref_expand, ref_kernel))
            widths.append(c)
        lay = build(widths[:-2], widths[-2], widths[-1], ())
        if flash_budget_bytes is not None:
            raise InputError("layout: a flash budget needs --memory sram (the paper's memory counts no total weights)")
        return replace(lay, stage_memory=_stage_memories(lay, "paper", ref_expand, ref_kernel))

    sizes = []
    size = same_output_size(same_output_size(resolution, strides[0]), strides[1])
    for st in stage_strides:
        size = same_output_size(size, st)
        sizes.append(size)
    level = sram_block_memory(first_stage, sizes[0], acts[0], ses[0], ref_expand, ref_kernel)
    max_final = max(MOOFA_EXPANDS)  # the final expand is at most the last stage's widest expansion

    def solve(cap: int) -> Layout:
        widths = [first_stage]
        for i in range(1, len(stage_strides)):
            widths.append(_widest(lambda c, i=i: sram_block_memory(c, sizes[i], acts[i], ses[i], ref_expand, ref_kernel) <= cap))
        final = _widest(lambda c: sram_head_memory(widths[-1], sizes[-1], c) <= cap, limit=max(8, max_final * widths[-1]))
        return build(widths, final, final, ())

    lay = solve(level)
    notes = f"balanced at {level} B per stage"
    if flash_budget_bytes is None:
        notes += "; no flash budget, so nothing but SRAM limits the widths (give one to bound the weights)"
    if flash_budget_bytes is not None:
        if _flash_of_largest(lay) > flash_budget_bytes:
            lo, hi = 0, level  # bisection on the memory level of the solved stages
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if _flash_of_largest(solve(mid)) <= flash_budget_bytes:
                    lo = mid
                else:
                    hi = mid - 1
            lay = solve(lo)
            if _flash_of_largest(lay) > flash_budget_bytes:
                raise InputError(
                    f"layout: even the narrowest moofa layout needs {_flash_of_largest(lay)} B of flash, over the budget of {flash_budget_bytes} B"
                )
            notes = f"balanced at {level} B per stage, lowered to {lo} B after stage 1 to fit {flash_budget_bytes} B of flash"
    return replace(lay, stage_memory=_stage_memories(lay, "sram", ref_expand, ref_kernel), notes=notes)


def _flash_of_largest(lay: Layout) -> int:
    """Flash bytes (weights, quantization, tables) of the layout's largest subnet."""
    from moofa.analytic import flash_estimate, subnet_graph
    from moofa.space import SearchSpace

    return flash_estimate(subnet_graph(lay, SearchSpace(lay).max_config()))


LAYOUTS = {"ofa": ofa_layout, "moofa": solve_moofa_layout}


def get_layout(name: str, resolution: int = REFERENCE_RESOLUTION, in_channels: int = 3, num_classes: int = 1000, memory: str | None = None, **kwargs) -> Layout:
    """A layout by name; ``memory`` defaults to ``paper`` for moofa and ``sram`` for ofa."""
    if name not in LAYOUTS:
        close = difflib.get_close_matches(name, LAYOUTS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InputError(f"layout: unknown layout {name!r} (known: {', '.join(LAYOUTS)}){hint}")
    if memory is None:
        memory = "paper" if name == "moofa" else "sram"
    return LAYOUTS[name](resolution=resolution, in_channels=in_channels, num_classes=num_classes, memory=memory, **kwargs)


def layout_command(name: str, resolution: int = REFERENCE_RESOLUTION, channels: int = 3, memory: str | None = None, as_json: bool = False, num_classes: int = 1000, flash_budget_bytes: int | None = None) -> str:
    """What ``moofa layout NAME --resolution R --channels C [--memory paper|sram] [--json]`` prints."""
    kwargs = {"flash_budget_bytes": flash_budget_bytes} if flash_budget_bytes is not None else {}
    if kwargs and name != "moofa":
        raise InputError("layout: --flash-budget applies to the moofa layout only")
    lay = get_layout(name, resolution, channels, num_classes, memory, **kwargs)
    if as_json:
        return json.dumps(lay.to_dict())
    unit = lay.memory_unit
    lines = [
        f"layout {lay.name}: {lay.in_channels}x{lay.resolution}x{lay.resolution} input, {lay.num_classes} classes, "
        f"memory definition '{lay.memory}' ({unit})",
        f"  widths  {' '.join(map(str, lay.widths))}   (first conv, first block, stages, final expand, feature mix)",
        f"  strides {' '.join(map(str, lay.strides))}   (first conv, first block, stages)",
        f"  choices kernel {{{', '.join(map(str, lay.kernel_choices))}}}, expand {{{', '.join(map(str, lay.expand_choices))}}}, depth {{{', '.join(map(str, lay.depth_choices))}}}",
        f"  {'':<8}{'width':>7}{'stride':>8}{'size':>6}  {'act':<8}{'se':<4}{'memory (' + unit + ')':>20}",
        f"  {'first':<8}{lay.first_conv_width:>7}{lay.first_conv_stride:>8}{same_output_size(lay.resolution, lay.first_conv_stride):>6}  {lay.first_conv_act:<8}{'-':<4}{'':>20}",
        f"  {'block0':<8}{lay.first_block_width:>7}{lay.first_block_stride:>8}{'':>6}  {lay.first_block_act:<8}{'yes' if lay.first_block_se else 'no':<4}{'':>20}",
    ]
    for i, (st, size, mem) in enumerate(zip(lay.stages, lay.stage_sizes(), lay.stage_memory)):
        lines.append(f"  {'stage' + str(i + 1):<8}{st.width:>7}{st.stride:>8}{size:>6}  {st.act:<8}{'yes' if st.se else 'no':<4}{mem:>20,}")
    lines.append(f"  final expand {lay.final_expand_width}, feature mix {lay.feature_mix_width}")
    if lay.notes:
        lines.append(f"  {lay.notes}")
    return "\n".join(lines)
