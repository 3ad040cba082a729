"""Torch threads for a CPU training run: one against all cores, alone and beside a busy neighbour.

``moofa train`` uses the cores per process less one (at least one) unless ``--threads`` says
otherwise. This bench measures what that choice costs or saves, in one run: a teacher step (the
largest subnet, plain cross-entropy) and a last-phase step (distilled, ``subnets_per_step``
subnets, the sandwich rule) of a preset, at each thread count, alternating step by step so that
both see the same machine. It then repeats the measurement with a neighbour process spinning on
one core, which is what a run shares the machine with when tests or a build run beside it.

    python bench/bench_train_threads.py [--layout ofa] [--preset fmnist] [--threads 1,2] [--steps 6]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys

import torch
from bench_train_step import _step, timed  # this folder: python puts a script's own folder on the path

from moofa.arch.catalog import get_layout
from moofa.nn.supernet import Supernet
from moofa.train.loop import accumulate_gradients, frozen_teacher, load_preset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layout", default="ofa", help="supernet layout (default ofa)")
    ap.add_argument("--preset", default="fmnist", help="the recipe whose batch, resolution and last phase are measured")
    ap.add_argument("--threads", default=f"1,{os.cpu_count() or 1}", help="comma-separated thread counts (default 1 and all cores)")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per measurement (median; one more is dropped as warm-up)")
    args = ap.parse_args()
    try:
        counts = [int(t) for t in args.threads.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1 or args.steps < 1:
        ap.error("--threads takes positive counts, --steps a positive number")
    preset = load_preset(args.preset)
    torch.manual_seed(0)
    cl = torch.channels_last
    res = max(preset.resolutions)
    net = Supernet(get_layout(args.layout, resolution=res, in_channels=1, num_classes=10, memory=preset.memory)).to(memory_format=cl).train()
    teacher = frozen_teacher(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(preset.batch_size, 1, res, res).contiguous(memory_format=cl)
    y = torch.randint(0, 10, (preset.batch_size,))
    last = preset.phases[-1]
    counter = iter(range(10**9))

    def teacher_step():
        net.set_active(net.space.max_config(res))
        _step(net, x, y, opt)

    def last_phase_step():
        rngs = [random.Random(hash((next(counter), k))) for k in range(last.subnets_per_step)]
        opt.zero_grad(set_to_none=True)
        accumulate_gradients(net, teacher, last, preset, x, y, rngs)
        opt.step()

    def measure(fn) -> dict[int, float]:
        times: dict[int, list[float]] = {n: [] for n in counts}
        for _ in range(args.steps + 1):
            for n in counts:
                torch.set_num_threads(n)
                times[n].append(timed(fn))
        return {n: statistics.median(v[1:]) for n, v in times.items()}

    print(f"`{args.layout}` layout, preset `{preset.name}` (batch {preset.batch_size}, {res}×{res}), {os.cpu_count()} cores; "
          f"median seconds a step over {args.steps}\n")
    print("| machine | step | " + " | ".join(f"{n} thread{'s' * (n > 1)}" for n in counts) + f" | speed-up of {counts[-1]} |")
    print("|---|---|" + "---:|" * (len(counts) + 1))
    for label in ("alone", "one core busy beside it"):
        neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if label != "alone" else None
        try:
            for name, fn in (("teacher", teacher_step), (f"{last.name} ({last.subnets_per_step} subnets, distilled)", last_phase_step)):
                t = measure(fn)
                cells = " | ".join(f"{t[n]:.2f} s" for n in counts)
                print(f"| {label} | {name} | {cells} | **{t[counts[0]] / t[counts[-1]]:.2f}×** |", flush=True)
        finally:
            if neighbour is not None:
                neighbour.kill()
                neighbour.wait()


if __name__ == "__main__":
    main()
