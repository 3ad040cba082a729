"""Deploy a ready ``.tflite`` model to a board: verify, measure, cross-check, generate firmware.

This is the right half of ``moofa-deploy`` and the whole of ``moofa-deploy --model FILE``:

1. verify: predicted arena (head + tail) and flash against the board;
2. measure: the real TFLM interpreter's head and tail, which must equal the prediction for the
   64-bit host build with reference kernels (what ``tflite-micro`` runs here);
3. cross-check: TFLM and LiteRT (its reference kernels) give the same outputs on test inputs:
   identical, or for integer outputs at most ``cross_check_steps`` quantization steps apart
   (default 2). TFLM's and LiteRT's int8 kernels are not bit-identical: FULLY_CONNECTED rounds
   differently (8 of 1,000 random inputs 1 step apart on a bundled deploy's model) and
   HARD_SWISH differs by 1 step on a few elements, which later layers carry to 2 steps at the
   logits (10 of 32 inputs, largest MOOFA subnet). A wrong kernel or op version differs by far
   more, so a small bound separates rounding from bugs; the report gives the counts;
4. codegen: firmware headers, compiled with arm-none-eabi-g++ for the board's core;
5. report: ``report.md`` and ``memory_profile.png``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolchain.errors import InputError
from toolchain.files import atomic_output
from toolchain.runtime.runner import run_python
from toolchain.verify import TargetResult, Verification, verify_model

_TFLM_RUN = r"""
import sys, numpy as np
from tflite_micro.python.tflite_micro import runtime
path, inputs, out = sys.argv[1], sys.argv[2], sys.argv[3]
x = np.load(inputs)
it = runtime.Interpreter.from_file(path, arena_size=64 << 20)
ys = []
for sample in x:
    it.set_input(sample, 0)
    it.invoke()
    ys.append(it.get_output(0))
np.save(out, np.stack(ys))
"""


def tflm_outputs(model_path: Path, inputs: np.ndarray, work: Path) -> np.ndarray:
    """Run each input through the TFLM interpreter (in a child process) and return the outputs."""
    src, dst = work / "cross_inputs.npy", work / "cross_tflm.npy"
    np.save(src, inputs)
    proc = run_python(_TFLM_RUN, [model_path, src, dst], what=f"{model_path}: the TFLM interpreter", timeout_s=600)
    if proc.returncode != 0:
        raise InputError(f"{model_path}: TFLM could not run the model: {proc.reason()}")
    out = np.load(dst)
    src.unlink(missing_ok=True)
    dst.unlink(missing_ok=True)
    return out


def litert_outputs(model_path: Path, inputs: np.ndarray) -> np.ndarray:
    """The same with LiteRT's reference kernels (the ones TFLM's kernels are ported from)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(model_path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    ys = []
    for sample in inputs:
        it.set_tensor(i, sample)
        it.invoke()
        ys.append(it.get_tensor(o).copy())
    return np.stack(ys)


def random_inputs(graph, count: int, seed: int) -> np.ndarray:
    """Seeded inputs spanning the input type's range (for models that come without data)."""
    t = graph.tensors[graph.inputs[0]]
    rng = np.random.default_rng(seed)
    try:
        dtype = np.dtype(t.dtype)
    except TypeError:  # a schema type numpy has no array type for (bfloat16, int4, string, ...)
        raise InputError(f"{graph.name}: random inputs cannot be made for input type {t.dtype}; pass inputs "
                         "or deploy a model with a numeric input") from None
    if t.dtype in ("int8", "int16", "uint8"):
        info = np.iinfo(t.dtype)
        return rng.integers(info.min, info.max + 1, size=(count, *t.shape), dtype=t.dtype)
    return rng.standard_normal(size=(count, *t.shape)).astype(dtype)


#: Every file a deploy of a .tflite writes into its folder (firmware, model, report).
OUTPUT_NAMES = frozenset({"model.tflite", "model_data.h", "model_data.cc", "model_ops.h", "model_config.h", "main.cc",
                          "Makefile", "report.md", "memory_profile.png"})


@dataclass(frozen=True)
class CrossCheck:
    """TFLM against LiteRT's reference kernels on the same inputs."""

    samples: int
    identical: bool
    max_diff: float  # largest |TFLM - LiteRT| over the outputs (quantization steps for int outputs)
    differing: int  # inputs whose outputs are not identical
    tolerance: float  # quantization steps allowed for integer outputs; 0 for float

    @classmethod
    def compare(cls, tflm: np.ndarray, lite: np.ndarray, steps: int) -> "CrossCheck":
        samples = len(tflm)
        tolerance = float(steps) if np.issubdtype(tflm.dtype, np.integer) else 0.0
        if tflm.shape != lite.shape:
            return cls(samples, False, float("inf"), samples, tolerance)
        diff = np.abs(tflm.astype(np.float64) - lite.astype(np.float64)).reshape(samples, -1)
        return cls(samples, bool(np.array_equal(tflm, lite)), float(diff.max()) if diff.size else 0.0,
                   int(np.count_nonzero(diff.max(axis=1) > 0)) if diff.size else 0, tolerance)

    @property
    def agree(self) -> bool:
        return self.identical or self.max_diff <= self.tolerance

    def text(self) -> str:
        if self.identical:
            return "identical"
        if self.agree:
            return (f"within {self.max_diff:g} quantization step{'s' if self.max_diff != 1 else ''} "
                    f"({self.differing} of {self.samples} inputs differ, by at most {self.max_diff:g}; "
                    f"allowed {self.tolerance:g}: the two kernel sets round differently)")
        return f"DIFFERENT (max difference {self.max_diff:g} on {self.differing} of {self.samples} inputs)"

    def to_dict(self) -> dict:
        return {"samples": self.samples, "identical": self.identical, "agree": self.agree, "max_abs_diff": self.max_diff,
                "differing_samples": self.differing, "tolerance": self.tolerance}


@dataclass
class DeployOptions:
    """What a deploy may be told besides the model, the board and the folder.

    ``inputs``: model-ready input tensors (N, *input shape) for the TFLM vs LiteRT cross-check,
    e.g. quantized test images; without them, ``samples`` seeded random inputs are used.
    ``conversion``: how the model was made (an ONNX import), for the report and summary.
    ``model_name``: the source named in the firmware headers (default: the file's name).
    ``cross_check_steps``: how many quantization steps TFLM and LiteRT integer outputs may differ.
    ``accuracy``: called once the firmware is written, before the report (so that a slower
    accuracy pass elsewhere overlaps the deploy); returns the accuracy block or None.
    ``extra_files`` / ``timings_s`` / ``summary``: files, stage times and summary keys of the
    caller's own stages, reported with the deploy's.
    ``boot``: boot the firmware in QEMU ``always`` (building the core's TFLM on first use),
    when its build is cached (``auto``) or ``never`` (:func:`toolchain.firmware.boot.boot_check`).
    ``final_dir``: where the folder being written will end up (``moofa-deploy`` writes a staging
    folder and renames it into place); the result and summary name files there.
    """

    labels: list[str] | None = None
    samples: int = 32
    seed: int = 0
    inputs: np.ndarray | None = None
    conversion: dict | None = None
    model_name: str | None = None
    cross_check_steps: int = 2
    accuracy: Callable[[], dict | None] | None = None
    extra_files: dict = field(default_factory=dict)
    timings_s: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    final_dir: Path | None = None
    boot: str = "auto"  # toolchain.firmware.boot.BOOT_MODES


@dataclass(frozen=True)
class DeployResult:
    out_dir: Path
    verification: Verification
    result: TargetResult
    host_head_bytes: int
    host_tail_bytes: int
    agrees_with_tflm: bool
    cross_check: CrossCheck
    compile: object  # toolchain.firmware.codegen.CompileCheck
    files: dict
    plan: dict  # toolchain.memory.offline_plan.PlanResult.to_dict()
    timings_s: dict
    accuracy: dict | None = None
    conversion: dict | None = None  # toolchain.convert.onnx_import.OnnxConversion.to_dict() for an ONNX model
    summary: dict = field(default_factory=dict)  # the caller's keys (subnet, supernet, export, ...)
    boot: object | None = None  # toolchain.firmware.boot.BootCheck

    @property
    def ok(self) -> bool:
        return (self.result.fits and self.agrees_with_tflm and self.cross_check.agree and self.compile.fits_flash
                and (self.boot is None or self.boot.ok))

    def to_dict(self) -> dict:
        m = self.verification.measured
        d = {
            "out_dir": str(self.out_dir),
            "target": self.result.target.name,
            "fits": self.result.fits,
            "ok": self.ok,
            "sram": self.result.sram_dict(),
            "flash": self.result.flash_dict(),
            "measured": {
                "arena_head_bytes": m.arena_head_bytes,
                "arena_tail_bytes": m.arena_tail_bytes,
                "predicted_host_head_bytes": self.host_head_bytes,
                "predicted_host_tail_bytes": self.host_tail_bytes,
                "agrees": self.agrees_with_tflm,
            },
            "tflm_vs_litert": self.cross_check.to_dict(),
            "compile": {
                "compiled": self.compile.compiled,
                "section_bytes": self.compile.section_bytes,
                "fits_flash": self.compile.fits_flash,
                "note": self.compile.reason,
            },
            "files": {k: str(v) for k, v in self.files.items()},
            "boot": self.boot.to_dict() if self.boot is not None else None,
            "offline_plan": self.plan,
            "timings_s": {k: round(v, 3) for k, v in self.timings_s.items()},
        }
        if self.accuracy is not None:
            d["accuracy"] = self.accuracy
        if self.conversion is not None:
            d["conversion"] = self.conversion
        d.update(self.summary)
        return d


def deploy_tflite(model_path: Path, target, out_dir: Path, options: DeployOptions | None = None, progress=None) -> DeployResult:
    """Plan, verify, measure, cross-check and generate firmware for ``model_path`` on ``target``
    (see :class:`DeployOptions`), then write the report; returns the finished result."""
    from toolchain.deploy.report import write_memory_profile, write_report
    from toolchain.firmware.boot import allocation_minimum, boot_check
    from toolchain.firmware.codegen import check_labels, compile_model_data, render_firmware, resolver_ops
    from toolchain.memory.offline_plan import plan_model
    from toolchain.tflite.reader import read_model

    o = options or DeployOptions()
    say = progress or (lambda msg: None)
    graph = read_model(model_path)
    resolver_ops(graph)  # an op TFLM lacks fails here, before anything is written
    check_labels(o.labels, graph)  # and labels that do not match the outputs
    out_dir.mkdir(parents=True, exist_ok=True)
    model_out = out_dir / "model.tflite"
    if model_path.resolve() != model_out.resolve():
        with atomic_output(model_out) as tmp:
            shutil.copyfile(model_path, tmp)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    say("plan: embedding an offline arena plan where it beats TFLM's greedy one")
    plan = plan_model(model_out, model_out, kernel_library=target.kernel_library, pointer_bytes=target.pointer_bytes)
    timings["plan"] = time.perf_counter() - t

    t = time.perf_counter()
    say("verify: predicting the arena and measuring it with TFLM")
    v = verify_model(model_out, [target], measure=True)
    r = v.results[0]
    host = v.host_estimate
    agrees = v.measured.agrees_with(host)
    timings["verify"] = time.perf_counter() - t

    t = time.perf_counter()
    inputs = o.inputs if o.inputs is not None else random_inputs(v.graph, o.samples, o.seed)
    say(f"cross-check: TFLM vs LiteRT reference kernels on {len(inputs)} inputs")
    host_outputs = tflm_outputs(model_out, inputs, out_dir)
    check = CrossCheck.compare(host_outputs, litert_outputs(model_out, inputs), o.cross_check_steps)
    timings["cross_check"] = time.perf_counter() - t

    t = time.perf_counter()
    say("codegen: firmware headers")
    minimum, minimum_build = allocation_minimum(model_out, target, o.boot)
    files = render_firmware(model_out.read_bytes(), v.graph, target, r.estimate, out_dir, o.model_name or model_path.name, o.labels,
                            allocation_min_bytes=minimum, allocation_build=minimum_build)
    compiled = compile_model_data(files["model_data.cc"], target.core, target.flash_budget_bytes)
    timings["codegen"] = time.perf_counter() - t

    t = time.perf_counter()
    say("boot: the firmware, built for the board's core with its TFLM, in QEMU on the cross-check inputs")
    expected = [int(np.argmax(y.reshape(-1))) for y in host_outputs]
    boot = boot_check(files, target, np.ascontiguousarray(inputs).tobytes(), expected, r.estimate.arena_bytes,
                      model_out.stat().st_size, progress=say, mode=o.boot)
    timings["boot"] = time.perf_counter() - t

    accuracy = o.accuracy() if o.accuracy is not None else None
    say("report: report.md and memory_profile.png")
    files["memory_profile.png"] = write_memory_profile(r, out_dir / "memory_profile.png")
    files.update({"report.md": out_dir / "report.md", "model.tflite": model_out, **o.extra_files})
    final = Path(o.final_dir) if o.final_dir is not None else out_dir
    result = DeployResult(
        out_dir=final, verification=v, result=r, host_head_bytes=host.arena_head_bytes, host_tail_bytes=host.arena_tail_bytes,
        agrees_with_tflm=agrees, cross_check=check, compile=compiled, files={k: final / Path(v).name for k, v in files.items()},
        plan=_published(plan.to_dict(), out_dir, final),
        timings_s={**o.timings_s, **timings}, accuracy=accuracy, conversion=o.conversion, summary=o.summary, boot=boot,
    )
    write_report(result, out_dir / "report.md")
    return result


def _published(d: dict, work: Path, final: Path) -> dict:
    """``d`` with paths inside the staging folder ``work`` named as they will be under ``final``."""
    return {k: str(final / Path(v).name) if isinstance(v, str) and Path(v).parent == work else v for k, v in d.items()}


def summary_json(result: DeployResult) -> str:
    return json.dumps(result.to_dict(), indent=2)
