"""How fast the search's inner loop prices subnets, next to the ways it could be done slower.

    python bench/bench_moofa_pricing.py [--layout moofa] [--resolution 32] [--channels 1]
                                        [--kernel-library cmsis-nn] [--pointer-bytes 4] [-n 20000]

Prints evaluations per CPU-second of :class:`moofa.analytic.Pricer` (the exact TFLM greedy plan,
tail and flash from cached pieces): fresh random subnets (cold caches), an evolution-like
stream (a population of 100 refilled by mutation and crossover, as OFA's regularized evolution
does), ``Pricer.fits`` on that stream with a budget half the subnets meet, and the same random
subnets priced again (warm; head only; with stage chains). For
comparison, in the same run: the reference path (build the graph, ``toolchain.memory.estimate_arena``)
and the memory logger (hooks on a real PyTorch subnet), with the speed-up ratios.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from moofa.analytic import Pricer, price  # noqa: E402
from moofa.layouts import get_layout  # noqa: E402
from moofa.space import SearchSpace  # noqa: E402


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
    args = ap.parse_args()

    layout = get_layout(args.layout, args.resolution, args.channels, args.num_classes)
    space = SearchSpace(layout)
    target = SimpleNamespace(pointer_bytes=args.pointer_bytes, kernel_library=args.kernel_library)
    rng = random.Random(0)
    configs = [space.sample(rng) for _ in range(args.n)]
    evolution = evolution_stream(space, args.n, random.Random(1))

    print(f"layout {layout.name} {args.channels}x{args.resolution}x{args.resolution}, {args.kernel_library}, {args.pointer_bytes}-byte pointers, n = {args.n}")
    print("  (evaluations per CPU-second; 'evolution' = OFA's regularized evolution's stream of new children)")
    pricer = Pricer(layout, target)
    cold = rate(pricer, configs)
    rate(pricer, configs)
    warm = rate(pricer, configs)
    head_only = rate(pricer.arena_head_bytes, configs)
    chains = Pricer(layout, target, stage_chains=True)
    rate(chains, configs), rate(chains, configs)
    warm_chains = rate(chains, configs)
    evo = rate(Pricer(layout, target), evolution)
    budget = sorted(pricer(c).arena_bytes for c in configs[:2000])[1000]  # half the subnets fit
    screen = Pricer(layout, target)
    evo_fits = rate(lambda c: screen.fits(c, budget), evolution)
    print(f"  Pricer, random subnets, cold caches       {cold:10,.0f} evals/s")
    print(f"  Pricer, evolution stream, from cold       {evo:10,.0f} evals/s")
    print(f"  Pricer.fits, evolution, half fit          {evo_fits:10,.0f} evals/s   (budget {budget:,} B)")
    print(f"  Pricer, same subnets again (warm)         {warm:10,.0f} evals/s")
    print(f"  Pricer, warm, arena head only             {head_only:10,.0f} evals/s")
    print(f"  Pricer(stage_chains=True), warm           {warm_chains:10,.0f} evals/s")

    sample = configs[:30]
    reference = rate(lambda c: price(c, target, layout), sample)
    print(f"  reference: graph + estimate_arena         {reference:10,.1f} evals/s   (Pricer warm is {warm / reference:,.0f}x)")
    try:
        import torch

        from moofa.blocks import subnet_spec
        from moofa.memlog import log_subnet
        from moofa.supernet import Subnet

        torch.set_num_threads(1)
        logger = rate(lambda c: log_subnet(Subnet(subnet_spec(layout, c))), sample[:10])
        print(f"  memory logger: build module + hooks       {logger:10,.1f} evals/s   (Pricer warm is {warm / logger:,.0f}x)")
    except ImportError:
        print("  memory logger: torch not installed")


if __name__ == "__main__":
    main()
