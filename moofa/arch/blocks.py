"""One builder: a layout plus a subnet config, turned into the list of layers it means.

Everything else reads this plan: :mod:`moofa.cost` turns it into the int8 graph IR,
:mod:`moofa.nn.supernet` into a static PyTorch module, :mod:`moofa.nn.memlog` into a memory profile.
Keeping the arithmetic (channel rounding, SAME-padded output sizes) in one place is what makes
the analytic numbers and the real module agree.

The network is OFA's MobileNetV3 shape (Cai et al., ICLR 2020)::

    first conv 3x3/s (h_swish) -> first block (depthwise 3x3 + pointwise, expand 1)
    -> stages of inverted-residual blocks (1x1 expand, kxk depthwise, [squeeze-excite], 1x1 project)
    -> final expand 1x1 (h_swish) -> global average pool -> feature mix 1x1 (h_swish) -> classifier
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from moofa.arch.layouts import Layout
    from moofa.arch.space import SubnetConfig

# Channel counts are rounded to multiples of 8 (OFA's MyNetwork.CHANNEL_DIVISIBLE), which also
# suits int8 SIMD kernels on Cortex-M.
CHANNEL_DIVISIBLE = 8
# Squeeze-excite squeezes to a quarter of the channels (OFA's SELayer.REDUCTION).
SE_REDUCTION = 4
FIRST_CONV_KERNEL = 3
FIRST_BLOCK_KERNEL = 3


def make_divisible(value: float, divisor: int = CHANNEL_DIVISIBLE, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never more than 10% down.

    The rule of the MobileNet and OFA code bases (``ofa.utils.make_divisible``); the MOOFA
    paper's published widths depend on it.
    """
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def middle_channels(in_channels: int, expand_ratio: float) -> int:
    """Width of an inverted-residual block's expanded layer (OFA's DynamicMBConvLayer)."""
    return make_divisible(round(in_channels * expand_ratio))


def se_channels(channels: int) -> int:
    """Width of squeeze-excite's squeezed layer (OFA's DynamicSE)."""
    return make_divisible(channels // SE_REDUCTION)


def same_output_size(size: int, stride: int) -> int:
    """Output length of a TFLite/TensorFlow SAME-padded convolution: ceil(size / stride)."""
    return -(-size // stride)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding TensorFlow's SAME adds along one axis.

    TF pads ``total = max((out - 1) * stride + kernel - size, 0)`` with the odd pixel *after*
    (``tensorflow/core/framework/kernel_shape_util.cc``). For stride 2 on an even size this is
    asymmetric, which PyTorch's ``padding=k // 2`` is not; using it in the module means export
    needs no PAD op.
    """
    out = same_output_size(size, stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


@dataclass(frozen=True)
class BlockSpec:
    """One inverted-residual block as it runs: every width and size fixed.

    ``mid_channels == in_channels`` and ``has_expand`` False for the first block (expand 1).
    ``se_channels`` is 0 without squeeze-excite.
    """

    name: str
    in_channels: int
    mid_channels: int
    out_channels: int
    kernel: int
    stride: int
    act: str
    se_channels: int
    residual: bool
    has_expand: bool
    in_size: tuple[int, int]
    out_size: tuple[int, int]


@dataclass(frozen=True)
class SubnetSpec:
    """A whole subnet, ready to become a graph or a module."""

    in_channels: int
    in_size: tuple[int, int]
    first_conv_width: int
    first_conv_stride: int
    first_conv_act: str
    first_conv_out_size: tuple[int, int]
    blocks: tuple[BlockSpec, ...]  # the first block, then every active stage block
    final_expand_width: int
    feature_mix_width: int
    num_classes: int

    @property
    def last_size(self) -> tuple[int, int]:
        return self.blocks[-1].out_size if self.blocks else self.first_conv_out_size

    @property
    def last_channels(self) -> int:
        return self.blocks[-1].out_channels if self.blocks else self.first_conv_width


def make_block(name, in_channels, out_channels, expand_ratio, kernel, stride, act, use_se, in_size, first_block=False) -> BlockSpec:
    mid = in_channels if first_block else middle_channels(in_channels, expand_ratio)
    out_size = (same_output_size(in_size[0], stride), same_output_size(in_size[1], stride))
    return BlockSpec(
        name=name,
        in_channels=in_channels,
        mid_channels=mid,
        out_channels=out_channels,
        kernel=kernel,
        stride=stride,
        act=act,
        se_channels=se_channels(mid) if use_se else 0,
        residual=stride == 1 and in_channels == out_channels,
        has_expand=not first_block,
        in_size=in_size,
        out_size=out_size,
    )


def subnet_spec(layout: "Layout", config: "SubnetConfig") -> SubnetSpec:
    """The layers of ``config``'s subnet of ``layout`` (the config is assumed validated)."""
    res = config.resolution
    size = (same_output_size(res, layout.first_conv_stride),) * 2
    first = make_block(
        "first_block",
        layout.first_conv_width,
        layout.first_block_width,
        1,
        FIRST_BLOCK_KERNEL,
        layout.first_block_stride,
        layout.first_block_act,
        layout.first_block_se,
        size,
        first_block=True,
    )
    blocks = [first]
    channels, size = first.out_channels, first.out_size
    for s, (stage, kernels, expands) in enumerate(zip(layout.stages, config.kernels, config.expands)):
        for b, (k, e) in enumerate(zip(kernels, expands)):
            block = make_block(
                f"stage{s + 1}.block{b + 1}",
                channels,
                stage.width,
                e,
                k,
                stage.stride if b == 0 else 1,
                stage.act,
                stage.se,
                size,
            )
            blocks.append(block)
            channels, size = block.out_channels, block.out_size
    return SubnetSpec(
        in_channels=layout.in_channels,
        in_size=(res, res),
        first_conv_width=layout.first_conv_width,
        first_conv_stride=layout.first_conv_stride,
        first_conv_act=layout.first_conv_act,
        first_conv_out_size=(same_output_size(res, layout.first_conv_stride),) * 2,
        blocks=tuple(blocks),
        final_expand_width=layout.final_expand_width,
        feature_mix_width=layout.feature_mix_width,
        num_classes=layout.num_classes,
    )
