"""The MOOFA claim against what an embedded engineer would do instead, on Fashion-MNIST.

For each board and SRAM budget: the subnet the search picks from each supernet (MOOFA, OFA, any
number of checkpoints, e.g. two training seeds), and each hand-designed baseline of
:mod:`moofa.arch.baselines` that fits — all exported by the same path (full-int8 TFLite), their
arenas predicted by the planner for the board's build (exact for every op these models use),
scored on the 10,000 test images, float and int8 (LiteRT).

Baselines train once with the data, augmentation and schedule of the supernets' preset (its
teacher phase's learning rate and warm-up, cosine decay over as many epochs as the whole preset
has), one torch thread, and are cached in ``--cache`` (a killed bench resumes with the baselines
it finished). Writes ``PREFIX.md`` (the table), ``PREFIX.json`` and ``PREFIX.png`` (top-1 vs
arena, one line per method and board). ``--include`` adds the rows of an earlier run (its
``.json``), so a table can grow one supernet at a time.

    python bench/bench_claim.py --supernet moofa=~/.cache/moofa/runs/moofa-fmnist/supernet.pt \\
        --supernet moofa-seed1=~/.cache/moofa/runs/moofa-fmnist-seed1/supernet.pt --supernet ofa=ofa \\
        --boards nucleo-f746zg,esp32-s3-devkitc-1 --budgets 56,64,80,96,128,192 --out claim
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_BASELINES = "cnn3,dscnn-s,dscnn-m,mobilenetv2-0.35,mobilenetv2-0.5"  # cheapest to train first


def graph_macs(graph) -> int:
    """Multiply-accumulates of the int8 graph's convolutions and fully connected layers."""
    macs = 0
    for op in graph.ops:
        out = graph.tensors[op.outputs[0]].shape
        if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w = graph.tensors[op.inputs[1]].shape  # OHWI / 1HWC
            per = w[1] * w[2] * (w[3] if op.kind == "CONV_2D" else 1)
            macs += math.prod(out) * per
        elif op.kind == "FULLY_CONNECTED":
            w = graph.tensors[op.inputs[1]].shape
            macs += out[0] * w[0] * w[1]
    return macs


def train_baseline(name: str, preset, loaders, cache: Path, progress: bool = True):
    """A baseline trained with the preset's data and schedule (cached as ``cache/NAME.pt``)."""
    from tqdm import tqdm

    from moofa.arch.baselines import make_baseline
    from moofa.train.loop import lr_at
    from toolchain.files import atomic_output

    info = loaders.info
    net = make_baseline(name, max(preset.resolutions), info.in_channels, info.num_classes)
    path = cache / f"{name}-{preset.name}.pt"
    if path.is_file():
        net.load_state_dict(torch.load(path, weights_only=True))
        return net.eval(), json.loads(path.with_suffix(".json").read_text())
    teacher = preset.phases[0]
    epochs = sum(p.epochs for p in preset.phases)
    steps_per_epoch = loaders.train.sampler.steps_per_epoch()
    total = math.ceil(epochs * steps_per_epoch)
    opt = torch.optim.SGD(net.parameters(), lr=teacher.lr, momentum=preset.momentum, nesterov=True, weight_decay=preset.weight_decay)
    t0, step = time.perf_counter(), 0
    bar = tqdm(total=total, desc=f"train {name}", disable=not progress)
    net.train()
    for epoch in range(math.ceil(epochs)):
        loaders.set_epoch(epoch)
        for x, y in loaders.train:
            if step >= total:
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, int(teacher.warmup_epochs * steps_per_epoch), teacher.lr)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x.contiguous(memory_format=torch.channels_last)), y, label_smoothing=preset.label_smoothing).backward()
            opt.step()
            step += 1
            bar.update(1)
    bar.close()
    meta = {"name": name, "epochs": epochs, "steps": step, "train_s": round(time.perf_counter() - t0, 1)}
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        torch.save(net.state_dict(), tmp)
    path.with_suffix(".json").write_text(json.dumps(meta))
    return net.eval(), meta


def score(module, resolution: int, loaders, target, work: Path, tag: str) -> dict:
    """Float and int8 test top-1, arena on the board's build, model bytes, MACs of one network."""
    from moofa.deploy import int8_top1
    from moofa.train.loop import top1
    from toolchain.convert.export import export_int8
    from toolchain.memory.estimate import estimate_arena
    from toolchain.tflite.reader import read_model

    test = loaders.in_memory("test", resolution)
    float_acc, n = top1(module, test, torch.device("cpu"))
    calib = loaders.in_memory("train", resolution, max_images=256)[0].numpy()
    path = work / f"{tag}.tflite"
    export = export_int8(module.eval(), calib, path)
    q_acc = int8_top1(path, [(test[0][i : i + 500], test[1][i : i + 500]) for i in range(0, len(test[1]), 500)])
    graph = read_model(str(path))
    arena = estimate_arena(graph, target.pointer_bytes, target.kernel_library)
    return {"float_top1": float_acc, "int8_top1": q_acc, "test_images": n, "arena_bytes": arena.arena_bytes,
            "arena_exact": arena.tail_exact, "model_bytes": export.model_bytes, "macs": graph_macs(graph)}


def merge_included(row_lists: list[list[dict]]) -> list[dict]:
    """The rows of several ``--include`` files, each (method, board) once: a later file's rows of a
    (method, board) replace an earlier one's. Two runs started from the same table each add their
    own method; ``--include BASE --include RUN1 --include RUN2`` then keeps both."""
    groups: dict[tuple, list[dict]] = {}
    for rows_in in row_lists:
        mine: dict[tuple, list[dict]] = {}
        for r in rows_in:
            mine.setdefault((r["method"], r["board"]), []).append(r)
        groups.update(mine)
    return [r for rows in groups.values() for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--supernet", action="append", default=[], metavar="LABEL=SPEC", help="a supernet to search (bundled name or path); repeat")
    ap.add_argument("--baselines", default=DEFAULT_BASELINES)
    ap.add_argument("--boards", default="nucleo-f746zg,esp32-s3-devkitc-1")
    ap.add_argument("--budgets", default="56,64,80,96,128,192", help="SRAM budgets in KiB of arena (the smallest Fashion-MNIST MOOFA subnet needs 52 KiB on an M7: 44 KiB of it tail)")
    ap.add_argument("--preset", default="fmnist", help="the recipe the baselines train with")
    ap.add_argument("--generations", type=int, default=300)
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "moofa" / "claim"))
    ap.add_argument("--out", default="claim")
    ap.add_argument("--include", action="append", default=[], metavar="ROWS.json",
                    help="rows an earlier run wrote (its --out .json): added to the table and the plot, except "
                         "a (method, board) this run measures again; repeat (a later file's rows of a "
                         "(method, board) replace an earlier one's)")
    args = ap.parse_args()
    included = []
    for f in args.include:
        try:
            rows_in = json.loads(Path(f).expanduser().read_text())
            if not isinstance(rows_in, list) or not all(isinstance(r, dict) and {"method", "board", "kind"} <= r.keys() for r in rows_in):
                raise ValueError("not the rows a bench_claim run writes (a list of objects with method, board, kind)")
            included.append(rows_in)
        except (OSError, ValueError) as e:
            raise SystemExit(f"bench_claim: --include {f}: {e}") from None
    earlier = merge_included(included)
    from moofa.cost.pricer import Pricer
    from moofa.search.predictor import Constraints, UnreachableBudget, evolution_search, load_search_setup
    from moofa.train.data import make_loaders
    from moofa.train.loop import evaluate_subnet, load_preset
    from toolchain.boards.budget import Budget
    from toolchain.boards.targets import resolve_targets
    from toolchain.files import write_atomically

    torch.set_num_threads(1)
    cache = Path(args.cache).expanduser()
    work = cache / "exports"
    work.mkdir(parents=True, exist_ok=True)
    preset = load_preset(args.preset)
    # Baselines are fixed-size networks: they train and run at the preset's largest resolution.
    loaders = make_loaders(preset.dataset, None, preset.batch_size, (max(preset.resolutions),), preset.val_size, 0, crop_padding=preset.crop_padding)
    targets = resolve_targets(args.boards)
    budgets = [float(b) for b in args.budgets.split(",")]
    rows = []
    measured_now = {(s.partition("=")[0], t.name) for s in args.supernet for t in targets}
    measured_now |= {(b, t.name) for b in args.baselines.split(",") if b for t in targets}
    kept = [r for r in earlier if (r["method"], r["board"]) not in measured_now]

    def emit(row):
        rows.append({**row, "measured": time.strftime("%Y-%m-%d")})
        print(json.dumps(rows[-1]), flush=True)
        write_atomically(Path(args.out + ".json"), json.dumps(kept + rows, indent=2) + "\n")

    baselines = {}
    for name in [b for b in args.baselines.split(",") if b]:
        net, meta = train_baseline(name, preset, loaders, cache)
        baselines[name] = (net, meta)
    for target in targets:
        flash = Budget.for_target(target).model_bytes
        for name, (net, meta) in baselines.items():  # a fixed network: scored once per board, fits where it fits
            s = score(net, max(preset.resolutions), loaders, target, work, f"{name}-{target.name}")
            emit({"method": name, "kind": "baseline", "board": target.name, "budget_kib": None, **s, "train_s": meta["train_s"],
                  "fits_flash": s["model_bytes"] <= flash})
        for spec in args.supernet:
            label, _, where = spec.partition("=")
            setup = load_search_setup(where or label)
            sl = make_loaders(setup.meta["dataset"]["name"], None, setup.meta["preset"]["batch_size"], tuple(setup.meta["resolutions"]),
                              setup.meta["preset"]["val_size"], setup.meta["seed"])
            for kib in budgets:
                try:
                    found = evolution_search(setup.space, setup.predictor, Pricer(setup.net.layout, target),
                                             Constraints(int(kib * 1024), flash), generations=args.generations, seed=0)
                except UnreachableBudget as e:
                    emit({"method": label, "kind": "searched", "board": target.name, "budget_kib": kib, "fits": False,
                          "smallest_arena_bytes": e.smallest["arena_bytes"], "smallest_flash_bytes": e.smallest["flash_bytes"],
                          "flash_budget_bytes": flash})
                    continue
                _, _, subnet = evaluate_subnet(setup.net, found.config, sl, torch.device("cpu"), split="val",
                                               bn_images=setup.meta["preset"]["bn_recal_images"])
                s = score(subnet, found.config.resolution, sl, target, work, f"{label}-{target.name}-{kib:g}")
                emit({"method": label, "kind": "searched", "board": target.name, "budget_kib": kib, "fits": True,
                      "subnet": found.config.to_string(), "predicted_val_top1": found.predicted_top1, **s})
    write_atomically(Path(args.out + ".json"), json.dumps(kept + rows, indent=2) + "\n")  # also when only merging
    write_table(kept + rows, args.out)


def nothing_fits(row: dict) -> str:
    """The table's text for a budget no subnet fits: what the smallest subnet needs, and which of
    the board's two limits it is over (rows from runs before 2026-12-06 carry no needs)."""
    if "smallest_arena_bytes" not in row:
        return "nothing fits"
    arena, flash, room = row["smallest_arena_bytes"], row["smallest_flash_bytes"], row["flash_budget_bytes"]
    over = [what for what, bad in (("arena", arena > row["budget_kib"] * 1024), ("flash", flash > room)) if bad]
    why = f" ({' and '.join(over)})" if over else ""
    return f"nothing fits{why}: the smallest needs {arena:,} B of arena and about {flash:,} B of flash ({room:,} B left for the model)"


def write_table(rows, out: str) -> None:
    from toolchain.files import write_atomically

    order = {"baseline": 0, "searched": 1}
    rows = sorted(rows, key=lambda r: (r["board"], order.get(r["kind"], 2), r["method"], r["budget_kib"] or 0))
    lines = ["| board | method | SRAM budget KiB | subnet / network | float top-1 | int8 top-1 | arena B | model B | MMACs |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("fits") is False:
            lines.append(f"| {r['board']} | {r['method']} | {r['budget_kib']:g} | {nothing_fits(r)} | | | | | |")
            continue
        budget = f"{r['budget_kib']:g}" if r["budget_kib"] is not None else "—"
        what = f"`{r['subnet']}`" if r.get("subnet") else r["method"]
        if r.get("fits_flash") is False:
            what += " (over the board's flash)"
        lines.append(f"| {r['board']} | {r['method']} | {budget} | {what} | {r['float_top1'] * 100:.2f}% | {r['int8_top1'] * 100:.2f}% | "
                     f"{r['arena_bytes']:,} | {r['model_bytes']:,} | {r['macs'] / 1e6:.2f} |")
    write_atomically(Path(out + ".md"), "\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    boards = sorted({r["board"] for r in rows})
    fig, axes = plt.subplots(1, len(boards), figsize=(6 * len(boards), 4.5), squeeze=False)
    for ax, board in zip(axes[0], boards):
        mine = [r for r in rows if r["board"] == board and r.get("fits") is not False]
        for method in sorted({r["method"] for r in mine}):
            pts = sorted((r["arena_bytes"] / 1024, r["int8_top1"] * 100) for r in mine if r["method"] == method)
            style = "o-" if any(r["kind"] == "searched" for r in mine if r["method"] == method) else "s"
            over = any(r.get("fits_flash") is False for r in mine if r["method"] == method)
            ax.plot(*zip(*pts), style, label=method + (" (over flash)" if over else ""), mfc="none" if over else None)
        for method in sorted({r["method"] for r in rows if r["board"] == board} - {r["method"] for r in mine}):
            ax.plot([], [], "x", color="grey", label=f"{method}: nothing fits")  # a method with no point on this board still says so
        ax.set_title(board)
        exact = all(r.get("arena_exact") for r in mine)
        ax.set_xlabel("arena (KiB, " + ("exact for the board's TFLM build)" if exact else "estimated: not every figure is exact)"))
        ax.set_ylabel("int8 test top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out + ".png", dpi=120)


if __name__ == "__main__":
    main()
