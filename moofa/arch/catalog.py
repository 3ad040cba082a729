"""The layouts by name: what ``--layout ofa|moofa`` and ``moofa layout`` look up.

``ofa`` is OFA's table (:mod:`moofa.arch.layouts`) adapted to the input; ``moofa`` is solved by
:mod:`moofa.arch.balance`. A new layout is one more entry in :data:`LAYOUTS` (docs/ARCHITECTURE.md,
"How to add a layout").
"""

from __future__ import annotations

import difflib
import json
from dataclasses import replace

from moofa.arch.balance import solve_moofa_layout, stage_memories
from moofa.arch.blocks import same_output_size
from moofa.arch.layouts import (
    OFA_DEPTHS,
    OFA_EXPANDS,
    OFA_FEATURE_MIX,
    OFA_FINAL_EXPAND,
    OFA_FIRST_BLOCK,
    OFA_FIRST_CONV,
    OFA_KERNELS,
    OFA_STAGES,
    REFERENCE_RESOLUTION,
    Layout,
    StageSpec,
    adapt_strides,
    check_inputs,
)
from toolchain.errors import InputError


def ofa_layout(resolution: int = REFERENCE_RESOLUTION, in_channels: int = 3, num_classes: int = 1000, memory: str = "sram", ref_expand=4, ref_kernel: int = 7) -> Layout:
    """OFA's MobileNetV3 layout for this input; ``memory`` only chooses how stage memory is reported."""
    check_inputs(resolution, in_channels, memory)
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
    return replace(lay, stage_memory=stage_memories(lay, memory, ref_expand, ref_kernel))


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
