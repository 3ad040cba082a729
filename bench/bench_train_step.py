"""One supernet training step vs the same step on the extracted static subnet.

The elastic supernet slices weights, transforms kernels and pads per call; this measures what
that costs. Prints the ratio (goal <= 1.15) and images/s for the largest and a random subnet,
both layouts, at Fashion-MNIST size, all measured in this one run.

    python bench/bench_train_step.py [--batch 128] [--steps 6] [--threads 1] [--contiguous]

Weights and batches are channels-last, as ``moofa train`` runs them (about twice as fast on
CPU as the default contiguous order, which ``--contiguous`` measures instead).
"""

from __future__ import annotations

import argparse
import random
import time

import torch
import torch.nn.functional as F

from moofa.arch.catalog import get_layout
from moofa.nn.supernet import Supernet


def step_time(model, x, y, steps: int) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - t)
    times = sorted(times[1:])  # drop the warm-up step, take the median
    return times[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--contiguous", action="store_true", help="default memory order instead of channels-last")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fmt = torch.contiguous_format if args.contiguous else torch.channels_last
    x, y = torch.randn(args.batch, 1, 28, 28).contiguous(memory_format=fmt), torch.randint(0, 10, (args.batch,))
    print("| layout | subnet | supernet step s | static subnet step s | ratio | supernet imgs/s |\n|---|---|---:|---:|---:|---:|")
    for name in ("moofa", "ofa"):
        net = Supernet(get_layout(name, resolution=28, in_channels=1, num_classes=10)).to(memory_format=fmt).train()
        for which, config in (("largest", net.space.max_config(28)), ("random", net.space.sample(random.Random(1)))):
            net.set_active(config)
            sub = net.extract(config).to(memory_format=fmt).train()
            t_super = step_time(net, x, y, args.steps)
            t_static = step_time(sub, x, y, args.steps)
            print(f"| {name} | {which} | {t_super:.3f} | {t_static:.3f} | {t_super / t_static:.2f} | {args.batch / t_super:.0f} |", flush=True)


if __name__ == "__main__":
    main()
