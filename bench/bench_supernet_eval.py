"""Test-set top-1 of a trained supernet's subnets: the largest, the smallest and N random ones.

    python bench/bench_supernet_eval.py [--supernet moofa] [--random 20] [--json FILE]

Each subnet is extracted, its batch-norm recalibrated on validation images, then scored on the
whole test set (Fashion-MNIST: 10,000 images). Prints a markdown table and a summary line.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import torch

from moofa.arch.blocks import subnet_spec
from moofa.cost.params import params_macs
from moofa.train.data import make_loaders
from moofa.train.evaluate import load_supernet, trained_space
from moofa.train.loop import evaluate_subnet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--supernet", default="moofa")
    ap.add_argument("--random", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    net, meta = load_supernet(args.supernet)
    space = trained_space(net, meta)
    preset = meta["preset"]
    loaders = make_loaders(meta["dataset"]["name"], None, preset["batch_size"], tuple(meta["resolutions"]), preset["val_size"], meta["seed"])
    rng = random.Random(args.seed)
    subnets = [("largest", space.max_config()), ("smallest", space.min_config())] + [(f"random {i + 1}", space.sample(rng)) for i in range(args.random)]
    rows = []
    print("| subnet | config | test top-1 | params | MMACs | s |\n|---|---|---:|---:|---:|---:|")
    for name, config in subnets:
        t = time.perf_counter()
        acc, n, _ = evaluate_subnet(net, config, loaders, torch.device("cpu"), split="test", bn_images=preset["bn_recal_images"])
        params, macs = params_macs(subnet_spec(net.layout, config))
        rows.append({"name": name, "config": config.to_string(), "test_top1": acc, "images": n, "params": params, "macs": macs})
        print(f"| {name} | `{config.to_string()}` | {acc * 100:.2f}% | {params:,} | {macs / 1e6:.2f} | {time.perf_counter() - t:.1f} |", flush=True)
    rand = [r["test_top1"] for r in rows[2:]]
    if rand:
        print(f"\n{args.supernet}: largest {rows[0]['test_top1'] * 100:.2f}%, smallest {rows[1]['test_top1'] * 100:.2f}%, "
              f"{len(rand)} random: mean {statistics.mean(rand) * 100:.2f}%, min {min(rand) * 100:.2f}%, max {max(rand) * 100:.2f}% "
              f"({rows[0]['images']:,} test images)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
