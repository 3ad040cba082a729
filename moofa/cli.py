"""The ``moofa`` and ``moofa-deploy`` commands.

Thin by design: parse flags, call library functions, print, set the exit code. Exit codes are a
contract (docs/ARCHITECTURE.md): 0 success / fits, 1 ran fine but the model does not fit (or a
check failed), 2 bad input or usage, 3 an internal error (a bug), each reported in one line on
stderr; ``--debug`` adds the traceback and keeps the exit code. Interrupted: 130 (SIGINT) or 143
(SIGTERM), after every child process is killed and nothing half-written is left. Heavy imports
(TensorFlow, torch) happen inside the subcommand that needs them, so ``moofa verify`` starts fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from toolchain.memory.scratch import KERNEL_LIBRARIES  # plain data, no heavy imports

EXIT_OK, EXIT_DOES_NOT_FIT, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_SIGINT, EXIT_SIGTERM = 130, 143


# --- argument types: every numeric flag range-checked, the valid range in the message --------
def _number(kind, lo=None, hi=None, lo_open=False, what=""):
    import math

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        low_bad = lo is not None and (value <= lo if lo_open else value < lo)
        if low_bad or (hi is not None and value > hi):
            left = "(" if lo_open else "["
            raise argparse.ArgumentTypeError(f"{text} is outside {left}{lo if lo is not None else '-inf'}, "
                                             f"{hi if hi is not None else 'inf'}]{what}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


POSITIVE_INT = _number(int, 1)
NON_NEGATIVE_INT = _number(int, 0)
POSITIVE = _number(float, 0, lo_open=True)
KIB = _number(float, 0, lo_open=True, what=" KiB")
FRACTION = _number(float, 0, 1, lo_open=True)
PROBABILITY = _number(float, 0, 1)
RESOLUTION = _number(int, 8, 1024)

DESCRIPTION = """\
moofa: fit neural networks into microcontrollers.

Peak SRAM on a microcontroller is the TensorFlow Lite Micro tensor arena. moofa predicts it
byte for byte from a .tflite file (the same greedy plan TFLM makes, plus its persistent
allocations), checks it against a board's SRAM and flash, and can confirm it by running the
real TFLM interpreter.

examples:
  moofa targets                                    list the boards moofa knows
  moofa verify model.tflite --target nucleo-f746zg
  moofa verify model.tflite --target f746,pico --json
  moofa verify model.tflite --all-targets --junit fit.xml   # for CI: exit 1 if it does not fit
  moofa verify model.tflite --target f746,host --measure    # predicted next to TFLM-measured (f746: its
                                                            #   own Cortex-M7 + CMSIS-NN build, in QEMU)
  moofa ops                                                 # which ops the memory model covers exactly
  moofa plan model.tflite -o model.planned.tflite            # less SRAM for free
  moofa train --layout moofa --preset fmnist-cpu             # train a supernet
  moofa eval --supernet moofa --subnet min                   # a subnet's test top-1
  moofa eval --supernet moofa --subnet min --int8            # ... and its int8 export's, with the ops that lose most
"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with exit code 2; every (sub)command takes
    ``--debug`` (a traceback with the error line, same exit code)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help="on an error, also print the traceback (the exit code stays the same)")

    def error(self, message: str):  # noqa: D401
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def _add_verify(sub) -> None:
    p = sub.add_parser(
        "verify",
        help="check that a .tflite model fits one or more boards",
        description=(
            "Predict the TFLM arena (head + tail) of MODEL and check SRAM and flash against each "
            "board: SRAM fits when arena + reserved RAM <= the board's arena region, flash fits "
            "when model bytes + reserved flash <= flash. Exit 0 when it fits every board, 1 when "
            "it does not fit one, 2 on bad input."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="path to a .tflite file (int8, int16 or float32)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--target", "-t", help="board name, alias or .toml path; several separated by commas")
    g.add_argument("--all-targets", action="store_true", help="check every board in the database")
    p.add_argument("--json", action="store_true", help="print one JSON object (keys as in docs/ARCHITECTURE.md)")
    p.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report, one test case per board")
    p.add_argument(
        "--measure",
        action="store_true",
        help="also run the real TFLM: each board on its own build where QEMU can emulate it (TFLM built from "
        "source for its Cortex-M core and kernel library on first use, minutes, then cached), the host board on "
        "the tflite-micro package's interpreter; prints the measured head and tail next to the prediction and "
        "exits 1 if TFLM needed more than predicted",
    )
    p.add_argument("--tflm-src", metavar="DIR", help="tflite-micro source tree for the Cortex-M builds (default "
                   "$MOOFA_TFLM_SRC, or the pinned archive when this checkout has it)")
    p.add_argument("--plan", action="store_true", help="print the arena plan as a picture (one row per op)")
    p.add_argument("--strict", action="store_true",
                   help="exit 2 when the model has ops the memory model does not cover exactly (`moofa ops`); "
                        "without it they are reported as approximate")


def _add_ops(sub) -> None:
    p = sub.add_parser("ops", help="which TFLM ops the memory model covers exactly",
                       description="Every op the pinned TFLM registers (builtins and custom ops), and whether moofa's "
                                   "memory model covers it exactly, with the calibration model that proves it.")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per op")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown (docs/OPS.md is this output)")


def _add_targets(sub) -> None:
    p = sub.add_parser("targets", help="list the boards in the database", description="List the boards moofa knows (targets/*.toml).")
    p.add_argument("--json", action="store_true", help="print a JSON list with every field and its source")


def _add_layout(sub) -> None:
    p = sub.add_parser(
        "layout",
        help="print a supernet layout's widths, strides and per-stage memory",
        description="Print the OFA or the memory-balanced MOOFA layout for an input size.",
    )
    p.add_argument("name", help="layout: ofa or moofa")
    p.add_argument("--resolution", "-r", type=RESOLUTION, default=224, help="input height and width (default 224)")
    p.add_argument("--channels", "-c", type=_number(int, 1, 16), default=3, help="input channels (default 3)")
    p.add_argument("--memory", choices=("paper", "sram"), default=None,
                   help="memory to balance: paper (elements of input + output + weights per layer) or sram "
                        "(int8 arena bytes from the planner); default paper for moofa, sram for ofa")
    p.add_argument("--num-classes", type=_number(int, 2, 100_000), default=1000, help="classifier outputs (default 1000)")
    p.add_argument("--flash-budget", type=KIB, metavar="KB", help="moofa with --memory sram: cap the largest subnet's weights")
    p.add_argument("--json", action="store_true", help="print JSON with a 'widths' list in network order")


def _add_plan(sub) -> None:
    p = sub.add_parser(
        "plan",
        help="embed an optimal arena plan in a .tflite so TFLM needs less SRAM",
        description=(
            "Compute arena offsets for every activation tensor that pack tighter than TFLM's greedy "
            "planner, and write a copy of the model carrying them as OfflineMemoryAllocation "
            "metadata, which TFLM honours. Everything else in the model stays as it was; a plan is "
            "embedded only when it beats TFLM's own; re-running on the output changes nothing."
        ),
    )
    p.add_argument("model", help="path to a .tflite file")
    p.add_argument("-o", "--out", help="output path (default MODEL.planned.tflite)")
    p.add_argument("--exact", action="store_true", help="also run OR-Tools CP-SAT to prove (or find) the optimum")
    p.add_argument("--time-limit", type=_number(float, 0, 3600, lo_open=True), default=10.0, help="seconds for --exact (default 10)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--kernel-library", choices=tuple(KERNEL_LIBRARIES), default=None,
                   help="leave room for this kernel library's scratch buffers (default reference)")
    g.add_argument("--target", "-t", help="take the kernel library from this board")
    p.add_argument("--json", action="store_true")


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a supernet with progressive shrinking and distillation",
        description=(
            "Train an elastic supernet (teacher -> kernel -> depth -> expand, distilled from the "
            "teacher) with a preset's recipe. Runs on one CPU or GPU; for several use "
            "`torchrun --nproc_per_node N -m moofa train ...`. Checkpoints are written atomically "
            "to OUT/checkpoint.pt every couple of minutes; --resume continues a killed run. The "
            "finished supernet is OUT/supernet.pt; per-step metrics go to OUT/metrics.csv. "
            "--teacher-from RUN reuses a teacher: train it once with a preset of only the teacher "
            "phase, then start each shrinking recipe that shares it from there."
        ),
    )
    p.add_argument("--preset", default="fmnist", help="preset name (moofa/presets/*.toml: fmnist, fmnist-teacher, fmnist-paper, fmnist-gpu, fmnist-cpu, imagenet-gpu) or a .toml path (default fmnist)")
    p.add_argument("--layout", default="moofa", help="supernet layout: moofa (memory-balanced) or ofa (default moofa)")
    p.add_argument("--data", help="dataset folder (default: the preset's dataset at its standard place)")
    p.add_argument("--out", help="run folder (default runs/LAYOUT-PRESET)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0)
    p.add_argument("--teacher-from", metavar="RUN", help="start after the teacher phase with RUN's teacher (a run folder that stopped "
                   "right after the same teacher phase: same layout, seed, data and preset keys); the result is what training it here gives")
    p.add_argument("--max-steps", type=POSITIVE_INT, help="stop after this many optimizer steps (smoke tests)")
    p.add_argument("--threads", type=POSITIVE_INT, help="torch threads per process on a CPU run (default: the cores per process less "
                   "one, at least one; on a machine left to the run, all of them is faster). Changes speed only: --resume may change it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


def _add_eval(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="float top-1 of a subnet of a trained supernet on the test set",
        description="Extract a subnet, recalibrate its batch-norm on validation images, report top-1 on the test set.",
    )
    p.add_argument("--supernet", default="moofa", help="checkpoint path, or 'moofa' / 'ofa' for the bundled Fashion-MNIST supernets (default moofa)")
    p.add_argument("--subnet", default="max", help="max, min, random, or a subnet JSON file / block string (default max)")
    p.add_argument("--resolution", type=RESOLUTION, help="input resolution for max/min/random (default: the largest trained)")
    p.add_argument("--data", help="dataset folder (default: the checkpoint's dataset at its standard place)")
    p.add_argument("--split", choices=("test", "val"), default="test", help="report on the test set (default) or the validation split")
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="seed for --subnet random")
    p.add_argument("--int8", action="store_true",
                   help="also export the subnet to full-int8 TFLite (calibrated as moofa-deploy does), report its top-1 "
                        "(LiteRT) and the ops where it loses the most precision against the float model (SQNR per op on "
                        "validation images, and how many of the 255 int8 steps its narrowest channel spans: "
                        "activations share one scale per tensor; --json lists every op)")
    p.add_argument("--json", action="store_true")


def _add_search(sub) -> None:
    p = sub.add_parser(
        "search",
        help="find the most accurate subnet that fits a board's SRAM and flash",
        description=(
            "Evolutionary search (OFA's: population, parents, mutation and crossover) over a trained "
            "supernet's subnets. Every candidate is priced by the analytic TFLM memory model for the "
            "board (arena head + tail against its arena region minus reserved RAM; model bytes "
            "against flash minus reserved flash); the objective is the accuracy predictor's "
            "validation top-1. Exit 1 when not even the smallest subnet fits."
        ),
    )
    p.add_argument("--supernet", default="moofa", help="checkpoint, or moofa / ofa for the bundled ones (default moofa)")
    p.add_argument("--target", "-t", default="nucleo-f746zg", help="board (default nucleo-f746zg)")
    p.add_argument("--sram-budget", type=KIB, metavar="KB", help="override the SRAM budget for the arena, in KiB")
    p.add_argument("--flash-budget", type=KIB, metavar="KB", help="override the flash budget for the model, in KiB")
    p.add_argument("--max-macs", type=POSITIVE, metavar="M", help="at most this many million MACs")
    p.add_argument("--population", type=_number(int, 2), default=100, help="candidates per generation (default 100, at least 2)")
    p.add_argument("--generations", type=POSITIVE_INT, default=500, help="evolution generations (default 500)")
    p.add_argument("--parent-ratio", type=FRACTION, default=0.25, help="share of the population kept as parents, in (0, 1] (default 0.25)")
    p.add_argument("--mutation-ratio", type=PROBABILITY, default=0.5, help="share of children made by mutation, in [0, 1] (default 0.5)")
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0)
    p.add_argument("--out", help="write the winning subnet config (JSON) here")
    p.add_argument("--pareto", metavar="PREFIX", help="write the accuracy/SRAM front as PREFIX.json and PREFIX.png")
    p.add_argument("--json", action="store_true")


def _add_sweep(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="one search per SRAM budget or board: accuracy vs SRAM table and plot",
        description="Run `moofa search` once per SRAM budget (KiB of arena) and/or board, and write a "
                    "table (markdown + JSON) and an accuracy-vs-SRAM plot.",
    )
    p.add_argument("--supernet", default="moofa")
    p.add_argument("--sram-budgets", default="16,32,64,128,256", help="comma-separated KiB (default 16,32,64,128,256)")
    p.add_argument("--targets", help="comma-separated boards to search for, each with its own budgets")
    p.add_argument("--flash-target", default="nucleo-f746zg", help="board whose flash budget and kernels the SRAM budgets use")
    p.add_argument("--generations", type=POSITIVE_INT, default=500, help="evolution generations (default 500)")
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0)
    p.add_argument("--out", default="sweep", help="output prefix: PREFIX.md, PREFIX.json, PREFIX.png (default sweep)")


def _add_predictor(sub) -> None:
    p = sub.add_parser("predictor", help="build the accuracy predictor of a supernet",
                       description="Measure sampled subnets on the validation split (never the test set), fit OFA's MLP, "
                                   "and save dataset and predictor next to the supernet (for a bundled supernet, in "
                                   "$MOOFA_CACHE_DIR or ~/.cache/moofa/predictors/: the shipped files are never "
                                   "written; search and deploy then prefer the one built). Runs across torchrun ranks.")
    p.add_argument("action", choices=("build",))
    p.add_argument("--supernet", default="moofa")
    p.add_argument("--subnets", type=POSITIVE_INT, default=500, help="how many subnets to measure (default 500); a larger number after an earlier build (same --seed and --val-images) measures only the new ones")
    p.add_argument("--val-images", type=POSITIVE_INT, default=None,
                   help="validation images per subnet (default: the whole validation split, 5,000 for the bundled presets; "
                        "fewer images make the predictor's targets noisier)")
    p.add_argument("--data", help="dataset folder (default: the supernet's dataset at its standard place)")
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0)
    p.add_argument("--threads", type=POSITIVE_INT, help="torch threads per process (default: the cores per process less one, at least "
                   "one; on a machine left to the build, all of them is faster). Changes speed only, never a measurement")
    p.add_argument("--json", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="moofa", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add_targets(sub)
    _add_verify(sub)
    _add_ops(sub)
    _add_layout(sub)
    _add_plan(sub)
    _add_train(sub)
    _add_eval(sub)
    _add_predictor(sub)
    _add_search(sub)
    _add_sweep(sub)
    return parser


def _cmd_targets(args) -> int:
    from toolchain.boards.targets import all_targets

    targets = all_targets()
    if args.json:
        print(json.dumps([t.to_dict() for t in targets], indent=2))
        return EXIT_OK
    rows = [("name", "mcu", "core", "SRAM KiB", "arena KiB", "flash KiB", "kernels", "aliases")]
    for t in targets:
        rows.append((t.name, t.mcu.split(" (")[0], t.core, str(t.sram_bytes // 1024), str(t.arena_region_bytes // 1024),
                     str(t.flash_bytes // 1024), t.kernel_library, ", ".join(t.aliases[:3])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.rjust(w) if c.isdigit() or c.endswith("KiB") else c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return EXIT_OK


def _cmd_verify(args) -> int:
    from toolchain.boards.targets import all_targets, resolve_targets
    from toolchain.verify import format_table, junit_xml, verify_model

    from toolchain.files import check_outputs_are_not_inputs, output_target

    check_outputs_are_not_inputs([args.junit], [args.model])
    if args.junit:
        output_target(args.junit)  # a device, FIFO or folder is refused before the work
    targets = all_targets() if args.all_targets else resolve_targets(args.target)
    say = lambda msg: print(f"[moofa verify] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    v = verify_model(args.model, targets, measure=args.measure, on_boards=args.measure, tflm_src=args.tflm_src, progress=say)
    if args.junit:
        _write_atomically(Path(args.junit), junit_xml(v))
    if args.json:
        print(json.dumps(v.to_dict(), indent=2))
    else:
        print(format_table(v))
        if args.plan:
            print(v.results[0].estimate.plan.render())
    if args.strict and v.unmodelled_ops:
        from toolchain.errors import InputError

        raise InputError(f"{args.model}: --strict: the memory model does not cover {', '.join(v.unmodelled_ops)} exactly "
                         "(see `moofa ops`)")
    if v.refusals:
        print(f"moofa verify: {args.model} will not run on TFLM: {v.refusals[0]}", file=sys.stderr)
    if v.measured_exceeds_prediction:
        print(f"moofa verify: TFLM measured a larger arena ({v.measured.arena_total_bytes:,} B) than predicted for the "
              f"build it ran ({v.host_estimate.arena_bytes:,} B): the prediction cannot be trusted for this model",
              file=sys.stderr)
        return EXIT_DOES_NOT_FIT
    return EXIT_OK if v.fits else EXIT_DOES_NOT_FIT


def _cmd_ops(args) -> int:
    from toolchain.memory.coverage import TFLM_COMMIT, coverage_rows, coverage_markdown

    rows = coverage_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
    elif args.markdown:
        print(coverage_markdown())
    else:
        modelled = sum(r["modelled"] for r in rows)
        print(f"TFLM {TFLM_COMMIT}: {len(rows)} ops ({sum(not r['custom'] for r in rows)} builtin, "
              f"{sum(r['custom'] for r in rows)} custom); modelled exactly: {modelled}, not modelled: {len(rows) - modelled}")
        width = max(len(r["op"]) for r in rows)
        for r in rows:
            status = f"exact  {r['proof']}" if r["modelled"] else "not modelled (approximate)"
            print(f"  {r['op']:<{width}}  {status}" + (f"  [{r['note']}]" if r["note"] else ""))
    return EXIT_OK


def _cmd_layout(args) -> int:
    from moofa.arch.catalog import layout_command

    flash = int(args.flash_budget * 1024) if args.flash_budget is not None else None
    print(layout_command(args.name, args.resolution, args.channels, args.memory, args.json, args.num_classes, flash))
    return EXIT_OK


def _cmd_plan(args) -> int:
    from toolchain.memory.offline_plan import (
        default_out_path,
        format_plan_result,
        plan_model,
    )

    library, pointer_bytes = args.kernel_library or "reference", 8
    if args.target:
        from toolchain.boards.targets import resolve_target

        target = resolve_target(args.target)
        library, pointer_bytes = target.kernel_library, target.pointer_bytes
    from toolchain.files import check_outputs_are_not_inputs

    out = Path(args.out) if args.out else default_out_path(args.model)
    check_outputs_are_not_inputs([out], [args.model])
    result = plan_model(args.model, out, exact=args.exact, time_limit_s=args.time_limit, kernel_library=library,
                        pointer_bytes=pointer_bytes)
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_plan_result(result))
    return EXIT_OK


def _cmd_train(args) -> int:
    from moofa.train.loop import load_preset, train

    from toolchain.errors import InputError

    preset = load_preset(args.preset)
    out = Path(args.out or f"runs/{args.layout}-{preset.name}")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    if not args.resume and (out / "checkpoint.pt").exists():
        raise InputError(f"{out}/checkpoint.pt exists: pass --resume to continue it, or choose another --out")
    if args.resume and not (out / "checkpoint.pt").is_file():
        raise InputError(f"--resume: {out}/checkpoint.pt does not exist, so there is nothing to resume (drop --resume to start)")
    teacher_from = None
    if args.teacher_from:
        teacher_from = Path(args.teacher_from)
        if not (teacher_from / "checkpoint.pt" if teacher_from.is_dir() else teacher_from).is_file():
            raise InputError(f"--teacher-from {teacher_from}: no checkpoint.pt there (give the teacher run's folder)")
        if args.resume:
            raise InputError("--teacher-from starts a run; --resume continues one that already has its teacher: pass one of them")
    path = train(preset, args.layout, out, data_root=args.data, resume=args.resume, seed=args.seed,
                 max_steps=args.max_steps, progress=not args.no_progress, teacher_from=teacher_from,
                 threads=args.threads)
    print(f"[moofa train] wrote {path}")
    return EXIT_OK


def _cmd_eval(args) -> int:
    from moofa.train.evaluate import evaluate_command

    result = evaluate_command(args.supernet, args.subnet, resolution=args.resolution, data=args.data, split=args.split, seed=args.seed,
                              int8=args.int8)
    if args.json:
        print(json.dumps(result, indent=2))
        return EXIT_OK
    print(f"{result['subnet_string']}\n{args.split} top-1 {result['top1'] * 100:.2f}%  ({result['images']} images, "
          f"{result['params']:,} params, {result['macs'] / 1e6:.1f} M MACs)")
    if args.int8:
        print(_int8_report(result["int8"], args.split))
    return EXIT_OK


def _int8_report(q: dict, split: str, worst: int = 5) -> str:
    """The int8 half of `moofa eval --int8`: top-1, SQNR at input and output, the worst ops."""
    def db(x):
        return "exact" if x is None else f"{x:.1f} dB"

    ops = q["ops"]
    ranked = sorted(ops, key=lambda e: (-(e["drop_db"] if e["drop_db"] is not None else -1e9), e["index"]))[:worst]
    lines = [f"int8 {split} top-1 {q['top1'] * 100:.2f}%  (LiteRT; {q['model_bytes']:,} B model, calibrated on "
             f"{q['calibration_images']} training images)",
             f"int8 vs float on {q['images']} validation images: SQNR {db(q['input_sqnr_db'])} at the input, "
             f"{db(q['output_sqnr_db'])} at the logits; the ops that lose the most:",
             f"  {'op':>4}  {'kind':<18} {'output':<14} {'SQNR':>9} {'drop':>8}  narrowest channel"]
    for e in ranked:
        shape = "x".join(str(d) for d in e["shape"][1:]) or "1"
        steps = e.get("narrowest_steps")
        narrow = "-" if steps is None else f"{steps:.0f} of 255 steps"
        lines.append(f"  {e['index']:>4}  {e['kind']:<18} {shape:<14} {db(e['sqnr_db']):>9} {db(e['drop_db']):>8}  {narrow}")
    return "\n".join(lines)


def _cmd_predictor(args) -> int:
    from moofa.search.predictor import build_predictor

    report = build_predictor(args.supernet, args.subnets, args.seed, args.val_images, args.data, progress=not args.json,
                             threads=args.threads)
    if report:
        print(json.dumps(report, indent=2) if args.json else
              f"predictor {report['predictor']}: RMSE {report['rmse']:.4f}, Kendall tau {report['kendall_tau']:.3f} "
              f"on {report['heldout']} held-out subnets ({report['train']} trained on; measuring took {report['measure_s']} s)")
    return EXIT_OK


def _cmd_search(args) -> int:
    from moofa.search.predictor import predictor_in_use
    from moofa.search.run import run_search
    from moofa.train.evaluate import resolve_supernet
    from toolchain.files import check_outputs_are_not_inputs, output_target

    supernet = resolve_supernet(args.supernet)
    outputs = [args.out, *((args.pareto + ".json", args.pareto + ".png") if args.pareto else ())]
    check_outputs_are_not_inputs(outputs, [supernet, predictor_in_use(supernet)])
    for out in outputs:
        if out is not None:
            output_target(out)
    return run_search(args)


def _cmd_sweep(args) -> int:
    from moofa.search.predictor import predictor_in_use
    from moofa.search.run import run_sweep
    from moofa.train.evaluate import resolve_supernet
    from toolchain.files import check_outputs_are_not_inputs

    supernet = resolve_supernet(args.supernet)
    check_outputs_are_not_inputs([args.out + ext for ext in (".md", ".json", ".png")], [supernet, predictor_in_use(supernet)])

    return run_sweep(args)


def _write_atomically(path: Path, text: str) -> None:
    from toolchain.errors import InputError
    from toolchain.files import write_atomically

    try:
        write_atomically(path, text)
    except OSError as e:
        raise InputError(f"{path}: cannot write: {e.strerror}") from None


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that every ``finally`` runs (children killed,
    staging folders removed, a training checkpoint written) before the process exits 143."""


_terminated: list[int] = []  # set once SIGTERM arrives: an exception raised in its wake is its doing


def _on_sigterm(signum, frame):
    _terminated.append(signum)
    raise Terminated()


def run(argv: list[str] | None, parser: argparse.ArgumentParser, commands: dict) -> int:
    """Parse, dispatch and map errors to exit codes (module docstring)."""
    import signal
    import traceback

    from toolchain.errors import InputError

    def stopped(by_sigterm: bool) -> int:
        print(f"{parser.prog}: {'terminated' if by_sigterm else 'interrupted'}; nothing half-written was left", file=sys.stderr)
        return EXIT_SIGTERM if by_sigterm else EXIT_SIGINT

    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    _terminated.clear()
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return commands[getattr(args, "command", None)](args)
    except InputError as e:
        if debug:
            traceback.print_exc()
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as e:
        return stopped(isinstance(e, Terminated))
    except BrokenPipeError:
        return EXIT_OK
    except Exception as e:  # noqa: BLE001 -- a bug: its own exit code, never 1 ("does not fit")
        if debug:
            traceback.print_exc()
        if _terminated:  # Terminated, raised inside an extension's import or a C callback, came out as
            # another exception (a pybind11 module: "ImportError: initialization failed"); the unwinding ran the same
            # finally blocks, so this is the SIGTERM exit, not a bug
            return stopped(True)
        detail = " ".join(str(e).split())[:200]
        print(f"{parser.prog}: internal error ({type(e).__name__}: {detail}); rerun with --debug for the traceback "
              "and report it", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: list[str] | None = None) -> int:
    commands = {"targets": _cmd_targets, "verify": _cmd_verify, "ops": _cmd_ops, "layout": _cmd_layout, "plan": _cmd_plan, "train": _cmd_train, "eval": _cmd_eval,
                "predictor": _cmd_predictor, "search": _cmd_search, "sweep": _cmd_sweep}
    return run(argv, build_parser(), commands)


DEPLOY_DESCRIPTION = """\
Deploy to a board: verify the model fits (predicted and measured with the real TFLM
interpreter), cross-check TFLM against LiteRT, and write firmware files for a TFLM project.

Writes into --out (as a whole: a staging folder renamed into place when everything passed):
model.tflite, model_data.h, model_data.cc, model_ops.h, model_config.h, main.cc, Makefile,
report.md, memory_profile.png (from a supernet also subnet.json, model.onnx, summary.json).
On a Cortex-M4/M7 board it also boots the firmware in QEMU (--boot) and checks the arena.
Exit 0 when everything checks, 1 when the model does not fit or a check fails, 2 on bad input
(one line; --out is then left as it was), 3 on an internal error.

examples:
  moofa-deploy --target nucleo-f746zg --out build/f746          # search the bundled supernet
  moofa-deploy --model kws.tflite --target nucleo-f746zg --out build/kws
  moofa-deploy --model kws.tflite --target pico --out build/kws --labels yes,no --json
  moofa-deploy --model net.onnx --target nucleo-f746zg --out build/net --calibration calib.npy

An .onnx model is converted to a full-int8 .tflite first (onnx2tf, then TFLiteConverter with
the --calibration inputs: int8 input and output, per-channel weights). The .tflite input is
channels last (NHWC) where the ONNX one was NCHW; report.md and model_config.h describe it.
Without --calibration, a 1x28x28 input is calibrated on Fashion-MNIST training images.

Without --model, it searches the supernet (the bundled Fashion-MNIST MOOFA one by default) for the
most accurate subnet that fits, exports it to int8, and reports float and int8 test accuracy.
"""


def _cmd_deploy(args) -> int:
    from toolchain.boards.targets import resolve_target
    from toolchain.errors import InputError

    if args.cross_check_steps < 0:
        raise InputError(f"--cross-check-steps {args.cross_check_steps}: must be 0 or more")
    if not args.model:
        return _deploy_supernet(args)
    model = Path(args.model)
    if not model.is_file():
        raise InputError(f"{model}: no such file")
    target = resolve_target(args.target)
    if model.suffix.lower() != ".onnx":
        if args.calibration:
            raise InputError("--calibration is for .onnx models (a .tflite model is already quantized)")
        from toolchain.tflite.reader import read_model

        read_model(model)  # reject a bad model before anything heavy is imported, written or printed
    from toolchain.deploy.pipeline import DeployOptions, deploy_tflite, summary_json
    from toolchain.files import staged_folder

    out = Path(args.out)
    options = DeployOptions(labels=args.labels.split(",") if args.labels else None, samples=args.samples,
                            cross_check_steps=args.cross_check_steps, final_dir=out, boot=args.boot)
    say = (lambda msg: None) if args.json else (lambda msg: print(f"[moofa-deploy] {msg}", file=sys.stderr, flush=True))
    with staged_folder(out, _deploy_folder_names()) as work:  # all or nothing: --out appears only when everything passed
        if model.suffix.lower() == ".onnx":
            from moofa.deploy_onnx import deploy_onnx

            result = deploy_onnx(model, target, work, args.calibration, args.data, options, progress=say)
        else:
            result = deploy_tflite(model, target, work, options, progress=say)
    if args.json:
        print(summary_json(result))
    else:
        from toolchain.verify import format_table

        print(format_table(result.verification))
        print(f"  TFLM vs LiteRT outputs on {result.cross_check.samples} inputs: {result.cross_check.text()}")
        if result.compile.compiled:
            print(f"  arm-none-eabi-g++ ({target.core}): model data {result.compile.section_bytes} B, {'fits' if result.compile.fits_flash else 'OVER'} flash budget")
        else:
            print(f"  firmware compile check skipped: {result.compile.reason}")
        b = result.boot
        if b is not None and b.ran:
            print(f"  firmware booted in QEMU ({b.build}): arena used {b.arena_used_bytes:,} of {b.arena_size_bytes:,} B "
                  f"(predicted {b.predicted_arena_bytes:,}); classes {'equal to' if b.classes == b.expected_classes else 'DIFFERENT from'} "
                  f"the host TFLM's on {len(b.expected_classes)} inputs" if b.allocate_ok else "  firmware: AllocateTensors FAILED in QEMU")
        elif b is not None:
            print(f"  firmware not booted here: {b.reason}")
        print(f"  wrote {', '.join(sorted(p.name for p in result.files.values()))} to {result.out_dir}")
    return EXIT_OK if result.ok else EXIT_DOES_NOT_FIT


def _deploy_folder_names() -> frozenset[str]:
    """What any earlier ``moofa-deploy`` may have left in ``--out`` (a new deploy replaces the folder whole)."""
    from toolchain.deploy.pipeline import OUTPUT_NAMES

    return OUTPUT_NAMES | {"model.onnx", "subnet.json", "summary.json"}  # the supernet deploy's own files


def _deploy_supernet(args) -> int:
    from moofa.train.evaluate import resolve_supernet
    from toolchain.boards.targets import resolve_target

    target = resolve_target(args.target)
    resolve_supernet(args.supernet or "moofa")  # bad input is reported before torch and TensorFlow start
    from moofa.deploy import DoesNotFit, SupernetDeployOptions, deploy_supernet
    from toolchain.files import staged_folder

    say = (lambda msg: None) if args.json else (lambda msg: print(f"[moofa-deploy] {msg}", file=sys.stderr, flush=True))
    out = Path(args.out)
    options = SupernetDeployOptions(seed=args.seed, data=args.data, cross_check_steps=args.cross_check_steps, final_dir=out,
                                    boot=args.boot)
    try:
        with staged_folder(out, _deploy_folder_names()) as work:  # all or nothing
            summary = deploy_supernet(args.supernet or "moofa", target, work, options, progress=say)
    except DoesNotFit as e:
        print(f"moofa-deploy: {e}", file=sys.stderr)
        return EXIT_DOES_NOT_FIT
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        a = summary["accuracy"]
        print(f"{target.name}: {'fits' if summary['fits'] else 'DOES NOT FIT'}; arena {summary['sram']['arena_bytes']:,} B, "
              f"model {summary['flash']['model_bytes']:,} B; top-1 float {a['float_top1'] * 100:.2f}% / int8 {a['int8_top1'] * 100:.2f}% "
              f"on {a['test_images']:,} test images; files in {args.out} (see report.md)")
    return EXIT_OK if summary["ok"] else EXIT_DOES_NOT_FIT


def deploy_main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="moofa-deploy", description=DEPLOY_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", "-t", required=True, help="board name, alias or .toml path (see `moofa targets`)")
    parser.add_argument("--out", "-o", required=True, help="folder for the model, firmware files and report")
    parser.add_argument("--model", "-m", help="a .tflite or .onnx model to deploy instead of searching the supernet")
    parser.add_argument("--calibration", metavar="FILE.npy",
                        help="for an .onnx model: float32 inputs (N x the ONNX input shape without batch), preprocessed "
                             "as the model expects, to calibrate int8 (default for a 1x28x28 input: Fashion-MNIST)")
    parser.add_argument("--supernet", help="supernet checkpoint, or moofa / ofa for the bundled ones (default moofa)")
    parser.add_argument("--data", help="dataset folder for accuracy and calibration (default: the supernet's dataset)")
    parser.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="search seed (same seed, same model.tflite)")
    parser.add_argument("--labels", help="comma-separated class names for model_config.h")
    parser.add_argument("--samples", type=_number(int, 1, 10_000), default=32, help="inputs for the TFLM vs LiteRT cross-check (default 32)")
    parser.add_argument("--cross-check-steps", type=NON_NEGATIVE_INT, default=2, metavar="N",
                        help="quantization steps TFLM's and LiteRT's int8 outputs may differ (default 2: their FULLY_CONNECTED "
                             "and HARD_SWISH kernels round differently; 0 demands bit-identical outputs)")
    parser.add_argument("--boot", choices=("auto", "always", "never"), default="auto",
                        help="boot the generated firmware in QEMU on a Cortex-M4/M7 board: auto (default) when that core's "
                             "TFLM build is cached, always (build it first: several minutes, once), never")
    parser.add_argument("--json", action="store_true", help="print a JSON summary (sram/flash blocks as in verify)")
    return run(argv, parser, {None: _cmd_deploy})


if __name__ == "__main__":
    sys.exit(main())
