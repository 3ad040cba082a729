"""Search speed, and whether the search finds better subnets than random sampling.

    python bench/bench_search.py [--supernet moofa] [--target nucleo-f746zg] [--budgets 48,64,96] [--random 100]

1. Wall time of one search with OFA's defaults (population 100, 500 generations) for the board.
2. For each SRAM budget (KiB of arena): the searched subnet's *measured* validation top-1 next
   to the best measured validation top-1 of ``--random`` random subnets that satisfy the same
   budget (every subnet BN-recalibrated, scored on the validation split). The best random subnet
   is *chosen* by that validation score, which flatters it (the best of 100 noisy measurements is
   biased upwards), so both winners are also scored once on the test set, which chose nothing.
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from moofa.cost.pricer import Pricer
from moofa.search.predictor import (
    Constraints,
    UnreachableBudget,
    evolution_search,
    load_search_setup,
)
from moofa.train.data import make_loaders
from moofa.train.loop import evaluate_subnet
from toolchain.boards.targets import resolve_target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--supernet", default="moofa")
    ap.add_argument("--target", default="nucleo-f746zg")
    ap.add_argument("--budgets", default="64,80,112", help="arena budgets in KiB")
    ap.add_argument("--flash-kib", type=float, default=None, help="flash budget in KiB (default: the board's)")
    ap.add_argument("--random", type=int, default=100)
    ap.add_argument("--val-images", type=int, default=None, help="validation images per subnet (default: the whole split)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    target = resolve_target(args.target)
    setup = load_search_setup(args.supernet)
    net, meta, space, predictor = setup.net, setup.meta, setup.space, setup.predictor
    pricer = Pricer(net.layout, target)
    flash = int(args.flash_kib * 1024) if args.flash_kib else target.flash_bytes - target.reserved_flash_bytes
    sram = target.arena_region_bytes - target.reserved_ram_bytes

    t = time.perf_counter()
    r = evolution_search(space, predictor, pricer, Constraints(sram, flash), seed=0)
    print(f"one search, population 100 x 500 generations, {target.name}: {time.perf_counter() - t:.1f} s wall, "
          f"{r.evaluated:,} subnets priced; best predicted val top-1 {r.predicted_top1 * 100:.2f}%")

    preset = meta["preset"]
    loaders = make_loaders(meta["dataset"]["name"], None, preset["batch_size"], tuple(meta["resolutions"]), preset["val_size"], meta["seed"])

    cache: dict = {}  # budgets are nested: a subnet drawn for several budgets is measured once

    def measured(config, split: str = "val") -> float:
        key = (config.to_string(), split)
        if key not in cache:
            cache[key] = _measure(config, split)
        return cache[key]

    def _measure(config, split: str) -> float:
        return evaluate_subnet(net, config, loaders, torch.device("cpu"), split=split, bn_images=preset["bn_recal_images"],
                               max_images=args.val_images if split == "val" else None)[0]

    print(f"\n| arena budget | searched: val top-1 | best of {args.random} random that fit: val top-1 | searched: test top-1 | "
          f"best random: test top-1 | random that fit |\n|---:|---:|---:|---:|---:|---:|")
    for kib in (float(b) for b in args.budgets.split(",")):
        c = Constraints(int(kib * 1024), flash)
        try:
            found = evolution_search(space, predictor, pricer, c, seed=0)
        except UnreachableBudget as e:
            print(f"| {kib:.0f} KiB | no subnet fits: the smallest needs {e.smallest['arena_bytes']:,} B of arena "
                  f"and {e.smallest['flash_bytes']:,} B of flash | — | — | — | 0 |", flush=True)
            continue
        rng = random.Random(1)
        pool, tries = [], 0
        while len(pool) < args.random and tries < 200_000:  # tight budgets: few random subnets fit
            tries += 1
            cand = space.sample(rng)
            if pricer.fits(cand, c.sram_budget_bytes, c.flash_budget_bytes):
                pool.append(cand)
        if not pool:
            why = "not drawn (--random 0)" if args.random == 0 else f"no random subnet fits in {tries:,} draws"
            print(f"| {kib:.0f} KiB | {measured(found.config) * 100:.2f}% | {why} | "
                  f"{measured(found.config, 'test') * 100:.2f}% | — | 0 |", flush=True)
            continue
        scored = [(measured(x), i) for i, x in enumerate(pool)]
        best_val, best_i = max(scored)
        print(f"| {kib:.0f} KiB | {measured(found.config) * 100:.2f}% | {best_val * 100:.2f}% | {measured(found.config, 'test') * 100:.2f}% | "
              f"{measured(pool[best_i], 'test') * 100:.2f}% | {len(pool)} |", flush=True)


if __name__ == "__main__":
    main()
