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
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from tqdm import tqdm

from moofa.arch.space import SubnetConfig
from moofa.search.predictor import _beside, dataset_path_for, fit_predictor, holdout_split, is_bundled, kendall_tau
from moofa.train.data import make_loaders
from moofa.train.evaluate import load_supernet, resolve_supernet, trained_space
from moofa.train.loop import evaluate_subnet


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
    print(f"refit's own held-out tau (all {report['heldout']} held out, vs val): {report['kendall_tau']:.3f}")
    print(f"held-out subnets: {len(held)}; val {v.mean():.4f} ± {v.std():.4f}, test {test.mean():.4f} ± {test.std():.4f} (mean ± std)")
    if args.json:
        rows = [{"config": configs[i].to_dict(), "val_top1": float(val[i]), "test_top1": float(t), "predicted": float(p)}
                for i, t, p in zip(held, test, pred)]
        with open(args.json, "w") as f:
            json.dump({**figures, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
