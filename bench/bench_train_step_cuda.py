"""Supernet training step on a CUDA GPU: which memory format and cuDNN setting make it fast.

``moofa train`` puts batches and weights in channels-last order (fast on CPU, see
bench_train_step.py). On a GPU that choice and ``torch.backends.cudnn.benchmark`` decide which
convolution kernels run. One run measures, for each layout, the largest subnet's plain step
(forward, backward, SGD: the teacher phase) and one step of the fmnist recipe's last phase
(teacher forward, three subnets, sandwich rule), in each combination, alternating so a busy GPU
slows all alike; then the CUDA kernels that take most of the baseline step's time.

    python bench/bench_train_step_cuda.py [--batch 128] [--steps 15] [--preset fmnist]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
from bench_train_step import _step  # forward, cross-entropy backward, optimizer step

from moofa.arch.catalog import get_layout
from moofa.nn.supernet import Supernet
from moofa.train.loop import accumulate_gradients, frozen_teacher, load_preset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--preset", default="fmnist")
    ap.add_argument("--layouts", default="moofa,ofa")
    ap.add_argument("--device", default="cuda", help="cuda, or cpu to check the script itself")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_train_step_cuda: no CUDA device")
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    preset = load_preset(args.preset)
    phase = preset.phases[-1]
    torch.manual_seed(0)
    y = torch.randint(0, 10, (args.batch,), device=dev)
    print(f"{torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu'} torch {torch.__version__}; batch {args.batch}, median of {args.steps} steps")
    print("| layout | format | cudnn.benchmark | teacher-phase step ms | imgs/s | last-phase step ms | imgs/s |\n|---|---|---|---:|---:|---:|---:|")
    for name in args.layouts.split(","):
        layout = get_layout(name, resolution=28, in_channels=1, num_classes=10, memory="sram")
        combos = [(fmt, bench) for fmt in ("channels_last", "contiguous") for bench in (False, True)]
        nets = {}
        for fmt, _ in combos:
            if fmt not in nets:
                mf = getattr(torch, "channels_last" if fmt == "channels_last" else "contiguous_format")
                net = Supernet(layout, dropout=preset.dropout).to(dev, memory_format=mf).train()
                teacher = frozen_teacher(net)
                opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
                x = torch.randn(args.batch, 1, 28, 28, device=dev).contiguous(memory_format=mf)
                nets[fmt] = (net, teacher, opt, x)
        times = {(c, part): [] for c in combos for part in ("plain", "phase")}
        counter = iter(range(10**9))
        for i in range(args.steps + 3):
            for fmt, bench in combos:
                torch.backends.cudnn.benchmark = bench
                net, teacher, opt, x = nets[fmt]
                sync()
                t = time.perf_counter()
                net.set_max()
                _step(net, x, y, opt)
                sync()
                t1 = time.perf_counter()
                rngs = [random.Random(hash((i, next(counter), k))) for k in range(phase.subnets_per_step)]
                opt.zero_grad(set_to_none=True)
                accumulate_gradients(net, teacher, phase, preset, x, y, rngs)
                opt.step()
                sync()
                t2 = time.perf_counter()
                if i >= 3:
                    times[((fmt, bench), "plain")].append(t1 - t)
                    times[((fmt, bench), "phase")].append(t2 - t1)
        for c in combos:
            a, b = statistics.median(times[(c, "plain")]), statistics.median(times[(c, "phase")])
            print(f"| {name} | {c[0]} | {c[1]} | {a * 1e3:.1f} | {args.batch / a:.0f} | {b * 1e3:.1f} | {args.batch / b:.0f} |", flush=True)
        torch.backends.cudnn.benchmark = False
        net, teacher, opt, x = nets["channels_last"]
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])) as prof:
            net.set_max()
            for _ in range(3):
                _step(net, x, y, opt)
            sync()
        print(f"\n{name}, channels_last, largest subnet, 3 steps:")
        print(prof.key_averages().table(sort_by="cuda_time_total" if dev.type == "cuda" else "cpu_time_total", row_limit=12, max_name_column_width=70))


if __name__ == "__main__":
    main()
