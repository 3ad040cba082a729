"""Offline arena plans vs TFLM's greedy planner, per model.

For every model of the plan corpus (``tests/plan_corpus.py``: Keras-built models on which the
greedy planner loses) and the main corpus (``tests/corpus.py``), prints TFLM's greedy head, our
planned head (heuristic, then ``--exact``), the liveness lower bound, the saving, and the
planning times; and checks every embedded plan with the real TFLM interpreter (``measured``
must equal ``ours``). "CP-SAT alone" is the exact solver started from TFLM's own plan instead of
from the heuristic: how long the solver needs to find and prove the optimum by itself.

    python bench/bench_offline_plan.py [--time-limit 10] [--update-docs]

``--update-docs`` writes the table into ``docs/BENCHMARKS.md`` under the section
"## Offline arena plans (`moofa plan`)", replacing only that section.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import corpus  # noqa: E402
import plan_corpus  # noqa: E402

from toolchain.memory.offline_plan import (  # noqa: E402
    Packing,
    exact_packing,
    heuristic_packing,
    plan_model,
)
from toolchain.memory.planner import (  # noqa: E402
    Buffer,
    greedy_offsets,
    head_bytes,
    live_profile,
    plan_graph,
)
from toolchain.memory.scratch import scratch_requests  # noqa: E402
from toolchain.runtime.tflm import measure  # noqa: E402
from toolchain.tflite.reader import read_model  # noqa: E402

SECTION = "## Offline arena plans (`moofa plan`)"
COMMAND = "python bench/bench_offline_plan.py --update-docs"


def kib(n: int) -> str:
    return f"{n / 1024:.1f}"


def bench(time_limit_s: float) -> list[str]:
    models = {**plan_corpus.build_all(), **corpus.build_all(corpus.cache_dir())}
    rows = [
        "| model | set | TFLM greedy head KiB | our head KiB | lower bound KiB | saving | TFLM measured (planned) KiB "
        "| heuristic s | `--exact` s | CP-SAT alone s | proven optimal |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in models.items():
            out = Path(tmp) / f"{name}.tflite"
            heuristic = plan_model(path, out)
            exact = plan_model(path, exact=True, time_limit_s=time_limit_s)
            measured = measure(out).arena_head_bytes
            check = "" if measured == heuristic.planned_head_bytes else " MISMATCH"

            graph = read_model(path)
            greedy = plan_graph(graph, scratch_requests(graph))
            start = time.perf_counter()
            alone = exact_packing(greedy.buffers, Packing(greedy.offsets, greedy.head_bytes, "tflm-greedy"),
                                  time_limit_s)
            alone_s = time.perf_counter() - start
            alone_text = f"{alone_s:.2f}" + ("" if alone.head_bytes == exact.planned_head_bytes else
                                              f" ({kib(alone.head_bytes)} KiB)")

            rows.append(
                f"| {name} | {'plan' if name in plan_corpus.PLAN_CORPUS else 'main'} "
                f"| {kib(heuristic.greedy_head_bytes)} | {kib(exact.planned_head_bytes)} "
                f"| {kib(heuristic.lower_bound_bytes)} | {exact.saving_percent:.1f}% "
                f"| {kib(measured)}{check} | {heuristic.planning_s:.3f} | {exact.planning_s:.3f} "
                f"| {alone_text} | {'yes' if exact.proven_optimal else 'no'} |"
            )
            print(rows[-1], flush=True)
    rows += [
        "",
        "With a board's kernel library the scratch buffers change (CMSIS-NN im2col, ESP-NN "
        "padded copies; predicted, not measurable on this host): greedy head -> our head "
        "(lower bound), KiB, heuristic plan.",
        "",
        "| model | cmsis-nn | esp-nn |",
        "|---|---|---|",
    ]
    for name, path in models.items():
        if name not in plan_corpus.PLAN_CORPUS:
            continue
        cells = []
        for library in ("cmsis-nn", "esp-nn"):
            r = plan_model(path, kernel_library=library)
            cells.append(f"{kib(r.greedy_head_bytes)} -> {kib(r.planned_head_bytes)} ({kib(r.lower_bound_bytes)}), "
                         f"-{r.saving_percent:.1f}%")
        rows.append(f"| {name} | {' | '.join(cells)} |")
        print(rows[-1], flush=True)
    rows += [
        "",
        "Stress: N buffers with seeded random lifetimes, denser than any corpus model (start "
        "uniform in 0..N/5, length 1, 2, 3, 4, 9, 21 or 41 scopes, size 16 B-3.2 KiB); heads in "
        "KiB, times in s. Where CP-SAT hits its time limit the plan is not proven optimal.",
        "",
        "| instance | TFLM greedy | heuristic (s) | CP-SAT from heuristic (s) | lower bound | proven optimal |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for n in (50, 150, 300):
        buffers = random_buffers(n, seed=0)
        greedy_head = head_bytes(buffers, greedy_offsets(buffers))
        start = time.perf_counter()
        packing = heuristic_packing(buffers)
        heuristic_s = time.perf_counter() - start
        start = time.perf_counter()
        exact = exact_packing(buffers, packing, time_limit_s)
        exact_s = time.perf_counter() - start
        bound = max(live_profile(buffers, n + 50))
        proven = exact.proven_optimal or exact.head_bytes == bound
        rows.append(f"| random_{n} | {kib(greedy_head)} | {kib(packing.head_bytes)} ({heuristic_s:.2f}) "
                    f"| {kib(exact.head_bytes)} ({exact_s:.2f}) | {kib(bound)} | {'yes' if proven else 'no'} |")
        print(rows[-1], flush=True)
    return rows


def random_buffers(n: int, seed: int) -> list[Buffer]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        first = rng.randint(0, n // 5)
        out.append(Buffer(16 * rng.randint(1, 200), first, first + rng.choice([0, 1, 2, 3, 8, 20, 40]), tensor=i))
    return out


def update_docs(rows: list[str], time_limit_s: float) -> None:
    path = REPO / "docs" / "BENCHMARKS.md"
    body = "\n".join([
        SECTION,
        "",
        f"Command: `{COMMAND}` (date: {datetime.date.today()}; CP-SAT time limit {time_limit_s:g} s, 2 workers; "
        f"{platform.machine()}, Python {platform.python_version()}, shared 2-core machine).",
        "",
        "Heads are the TFLM arena head (non-persistent buffers, reference kernels). *Our head* "
        "is what TFLM does with the embedded plan (offline tensors first, online scratch filled "
        "in around them); *TFLM measured* is the tflite-micro interpreter's recording allocator "
        "on the written model (for models where no plan beats greedy, nothing is embedded and "
        "this is the greedy head). *Saving* is relative to the greedy head. The lower bound is the "
        "most bytes alive in one allocation scope, so a head equal to it is optimal.",
        "",
        *rows,
        "",
    ])
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if SECTION in text:
        start = text.index(SECTION)
        nxt = text.find("\n## ", start + len(SECTION))
        text = text[:start] + body + (text[nxt + 1:] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=float, default=10.0, help="CP-SAT time limit per model, s")
    parser.add_argument("--update-docs", action="store_true", help="write the table into docs/BENCHMARKS.md")
    args = parser.parse_args()
    rows = bench(args.time_limit)
    if args.update_docs:
        update_docs(rows, args.time_limit)


if __name__ == "__main__":
    main()
