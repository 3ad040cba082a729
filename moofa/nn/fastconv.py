"""Convolutions with TensorFlow's SAME padding, made fast for CPU training.

Two things made a supernet training step slow on CPU (bench/bench_train_step.py measures both):

- **The depthwise weight gradient.** PyTorch's CPU depthwise convolution (oneDNN) computes the
  weight gradient of kernels at most 3 wide with a vectorized kernel, and of 5×5 and 7×7 with a
  much slower one; the 7×7 gradients were most of the step. Kernels at most 3 wide are fast
  whatever their height, so :func:`conv2d_same` computes a k×k depthwise weight gradient in k×3
  column strips (offsets 0, 3, ..., k-3; the last may overlap the one before), each strip's
  gradient the k×3 weight gradient of the padded input's columns from the strip's offset on. On
  small maps (a 7×7 kernel over a 4×4 map: the padded input is six times the input, nearly all
  zeros) it is two matrix products instead, with nothing padded (:func:`_weight_grad_pairs`).
  The forward pass and the input gradient are PyTorch's own.
- **Padding.** An explicit pad (fill the whole output, copy the input in) before every
  convolution. SAME padding is symmetric except for stride-2 layers whose input size leaves one
  more row or column at the bottom or right; every other convolution now pads inside the
  convolution itself, with no copy. The asymmetric ones still pad explicitly.

The gradients equal PyTorch's to float rounding (``tests/test_moofa_supernet.py``). On CUDA the
cuDNN kernels run as they are (only the padding change applies).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from moofa.arch.blocks import same_padding

STRIP = 3
ENABLED = True  # bench/bench_train_step.py turns this off to measure the plain PyTorch step in the same run


MATMUL_MAX_PAIRS = 256  # H·W·Ho·Wo up to which the weight gradient is two matrix products (4×4 maps)


@lru_cache(maxsize=256)
def _pair_selection(h: int, w: int, ho: int, wo: int, kernel: int, stride: int, top: int, left: int) -> torch.Tensor:
    """(H·W·Ho·Wo) × k² matrix of 0/1: which (input pixel, output pixel) pairs meet at each kernel tap."""
    sel = torch.zeros(h * w, ho * wo, kernel * kernel)
    for i in range(kernel):
        for j in range(kernel):
            for y in range(ho):
                r = y * stride + i - top
                if not 0 <= r < h:
                    continue
                for x in range(wo):
                    c = x * stride + j - left
                    if 0 <= c < w:
                        sel[r * w + c, y * wo + x, i * kernel + j] = 1.0
    return sel.reshape(h * w * ho * wo, kernel * kernel)


def _weight_grad_pairs(grad_out: torch.Tensor, x: torch.Tensor, kernel: int, stride: int, padding: tuple[int, int]) -> torch.Tensor:
    """dL/dW of a depthwise conv on a small map: per channel, the batch-summed products of every
    input pixel with every output-gradient pixel (one batched matrix product), then the sum of
    the pairs each kernel tap joins (a product with a fixed 0/1 matrix). No padding is built."""
    n, c, h, w = x.shape
    ho, wo = grad_out.shape[2], grad_out.shape[3]
    xm = x.permute(1, 2, 3, 0).reshape(c, h * w, n).contiguous()  # contiguous: bmm is per-matrix copies otherwise
    gm = grad_out.permute(1, 0, 2, 3).reshape(c, n, ho * wo).contiguous()
    pairs = torch.bmm(xm, gm).reshape(c, h * w * ho * wo)
    sel = _pair_selection(h, w, ho, wo, kernel, stride, padding[0], padding[1]).to(dtype=x.dtype, device=x.device)
    return (pairs @ sel).reshape(c, 1, kernel, kernel)


def _weight_grad_strips(grad_out: torch.Tensor, xp: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """dL/dW (C×1×k×k) of a depthwise conv of the padded ``xp`` whose output gradient is ``grad_out``."""
    c = xp.shape[1]
    span = (grad_out.shape[3] - 1) * stride + STRIP
    probe = xp.new_empty((c, 1, kernel, STRIP))
    out = xp.new_empty((c, 1, kernel, kernel))
    for o in [*range(0, kernel - STRIP, STRIP), kernel - STRIP]:
        _, gw, _ = torch.ops.aten.convolution_backward(
            grad_out, xp[:, :, :, o : o + span], probe, None, [stride, stride], [0, 0], [1, 1], False, [0, 0], c, [False, True, False]
        )
        out[:, :, :, o : o + STRIP] = gw
    return out


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, stride=stride, padding=padding, groups=weight.shape[0])

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        s, (ph, pw), c, k = ctx.stride, ctx.padding, weight.shape[0], weight.shape[-1]
        grad_x = grad_w = None
        grad_out = grad_out.contiguous(memory_format=torch.channels_last) if x.is_contiguous(memory_format=torch.channels_last) else grad_out
        if ctx.needs_input_grad[0]:
            grad_x, _, _ = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, [s, s], [ph, pw], [1, 1], False, [0, 0], c, [True, False, False]
            )
        if ctx.needs_input_grad[1]:
            if x.shape[2] * x.shape[3] * grad_out.shape[2] * grad_out.shape[3] <= MATMUL_MAX_PAIRS:
                grad_w = _weight_grad_pairs(grad_out, x, k, s, (ph, pw))
            else:
                xp = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
                grad_w = _weight_grad_strips(grad_out, xp, k, s)
        return grad_x, grad_w, None, None


def conv2d_same(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1, groups: int = 1) -> torch.Tensor:
    """``conv2d`` of ``x`` (N×C×H×W) with TensorFlow's SAME padding for ``weight``'s square kernel."""
    kernel = weight.shape[-1]
    if kernel == 1 and stride == 1:
        return F.conv2d(x, weight, bias, groups=groups)
    top, bottom = same_padding(x.shape[2], kernel, stride)
    left, right = same_padding(x.shape[3], kernel, stride)
    if not ENABLED:
        return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, bias, stride=stride, groups=groups)
    if bottom > top or right > left:  # asymmetric: pad explicitly
        x, padding = F.pad(x, (left, right, top, bottom)), (0, 0)
    else:
        padding = (top, left)
    depthwise = groups > 1 and groups == x.shape[1] == weight.shape[0]
    if depthwise and bias is None and kernel > STRIP and x.device.type == "cpu" and torch.is_grad_enabled():
        return _DepthwiseConv.apply(x, weight, stride, padding)
    return F.conv2d(x, weight, bias, stride=stride, padding=padding, groups=groups)


class SameConv2d(torch.nn.Conv2d):
    """``nn.Conv2d`` (same parameters, same state-dict keys, hooks fire as on any ``Conv2d``) whose
    forward pads as TensorFlow's SAME does, through :func:`conv2d_same`. Built with ``padding=0``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d_same(x, self.weight, self.bias, self.stride[0], self.groups)
