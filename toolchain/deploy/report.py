"""The deploy report: ``report.md`` and the per-op memory profile ``memory_profile.png``."""

from __future__ import annotations

from pathlib import Path

from toolchain.files import atomic_output
from toolchain.memory.scratch import KERNEL_LIBRARIES


def write_memory_profile(result, path: Path) -> Path:
    """Bars: bytes alive while each op runs; lines: the planned head and the board's budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plan = result.estimate.plan
    target = result.target
    profile_kib = [b / 1024 for b in plan.op_profile]
    head_budget = target.sram_budget_bytes - result.estimate.arena_tail_bytes
    fig, ax = plt.subplots(figsize=(max(6, len(profile_kib) * 0.18), 3.6), dpi=120)
    ax.bar(range(len(profile_kib)), profile_kib, color="#4c78a8", label="live tensors + scratch")
    ax.axhline(result.estimate.arena_head_bytes / 1024, color="#f58518", lw=1.5, label=f"arena head ({result.estimate.arena_head_bytes / 1024:.1f} KiB)")
    ax.axhline(head_budget / 1024, color="#e45756", lw=1.5, ls="--", label=f"{target.name} budget for the head ({head_budget / 1024:.1f} KiB)")
    ax.set_xlabel("op (execution order)")
    ax.set_ylabel("KiB")
    ax.set_title(f"Per-op live memory on {target.display_name}")
    ax.legend(fontsize=7, loc="upper right")
    ax.set_ylim(0, max(max(profile_kib, default=0), head_budget / 1024, result.estimate.arena_head_bytes / 1024) * 1.15)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def write_report(d, path: Path) -> Path:
    """``report.md`` for a :class:`toolchain.deploy.pipeline.DeployResult`."""
    r = d.result
    e = r.estimate
    t = r.target
    m = d.verification.measured
    g = d.verification.graph
    kib = lambda n: f"{n / 1024:,.1f} KiB"  # noqa: E731
    lines = [
        f"# moofa deploy report: {t.display_name}",
        "",
        f"Verdict: **{'fits' if r.fits else 'DOES NOT FIT'}**"
        + ("" if d.ok else " — see the checks below"),
        "",
        "## Memory",
        "",
        "| | bytes | |",
        "|---|---:|---|",
        f"| arena head (activations + scratch) | {e.arena_head_bytes:,} | {kib(e.arena_head_bytes)} |",
        f"| kernel scratch requested ({t.kernel_library}; planned inside the head) | {e.scratch_bytes:,} | |",
        f"| arena tail (persistent, {t.pointer_bytes * 8}-bit build) | {e.arena_tail_bytes:,} | {kib(e.arena_tail_bytes)} |",
        f"| liveness lower bound of the head | {e.lower_bound_bytes:,} | |",
        f"| reserved RAM (stack, heap, runtime) | {t.reserved_ram_bytes:,} | |",
        f"| **SRAM used / arena region** | **{r.sram_used_bytes:,} / {t.arena_region_bytes:,}** | head-room {kib(t.arena_region_bytes - r.sram_used_bytes)} |",
        f"| model (flash) | {r.model_bytes:,} | |",
        f"| reserved flash (TFLM + application) | {t.reserved_flash_bytes:,} | |",
        f"| **flash used / flash** | **{r.flash_used_bytes:,} / {t.flash_bytes:,}** | head-room {kib(t.flash_bytes - r.flash_used_bytes)} |",
        "",
        "![per-op memory](memory_profile.png)",
        "",
        "## Checks",
        "",
        f"- TFLM interpreter (64-bit host, reference kernels) measured head {m.arena_head_bytes:,} B and tail "
        f"{m.arena_tail_bytes:,} B; predicted for that build {d.host_head_bytes:,} B and {d.host_tail_bytes:,} B: "
        f"**{'exact match' if d.agrees_with_tflm else 'MISMATCH'}**.",
        (f"- Offline arena plan embedded: head {d.plan['planned_head_bytes']:,} B instead of TFLM's greedy "
         f"{d.plan['greedy_head_bytes']:,} B." if d.plan and d.plan.get('planned_head_bytes', 0) < d.plan.get('greedy_head_bytes', 0)
         else "- TFLM's greedy plan is already optimal for this model (head = liveness lower bound or no better plan found)."),
        f"- TFLM and LiteRT (reference kernels) outputs on {d.cross_check.samples} inputs: "
        f"**{d.cross_check.text()}**.",
    ]
    if d.boot is not None and d.boot.ran:
        b = d.boot
        lines.append(
            f"- Firmware booted in QEMU ({b.build}): `AllocateTensors` "
            + (f"succeeded with `kTensorArenaSize` {b.arena_size_bytes:,} B; `arena_used_bytes()` {b.arena_used_bytes:,} B, "
               f"predicted {b.predicted_arena_bytes:,} B: **{'exact match' if b.arena_used_bytes == b.predicted_arena_bytes else 'MISMATCH'}**; "
               f"classes on {len(b.expected_classes)} inputs **{'equal' if b.classes == b.expected_classes else 'DIFFERENT'}** to the host TFLM's."
               if b.allocate_ok else "**FAILED** with `kTensorArenaSize` — the arena is too small on the board."))
    elif d.boot is not None:
        lines.append(f"- Firmware not booted here: {d.boot.reason}.")
    if d.compile.compiled:
        lines.append(
            f"- `model_data.cc` compiled with arm-none-eabi-g++ for {t.core}: {d.compile.section_bytes:,} B of data, "
            f"{'within' if d.compile.fits_flash else 'OVER'} the flash budget."
        )
    else:
        lines.append(f"- `model_data.cc` not compiled: {d.compile.reason}.")
    c = getattr(d, "conversion", None)
    if c:
        x = g.tensors[g.inputs[0]]
        agree = "" if c.get("int8_top1_agreement") is None else f"; top-1 agreement {c['int8_top1_agreement'] * 100:.1f}%"
        lines += [
            "",
            "## Conversion from ONNX",
            "",
            f"- {c['converter']}, in {c['seconds']:.1f} s.",
            f"- Input layout changed: the ONNX input is {'x'.join(map(str, c['onnx_input_shape']))}, the .tflite input "
            f"(what the firmware fills) is **{x.dtype} {'x'.join(map(str, x.shape))}** (axes {c['input_permutation']} of the "
            f"ONNX input: channels last). Quantize a float input v as round(v / {x.scale:.9g}) + {x.zero_point}.",
            f"- Calibrated on {c['calibration_samples']} inputs ({c['calibration_source']}).",
            f"- On {c['checked_samples']} of them: TensorFlow float graph vs onnxruntime max |diff| {c['float_max_abs_diff']:.3g}; "
            f"int8 (dequantized) vs onnxruntime max |diff| {c['int8_max_abs_diff']:.3g} (outputs reach {c['output_abs_max']:.3g}){agree}.",
        ]
    if d.accuracy:
        lines += ["", "## Accuracy", ""] + _accuracy_lines(d.accuracy)
    lines += [
        "",
        "## Ops",
        "",
        f"{len(g.ops)} ops; register these {len(g.op_kinds)} kinds (done for you in `model_ops.h`): "
        + ", ".join(f"`{k}`" for k in g.op_kinds),
        "",
        "## Using the files",
        "",
        "- Copy `model_data.h`, `model_data.cc`, `model_ops.h`, `model_config.h` into your TFLM project; "
        "`main.cc` shows the calls (`RegisterModelOps`, `kTensorArenaSize`, input quantization).",
        f"- CMake: `target_sources(app PRIVATE model_data.cc)` and link TFLM built with "
        f"`OPTIMIZED_KERNEL_DIR={KERNEL_LIBRARIES[t.kernel_library].optimized_kernel_dir}`"
        " so the kernels match this prediction.",
        "- Arduino: put the files in the sketch folder, rename `main.cc` to your `.ino` logic, and install the "
        "board's TFLM library (e.g. Arduino_TensorFlowLite / Chirale_TensorFLowLite).",
        f"- `kTensorArenaSize` = predicted arena × margin {t.arena_margin}.",
    ]
    if "model.onnx" in d.files:
        lines.append("- `model.onnx`: the same subnet in float32 (NCHW input), for other runtimes and converters.")
    lines += [
        "",
    ]
    from toolchain.files import write_atomically

    return write_atomically(path, "\n".join(lines))


_ACCURACY_LABELS = {
    "float_top1": "float top-1 on the test set (PyTorch)",
    "int8_top1": "int8 top-1 on the test set (LiteRT built-in int8 kernels)",
    "val_top1": "float top-1 on the validation split (what the search optimised)",
    "predicted_val_top1": "validation top-1 the accuracy predictor expected",
}


def _accuracy_lines(acc: dict) -> list[str]:
    """The accuracy block as a table: fractions as percentages, known keys in words."""
    rows = ["| | |", "|---|---:|"]
    for key, value in acc.items():
        if key in _ACCURACY_LABELS and isinstance(value, (int, float)):
            rows.append(f"| {_ACCURACY_LABELS[key]} | {value * 100:.2f}% |")
        elif key == "loss_pt":
            rows.append(f"| int8 loss (float − int8) | {value:.2f} pt |")
        elif key == "test_images":
            rows.append(f"| test images | {value:,} |")
        else:
            rows.append(f"| {key} | {value} |")
    return rows

