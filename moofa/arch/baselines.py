"""Hand-designed networks an embedded engineer would train instead of searching a supernet.

They are the baselines of the claim benchmark (bench/bench_claim.py): trained with the same data,
augmentation and schedule as the supernets, exported by the same path
(:func:`toolchain.convert.export.export_int8`), their arenas predicted by the same planner. Each
is built from the static modules of :mod:`moofa.nn.supernet`, so every layer is one op of the
int8 model, in the project's op vocabulary (ReLU where the originals use ReLU6: the exported
model clamps at the int8 range either way once quantized):

- ``mobilenetv2-W``: MobileNetV2 (Sandler et al., CVPR 2018) at width multiplier W: first conv 32·W,
  inverted residual blocks (t, c, n, s) = (1,16,1,1) (6,24,2,2) (6,32,3,2) (6,64,4,2) (6,96,3,1)
  (6,160,3,2) (6,320,1,1) with c·W rounded to multiples of 8, last 1×1 conv 1280, pool,
  classifier; stride-2 steps dropped from the end until the last map is at least 3 pixels, as
  the supernet layouts do on small inputs.
- ``dscnn-S``: the DS-CNN of Hello Edge (Zhang et al., 2017), sized S (small 64 channels, medium
  172 rounded to 168): a strided 3×3 conv, four depthwise-separable blocks, pool, classifier.
- ``cnn3``: a plain CNN: three 3×3 convolutions (32, 64, 128, each stride 2, ReLU), pool, classifier.
"""

from __future__ import annotations

import torch
from torch import nn

from moofa.arch.blocks import make_block, make_divisible, same_output_size
from moofa.arch.layouts import adapt_strides
from toolchain.errors import InputError

MOBILENETV2_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
DSCNN_WIDTHS = {"s": 64, "m": 168}


class Baseline(nn.Module):
    """Stem convolution(s), blocks, a last 1×1 convolution (optional), global mean, classifier."""

    def __init__(self, name: str, stem: list[nn.Module], blocks: list[nn.Module], last: nn.Module | None, features: int, num_classes: int):
        super().__init__()
        from moofa.nn.supernet import Flatten, Mean

        self.name = name
        self.stem = nn.Sequential(*stem)
        self.blocks = nn.Sequential(*blocks)
        self.last = last
        self.pool = Mean()
        self.flatten = Flatten()
        self.classifier = nn.Linear(features, num_classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        if self.last is not None:
            x = self.last(x)
        return self.classifier(self.flatten(self.pool(x)))


def mobilenet_v2(width: float, resolution: int, in_channels: int, num_classes: int) -> Baseline:
    from moofa.nn.supernet import Conv, MBBlock

    strides = adapt_strides([2, *(s for *_, s in MOBILENETV2_BLOCKS)], resolution)
    stem_width = make_divisible(32 * width)
    size = same_output_size(resolution, strides[0])
    blocks, c = [], stem_width
    for (t, out, n, _), stage_stride in zip(MOBILENETV2_BLOCKS, strides[1:]):
        out = make_divisible(out * width)
        for i in range(n):
            stride = stage_stride if i == 0 else 1
            spec = make_block(f"b{len(blocks)}", c, out, t, 3, stride, "relu", False, (size, size), first_block=t == 1)
            blocks.append(MBBlock(spec))
            size, c = spec.out_size[0], out
    last = 1280 if width <= 1 else make_divisible(1280 * width)
    return Baseline(f"mobilenetv2-{width:g}", [Conv(in_channels, stem_width, 3, strides[0], fused="relu")], blocks,
                    Conv(c, last, 1, fused="relu"), last, num_classes)


def ds_cnn(size_name: str, resolution: int, in_channels: int, num_classes: int) -> Baseline:
    from moofa.nn.supernet import Conv, MBBlock

    width = DSCNN_WIDTHS[size_name]
    stride = 2
    size = same_output_size(resolution, stride)
    blocks = [MBBlock(make_block(f"ds{i}", width, width, 1, 3, 1, "relu", False, (size, size), first_block=True)) for i in range(4)]
    return Baseline(f"dscnn-{size_name}", [Conv(in_channels, width, 3, stride, fused="relu")], blocks, None, width, num_classes)


def cnn3(resolution: int, in_channels: int, num_classes: int) -> Baseline:
    from moofa.nn.supernet import Conv

    widths = (32, 64, 128)
    stem, c = [], in_channels
    for w in widths:
        stem.append(Conv(c, w, 3, 2, fused="relu"))
        c = w
    return Baseline("cnn3", stem, [], None, c, num_classes)


def make_baseline(name: str, resolution: int = 28, in_channels: int = 1, num_classes: int = 10) -> Baseline:
    """A baseline by name: ``mobilenetv2-0.35``, ``mobilenetv2-0.5``, ``dscnn-s``, ``dscnn-m``, ``cnn3``."""
    if name.startswith("mobilenetv2-"):
        try:
            width = float(name.split("-", 1)[1])
        except ValueError:
            width = 0.0
        if not 0 < width <= 4:
            raise InputError(f"baseline {name!r}: the width multiplier must be a number in (0, 4]")
        net = mobilenet_v2(width, resolution, in_channels, num_classes)
    elif name.startswith("dscnn-") and name[6:] in DSCNN_WIDTHS:
        net = ds_cnn(name[6:], resolution, in_channels, num_classes)
    elif name == "cnn3":
        net = cnn3(resolution, in_channels, num_classes)
    else:
        raise InputError(f"unknown baseline {name!r}; known: mobilenetv2-W (e.g. 0.35, 0.5), dscnn-s, dscnn-m, cnn3")
    return net.to(memory_format=torch.channels_last)
