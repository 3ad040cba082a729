"""Predicted vs measured arena on the builds boards run: TFLM for Cortex-M in QEMU.

    python bench/bench_board_arena.py [--cores cortex-m7,cortex-m4] [--kernels reference,cmsis-nn]
                                      [--models corpus,calibration,deploy] [--only NAME[,NAME...]]
                                      [--json FILE]

For every model of the test corpus (tests/corpus.py), the tail calibration models
(bench/calibrate_tail.py) and the bundled deploy's model (build/deploy/model.tflite, when it is
there), on every build asked for: moofa's prediction for that build (pointer width 4, the kernel
library's scratch) next to TFLM's recording allocator on the build itself
(:mod:`toolchain.runtime.cortexm`), head and tail, and the time each run took. Builds are made on
first use and cached (~/.cache/moofa/tflm/). Exits 1 when any figure differs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from toolchain.errors import InputError  # noqa: E402
from toolchain.memory.estimate import estimate_arena  # noqa: E402
from toolchain.runtime import cortexm  # noqa: E402
from toolchain.tflite.reader import parse_model  # noqa: E402


def models(kinds: set[str], only: set[str] | None = None) -> dict[str, Path]:
    """``kind/name`` -> model path; with ``only``, just the models named there (by name, without
    the kind), and only those are built."""
    out: dict[str, Path] = {}
    if "corpus" in kinds:
        import corpus

        names = corpus.CORPUS if only is None else [k for k in corpus.CORPUS if k in only]
        out.update({f"corpus/{k}": corpus.build_model(k, corpus.cache_dir()) for k in names})
    if "calibration" in kinds:
        import calibrate_tail

        cache = calibrate_tail.cache_dir()
        out.update({f"calibration/{k}": calibrate_tail.build(k, cache) for k in calibrate_tail.MODELS
                    if (only is None or k in only) and k not in calibrate_tail.HOST_ONLY})
    if "deploy" in kinds and (REPO / "build" / "deploy" / "model.tflite").is_file():
        out["deploy/nucleo-f746zg"] = REPO / "build" / "deploy" / "model.tflite"
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cores", default="cortex-m7")
    ap.add_argument("--kernels", default="reference,cmsis-nn")
    ap.add_argument("--models", default="corpus,calibration,deploy")
    ap.add_argument("--only", metavar="NAMES", help="comma-separated model names (default: every model of --models)")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    rows, bad = [], 0
    only = {n.strip() for n in args.only.split(",") if n.strip()} if args.only else None
    found = models(set(args.models.split(",")), only)
    if only and not found:
        print(f"error: no model named {', '.join(sorted(only))} in --models {args.models}", file=sys.stderr)
        return 2
    for core_name in args.cores.split(","):
        core = cortexm.EMULATED[core_name]
        for lib in args.kernels.split(","):
            t = time.perf_counter()
            b = cortexm.build(core, lib, progress=lambda m: print(f"[bench] {m}", file=sys.stderr, flush=True))
            print(f"# {b.name}: ready in {time.perf_counter() - t:.1f} s", flush=True)
            print("| model | ops | meas head | pred head | meas tail | pred tail | run s | result |\n|---|---|---:|---:|---:|---:|---:|---|")
            faults = set()
            if "calibration" in args.models.split(","):
                import calibrate_tail

                faults = {f"calibration/{k}" for k in calibrate_tail.FAULTS_ON.get(lib, ())}
            for name, path in found.items():
                if name in faults:  # calibrate_tail.FAULTS_ON: this build's runner faults on it
                    print(f"| {name} | | skipped on {lib}: its runner faults (calibrate_tail.FAULTS_ON) | | | | | |")
                    continue
                graph = parse_model(path.read_bytes(), str(path), control_flow=True)  # control-flow models too
                e = estimate_arena(graph, 4, lib)
                t = time.perf_counter()
                try:
                    m = cortexm.run_on_qemu(b, path)
                except InputError as err:
                    rows.append({"model": name, "build": b.name, "error": str(err)})
                    print(f"| {name} | {len(graph.ops)} | error: {err} | | | | | |")
                    bad += 1
                    continue
                s = time.perf_counter() - t
                ok = m.agrees_with(e)
                bad += not ok
                rows.append({"model": name, "build": b.name, "ops": sorted(set(graph.op_kinds)), "measured": m.to_dict(),
                             "predicted": {"arena_head_bytes": e.arena_head_bytes, "arena_tail_bytes": e.arena_tail_bytes},
                             "run_s": round(s, 3), "ok": ok})
                print(f"| {name} | {len(graph.ops)} | {m.arena_head_bytes} | {e.arena_head_bytes} | {m.arena_tail_bytes} | "
                      f"{e.arena_tail_bytes} | {s:.2f} | {'OK' if ok else 'DIFF'} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(f"{len(rows)} runs, {bad} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
