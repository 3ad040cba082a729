"""``moofa-deploy`` from a trained supernet: search -> extract -> export -> verify -> firmware.

1. search: the most accurate subnet (accuracy predictor) that fits the board (analytic memory);
2. extract: the static PyTorch subnet, batch-norm recalibrated on validation images;
3. export: the float subnet as ``model.onnx`` and full-int8 TFLite calibrated on training images
   (:mod:`toolchain.convert.export`);
4. accuracy: float and int8 top-1 on the whole test set;
5. the rest is :func:`toolchain.deploy.pipeline.deploy_tflite`: offline plan, verify + TFLM measurement,
   TFLM vs LiteRT, firmware headers, report.

The int8 export and the int8 top-1 run in a second process started at the beginning
(:class:`Int8Process`), alongside the search, the float passes and step 5: on the 2-core build
machine the whole deploy takes about half the time it takes in one process.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from moofa.train.evaluate import CALIBRATION_IMAGES, calibration_images
from toolchain.files import write_atomically


def _quantize(images_nchw: np.ndarray, scale: float, zero: int) -> np.ndarray:
    """Normalised float NCHW images as int8 NHWC input tensors (N, 1, H, W, C)."""
    return np.clip(np.round(images_nchw.transpose(0, 2, 3, 1) / scale) + zero, -128, 127).astype(np.int8)[:, None]


def quantize_images(model_path: Path, images_nchw: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    scale, zero = Interpreter(model_path=str(model_path)).get_input_details()[0]["quantization"]
    return _quantize(images_nchw, scale, zero)


def int8_top1(model_path: Path, loader) -> float:
    """Top-1 of an int8 .tflite on a loader of normalised NCHW float images (LiteRT).

    LiteRT's built-in int8 kernels, one thread, a whole loader batch per invoke: faster on this
    graph than the XNNPACK delegate LiteRT applies by default and than the reference kernels, and a
    batch gives the same outputs as one image at a time (docs/BENCHMARKS.md has the timings). The
    built-in kernels are not TFLM's: their logits may differ from TFLM's by a few quantization
    steps, so this is LiteRT's int8 top-1, the figure converters report.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(model_path), num_threads=1, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    scale, zero = i["quantization"]
    correct = total = 0
    batch = None
    for x, y in loader:
        q = _quantize(x.numpy(), scale, zero)[:, 0]
        if len(q) != batch:
            batch = len(q)
            it.resize_tensor_input(i["index"], [batch, *q.shape[1:]])
            it.allocate_tensors()
        it.set_tensor(i["index"], q)
        it.invoke()
        correct += int(np.count_nonzero(np.argmax(it.get_tensor(o["index"]), axis=1) == y.numpy()))
        total += batch
    return correct / max(total, 1)


STAGED_NAME = "exported.tflite"  # the int8 export before the offline plan; becomes model.tflite
INT8_TIMEOUT_S = 900  # per result of the int8 process: an export or a test-set pass that takes longer is stuck


class Int8Process:
    """The TensorFlow half of a supernet deploy, in a second process.

    Started first, so that importing TensorFlow (after torch's compiler stack, which must come
    first: toolchain/runtime/tf.py) overlaps the search and the PyTorch passes; then it exports the
    subnet to int8 and scores it on the test set while this process verifies, measures and
    generates firmware. Not a thread: the imports hold the GIL and would stall the search
    (docs/BENCHMARKS.md, deploy stages).
    """

    def __init__(self):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # no fork: torch's threads are already running
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_int8_process_main, args=(child,), name="moofa-deploy-int8", daemon=True)
        self.proc.start()
        child.close()

    def submit(self, subnet, calib: np.ndarray, staged: Path, test_x: np.ndarray, test_y: np.ndarray) -> None:
        import io

        buf = io.BytesIO()
        torch.save(subnet, buf)
        self.conn.send((buf.getvalue(), calib, str(staged), test_x, test_y))

    def receive(self, kind: str) -> dict:
        from toolchain.errors import InputError

        try:
            if not self.conn.poll(INT8_TIMEOUT_S):
                self.proc.kill()
                raise InputError(f"the int8 export process gave no {kind} result within {INT8_TIMEOUT_S} s")
            got, payload = self.conn.recv()
        except (EOFError, OSError):
            self.proc.join(10)
            raise InputError(f"the int8 export process ended without a result (exit code {self.proc.exitcode})") from None
        if got == "error":
            raise InputError(payload)
        assert got == kind, (got, kind)
        return payload

    def close(self) -> None:
        if self.proc.is_alive():
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            self.proc.join(10)
            if self.proc.is_alive():
                self.proc.terminate()
                self.proc.join(5)
        self.conn.close()


def _int8_process_main(conn) -> None:
    from toolchain.errors import InputError

    try:
        from toolchain.runtime.tf import tf_quiet

        tf_quiet()
        job = conn.recv()
        if job is None:
            return
        import io

        from toolchain.convert.export import export_int8

        torch.set_num_threads(1)
        blob, calib, staged, test_x, test_y = job
        subnet = torch.load(io.BytesIO(blob), weights_only=False)
        t = time.perf_counter()
        export = export_int8(subnet, calib, Path(staged))
        conn.send(("exported", {"float_max_abs_diff": export.float_max_abs_diff, "op_kinds": export.op_kinds,
                                "seconds": time.perf_counter() - t}))
        t = time.perf_counter()
        batches = [(torch.from_numpy(test_x[i:i + 500]), torch.from_numpy(test_y[i:i + 500])) for i in range(0, len(test_x), 500)]
        conn.send(("int8", {"top1": int8_top1(Path(staged), batches), "seconds": time.perf_counter() - t}))
    except InputError as e:
        conn.send(("error", str(e)))
    except (EOFError, KeyboardInterrupt):
        pass
    except Exception as e:  # noqa: BLE001 -- reported by the parent as one line
        conn.send(("error", f"int8 export failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}"))
    finally:
        conn.close()


@dataclass
class SupernetDeployOptions:
    """How a supernet deploy searches and checks: the search seed, the dataset folder (default:
    the supernet's), SRAM/flash budgets in KiB (default: the board's), evolution generations,
    calibration images for int8, and the TFLM vs LiteRT tolerance in quantization steps."""

    seed: int = 0
    data: str | None = None
    sram_kb: float | None = None
    flash_kb: float | None = None
    generations: int = 500
    calibration_images: int = CALIBRATION_IMAGES
    cross_check_steps: int = 2
    final_dir: Path | None = None  # where out_dir ends up (a staging folder renamed into place)
    boot: str = "auto"  # boot the firmware in QEMU: auto (when the core's TFLM build is cached), always, never


def deploy_supernet(supernet_spec: str, target, out_dir: Path, options: SupernetDeployOptions | None = None,
                    progress=None) -> dict:
    """The whole pipeline; returns the deploy summary (``toolchain.deploy.pipeline.DeployResult``) plus accuracy."""
    from moofa.train.evaluate import resolve_supernet

    resolve_supernet(supernet_spec)  # a missing checkpoint is reported before TensorFlow starts
    o = options or SupernetDeployOptions()
    say = progress or (lambda msg: None)
    threads = torch.get_num_threads()
    worker = Int8Process()
    try:
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))  # the int8 process has a core
        return _deploy_supernet(worker, supernet_spec, target, out_dir, o, say)
    finally:
        worker.close()
        torch.set_num_threads(threads)
        (out_dir / STAGED_NAME).unlink(missing_ok=True)  # the int8 process's file, also after a failure


def _search(setup, target, o: SupernetDeployOptions, say):
    """The most accurate subnet (by the predictor) that fits the budgets."""
    from moofa.cost.pricer import Pricer
    from moofa.search.predictor import Constraints, UnreachableBudget, evolution_search
    from toolchain.boards.budget import Budget

    budget = Budget.for_target(target, o.sram_kb, o.flash_kb)
    sram, flash = budget.arena_bytes, budget.model_bytes
    say(f"search: evolution over {setup.space.layout.name} subnets for {target.name} (arena <= {sram:,} B, model <= {flash:,} B)")
    try:
        return evolution_search(setup.space, setup.predictor, Pricer(setup.net.layout, target), Constraints(sram, flash),
                                generations=o.generations, seed=o.seed)
    except UnreachableBudget as e:
        s = e.smallest
        raise DoesNotFit(f"no subnet of {setup.path.name} fits {target.name}: the smallest needs {s['arena_bytes']:,} B of arena "
                         f"(budget {sram:,} B) and {s['flash_bytes']:,} B of flash (budget {flash:,} B)") from None


def _deploy_supernet(worker: Int8Process, supernet_spec, target, out_dir: Path, o: SupernetDeployOptions, say) -> dict:
    from moofa.search.predictor import load_search_setup
    from moofa.train.data import make_loaders
    from moofa.train.loop import evaluate_subnet, top1
    from toolchain.convert.export import export_onnx
    from toolchain.deploy.pipeline import DeployOptions, deploy_tflite

    timings = {}
    t = time.perf_counter()
    setup = load_search_setup(supernet_spec)
    net, meta = setup.net, setup.meta
    found = _search(setup, target, o, say)
    timings["search"] = time.perf_counter() - t

    t = time.perf_counter()
    say(f"extract: {found.config.to_string()} (predicted val top-1 {found.predicted_top1 * 100:.2f}%), BN recalibrated, scored on val")
    preset = meta["preset"]
    loaders = make_loaders(meta["dataset"]["name"], o.data, preset["batch_size"], tuple(meta["resolutions"]), preset["val_size"], meta["seed"])
    res = found.config.resolution
    val_acc, _, subnet = evaluate_subnet(net, found.config, loaders, torch.device("cpu"), split="val", bn_images=preset["bn_recal_images"])
    timings["extract_val"] = time.perf_counter() - t

    t = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    staged = out_dir / STAGED_NAME
    calib = calibration_images(loaders, res, o.calibration_images)
    test = list(loaders.eval_loader("test", res, batch_size=500))
    test_x, test_y = torch.cat([x for x, _ in test]).numpy(), torch.cat([y for _, y in test]).numpy()
    say(f"export: int8 TFLite (Keras rebuild, calibrated on {len(calib)} training images) and its top-1 on the "
        f"{len(test_y):,} test images, in a second process")
    worker.submit(subnet, calib, staged, test_x, test_y)
    say(f"accuracy: float top-1 on the {len(test_y):,} test images")
    float_acc, n_test = top1(subnet, test, torch.device("cpu"))
    timings["float_eval"] = time.perf_counter() - t

    t = time.perf_counter()
    say("export: model.onnx (float32, NCHW, batch-norm folded; checked with onnxruntime)")
    onnx_export = export_onnx(subnet, calib[:8], out_dir / "model.onnx")
    timings["export_onnx"] = time.perf_counter() - t

    t = time.perf_counter()
    export = worker.receive("exported")
    timings["export_wait"] = time.perf_counter() - t
    timings["export"] = export.pop("seconds")
    write_atomically(out_dir / "subnet.json", found.config.to_json(indent=2) + "\n")

    def accuracy() -> dict:
        """Waits for the int8 top-1 (the second process computes it while the deploy runs)."""
        t = time.perf_counter()
        say("accuracy: waiting for the int8 top-1")
        int8 = worker.receive("int8")
        timings["int8_wait"] = time.perf_counter() - t
        timings["int8_eval"] = int8["seconds"]
        q_acc = int8["top1"]
        return {"float_top1": float_acc, "int8_top1": q_acc, "loss_pt": round((float_acc - q_acc) * 100, 2),
                "val_top1": val_acc, "predicted_val_top1": found.predicted_top1, "test_images": n_test}

    options = DeployOptions(
        labels=list(meta["dataset"].get("class_names") or []), seed=o.seed, inputs=quantize_images(staged, test_x[:32]),
        cross_check_steps=o.cross_check_steps, accuracy=accuracy, extra_files={"model.onnx": onnx_export.path},
        timings_s=timings, final_dir=o.final_dir, boot=o.boot,
        summary={"subnet": found.config.to_dict(), "supernet": str(setup.path), "export": export,
                 "onnx": {"path": str((o.final_dir or out_dir) / "model.onnx"), "opset": onnx_export.opset, "bytes": onnx_export.model_bytes,
                          "onnxruntime_vs_torch_max_abs_diff": onnx_export.max_abs_diff}},
    )
    summary = deploy_tflite(staged, target, out_dir, options, progress=say).to_dict()
    staged.unlink(missing_ok=True)
    write_atomically(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


class DoesNotFit(Exception):
    """No subnet fits the board (exit code 1)."""
