"""Parameters and MACs of a subnet, counted the way PyTorch counts them, from its block plan."""

from __future__ import annotations

from moofa.arch.blocks import FIRST_CONV_KERNEL, BlockSpec, SubnetSpec


# --- parameters and MACs (PyTorch's count, from the spec) ---------------------------------------
def _conv_params(cin: int, cout: int, k: int, groups: int = 1, bias: bool = False, bn: bool = True) -> int:
    return k * k * (cin // groups) * cout + (cout if bias else 0) + (2 * cout if bn else 0)


def block_params_macs(b: BlockSpec) -> tuple[int, int]:
    """Trainable parameters (conv weights, BN affine, SE biases) and multiply-accumulates."""
    (hi, wi), (ho, wo) = b.in_size, b.out_size
    params = macs = 0
    if b.has_expand:
        params += _conv_params(b.in_channels, b.mid_channels, 1)
        macs += b.in_channels * b.mid_channels * hi * wi
    params += _conv_params(b.mid_channels, b.mid_channels, b.kernel, groups=b.mid_channels)
    macs += b.kernel * b.kernel * b.mid_channels * ho * wo
    if b.se_channels:
        params += 2 * b.mid_channels * b.se_channels + b.se_channels + b.mid_channels
        macs += 2 * b.mid_channels * b.se_channels
    params += _conv_params(b.mid_channels, b.out_channels, 1)
    macs += b.mid_channels * b.out_channels * ho * wo
    return params, macs


def stem_params_macs(spec: SubnetSpec) -> tuple[int, int]:
    k, (h, w) = FIRST_CONV_KERNEL, spec.first_conv_out_size
    return _conv_params(spec.in_channels, spec.first_conv_width, k), k * k * spec.in_channels * spec.first_conv_width * h * w


def head_params_macs(spec: SubnetSpec) -> tuple[int, int]:
    (h, w), c = spec.last_size, spec.last_channels
    fe, fm, n = spec.final_expand_width, spec.feature_mix_width, spec.num_classes
    params = _conv_params(c, fe, 1) + _conv_params(fe, fm, 1, bn=False) + fm * n + n
    macs = c * fe * h * w + fe * fm + fm * n
    return params, macs


def params_macs(spec: SubnetSpec) -> tuple[int, int]:
    parts = [stem_params_macs(spec), head_params_macs(spec)] + [block_params_macs(b) for b in spec.blocks]
    return sum(p for p, _ in parts), sum(m for _, m in parts)
