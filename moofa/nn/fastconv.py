"""Convolutions with TensorFlow's SAME padding, made fast for CPU training.

Two things made a supernet training step slow on CPU (bench/bench_train_step.py measures both):

- **The depthwise weight gradient.** PyTorch's CPU depthwise convolution (oneDNN) computes the
  weight gradient of kernels at most 3 wide with a vectorized kernel, and of 5×5 and 7×7 with a
  much slower one; the 7×7 gradients were most of the step. Kernels at most 3 wide are fast
  whatever their height, so :func:`conv2d_same` computes a k×k depthwise weight gradient in k×3
  column strips (offsets 0, 3, ..., k-3; the last may overlap the one before), each strip's
  gradient the k×3 weight gradient of the padded input's columns from the strip's offset on. The
  forward pass and the input gradient are PyTorch's own.
- **Padding.** An explicit pad (fill the whole output, copy the input in) before every
  convolution. SAME padding is symmetric except for stride-2 layers whose input size leaves one
  more row or column at the bottom or right; every other convolution now pads inside the
  convolution itself, with no copy. The asymmetric ones still pad explicitly.

The gradients equal PyTorch's to float rounding (``tests/test_moofa_supernet.py``). On CUDA the
cuDNN kernels run as they are (only the padding change applies).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from moofa.arch.blocks import same_padding

STRIP = 3
ENABLED = True  # bench/bench_train_step.py turns this off to measure the plain PyTorch step in the same run


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
