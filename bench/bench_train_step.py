"""Supernet training speed on CPU: before and after, and against the extracted static subnet.

One run measures, with one torch thread, channels-last batches of Fashion-MNIST size (as
``moofa train`` runs them):

1. a plain step (forward, backward, SGD) for the largest, a middle (kernel 5, expand 3, depth 3)
   and the smallest subnet of each layout: the elastic supernet with PyTorch's own convolutions
   ("before": explicit SAME pad + oneDNN depthwise gradients), the supernet with
   :mod:`moofa.nn.fastconv` ("after"), and the extracted static subnet (after);
2. the recipe: the steps of a preset's phases as ``moofa train`` takes them (teacher forward for
   distillation, ``subnets_per_step`` subnets, the sandwich rule), each phase weighted by its
   epochs, before and after — the imgs/s a training run gets.

Before and after alternate step by step so that a busy neighbour slows both alike; ratios are of
medians taken in this one run.

    python bench/bench_train_step.py [--batch 128] [--steps 5] [--preset fmnist-cpu]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
import torch.nn.functional as F

from moofa.arch.catalog import get_layout
from moofa.arch.space import SubnetConfig
from moofa.nn import fastconv
from moofa.nn.supernet import Supernet
from moofa.train.loop import accumulate_gradients, frozen_teacher, load_preset


def _step(model, x, y, opt):
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def before_after(fn, steps: int) -> tuple[float, float]:
    """Median seconds of ``fn`` with fastconv off and on, alternating (first call of each dropped)."""
    times = {False: [], True: []}
    for i in range(2 * (steps + 1)):
        on = bool(i % 2)
        fastconv.ENABLED = on
        times[on].append(timed(fn))
    fastconv.ENABLED = True
    return statistics.median(times[False][1:]), statistics.median(times[True][1:])


def middle_config(space, resolution: int) -> SubnetConfig:
    pick = lambda choices: sorted(choices)[len(choices) // 2]  # noqa: E731
    d, k, e = pick(space.depth_choices), pick(space.kernel_choices), pick(space.expand_choices)
    n = space.n_stages
    return SubnetConfig(space.layout.name, resolution, ((k,) * d,) * n, ((e,) * d,) * n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per measurement (median)")
    ap.add_argument("--preset", default="fmnist-cpu", help="the recipe measured in part 2")
    ap.add_argument("--layouts", default="moofa:paper,moofa:sram,ofa:sram", help="comma-separated LAYOUT:MEMORY pairs")
    args = ap.parse_args()
    layouts = [tuple(s.split(":")) for s in args.layouts.split(",")]
    if any(len(pair) != 2 for pair in layouts):
        ap.error(f"--layouts {args.layouts!r}: give LAYOUT:MEMORY pairs, e.g. moofa:sram,ofa:sram")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cl = torch.channels_last
    x = torch.randn(args.batch, 1, 28, 28).contiguous(memory_format=cl)
    y = torch.randint(0, 10, (args.batch,))

    print("| layout | subnet | before imgs/s | after imgs/s | speed-up | static subnet imgs/s | supernet ÷ static step |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, memory in layouts:
        net = Supernet(get_layout(name, resolution=28, in_channels=1, num_classes=10, memory=memory)).to(memory_format=cl).train()
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        for which, config in (("largest", net.space.max_config(28)), ("middle", middle_config(net.space, 28)), ("smallest", net.space.min_config(28))):
            net.set_active(config)
            old, new = before_after(lambda: _step(net, x, y, opt), args.steps)
            sub = net.extract(config).to(memory_format=cl).train()
            sopt = torch.optim.SGD(sub.parameters(), lr=0.01, momentum=0.9)
            static = statistics.median([timed(lambda: _step(sub, x, y, sopt)) for _ in range(args.steps + 1)][1:])
            b = args.batch
            print(f"| {name} ({memory}) | {which} | {b / old:.0f} | {b / new:.0f} | **{old / new:.2f}×** | {b / static:.0f} | {new / static:.2f} |", flush=True)

    preset = load_preset(args.preset)
    print(f"\nRecipe `{preset.name}`: one step per phase as `moofa train` takes it, weighted by the phase's epochs\n")
    print("| layout | phase | epochs | before imgs/s | after imgs/s | speed-up |\n|---|---|---:|---:|---:|---:|")
    for name, memory in layouts:
        net = Supernet(get_layout(name, resolution=28, in_channels=1, num_classes=10, memory=memory)).to(memory_format=cl).train()
        teacher = frozen_teacher(net)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        total_old = total_new = total_epochs = 0.0
        for pi, phase in enumerate(preset.phases):
            counter = iter(range(10**9))

            def one_step():
                res = preset.resolutions[next(counter) % len(preset.resolutions)]
                xr = F.interpolate(x, size=(res, res), mode="bilinear", align_corners=False).contiguous(memory_format=cl)
                rngs = [random.Random(hash((pi, next(counter), k))) for k in range(phase.subnets_per_step)]
                opt.zero_grad(set_to_none=True)
                accumulate_gradients(net, teacher if phase.distill else None, phase, preset, xr, y, rngs)
                opt.step()

            old, new = before_after(one_step, args.steps)
            total_old += phase.epochs * old
            total_new += phase.epochs * new
            total_epochs += phase.epochs
            print(f"| {name} ({memory}) | {phase.name} | {phase.epochs:g} | {args.batch / old:.0f} | {args.batch / new:.0f} | {old / new:.2f}× |", flush=True)
        b = args.batch * total_epochs
        print(f"| {name} ({memory}) | **whole recipe** | {total_epochs:g} | {b / total_old:.0f} | {b / total_new:.0f} | **{total_old / total_new:.2f}×** |", flush=True)


if __name__ == "__main__":
    main()
