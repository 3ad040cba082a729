"""The analytic flash estimate against real exports.

    python bench/bench_flash_estimate.py [--out DIR] [--fit]

Exports 12 subnets with toolchain.convert.export.export_int8 -- four of the bundled trained Fashion-MNIST
supernet (smallest, largest, two random), and the largest and a random subnet of four more
layouts (OFA and MOOFA, 32x32 to 96x96, 10 to 1000 classes) whose BN statistics are set to
random non-zero values, as training leaves them -- plus one untrained subnet (zero BN-folded
biases), and prints each file's size next to :func:`moofa.cost.flash.flash_estimate`. Exports
already in ``--out`` are reused. ``--fit`` prints the least-squares TENSOR_BYTES and MODEL_BYTES
over the trained-like subnets (how moofa.cost.flash's constants were obtained). About five minutes
on the 2-core build machine.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import toolchain.runtime.tf  # noqa: E402,F401  (TensorFlow after Triton, see toolchain/runtime/tf.py)


def subnets():
    """(label, layout, module, config, input channels)."""
    import torch

    from moofa.arch.catalog import get_layout
    from moofa.arch.space import SearchSpace, SubnetConfig
    from moofa.nn.supernet import Supernet
    from moofa.train.evaluate import load_supernet

    net, meta = load_supernet("moofa")
    space = SearchSpace(net.layout, resolutions=tuple(meta["resolutions"]))
    rng = random.Random(5)
    yield "fmnist moofa smallest", net.layout, net, space.min_config(min(space.resolutions)), 1
    yield "fmnist moofa largest", net.layout, net, space.max_config(max(space.resolutions)), 1
    for i in range(2):
        yield f"fmnist moofa random {i}", net.layout, net, space.sample(rng), 1
    for name, res, channels, classes in [("ofa", 32, 3, 100), ("moofa", 32, 1, 10), ("ofa", 64, 3, 10), ("moofa", 96, 3, 1000)]:
        layout = get_layout(name, res, channels, classes)
        model = Supernet(layout).eval()
        g = torch.Generator().manual_seed(0)
        for m in model.modules():  # trained-like: non-zero BN statistics, so non-zero folded biases
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        s = SearchSpace(layout)
        yield f"{name} {res}x{res}x{channels} {classes} classes, largest", layout, model, s.max_config(), channels
        yield f"{name} {res}x{res}x{channels} {classes} classes, random", layout, model, s.sample(rng), channels
    layout = get_layout("moofa", 28, 1, 10)
    config = SubnetConfig.from_string("moofa r28 | k7e2 k3e4 | k5e3 k3e2 | k3e2 k7e2 | k3e2 k3e2 | k5e2 k3e2")
    yield "untrained (zero biases)", layout, Supernet(layout).eval(), config, 1


def main() -> None:
    import numpy as np
    import torch

    from moofa.cost.flash import MODEL_BYTES, TENSOR_BYTES, flash_estimate
    from moofa.cost.lowering import subnet_graph
    from toolchain.convert.export import export_int8

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="keep the exports here (default: a temporary folder)")
    ap.add_argument("--fit", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = args.out or Path(tempfile.mkdtemp(prefix="flash-"))
    out.mkdir(parents=True, exist_ok=True)

    print("| subnet | tensors | .tflite bytes | estimate | error |")
    print("|---|---:|---:|---:|---:|")
    fit_rows = []
    for i, (label, layout, model, config, channels) in enumerate(subnets()):
        path = out / f"subnet{i}.tflite"
        if not path.is_file():
            calibration = np.random.default_rng(i).random((4, channels, config.resolution, config.resolution), dtype=np.float32)
            export_int8(model.extract(config), calibration, path)
        graph = subnet_graph(layout, config)
        real, estimate = path.stat().st_size, flash_estimate(graph)
        print(f"| {label} ({config.resolution}x{config.resolution}, depths {'/'.join(map(str, config.depths))}) | {len(graph.tensors)} "
              f"| {real:,} | {estimate:,} | {estimate - real:+,} B ({100 * (estimate - real) / real:+.3f}%) |", flush=True)
        if "untrained" not in label:
            fit_rows.append((real, estimate - TENSOR_BYTES * len(graph.tensors) - MODEL_BYTES, len(graph.tensors)))
    if args.fit:
        rows = np.array(fit_rows, dtype=float)
        a = np.stack([rows[:, 2], np.ones(len(rows))], 1)
        (per_tensor, constant), *_ = np.linalg.lstsq(a, rows[:, 0] - rows[:, 1], rcond=None)
        whole = round(per_tensor)
        rest = round(float(np.mean(rows[:, 0] - rows[:, 1] - whole * rows[:, 2])))
        print(f"least squares: {per_tensor:.2f} B per tensor + {constant:.0f} B; with {whole} B per tensor, + {rest} B "
              f"(moofa.cost.flash: TENSOR_BYTES = {TENSOR_BYTES}, MODEL_BYTES = {MODEL_BYTES})")


if __name__ == "__main__":
    main()
