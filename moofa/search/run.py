"""``moofa search``: the command around :func:`moofa.search.predictor.evolution_search`."""

from __future__ import annotations

import json
import math

from toolchain.boards.budget import Budget
from toolchain.files import atomic_output, write_atomically

EXIT_OK, EXIT_DOES_NOT_FIT = 0, 1


def cost_blocks(cost, budget: Budget) -> tuple[dict, dict]:
    """The ``sram`` and ``flash`` blocks of a priced subnet, in ``moofa verify``'s contract."""
    arena = {"arena_bytes": cost.arena_bytes, "arena_head_bytes": cost.arena_head_bytes,
             "arena_tail_bytes": cost.arena_tail_bytes, "scratch_bytes": cost.scratch_bytes}
    return budget.sram_block(arena), budget.flash_block(cost.flash_bytes)


def run_search(args) -> int:
    from moofa.cost.pricer import Pricer
    from moofa.search.predictor import (
        Constraints,
        UnreachableBudget,
        evolution_search,
        load_search_setup,
    )
    from toolchain.boards.targets import resolve_target

    target = resolve_target(args.target)
    setup = load_search_setup(args.supernet)
    net, space, predictor = setup.net, setup.space, setup.predictor
    budget = Budget.for_target(target, args.sram_budget, args.flash_budget)
    sram, flash = budget.arena_bytes, budget.model_bytes
    constraints = Constraints(sram, flash, int(args.max_macs * 1e6) if args.max_macs else None)
    pricer = Pricer(net.layout, target)
    try:
        r = evolution_search(space, predictor, pricer, constraints, args.population, args.generations, args.parent_ratio, args.mutation_ratio, seed=args.seed)
    except UnreachableBudget as e:
        s = e.smallest
        print(f"moofa search: no subnet fits {target.name}: the smallest needs {s['arena_bytes']:,} B of arena "
              f"(budget {sram:,} B) and {s['flash_bytes']:,} B of flash (budget {flash:,} B)")
        if args.json:
            print(json.dumps({"fits": False, "smallest": s}))
        return EXIT_DOES_NOT_FIT
    sram_block, flash_block = cost_blocks(r.cost, budget)
    out = {"subnet": r.config.to_dict(), "predicted_top1": r.predicted_top1, "target": target.name, "sram": sram_block, "flash": flash_block,
           "macs": r.cost.macs, "params": r.cost.params, "evaluated": r.evaluated, "search_s": round(r.search_s, 2)}
    if args.out:
        write_atomically(args.out, r.config.to_json(indent=2) + "\n")
    if args.pareto:
        write_pareto(args.pareto, r.population, pricer)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{r.config.to_string()}\n  predicted val top-1 {r.predicted_top1 * 100:.2f}%  ({r.cost.macs / 1e6:.1f} M MACs, {r.cost.params:,} params)")
        print(f"  SRAM: arena {r.cost.arena_bytes:,} B of {sram:,} B (head-room {sram - r.cost.arena_bytes:,} B) on {target.name}")
        print(f"  flash: model {r.cost.flash_bytes:,} B of {flash:,} B (head-room {flash - r.cost.flash_bytes:,} B)")
        print(f"  {r.evaluated:,} subnets priced in {r.search_s:.1f} s")
    return EXIT_OK


def write_pareto(prefix: str, population, pricer) -> None:
    """The accuracy / SRAM front of the last population, as JSON and a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(((pricer(c).arena_bytes, acc, c) for c, acc in population), key=lambda p: (p[0], -p[1]))
    front, best = [], -1.0
    for mem, acc, c in points:
        if acc > best:
            front.append((mem, acc, c))
            best = acc
    write_atomically(prefix + ".json", json.dumps([{"arena_bytes": m, "predicted_top1": a, "subnet": c.to_dict()} for m, a, c in front], indent=2))
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.scatter([p[0] / 1024 for p in points], [p[1] * 100 for p in points], s=8, alpha=0.4, label="last population")
    ax.plot([p[0] / 1024 for p in front], [p[1] * 100 for p in front], "o-", color="#e45756", label="front")
    ax.set_xlabel("arena (KiB)")
    ax.set_ylabel("predicted val top-1 (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_output(prefix + ".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def run_sweep(args) -> int:
    """``moofa sweep``: one search per SRAM budget and per board; a table and a plot."""
    from moofa.cost.pricer import Pricer
    from moofa.search.predictor import (
        Constraints,
        UnreachableBudget,
        evolution_search,
        load_search_setup,
    )
    from toolchain.boards.targets import resolve_target, resolve_targets
    from toolchain.errors import InputError
    from toolchain.files import write_atomically

    setup = load_search_setup(args.supernet)
    net, space, predictor = setup.net, setup.space, setup.predictor
    runs = []  # (label, target, sram budget, flash budget)
    base = resolve_target(args.flash_target)
    if args.sram_budgets:
        try:
            kibs = [float(b) for b in args.sram_budgets.split(",") if b.strip()]
        except ValueError:
            raise InputError(f"--sram-budgets {args.sram_budgets!r}: expected comma-separated numbers of KiB") from None
        if not all(math.isfinite(k) and k > 0 for k in kibs):
            raise InputError(f"--sram-budgets {args.sram_budgets!r}: every budget must be a finite number of KiB above 0")
        flash = Budget.for_target(base).model_bytes
        runs += [(f"{k:g} KiB", base, int(k * 1024), flash) for k in kibs]
    for t in resolve_targets(args.targets) if args.targets else []:
        runs.append((t.name, t, t.sram_budget_bytes, t.flash_budget_bytes))
    rows = []
    for label, target, sram, flash in runs:
        pricer = Pricer(net.layout, target)
        try:
            r = evolution_search(space, predictor, pricer, Constraints(sram, flash), generations=args.generations, seed=args.seed)
            row = {"run": label, "target": target.name, "sram_budget_bytes": sram, "flash_budget_bytes": flash, "fits": True,
                   "predicted_top1": r.predicted_top1, "arena_bytes": r.cost.arena_bytes, "flash_bytes": r.cost.flash_bytes,
                   "macs": r.cost.macs, "subnet": r.config.to_string()}
        except UnreachableBudget as e:
            row = {"run": label, "target": target.name, "sram_budget_bytes": sram, "flash_budget_bytes": flash, "fits": False,
                   "smallest_arena_bytes": e.smallest["arena_bytes"], "smallest_flash_bytes": e.smallest["flash_bytes"]}
        rows.append(row)
        print(f"{label:>24}: " + (f"predicted {row['predicted_top1'] * 100:.2f}%, arena {row['arena_bytes']:,} B, model {row['flash_bytes']:,} B"
                                   if row["fits"] else f"nothing fits (smallest needs {row['smallest_arena_bytes']:,} B of arena)"), flush=True)
    lines = ["| run | board | SRAM budget B | predicted val top-1 | arena B | model B | MMACs | subnet |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r["fits"]:
            lines.append(f"| {r['run']} | {r['target']} | {r['sram_budget_bytes']:,} | {r['predicted_top1'] * 100:.2f}% | {r['arena_bytes']:,} | "
                         f"{r['flash_bytes']:,} | {r['macs'] / 1e6:.2f} | `{r['subnet']}` |")
        else:
            lines.append(f"| {r['run']} | {r['target']} | {r['sram_budget_bytes']:,} | does not fit (smallest needs {r['smallest_arena_bytes']:,} B) | | | | |")
    write_atomically(args.out + ".md", "\n".join(lines) + "\n")
    write_atomically(args.out + ".json", json.dumps(rows, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fit = [r for r in rows if r["fits"]]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.plot([r["sram_budget_bytes"] / 1024 for r in fit], [r["predicted_top1"] * 100 for r in fit], "o-")
    for r in fit:
        ax.annotate(r["run"], (r["sram_budget_bytes"] / 1024, r["predicted_top1"] * 100), fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("SRAM budget for the arena (KiB)")
    ax.set_ylabel("predicted val top-1 (%)")
    ax.set_title(f"{net.layout.name}: accuracy vs SRAM")
    fig.tight_layout()
    with atomic_output(args.out + ".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    print(f"wrote {args.out}.md, {args.out}.json, {args.out}.png")
    return EXIT_OK
