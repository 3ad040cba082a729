"""Layouts: OFA's typed in, MOOFA's solved (paper and SRAM definitions), small inputs, CLI text."""

from __future__ import annotations

import json

import pytest

from moofa.arch.balance import flash_of_largest, solve_moofa_layout, sram_block_memory, sram_first_block_memory, sram_stem_memory
from moofa.arch.blocks import same_output_size
from moofa.arch.catalog import get_layout, layout_command, ofa_layout
from moofa.arch.layouts import MIN_FINAL_SIZE
from toolchain.errors import InputError


def test_paper_definition_gives_the_published_moofa_widths():
    # The MOOFA paper's layout (Girard et al.): first conv 3, first block 8, stages 24, 96, 288, 360, 384, final
    # expand 392, feature mix 392; strides 1; 2, 2, 2, 2, 2 (first conv 2).
    lay = solve_moofa_layout(224, 3, memory="paper")
    assert lay.widths == [3, 8, 24, 96, 288, 360, 384, 392, 392]
    assert lay.strides == [2, 1, 2, 2, 2, 2, 2]
    assert [s.act for s in lay.stages] == ["h_swish", "h_swish", "h_swish", "relu", "h_swish"]
    assert [s.se for s in lay.stages] == [False, True, True, False, True]
    assert (lay.first_block_act, lay.first_block_se) == ("relu", False)
    assert lay.expand_choices == (2, 3, 4)


def test_paper_stage_memory_by_hand():
    # Stage 1 at 56x56, c = 24, e = 4, k = 7: depthwise 4*24*56^2 * 2 + 4*24*49 = 606,816
    # elements (larger than the expansion 24*56^2 + 4*24^2 + 4*24*56^2 = 378,624).
    lay = solve_moofa_layout(224, 3, memory="paper")
    assert lay.stage_memory[0] == 606_816
    # Balanced: every stage within 3% of the first (rounding to multiples of 8).
    assert all(abs(m / lay.stage_memory[0] - 1) < 0.03 for m in lay.stage_memory)
    # OFA's own profile is not: its later stages use a fraction of the first stage's memory.
    ofa = ofa_layout(224, 3, memory="paper")
    assert ofa.stage_memory[0] == 606_816 and max(ofa.stage_memory[1:]) < 0.5 * ofa.stage_memory[0]


def test_ofa_layout_is_the_reference_one():
    lay = ofa_layout(224, 3)
    assert lay.widths == [16, 16, 24, 40, 80, 112, 160, 960, 1280]
    assert lay.strides == [2, 1, 2, 2, 2, 1, 2]
    assert [s.act for s in lay.stages] == ["relu", "relu", "h_swish", "h_swish", "h_swish"]
    assert [s.se for s in lay.stages] == [False, True, False, True, True]
    assert (lay.kernel_choices, lay.expand_choices, lay.depth_choices) == ((3, 5, 7), (3, 4, 6), (2, 3, 4))


@pytest.mark.parametrize("name", ["ofa", "moofa"])
@pytest.mark.parametrize("resolution, channels", [(28, 1), (32, 1), (32, 3), (96, 3), (224, 3)])
def test_small_inputs_keep_a_sensible_stride_schedule(name, resolution, channels):
    lay = get_layout(name, resolution, channels, 10)
    size = resolution
    for s in lay.strides:
        size = same_output_size(size, s)
    assert size >= MIN_FINAL_SIZE  # the deepest kernels still see neighbours
    assert sum(s == 2 for s in lay.strides) >= 3  # but the network still downsamples
    assert all(w % 8 == 0 for w in lay.widths[2:])


def test_sram_block_memory_by_hand():
    # A stride-1 h_swish block without SE, c = 24 at 8x8, e = 4: while the first h_swish
    # runs, the block input (24*64 B) and two expanded tensors (96*64 B each) are alive.
    assert sram_block_memory(24, 8, "h_swish", False, 4, 7) == 24 * 64 + 2 * 96 * 64


@pytest.mark.parametrize("resolution, channels", [(32, 1), (64, 3)])
def test_sram_definition_balances_every_stage_at_the_first_stages_memory(resolution, channels):
    lay = solve_moofa_layout(resolution, channels, 10, memory="sram")
    level = lay.stage_memory[0]
    sizes = lay.stage_sizes()
    for st, size, mem in zip(lay.stages[1:], sizes[1:], lay.stage_memory[1:]):
        assert mem <= level
        # Widest: 8 more channels would not fit.
        assert sram_block_memory(st.width + 8, size, st.act, st.se, 4, 7) > level


@pytest.mark.parametrize("resolution, channels", [(28, 1), (32, 3), (96, 3), (224, 3)])
def test_sram_definition_solves_the_stem_under_the_same_cap(resolution, channels):
    lay = solve_moofa_layout(resolution, channels, 10, memory="sram")
    level = lay.stage_memory[0]
    c0, c1 = lay.first_conv_width, lay.first_block_width
    size = same_output_size(resolution, lay.first_conv_stride)
    stem = lambda c: sram_stem_memory(channels, resolution, c, lay.first_conv_stride, lay.first_conv_act)  # noqa: E731
    block = lambda c: sram_first_block_memory(c0, size, c, lay.first_block_stride, lay.first_block_act, lay.first_block_se)  # noqa: E731
    assert c0 % 8 == 0 and c1 % 8 == 0
    assert stem(c0) <= level < stem(c0 + 8)  # the widest first conv that fits
    assert block(c1) <= level < block(c1 + 8)  # the widest first block that fits
    assert lay.stages[0].width == 24  # the only seed left


def test_sram_stem_by_hand_at_fashion_mnist_size():
    # 28x28 grey input, stride-2 first conv (h_swish): the peak is the h_swish, whose input
    # and output (c*14*14 B each) are alive together (the 784 B image is freed after the
    # conv). The cap is stage 1's reference block at 7x7 (24 channels, expand 4): 10,592 B.
    # So c = 24 (2*24*196 = 9,408 B); 32 would need 12,544.
    lay = solve_moofa_layout(28, 1, 10, memory="sram")
    assert lay.stage_memory[0] == 10_592
    assert sram_stem_memory(1, 28, 24, 2, "h_swish") == 2 * 24 * 196 == 9_408
    assert sram_stem_memory(1, 28, 32, 2, "h_swish") == 2 * 32 * 196 == 12_544
    assert lay.first_conv_width == 24
    # The paper's stem (3, 8) is what the paper definition keeps.
    assert solve_moofa_layout(28, 1, 10, memory="paper").widths[:2] == [3, 8]


def test_flash_budget_is_a_second_constraint():
    free = solve_moofa_layout(32, 1, 10, memory="sram")
    budget = flash_of_largest(free) // 2
    tight = solve_moofa_layout(32, 1, 10, memory="sram", flash_budget_bytes=budget)
    assert flash_of_largest(tight) <= budget < flash_of_largest(free)
    assert tight.widths[:3] == free.widths[:3]  # the seeds stay
    assert max(tight.stage_memory) <= max(free.stage_memory)
    with pytest.raises(InputError, match="flash"):
        solve_moofa_layout(32, 1, 10, memory="sram", flash_budget_bytes=1000)


def test_layout_command_json_and_text():
    data = json.loads(layout_command("moofa", 224, 3, "paper", as_json=True))
    assert data["widths"] == [3, 8, 24, 96, 288, 360, 384, 392, 392]
    assert data["strides"] == [2, 1, 2, 2, 2, 2, 2]
    assert [s["memory"] for s in data["stages"]][0] == 606_816 and data["memory_unit"] == "elements"
    text = layout_command("ofa", 32, 1, "sram")
    assert "widths  16 16 24 40 80 112 160 960 1280" in text and "memory (bytes)" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (("mofa", 224, 3, None), "unknown layout 'mofa'.*did you mean 'moofa'"),
        (("moofa", 4, 3, None), "resolution 4"),
        (("ofa", 32, 0, None), "channels 0"),
        (("moofa", 32, 3, "flash"), "memory definition 'flash'"),
    ],
)
def test_layout_command_rejects_bad_input(args, message):
    with pytest.raises(InputError, match=message):
        layout_command(*args)
