"""How well can any predictor rank subnets that were measured on the validation split?

    python bench/bench_predictor_ceiling.py [--supernet moofa] [--data FILE] [--heldout N] [--json FILE]

The predictor is fitted on validation top-1 (``moofa predictor build``), and its held-out Kendall
tau is computed against validation top-1 too: both carry the validation split's sampling noise
(5,000 images: about ±0.4 points of binomial spread at 90%, against a spread of a point or so
between subnets). This bench refits the predictor from a measured dataset exactly as the build does
(same seed, same held-out fifth), scores the held-out subnets on the *test* split (10,000 other
images), and prints three taus: predictor vs val (what the build reports), predictor vs test
(what a user of the search gets), and val vs test (how well a second measurement ranks the same
subnets: the ceiling for a predictor judged on val).

It also prints what a *perfect* predictor (one that knew each subnet's true accuracy) would score
against the validation and the test labels, estimated from the val-vs-test tau: with Gaussian
measurement noise independent between the splits, of variance inversely proportional to the
split's size, Greiner's relation tau = (2/pi)·arcsin(rho) gives the noise-to-spread ratio and from it
both ceilings (an estimate under that model, printed as one).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from tqdm import tqdm

from moofa.arch.space import SubnetConfig
from moofa.search.predictor import _beside, dataset_path_for, fit_predictor, holdout_split, is_bundled, kendall_tau
from moofa.train.data import make_loaders
from moofa.train.evaluate import load_supernet, resolve_supernet, trained_space
from moofa.train.loop import evaluate_subnet


def perfect_predictor_taus(tau_val_test: float, n_val: int, n_test: int) -> tuple[float, float]:
    """(tau vs val, tau vs test) of a predictor that knew each subnet's true accuracy, given the
    tau between two measurements of the same subnets on ``n_val`` and ``n_test`` images.

    Model: measured = true + noise, Gaussian, independent between splits, noise variance
    r·spread² on val and r·q·spread² on test with q = n_val/n_test. Then
    rho(val, test) = 1/sqrt((1+r)(1+q·r)) and rho(true, split) = 1/sqrt(1+noise ratio), each
    turned into a tau by Greiner's relation tau = (2/pi)·arcsin(rho)."""
    rho = math.sin(math.pi * tau_val_test / 2)
    if rho <= 0:
        return float("nan"), float("nan")  # the two measurements do not agree at all: no spread to rank
    q = n_val / n_test
    c = 1.0 - 1.0 / rho**2  # q·r² + (1+q)·r + c = 0, c <= 0
    r = (-(1 + q) + math.sqrt((1 + q) ** 2 - 4 * q * c)) / (2 * q)
    as_tau = lambda noise: 2 / math.pi * math.asin(1 / math.sqrt(1 + noise))  # noqa: E731
    return as_tau(r), as_tau(q * r)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--supernet", default="moofa", help="bundled name or checkpoint (default moofa)")
    ap.add_argument("--data", help="the measured dataset (default: the one `moofa predictor build` wrote for it)")
    ap.add_argument("--heldout", type=int, default=0, help="score only the first N held-out subnets on test (default all)")
    ap.add_argument("--json", help="also write the figures and per-subnet rows here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    path = resolve_supernet(args.supernet)
    data_path = args.data or (_beside(path, ".predictor-data.json") if is_bundled(path) else dataset_path_for(path))
    data = json.loads(open(data_path).read())
    net, meta = load_supernet(str(path))
    space = trained_space(net, meta)
    configs = [SubnetConfig.from_dict(s["config"]) for s in data["subnets"]]
    val = np.array([s["val_top1"] for s in data["subnets"]], dtype=np.float64)
    t0 = time.perf_counter()
    predictor, report = fit_predictor(space, configs, val.astype(np.float32), seed=data.get("seed", 0))
    fit_s = time.perf_counter() - t0
    held, _ = holdout_split(len(configs), data.get("seed", 0))  # the part fit_predictor held out
    if args.heldout:
        held = held[: args.heldout]
    preset = meta["preset"]
    loaders = make_loaders(meta["dataset"]["name"], None, preset["batch_size"], tuple(meta["resolutions"]), preset["val_size"], meta["seed"])
    pred = predictor.predict([configs[i] for i in held]).astype(np.float64)
    test = np.array([evaluate_subnet(net, configs[i], loaders, torch.device("cpu"), split="test", bn_images=preset["bn_recal_images"])[0]
                     for i in tqdm(held, desc="held-out subnets on test")])
    v = val[held]
    figures = {
        "supernet": str(path), "dataset": str(data_path), "subnets": len(configs), "heldout_scored": len(held),
        "build_report_tau": report["kendall_tau"],
        "tau_pred_val": kendall_tau(pred, v), "tau_pred_test": kendall_tau(pred, test), "tau_val_test": kendall_tau(v, test),
        "val_mean": float(v.mean()), "val_std": float(v.std()), "test_mean": float(test.mean()), "test_std": float(test.std()),
        "fit_s": round(fit_s, 1),
    }
    print("| pair | Kendall tau |\n|---|---:|")
    for key, label in (("tau_pred_val", "predictor vs val (the build's figure)"), ("tau_pred_test", "predictor vs test"),
                       ("tau_val_test", "val vs test (the ceiling)")):
        print(f"| {label} | {figures[key]:.3f} |")
    n_val = int(data.get("val_images") or preset["val_size"])
    n_test = len(loaders.in_memory("test", configs[held[0]].resolution)[1])
    figures["perfect_tau_val"], figures["perfect_tau_test"] = perfect_predictor_taus(figures["tau_val_test"], n_val, n_test)
    print(f"| a perfect predictor vs val (estimate: Gaussian noise, variance ∝ 1/images; {n_val} val, {n_test} test images) | "
          f"{figures['perfect_tau_val']:.3f} |")
    print(f"| a perfect predictor vs test (estimate, same model) | {figures['perfect_tau_test']:.3f} |")
    print(f"refit's own held-out tau (all {report['heldout']} held out, vs val): {report['kendall_tau']:.3f}")
    print(f"held-out subnets: {len(held)}; val {v.mean():.4f} ± {v.std():.4f}, test {test.mean():.4f} ± {test.std():.4f} (mean ± std)")
    if args.json:
        rows = [{"config": configs[i].to_dict(), "val_top1": float(val[i]), "test_top1": float(t), "predicted": float(p)}
                for i, t, p in zip(held, test, pred)]
        with open(args.json, "w") as f:
            json.dump({**figures, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
