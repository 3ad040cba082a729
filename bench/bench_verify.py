"""Wall time of ``moofa verify`` on the corpus models: predicted only, and with ``--measure``.

For each of the 11 models of ``tests/corpus.py`` (built and cached on first use):

- ``predict s``: ``python -m moofa verify MODEL --target T --json`` in a subprocess, the median
  of 3 runs: what a CI job pays, interpreter start-up and imports included;
- ``measure s``: the same with ``--measure`` (the model also runs once on the TFLM interpreter,
  in a child process of its own), 1 run;
- ``measure / predict``: the ratio of the two, measured in this one run;
- ``in-process ms``: :func:`toolchain.verify.verify_model` called in this process (median of 5
  after a warm-up): the prediction itself, without start-up.

The first row times ``python -m moofa --help``, the start-up floor of every CLI call.

    python bench/bench_verify.py [--target nucleo-f746zg]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))

from toolchain.boards.targets import resolve_targets  # noqa: E402
from toolchain.verify import verify_model  # noqa: E402

CLI_RUNS = 3  # subprocess runs per model for the predicted-only median
IN_PROCESS_RUNS = 5


def wall_seconds(argv: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT)
    return time.perf_counter() - start, proc


def moofa(*args: str) -> list[str]:
    return [sys.executable, "-m", "moofa", *args]


def check(proc: subprocess.CompletedProcess, what: str) -> dict:
    """verify exits 0 (fits) or 1 (does not fit); anything else is a failed run."""
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{what} failed with exit code {proc.returncode}:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def bench_model(name: str, path: Path, target: str) -> dict:
    argv = moofa("verify", str(path), "--target", target, "--json")
    predict_runs = []
    for _ in range(CLI_RUNS):
        seconds, proc = wall_seconds(argv)
        check(proc, " ".join(argv))
        predict_runs.append(seconds)
    measure_s, proc = wall_seconds(argv + ["--measure"])
    report = check(proc, " ".join(argv + ["--measure"]))

    targets = resolve_targets(target)
    verify_model(path, targets)  # warm-up
    in_process = []
    for _ in range(IN_PROCESS_RUNS):
        start = time.perf_counter()
        verify_model(path, targets)
        in_process.append(time.perf_counter() - start)

    predict_s = statistics.median(predict_runs)
    return {
        "model": name,
        "ops": report["ops"],
        "predict_s": predict_s,
        "measure_s": measure_s,
        "measure_over_predict": measure_s / predict_s,
        "in_process_ms": statistics.median(in_process) * 1e3,
        "fits": report["fits"],
    }


def format_table(startup_s: float, rows: list[dict]) -> str:
    header = ("model", "ops", "predict s (median of 3)", "--measure s (1 run)", "measure / predict",
              "in-process verify_model ms")
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines.append(f"| `moofa --help` (start-up floor) | — | {startup_s:.2f} | — | — | — |")
    for r in rows:
        lines.append(f"| {r['model']} | {r['ops']} | {r['predict_s']:.2f} | {r['measure_s']:.2f} | "
                     f"{r['measure_over_predict']:.1f}x | {r['in_process_ms']:.1f} |")
    total_p = sum(r["predict_s"] for r in rows)
    total_m = sum(r["measure_s"] for r in rows)
    lines.append(f"| **all {len(rows)}** | | {total_p:.2f} | {total_m:.2f} | {total_m / total_p:.1f}x | "
                 f"{sum(r['in_process_ms'] for r in rows):.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="nucleo-f746zg")
    args = parser.parse_args(argv)

    import corpus

    paths = corpus.build_all(corpus.cache_dir())
    startup_s = statistics.median(wall_seconds(moofa("--help"))[0] for _ in range(CLI_RUNS))
    rows = [bench_model(name, path, args.target) for name, path in paths.items()]
    print(format_table(startup_s, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
