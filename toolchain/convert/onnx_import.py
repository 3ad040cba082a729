"""Import a user's ONNX model as a full-integer int8 ``.tflite`` (``moofa-deploy --model M.onnx``).

The path: ``onnx2tf`` rebuilds the ONNX graph as a TensorFlow (tf_keras) model, then
``tf.lite.TFLiteConverter`` quantizes it with a representative dataset: int8 input and output,
per-channel int8 weights, int32 biases, and **only** TFLite's int8 builtin ops. We measured
onnx2tf's own int8 output (``output_integer_quantized_tflite``) on the same models: it gives the
same numbers but writes eight files (float16, dynamic-range, int16-activation variants and a
saved model) in about twice the time, and it allows ``SELECT_TF_OPS``, i.e. Flex ops that TFLM
cannot run. With ``TFLITE_BUILTINS_INT8`` alone, an op TFLM-style int8 kernels lack fails here,
in one line, instead of on the board.

Layout: onnx2tf turns NCHW inputs into NHWC (NCW into NWC), so the ``.tflite``'s input is
channels-last. Calibration data is given in the ONNX model's layout and transposed here;
:class:`OnnxConversion` records both shapes and the permutation.

Checks, on the calibration inputs: onnx2tf's float graph against onnxruntime running the original
ONNX (must agree to float32 rounding, or the conversion is refused), and the int8 model's
dequantized output against the same float output (reported: max error, top-1 agreement).

The conversion runs in a child process, in a temporary working directory: importing onnx2tf
sets ``TF_USE_LEGACY_KERAS=1`` for the whole process (``tf.keras`` becomes tf_keras, which breaks
the Keras 3 exporter of :mod:`toolchain.convert.export`), it calls ``sys.exit`` on errors and prints
pages of progress, it overwrites its input file, and it fetches a
sample-image file from the network for 3-channel inputs unless it finds that file in the working
directory. We put one there (made from the calibration data) and replace its download function,
so the conversion never touches the network. TensorFlow comes in through :mod:`toolchain.runtime.tf`;
the child never imports torch, so it skips loading Triton first (which a process holding both
needs: Triton after TensorFlow crashes it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from toolchain.errors import InputError
from toolchain.files import read_input_bytes
from toolchain.runtime.runner import run_python

# onnx2tf looks for this file in the working directory before downloading it (3-channel inputs).
_ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"
_FLOAT_CHECK_SAMPLES = 16
_INT8_CHECK_SAMPLES = 64

#: onnx2tf + TFLiteConverter in the child; a model that needs longer is stuck, not slow.
CONVERSION_TIMEOUT_S = 900


@dataclass(frozen=True)
class OnnxModelInfo:
    path: str
    input_name: str
    input_shape: tuple[int, ...]  # batch fixed to 1
    dynamic_batch: bool
    output_name: str
    op_types: tuple[str, ...]
    opset: int


@dataclass
class OnnxConversion:
    tflite_path: str
    onnx_input_shape: list[int]  # the ONNX model's layout, e.g. NCHW
    tflite_input_shape: list[int]  # the .tflite's layout, e.g. NHWC
    input_permutation: list[int]  # tflite_input = onnx_input.transpose(input_permutation)
    input_scale: float
    input_zero_point: int
    calibration_samples: int
    calibration_source: str
    float_max_abs_diff: float  # onnx2tf float graph vs onnxruntime
    int8_max_abs_diff: float  # dequantized int8 output vs onnxruntime
    output_abs_max: float  # largest |float output|, to read the errors against
    int8_top1_agreement: float | None  # argmax agreement for (1, classes) outputs, else None
    checked_samples: int
    op_kinds: list[str]
    converter: str
    seconds: float

    def to_dict(self) -> dict:
        d = asdict(self)
        del d["tflite_path"]  # a temporary file by the time anyone reads this
        d["float_max_abs_diff"] = float(f"{self.float_max_abs_diff:.3g}")
        d["int8_max_abs_diff"] = float(f"{self.int8_max_abs_diff:.3g}")
        d["output_abs_max"] = float(f"{self.output_abs_max:.4g}")
        d["seconds"] = round(self.seconds, 2)
        return d

    def quantize(self, onnx_layout: np.ndarray) -> np.ndarray:
        """Float inputs in the ONNX layout (N, *input shape minus batch) as int8 .tflite input
        tensors (N, *tflite input shape)."""
        x = np.asarray(onnx_layout, dtype=np.float32)[:, None].transpose([0, *(p + 1 for p in self.input_permutation)])
        return np.clip(np.round(x / self.input_scale) + self.input_zero_point, -128, 127).astype(np.int8)


def _onnx():
    try:
        import onnx
    except ImportError:
        raise InputError("ONNX models need the onnx and onnx2tf packages: run scripts/setup.sh (requirements.lock)") from None
    return onnx


def _one_line(text: object) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(text))
    return " ".join(text.split())[:300]


def _onnx2tf_ops_dir() -> Path | None:
    # find_spec on the top-level name does not import it (importing onnx2tf imports TensorFlow).
    spec = importlib.util.find_spec("onnx2tf")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "ops"


def read_onnx(path: str | Path) -> OnnxModelInfo:
    """Parse and check an ONNX model; one-line :class:`InputError` for anything we cannot deploy."""
    path = Path(path)
    data = read_input_bytes(path, "an .onnx model")
    if not data:
        raise InputError(f"{path}: empty file, expected an .onnx model")
    onnx = _onnx()
    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:  # protobuf DecodeError and friends
        raise InputError(f"{path}: not an ONNX model or truncated ({_one_line(e)})") from None
    if not model.graph.node:
        raise InputError(f"{path}: not an ONNX model or truncated (no graph nodes)")
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise InputError(f"{path}: invalid ONNX model: {_one_line(e)}") from None

    g = model.graph
    initializers = {t.name for t in g.initializer}
    inputs = [i for i in g.input if i.name not in initializers]
    if len(inputs) != 1 or len(g.output) != 1:
        raise InputError(f"{path}: the model has {len(inputs)} inputs and {len(g.output)} outputs; "
                         "moofa-deploy deploys models with one input and one output")
    x = inputs[0]
    tt = x.type.tensor_type
    if tt.elem_type != onnx.TensorProto.FLOAT:
        raise InputError(f"{path}: input `{x.name}` is {onnx.TensorProto.DataType.Name(tt.elem_type)}; "
                         "a float32 input is needed (it becomes the int8 input)")
    dims = [(d.dim_value if d.HasField("dim_value") else None) for d in tt.shape.dim]
    if len(dims) < 2:
        raise InputError(f"{path}: input `{x.name}` has rank {len(dims)}; expected a batch dimension and at least one more")
    if any(d is None or d <= 0 for d in dims[1:]):
        shown = "x".join("?" if d is None else str(d) for d in dims)
        raise InputError(f"{path}: input `{x.name}` has a dynamic shape ({shown}): export the model with a fixed "
                         "input size (only the batch may be dynamic)")
    if dims[0] not in (None, 0, 1):
        raise InputError(f"{path}: input `{x.name}` has batch {dims[0]}; export it with batch 1 (or a dynamic batch)")

    op_types = tuple(dict.fromkeys(n.op_type for n in g.node))
    custom = sorted({f"{n.domain}.{n.op_type}" for n in g.node if n.domain not in ("", "ai.onnx")})
    if custom:
        raise InputError(f"{path}: unsupported ONNX op(s) {', '.join(custom)}: custom-domain ops cannot be converted to TFLite")
    ops_dir = _onnx2tf_ops_dir()
    if ops_dir is None:
        raise InputError("ONNX models need the onnx2tf package: run scripts/setup.sh (requirements.lock)")
    missing = [op for op in op_types if not (ops_dir / f"{op}.py").is_file()]
    if missing:
        raise InputError(f"{path}: unsupported ONNX op(s) {', '.join(missing)}: onnx2tf cannot convert them to TensorFlow")
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return OnnxModelInfo(str(path), x.name, (1, *dims[1:]), dims[0] != 1, g.output[0].name, op_types, opset)


def load_calibration(path: str | Path, info: OnnxModelInfo) -> np.ndarray:
    """A ``.npy`` of float inputs shaped (N, *the ONNX input shape minus batch)."""
    path = Path(path)
    try:
        x = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{path}: not a .npy array ({_one_line(e)})") from None
    want = tuple(info.input_shape[1:])
    if x.ndim == len(want) + 2 and x.shape[1] == 1 and tuple(x.shape[2:]) == want:
        x = x[:, 0]  # (N, 1, C, H, W): samples saved with their batch dimension
    if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want or len(x) == 0:
        raise InputError(f"{path}: calibration array is {x.shape}; expected (N, {', '.join(map(str, want))}) "
                         f"for input `{info.input_name}` (N preprocessed samples, ONNX layout)")
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"{path}: calibration array is {x.dtype}; expected float32 inputs, preprocessed as the model expects")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise InputError(f"{path}: calibration array holds NaN or infinite values")
    return x


def convert_onnx_int8(info: OnnxModelInfo, calibration: np.ndarray, out_path: Path, calibration_source: str = "") -> OnnxConversion:
    """Convert ``info.path`` to a full-int8 .tflite at ``out_path`` (in a child process)."""
    t0 = time.perf_counter()
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="moofa-onnx-") as tmp:
        work = Path(tmp)
        shutil.copyfile(info.path, work / "model.onnx")  # onnx2tf rewrites its input file
        np.save(work / "calibration.npy", np.asarray(calibration, dtype=np.float32))
        job = {"original": str(Path(info.path).resolve()), "onnx": str(work / "model.onnx"),
               "calibration": str(work / "calibration.npy"), "out": str(work / "model.tflite"),
               "result": str(work / "result.json"), "dynamic_batch": info.dynamic_batch}
        (work / "job.json").write_text(json.dumps(job))
        proc = run_python("from toolchain.convert.onnx_import import child_main; child_main()", [work / "job.json"],
                          what=f"{info.path}: ONNX conversion", timeout_s=CONVERSION_TIMEOUT_S, cwd=work)
        result_file = work / "result.json"
        if not result_file.is_file():
            raise InputError(f"{info.path}: ONNX conversion crashed: {_one_line(proc.reason())}")
        r = json.loads(result_file.read_text())
        if "error" in r:
            raise InputError(f"{info.path}: {r['error']}")
        from toolchain.files import write_atomically

        write_atomically(out_path, (work / "model.tflite").read_bytes())
    r.update(tflite_path=str(out_path), calibration_samples=len(calibration), calibration_source=calibration_source,
             seconds=time.perf_counter() - t0)
    return OnnxConversion(**r)


# --------------------------------------------------------------------------------------------
# The child process
# --------------------------------------------------------------------------------------------

def _permutation(onnx_shape: tuple[int, ...], tf_shape: tuple[int, ...]) -> list[int]:
    """The transpose that takes an ONNX-layout tensor to onnx2tf's layout (channels last)."""
    r = len(onnx_shape)
    channels_last = [0, *range(2, r), 1] if r >= 3 else list(range(r))
    for perm in (channels_last, list(range(r))):
        if tuple(onnx_shape[p] for p in perm) == tuple(tf_shape):
            return perm
    raise InputError(f"onnx2tf made a {list(tf_shape)} tensor out of the ONNX {list(onnx_shape)} one, a layout moofa cannot map")


def _convert(job: dict) -> dict:
    import contextlib
    import io

    from toolchain.runtime.tf import quietly, tf_quiet

    tf = tf_quiet(load_triton=False)  # this process never imports torch
    calibration = np.load(job["calibration"])
    onnx_shape = (1, *calibration.shape[1:])

    import onnxruntime as ort

    try:
        session = ort.InferenceSession(job["original"], providers=["CPUExecutionProvider"])
    except Exception as e:
        raise InputError(f"onnxruntime cannot run the model: {_one_line(e)}") from None
    in_name = session.get_inputs()[0].name
    reference = np.concatenate([session.run(None, {in_name: s[None]})[0] for s in calibration[:_INT8_CHECK_SAMPLES]])

    import onnx2tf
    import onnx2tf.onnx2tf as o2t_main
    import onnx2tf.utils.common_functions as o2t_common

    # onnx2tf downloads a sample-image file for 3-channel inputs; serve ours (calibration data,
    # channels-last) from the working directory instead, and never the network.
    if calibration.ndim == 4 and 3 in (calibration.shape[1], calibration.shape[3]):
        nhwc = calibration.transpose(0, 2, 3, 1) if calibration.shape[1] == 3 else calibration
        np.save(_ONNX2TF_SAMPLE, np.resize(nhwc, (20, *nhwc.shape[1:])))  # 20 images, repeated if fewer

    def _local_sample():
        if os.path.isfile(_ONNX2TF_SAMPLE):
            return np.load(_ONNX2TF_SAMPLE)
        return np.zeros((20, 128, 128, 3), np.float32)  # what onnx2tf would fetch, in shape only

    o2t_main.download_test_image_data = _local_sample
    o2t_common.download_test_image_data = _local_sample

    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            model = quietly(lambda: onnx2tf.convert(
                input_onnx_file_path=job["onnx"], output_folder_path="saved_model", disable_model_save=True,
                non_verbose=True, not_use_onnxsim=True, batch_size=1 if job["dynamic_batch"] else None))
    except SystemExit:
        errors = [ln for ln in log.getvalue().splitlines() if "ERROR" in ln]
        why = _one_line(errors[0].split("ERROR:", 1)[-1]) if errors else "onnx2tf stopped"
        raise InputError(f"onnx2tf cannot convert the model: {why}") from None
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"onnx2tf cannot convert the model: {type(e).__name__}: {_one_line(e)}") from None
    if model is None or len(model.inputs) != 1:
        raise InputError("onnx2tf cannot convert the model (no single-input TensorFlow model came out)")

    tf_in = (1, *[int(d) for d in model.inputs[0].shape[1:]])
    perm = _permutation(onnx_shape, tf_in)
    calib_tf = calibration[:, None].transpose([0, *(p + 1 for p in perm)])  # (N, *tflite input shape)

    def run_float(x):
        y = model(x, training=False)
        return (y[0] if isinstance(y, (list, tuple)) else y).numpy()

    got = np.concatenate([run_float(s) for s in calib_tf[:_FLOAT_CHECK_SAMPLES]])
    one_ref, one_got = (1, *reference.shape[1:]), (1, *got.shape[1:])
    reference = reference.transpose(_permutation(one_ref, one_got) if one_ref != one_got else list(range(reference.ndim)))
    scale = max(1.0, float(np.max(np.abs(reference))))
    float_diff = float(np.max(np.abs(got - reference[: len(got)])))
    if not float_diff <= 1e-3 * scale:
        raise InputError(f"onnx2tf's TensorFlow graph differs from the ONNX model by {float_diff:.3g} (a conversion error); not deploying it")

    fn = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec(tf_in, tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s] for s in calib_tf)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    try:
        data = quietly(converter.convert)
    except Exception as e:
        msg = [ln for ln in str(e).splitlines() if "error:" in ln] or str(e).splitlines() or [type(e).__name__]
        raise InputError(f"TFLite cannot quantize the model to int8 builtins: {_one_line(msg[0].split('error:', 1)[-1])}") from None

    from toolchain.tflite.reader import parse_model

    graph = parse_model(data, "converted model")
    Path(job["out"]).write_bytes(data)

    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=data)
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    if i["dtype"] != np.int8 or o["dtype"] != np.int8:
        raise InputError(f"the converted model's input/output are {i['dtype'].__name__}/{o['dtype'].__name__}, not int8")
    si, zi = i["quantization"]
    so, zo = o["quantization"]
    ys = []
    for s in calib_tf[:_INT8_CHECK_SAMPLES]:
        it.set_tensor(i["index"], np.clip(np.round(s / si) + zi, -128, 127).astype(np.int8))
        it.invoke()
        ys.append((it.get_tensor(o["index"]).astype(np.float32) - zo) * so)
    ys = np.concatenate(ys).reshape(reference.shape)
    top1 = None
    if reference.ndim == 2 and reference.shape[1] > 1:
        top1 = float(np.mean(ys.argmax(1) == reference.argmax(1)))
    return {
        "onnx_input_shape": list(onnx_shape), "tflite_input_shape": [int(d) for d in i["shape"]], "input_permutation": perm,
        "input_scale": float(si), "input_zero_point": int(zi), "float_max_abs_diff": float_diff,
        "int8_max_abs_diff": float(np.max(np.abs(ys - reference))), "output_abs_max": float(np.max(np.abs(reference))),
        "int8_top1_agreement": top1, "checked_samples": len(ys), "op_kinds": list(graph.op_kinds),
        "converter": f"onnx2tf {onnx2tf.__version__} + TFLiteConverter (TFLITE_BUILTINS_INT8, per-channel weights)",
    }


def child_main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    try:
        result = _convert(job)
    except InputError as e:
        result = {"error": str(e)}
    except Exception as e:  # anything else still becomes one line for the user
        result = {"error": f"ONNX conversion failed: {type(e).__name__}: {_one_line(e)}"}
    Path(job["result"]).write_text(json.dumps(result))
