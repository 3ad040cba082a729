"""How fast the search's inner loop prices subnets, next to the ways it could be done slower.

    python bench/bench_moofa_pricing.py [--layout moofa] [--resolution 32] [--channels 1]
                                        [--kernel-library cmsis-nn] [--pointer-bytes 4]
                                        [-n 20000] [--repeat 3] [--check 300]

Prints evaluations per CPU-second of :class:`moofa.cost.pricer.Pricer` (full cost: the exact TFLM
greedy head with the kernel library's scratch, the persistent tail, flash, MACs, parameters):

- fresh random subnets, from a new ``Pricer`` (cold caches: every piece, stage and boundary
  placement is built on the way);
- an evolution stream from cold: a population of 100 refilled by mutation and crossover, as
  OFA's regularized evolution does, priced in full and through ``Pricer.fits`` with a budget
  half the subnets meet (what ``moofa search`` calls);
- the same random subnets again (warm), in full and head only.

Each figure is the median of ``--repeat`` runs (each on a new ``Pricer``), with the slowest and
fastest run, since the build machine's cores are shared. ``--check`` subnets of the random
stream are also priced the slow way (graph + ``toolchain.memory.estimate.estimate_arena``, the planner
itself) and must be identical; for comparison, the rates of that reference path and of the
memory logger (hooks on a real PyTorch subnet) follow, with the speed-up ratios.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from moofa.arch.catalog import get_layout  # noqa: E402
from moofa.arch.space import SearchSpace  # noqa: E402
from moofa.cost.pricer import Pricer, price  # noqa: E402


def rate(fn, items) -> float:
    """Calls per second of this process's CPU time (the build machine's two cores are shared,
    so wall time measures the neighbours as much as the code)."""
    start = time.process_time()
    for item in items:
        fn(item)
    return len(items) / (time.process_time() - start)


def evolution_stream(space: SearchSpace, n: int, rng: random.Random) -> list:
    """Configs in the order regularized evolution asks for them (population 100, half mutants)."""
    population = [space.sample(rng) for _ in range(100)]
    out = list(population)
    while len(out) < n:
        parents = population[:25]
        child = space.mutate(rng.choice(parents), rng) if rng.random() < 0.5 else space.crossover(rng.choice(parents), rng.choice(parents), rng)
        population = population[1:] + [child]
        out.append(child)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layout", default="moofa")
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--kernel-library", default="cmsis-nn")
    ap.add_argument("--pointer-bytes", type=int, default=4)
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--check", type=int, default=300, help="subnets also priced by the planner itself (must be identical)")
    args = ap.parse_args()

    layout = get_layout(args.layout, args.resolution, args.channels, args.num_classes)
    space = SearchSpace(layout)
    target = SimpleNamespace(pointer_bytes=args.pointer_bytes, kernel_library=args.kernel_library)
    rng = random.Random(0)
    configs = [space.sample(rng) for _ in range(args.n)]
    evolution = evolution_stream(space, args.n, random.Random(1))
    budget = sorted(Pricer(layout, target)(c).arena_bytes for c in configs[:2000])[1000]  # half the subnets fit

    runs: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        pricer = Pricer(layout, target)
        runs.setdefault("cold", []).append(rate(pricer, configs))
        runs.setdefault("warm", []).append(rate(pricer, configs))
        runs.setdefault("head", []).append(rate(pricer.arena_head_bytes, configs))
        runs.setdefault("evolution", []).append(rate(Pricer(layout, target), evolution))
        screen = Pricer(layout, target)
        runs.setdefault("fits", []).append(rate(lambda c, s=screen: s.fits(c, budget), evolution))

    def show(label: str, key: str, note: str = "") -> None:
        r = runs[key]
        print(f"  {label:42s} {statistics.median(r):10,.0f} evals/s  ({min(r):,.0f}-{max(r):,.0f}){note}")

    print(f"layout {layout.name} {args.channels}x{args.resolution}x{args.resolution}, {args.kernel_library}, "
          f"{args.pointer_bytes}-byte pointers, n = {args.n}, median of {args.repeat} runs (slowest-fastest)")
    show("Pricer, new random subnets, cold caches", "cold")
    show("Pricer, evolution stream, cold caches", "evolution")
    show("Pricer.fits, evolution stream, half fit", "fits", f"   (budget {budget:,} B)")
    show("Pricer, same subnets again (warm)", "warm")
    show("Pricer, warm, arena head only", "head")

    sample = configs[: args.check]
    fast = Pricer(layout, target)
    mismatches = sum(fast(c) != price(c, target, layout) for c in sample)
    print(f"  identical to graph + estimate_arena (the planner) on {len(sample)} subnets: {'yes' if not mismatches else f'NO, {mismatches} differ'}")
    warm = statistics.median(runs["warm"])
    cold = statistics.median(runs["cold"])
    reference = rate(lambda c: price(c, target, layout), sample[:30])
    print(f"  reference: graph + estimate_arena           {reference:10,.1f} evals/s   (Pricer cold is {cold / reference:,.0f}x)")
    try:
        import torch

        from moofa.arch.blocks import subnet_spec
        from moofa.nn.memlog import log_subnet
        from moofa.nn.supernet import Subnet

        torch.set_num_threads(1)
        logger = rate(lambda c: log_subnet(Subnet(subnet_spec(layout, c))), sample[:10])
        print(f"  memory logger: build module + hooks         {logger:10,.1f} evals/s   (Pricer warm is {warm / logger:,.0f}x)")
    except ImportError:
        print("  memory logger: torch not installed")
    if mismatches:
        sys.exit(1)


if __name__ == "__main__":
    main()
