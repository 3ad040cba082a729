"""The elastic supernet: extract() equivalence, SAME padding, elastic kernel/expand/depth."""

from __future__ import annotations

import random

import pytest
import torch

from moofa.arch.blocks import same_padding
from moofa.arch.catalog import get_layout
from moofa.arch.space import SearchSpace
from moofa.nn import fastconv
from moofa.nn.fastconv import conv2d_same
from moofa.nn.supernet import Conv, DynamicMBBlock, Supernet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _randomized(net: Supernet) -> Supernet:
    """Give batch norms and kernel transforms non-trivial values so that slicing errors show."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
        for name, p in net.named_parameters():
            if "kernel_transforms" in name:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return net.eval()


@pytest.mark.parametrize(
    "name, resolution, channels, resolutions",
    [("ofa", 32, 3, (32, 24)), ("moofa", 32, 1, (32, 28)), ("moofa", 64, 3, (64, 48))],
)
def test_extract_equals_the_active_subnet(name, resolution, channels, resolutions):
    torch.manual_seed(0)
    net = _randomized(Supernet(get_layout(name, resolution, channels, 10)))
    space = SearchSpace(net.layout, resolutions=resolutions)
    rng = random.Random(0)
    for config in [space.max_config(), space.min_config()] + [space.sample(rng) for _ in range(3)]:
        x = torch.randn(2, channels, config.resolution, config.resolution)
        net.set_active(config)
        expected = net(x)
        subnet = net.extract(config).eval()
        assert (subnet(x) - expected).abs().max().item() < 1e-5, config
        assert subnet.config == config
        # The static subnet holds only the active weights.
        assert sum(p.numel() for p in subnet.parameters()) < sum(p.numel() for p in net.parameters())


def test_same_padding_is_tensorflows():
    # TF SAME, stride 2 on an even size: total padding k - 2 with the odd pixel after.
    assert same_padding(8, 3, 2) == (0, 1)
    assert same_padding(8, 7, 2) == (2, 3)
    assert same_padding(7, 3, 2) == (1, 1)  # odd size: symmetric
    assert same_padding(8, 5, 1) == (2, 2)
    # By hand: a 3x3 all-ones kernel at stride 2 over a 6x6 ramp. TF's first window starts at
    # the first pixel (no padding before); its last covers rows/cols 4..5 plus one pad.
    conv = Conv(1, 1, 3, 2, bn=False)
    with torch.no_grad():
        conv.conv.weight.fill_(1.0)
    x = torch.arange(36.0).reshape(1, 1, 6, 6)
    y = conv(x)
    assert y.shape == (1, 1, 3, 3)
    assert y[0, 0, 0, 0].item() == x[0, 0, 0:3, 0:3].sum().item()
    assert y[0, 0, 2, 2].item() == x[0, 0, 4:6, 4:6].sum().item()
    # PyTorch's symmetric padding=1 would centre the first window on pixel 0 instead.
    sym = torch.nn.functional.conv2d(x, conv.conv.weight, stride=2, padding=1)
    assert sym[0, 0, 0, 0].item() != y[0, 0, 0, 0].item()


def _explicit_same(x, weight, stride, groups):
    """SAME padding the plain way: pad, then an unpadded conv (PyTorch's own gradients)."""
    top, bottom = same_padding(x.shape[2], weight.shape[-1], stride)
    left, right = same_padding(x.shape[3], weight.shape[-1], stride)
    return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (left, right, top, bottom)), weight, stride=stride, groups=groups)


@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [4, 7, 14])
@pytest.mark.parametrize("depthwise, weight_grad", [(True, "pairs"), (True, "strips"), (False, "oneDNN")])
def test_fast_same_conv_equals_the_explicit_pad_and_its_gradients(kernel, stride, size, depthwise, weight_grad, monkeypatch):
    # Depthwise weight gradients on small maps are matrix products, on large maps strips.
    monkeypatch.setattr(fastconv, "MATMUL_MAX_PAIRS", 0 if weight_grad == "strips" else 1 << 30)
    g = torch.Generator().manual_seed(kernel * 100 + stride * 10 + size)
    c = 12
    x0 = torch.randn(3, c, size, size, generator=g).contiguous(memory_format=torch.channels_last)
    w0 = torch.randn(c, 1 if depthwise else c, kernel, kernel, generator=g)
    groups = c if depthwise else 1
    results = []
    for fn in (_explicit_same, lambda x, w, s, gr: conv2d_same(x, w, stride=s, groups=gr)):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        y = fn(x, w, stride, groups)
        y.backward(torch.linspace(-1, 1, y.numel()).reshape(y.shape))
        results.append((y.detach(), x.grad, w.grad))
    for want, got in zip(*results):
        assert want.shape == got.shape
        assert torch.allclose(want, got, atol=1e-4, rtol=1e-4), (want - got).abs().max()


def test_fast_conv_off_is_the_plain_pytorch_step():
    x = torch.randn(2, 8, 9, 9)
    w = torch.randn(8, 1, 7, 7)
    on = conv2d_same(x, w, stride=2, groups=8)
    fastconv.ENABLED = False
    try:
        off = conv2d_same(x, w, stride=2, groups=8)
    finally:
        fastconv.ENABLED = True
    assert torch.allclose(on, off, atol=1e-5)


def test_elastic_kernel_is_the_transformed_centre():
    block = DynamicMBBlock(16, 16, 1, "relu", False, (3, 5, 7), (3, 4, 6))
    w = block.depthwise_conv.weight
    with torch.no_grad():
        # Identity transforms: the 5x5 and 3x3 kernels are the centre crops.
        assert torch.equal(block.active_filter(96, 5), w[:96, :, 1:6, 1:6])
        assert torch.equal(block.active_filter(48, 3), w[:48, :, 2:5, 2:5])
        assert torch.equal(block.active_filter(96, 7), w[:96])
        # A learned 5to3 matrix mixes the 9 centre weights of the (transformed) 5x5 kernel.
        block.kernel_transforms["5to3"].copy_(torch.full((9, 9), 1 / 9))
        centre = w[:8, :, 2:5, 2:5].reshape(8, 9)
        assert torch.allclose(block.active_filter(8, 3).reshape(8, 9), centre.mean(1, keepdim=True).expand(8, 9))
    assert sorted(dict(block.kernel_transforms.named_parameters())) == ["5to3", "7to5"]
    assert block.kernel_transforms["7to5"].shape == (25, 25)


def test_reorganizing_channels_keeps_the_function_and_sorts_by_importance():
    torch.manual_seed(1)
    net = _randomized(Supernet(get_layout("moofa", 32, 1, 10)))
    net.set_max()
    x = torch.randn(2, 1, 32, 32)
    before = net(x)
    net.reorganize_channels()
    assert (net(x) - before).abs().max().item() < 1e-5
    for stage in net.stages:
        for block in stage:
            importance = block.project_conv.weight.abs().sum(dim=(0, 2, 3))
            assert torch.all(importance[:-1] >= importance[1:])


def test_elastic_depth_and_width_use_the_leading_blocks_and_channels():
    torch.manual_seed(2)
    net = _randomized(Supernet(get_layout("ofa", 32, 3, 10)))
    space = SearchSpace(net.layout)
    config = space.min_config()  # depth 2, expand 3, kernel 3 everywhere
    net.set_active(config)
    x = torch.randn(1, 3, 32, 32)
    before = net(x)
    with torch.no_grad():
        for stage in net.stages:
            stage[3].expand_conv.weight.add_(1.0)  # an inactive block
            mid = stage[0].expand_conv.weight.shape[0]
            stage[0].expand_conv.weight[mid - 8 :].add_(1.0)  # channels beyond expand 3
    assert torch.equal(net(x), before)


def test_training_mode_updates_only_the_active_batch_norm_slice():
    net = Supernet(get_layout("ofa", 32, 3, 10)).train()
    net.set_active(SearchSpace(net.layout).min_config())
    bn = net.stages[1][0].expand_bn
    active = 24 * 3  # stage 2's first block reads 24 channels, expand 3
    before = bn.running_mean.clone()
    net(torch.randn(4, 3, 32, 32)).sum().backward()
    assert not torch.equal(bn.running_mean[:active], before[:active])
    assert torch.equal(bn.running_mean[active:], before[active:])


@pytest.mark.parametrize("act", ["h_swish", "relu"])
def test_a_fake_quantized_stem_rounds_to_256_levels_only_in_training(act):
    from moofa.nn.supernet import Stem

    torch.manual_seed(0)
    plain, quant = Stem(1, 6, 2, act), Stem(1, 6, 2, act, fake_quant=True)
    quant.load_state_dict(plain.state_dict())
    assert set(quant.state_dict()) == set(plain.state_dict())  # no new keys: checkpoints load either way
    x = torch.randn(8, 1, 16, 16, requires_grad=True)
    plain.eval(), quant.eval()
    assert torch.equal(plain(x), quant(x))  # evaluation and export never quantize
    plain.train(), quant.train()
    exact, rounded = plain(x), quant(x)
    assert not torch.equal(exact, rounded)
    levels = torch.unique(rounded.detach())
    gaps = levels[1:] - levels[:-1]
    step = gaps.min()
    assert len(levels) <= 256 and torch.allclose(gaps / step, (gaps / step).round(), atol=1e-3)  # one grid
    rounded.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # straight-through: gradients flow
    assert quant.conv.conv.weight.grad.abs().sum() > 0


def test_fake_quantize_is_tflites_per_tensor_int8_grid():
    from moofa.nn.supernet import fake_quantize

    torch.manual_seed(0)
    x = torch.cat([torch.rand(1000) * 5 + 0.5, torch.zeros(3)])  # all positive but the zeros
    q = fake_quantize(x)
    step = 5.5 / 255  # the range widened to hold 0: [0, max]
    assert (q - x).abs().max() <= step / 2 + 1e-6
    assert torch.equal(q[-3:], torch.zeros(3))  # 0 is a level exactly, as the zero point makes it
    assert len(torch.unique(q)) <= 256
