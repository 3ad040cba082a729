"""The elastic supernet (OFA's, for any layout) and the static subnets extracted from it.

Static modules come first: each is one op of the exported int8 model (see
:mod:`moofa.cost`), which is what lets :mod:`moofa.nn.memlog` hook them op by op and what
the exporter rebuilds layer by layer. Then the elastic block and the supernet:

- elastic kernel: the block keeps the largest kernel; a smaller one is the centre of the next
  larger one passed through a learned transformation matrix (7x7 -> 5x5 via a 25x25 matrix,
  5x5 -> 3x3 via 9x9), initialized to the identity (OFA, ``DynamicSeparableConv2d``);
- elastic expand: the first ``mid`` channels of the expanded layer; :meth:`Supernet.reorganize_channels`
  sorts them by importance (L1 norm of the projection weights reading them) before expand
  shrinking is trained, as OFA's ``re_organize_middle_weights``;
- elastic depth: the first ``d`` blocks of a stage; elastic resolution: any input size.
- squeeze-excite and batch norm slice to the active width.

Every convolution pads as TensorFlow's SAME does (asymmetric for stride 2 on even sizes), so
the exported model needs no PAD op.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from moofa.arch.blocks import (
    FIRST_BLOCK_KERNEL,
    FIRST_CONV_KERNEL,
    BlockSpec,
    SubnetSpec,
    make_block,
    middle_channels,
    same_padding,
    se_channels,
    subnet_spec,
)
from moofa.arch.layouts import Layout
from moofa.nn.fastconv import SameConv2d, conv2d_same
from moofa.arch.space import SearchSpace, SubnetConfig

BN_MOMENTUM, BN_EPS = 0.1, 1e-5  # OFA's bn_param
HARD_SIGMOID_SHIFT = 3.0
HARD_SIGMOID_SCALE = 1.0 / 6.0


def _fused(act: str | None) -> str | None:
    return "relu" if act == "relu" else None


# --- static ops ------------------------------------------------------------------------------------
class Conv(nn.Module):
    """One ``CONV_2D`` / ``DEPTHWISE_CONV_2D``: SAME padding, conv, batch norm, fused activation.

    ``shift`` is added before the fused activation (the hard sigmoid's +3; the exporter folds
    it into the bias).
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = False, bn: bool = True, fused: str | None = None, shift: float = 0.0):
        super().__init__()
        self.kernel, self.stride, self.fused, self.shift = kernel, stride, fused, shift
        self.conv = SameConv2d(cin, cout, kernel, stride, padding=0, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM) if bn else None

    @property
    def depthwise(self) -> bool:
        return self.conv.groups > 1

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.shift:
            x = x + self.shift
        if self.fused == "relu":
            x = F.relu(x)
        elif self.fused == "relu6":
            x = F.relu6(x)
        return x


class HardSwish(nn.Module):
    """``HARD_SWISH``: x * relu6(x + 3) / 6."""

    def forward(self, x):
        return F.hardswish(x)


class Mean(nn.Module):
    """``MEAN`` over height and width, keeping the dimensions."""

    def forward(self, x):
        return x.mean((2, 3), keepdim=True)


class Scale(nn.Module):
    """``MUL`` by a constant."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


class Mul(nn.Module):
    """``MUL`` of two tensors (broadcasting)."""

    def forward(self, a, b):
        return a * b


class Add(nn.Module):
    """``ADD``: the residual connection."""

    def forward(self, a, b):
        return a + b


class Flatten(nn.Module):
    """``RESHAPE`` to [batch, channels]."""

    def forward(self, x):
        return x.flatten(1)


def _act_module(act: str) -> nn.Module | None:
    return HardSwish() if act == "h_swish" else None


class SqueezeExcite(nn.Module):
    """MEAN -> CONV 1x1 (ReLU) -> CONV 1x1 (+3, ReLU6) -> MUL 1/6 -> MUL with the input."""

    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.squeeze = Mean()
        self.reduce = Conv(channels, squeezed, 1, bias=True, bn=False, fused="relu")
        self.expand = Conv(squeezed, channels, 1, bias=True, bn=False, fused="relu6", shift=HARD_SIGMOID_SHIFT)
        self.scale = Scale(HARD_SIGMOID_SCALE)
        self.gate = Mul()

    def forward(self, x):
        return self.gate(x, self.scale(self.expand(self.reduce(self.squeeze(x)))))


class MBBlock(nn.Module):
    """A static inverted-residual block built from a :class:`~moofa.arch.blocks.BlockSpec`."""

    def __init__(self, spec: BlockSpec):
        super().__init__()
        self.spec = spec
        fused = _fused(spec.act)
        if spec.has_expand:
            self.expand = Conv(spec.in_channels, spec.mid_channels, 1, fused=fused)
            self.expand_act = _act_module(spec.act)
        else:
            self.expand = self.expand_act = None
        self.depthwise = Conv(spec.mid_channels, spec.mid_channels, spec.kernel, spec.stride, groups=spec.mid_channels, fused=fused)
        self.depthwise_act = _act_module(spec.act)
        self.se = SqueezeExcite(spec.mid_channels, spec.se_channels) if spec.se_channels else None
        self.project = Conv(spec.mid_channels, spec.out_channels, 1)
        self.add = Add() if spec.residual else None

    def forward(self, x):
        h = x
        if self.expand is not None:
            h = self.expand(h)
            if self.expand_act is not None:
                h = self.expand_act(h)
        h = self.depthwise(h)
        if self.depthwise_act is not None:
            h = self.depthwise_act(h)
        if self.se is not None:
            h = self.se(h)
        h = self.project(h)
        return self.add(x, h) if self.add is not None else h


def fake_quantize(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to the int8 grid the exporter gives an activation tensor: one asymmetric
    scale for the whole tensor, from its own min and max (widened to hold 0, as TFLite's range
    is); gradients pass straight through (the straight-through estimator)."""
    lo = torch.clamp(x.detach().min(), max=0.0)
    hi = torch.clamp(x.detach().max(), min=0.0)
    scale = float(torch.clamp((hi - lo) / 255.0, min=1e-8))
    zero_point = int(torch.clamp(torch.round(-128 - lo / scale), -128, 127))
    return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, -128, 127)


class Stem(nn.Module):
    """The first convolution and its activation. ``fake_quant``: in training mode, both outputs
    pass through :func:`fake_quantize`, so training sees the rounding the int8 model's per-tensor
    stem scales bring (a narrow stem whose channels drift to unequal ranges loses most there;
    docs/BENCHMARKS.md). Evaluation and export never quantize here."""

    def __init__(self, in_channels: int, width: int, stride: int, act: str, fake_quant: bool = False):
        super().__init__()
        self.conv = Conv(in_channels, width, FIRST_CONV_KERNEL, stride, fused=_fused(act))
        self.act = _act_module(act)
        self.fake_quant = fake_quant

    def forward(self, x):
        quantize = self.fake_quant and self.training
        x = self.conv(x)
        if quantize:
            x = fake_quantize(x)
        if self.act is None:
            return x
        x = self.act(x)
        return fake_quantize(x) if quantize else x


class Head(nn.Module):
    """Final expand (h_swish), global pool, feature mix (no BN, no bias; h_swish), classifier."""

    def __init__(self, in_channels: int, final_expand: int, feature_mix: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.final_expand = Conv(in_channels, final_expand, 1)
        self.final_expand_act = HardSwish()
        self.pool = Mean()
        self.feature_mix = Conv(final_expand, feature_mix, 1, bn=False)
        self.feature_mix_act = HardSwish()
        self.flatten = Flatten()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.classifier = nn.Linear(feature_mix, num_classes)

    def forward(self, x):
        x = self.final_expand_act(self.final_expand(x))
        x = self.feature_mix_act(self.feature_mix(self.pool(x)))
        x = self.flatten(x)
        if self.dropout is not None:
            x = self.dropout(x)
        return self.classifier(x)


class Subnet(nn.Module):
    """A static subnet: what :meth:`Supernet.extract` returns and the exporter converts."""

    def __init__(self, spec: SubnetSpec, config: SubnetConfig | None = None):
        super().__init__()
        self.spec = spec
        self.config = config
        self.stem = Stem(spec.in_channels, spec.first_conv_width, spec.first_conv_stride, spec.first_conv_act)
        self.blocks = nn.ModuleList(MBBlock(b) for b in spec.blocks)
        self.head = Head(spec.last_channels, spec.final_expand_width, spec.feature_mix_width, spec.num_classes)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


# --- elastic block ---------------------------------------------------------------------------------
def _bn(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """Batch norm over the first ``x.shape[1]`` channels (running statistics sliced in place)."""
    c = x.shape[1]
    training = bn.training or not bn.track_running_stats
    return F.batch_norm(x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c], training, bn.momentum, bn.eps)


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, c: int) -> None:
    dst.weight.data.copy_(src.weight.data[:c])
    dst.bias.data.copy_(src.bias.data[:c])
    dst.running_mean.copy_(src.running_mean[:c])
    dst.running_var.copy_(src.running_var[:c])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


class DynamicMBBlock(nn.Module):
    """An inverted-residual block with elastic kernel and expand ratio."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, act: str, use_se: bool, kernels: Iterable[int], expands: Iterable):
        super().__init__()
        self.in_channels, self.out_channels, self.stride, self.act, self.use_se = in_channels, out_channels, stride, act, use_se
        self.kernels = tuple(sorted(kernels))
        self.expands = tuple(sorted(expands))
        self.residual = stride == 1 and in_channels == out_channels
        max_k, max_mid = self.kernels[-1], middle_channels(in_channels, self.expands[-1])
        self.expand_conv = nn.Conv2d(in_channels, max_mid, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(max_mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.depthwise_conv = nn.Conv2d(max_mid, max_mid, max_k, groups=max_mid, bias=False)
        # OFA's kernel transformation matrices, one per step down, shared by all channels.
        self.kernel_transforms = nn.ParameterDict(
            {f"{big}to{small}": nn.Parameter(torch.eye(small * small)) for big, small in zip(self.kernels[:0:-1], self.kernels[-2::-1])}
        )
        self.depthwise_bn = nn.BatchNorm2d(max_mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        if use_se:
            max_r = se_channels(max_mid)
            self.se_reduce = nn.Conv2d(max_mid, max_r, 1, bias=True)
            self.se_expand = nn.Conv2d(max_r, max_mid, 1, bias=True)
        self.project_conv = nn.Conv2d(max_mid, out_channels, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.active_kernel, self.active_expand = max_k, self.expands[-1]

    def _act(self, x):
        return F.relu(x) if self.act == "relu" else F.hardswish(x)

    def active_filter(self, mid: int, kernel: int) -> torch.Tensor:
        """The depthwise filter for ``mid`` channels and a ``kernel``-sized kernel."""
        weight = self.depthwise_conv.weight[:mid]
        for big, small in zip(self.kernels[:0:-1], self.kernels[-2::-1]):
            if big <= kernel:
                break
            start = (big - small) // 2
            centre = weight[:, :, start : start + small, start : start + small].reshape(mid, small * small)
            weight = F.linear(centre, self.kernel_transforms[f"{big}to{small}"]).reshape(mid, 1, small, small)
        return weight

    def forward(self, x):
        mid, k = middle_channels(self.in_channels, self.active_expand), self.active_kernel
        h = self._act(_bn(self.expand_bn, F.conv2d(x, self.expand_conv.weight[:mid])))
        h = conv2d_same(h, self.active_filter(mid, k), stride=self.stride, groups=mid)
        h = self._act(_bn(self.depthwise_bn, h))
        if self.use_se:
            r = se_channels(mid)
            s = h.mean((2, 3), keepdim=True)
            s = F.relu(F.conv2d(s, self.se_reduce.weight[:r, :mid], self.se_reduce.bias[:r]))
            s = F.relu6(F.conv2d(s, self.se_expand.weight[:mid, :r], self.se_expand.bias[:mid]) + HARD_SIGMOID_SHIFT)
            h = h * (s * HARD_SIGMOID_SCALE)
        h = _bn(self.project_bn, F.conv2d(h, self.project_conv.weight[:, :mid]))
        return x + h if self.residual else h

    @torch.no_grad()
    def extract(self, spec: BlockSpec) -> MBBlock:
        """The static block for the active kernel and expand ratio (``spec`` must match them)."""
        mid = spec.mid_channels
        assert mid == middle_channels(self.in_channels, self.active_expand) and spec.kernel == self.active_kernel
        block = MBBlock(spec)
        block.expand.conv.weight.copy_(self.expand_conv.weight[:mid])
        _copy_bn(block.expand.bn, self.expand_bn, mid)
        block.depthwise.conv.weight.copy_(self.active_filter(mid, spec.kernel))
        _copy_bn(block.depthwise.bn, self.depthwise_bn, mid)
        if self.use_se:
            r = spec.se_channels
            block.se.reduce.conv.weight.copy_(self.se_reduce.weight[:r, :mid])
            block.se.reduce.conv.bias.copy_(self.se_reduce.bias[:r])
            block.se.expand.conv.weight.copy_(self.se_expand.weight[:mid, :r])
            block.se.expand.conv.bias.copy_(self.se_expand.bias[:mid])
        block.project.conv.weight.copy_(self.project_conv.weight[:, :mid])
        _copy_bn(block.project.bn, self.project_bn, self.out_channels)
        return block

    @torch.no_grad()
    def reorganize_channels(self, expand_stage: int = 0) -> None:
        """Sort the expanded channels by importance, most important first (OFA's
        ``re_organize_middle_weights``). With ``expand_stage`` = n > 0, channels inside the
        n+1 largest widths keep their band, so that widths trained in earlier phases stay put."""
        importance = self.project_conv.weight.abs().sum(dim=(0, 2, 3))
        if expand_stage > 0:
            widths = [middle_channels(self.in_channels, e) for e in sorted(self.expands, reverse=True)]
            right, base = len(importance), -len(widths) * 1e5
            for i in range(expand_stage + 1):
                left = widths[i]
                importance[left:right] += base
                base += 1e5
                right = left
        order = torch.argsort(importance, descending=True)
        self.project_conv.weight.copy_(self.project_conv.weight[:, order])
        if self.use_se:
            self.se_expand.weight.copy_(self.se_expand.weight[order])
            self.se_expand.bias.copy_(self.se_expand.bias[order])
            self.se_reduce.weight.copy_(self.se_reduce.weight[:, order])
            se_order = torch.argsort(self.se_expand.weight.abs().sum(dim=(0, 2, 3)), descending=True)
            self.se_expand.weight.copy_(self.se_expand.weight[:, se_order])
            self.se_reduce.weight.copy_(self.se_reduce.weight[se_order])
            self.se_reduce.bias.copy_(self.se_reduce.bias[se_order])
        self.depthwise_conv.weight.copy_(self.depthwise_conv.weight[order])
        for bn in (self.depthwise_bn, self.expand_bn):
            for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                t.copy_(t[order])
        self.expand_conv.weight.copy_(self.expand_conv.weight[order])


# --- the supernet ----------------------------------------------------------------------------------
class Supernet(nn.Module):
    """OFA's elastic MobileNetV3 for a :class:`~moofa.arch.layouts.Layout`.

    ``set_active(config)`` picks a subnet; ``forward`` runs it; ``extract(config)`` returns it
    as a static :class:`Subnet` whose eval-mode outputs equal the supernet's.
    """

    def __init__(self, layout: Layout, dropout: float = 0.1, stem_fake_quant: bool = False):
        super().__init__()
        self.layout = layout
        self.space = SearchSpace(layout)
        lay = layout
        self.stem = Stem(lay.in_channels, lay.first_conv_width, lay.first_conv_stride, lay.first_conv_act, fake_quant=stem_fake_quant)
        first = make_block("first_block", lay.first_conv_width, lay.first_block_width, 1, FIRST_BLOCK_KERNEL, lay.first_block_stride, lay.first_block_act, lay.first_block_se, (1, 1), first_block=True)
        self.first_block = MBBlock(first)
        stages, channels = [], lay.first_block_width
        for st in lay.stages:
            blocks = []
            for b in range(st.max_depth):
                blocks.append(DynamicMBBlock(channels, st.width, st.stride if b == 0 else 1, st.act, st.se, lay.kernel_choices, lay.expand_choices))
                channels = st.width
            stages.append(nn.ModuleList(blocks))
        self.stages = nn.ModuleList(stages)
        self.head = Head(channels, lay.final_expand_width, lay.feature_mix_width, lay.num_classes, dropout)
        self.depths = [st.max_depth for st in lay.stages]

    def set_active(self, config: SubnetConfig) -> None:
        """Make ``config`` the active subnet (its resolution is the caller's input size)."""
        self.space.validate(config, check_resolution=False)
        self.depths = list(config.depths)
        for stage, ks, es in zip(self.stages, config.kernels, config.expands):
            for block, k, e in zip(stage, ks, es):
                block.active_kernel, block.active_expand = k, e

    def set_max(self) -> None:
        self.set_active(self.space.max_config())

    def sample_active(self, rng: random.Random | None = None) -> SubnetConfig:
        config = self.space.sample(rng)
        self.set_active(config)
        return config

    def forward(self, x):
        x = self.first_block(self.stem(x))
        for stage, depth in zip(self.stages, self.depths):
            for block in stage[:depth]:
                x = block(x)
        return self.head(x)

    @torch.no_grad()
    def reorganize_channels(self, expand_stage: int = 0) -> None:
        for stage in self.stages:
            for block in stage:
                block.reorganize_channels(expand_stage)

    @torch.no_grad()
    def extract(self, config: SubnetConfig) -> Subnet:
        """The static subnet of ``config`` with the supernet's weights (``config`` becomes active)."""
        self.set_active(config)
        spec = subnet_spec(self.layout, config)
        net = Subnet(spec, config)
        net.stem.load_state_dict(self.stem.state_dict())
        net.blocks[0].load_state_dict(self.first_block.state_dict())
        i = 1
        for stage, depth in zip(self.stages, config.depths):
            for block in stage[:depth]:
                net.blocks[i] = block.extract(spec.blocks[i])
                i += 1
        net.head.load_state_dict(self.head.state_dict())
        return net.train(self.training)


def extract(supernet: Supernet, config: SubnetConfig) -> Subnet:
    """Module-level alias of :meth:`Supernet.extract`."""
    return supernet.extract(config)
