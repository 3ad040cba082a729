"""A corpus of real TFLite models, made the ordinary way: Keras + ``tf.lite.TFLiteConverter``.

The memory model in :mod:`toolchain` has to reproduce what TFLM's own planner does, byte for
byte, on models the project did not make. These are such models: each is a small but realistic
TinyML architecture (MLPerf Tiny reference networks, MobileNet-style blocks, inception branches,
a large-resolution first layer), converted *without* the project's own exporter so that the
tests compare our reading of a converter's output against the TFLM interpreter, not our exporter
against itself.

Every model here has been run by the real TFLM interpreter (``tflite_micro``); see
:func:`tflm_allocations`. Models are cached under ``<repo>/.cache/corpus-<hash>`` where the hash
covers this file's text and the TensorFlow version, so editing a builder rebuilds the corpus.

Importing this module is cheap: TensorFlow is imported inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import io
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

# Must be set before TensorFlow is first imported to silence its C++ logging.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

REPO_ROOT = Path(__file__).resolve().parent.parent

# Size of the representative dataset used to calibrate activation ranges.
CALIBRATION_SAMPLES = 16
# Arena big enough for every corpus model; TFLM reports what it actually used.
TFLM_ARENA_BYTES = 8 << 20


def _tf():
    """Import TensorFlow quietly (C++ log level is set at module import; this quiets Python)."""
    import tensorflow as tf
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)
    tf.get_logger().setLevel("ERROR")
    return tf


def _input(shape: tuple[int, ...]):
    """A batch-1 Keras input: MCU deployments run one sample, and a static batch keeps every
    tensor shape static in the converted model."""
    return _tf().keras.Input(shape=shape, batch_size=1)


# ----------------------------------------------------------------------------------------------
# Building blocks


def _conv_bn_act(x, filters: int, kernel, strides=1, activation: str | None = "relu"):
    L = _tf().keras.layers
    x = L.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    if activation is not None:
        x = L.Activation(activation)(x) if activation != "relu6" else L.ReLU(6.0)(x)
    return x


def _dw_bn_act(x, kernel, strides=1, activation: str | None = "relu"):
    L = _tf().keras.layers
    x = L.DepthwiseConv2D(kernel, strides=strides, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    if activation is not None:
        x = L.Activation(activation)(x) if activation != "relu6" else L.ReLU(6.0)(x)
    return x


def _squeeze_excite(x, squeeze_channels: int):
    """MobileNetV3 SE: global pool -> 1x1 conv + ReLU -> 1x1 conv + hard-sigmoid -> scale."""
    L = _tf().keras.layers
    channels = x.shape[-1]
    s = L.GlobalAveragePooling2D(keepdims=True)(x)
    s = L.Conv2D(squeeze_channels, 1, activation="relu")(s)
    s = L.Conv2D(channels, 1)(s)
    s = L.Activation("hard_sigmoid")(s)
    return L.Multiply()([x, s])


def _mbconv(x, expand_channels: int, out_channels: int, kernel: int, strides: int,
            se: bool, activation: str):
    """MobileNetV3 inverted residual: 1x1 expand, depthwise kxk, optional SE, 1x1 project,
    residual Add when the shape is kept."""
    L = _tf().keras.layers
    in_channels = x.shape[-1]
    y = x
    if expand_channels != in_channels:
        y = _conv_bn_act(y, expand_channels, 1, activation=activation)
    y = _dw_bn_act(y, kernel, strides, activation=activation)
    if se:
        y = _squeeze_excite(y, max(8, expand_channels // 4))
    y = _conv_bn_act(y, out_channels, 1, activation=None)
    if strides == 1 and in_channels == out_channels:
        y = L.Add()([x, y])
    return y


def _calibrate_batch_norm(model):
    """Give every BatchNormalization layer the statistics of its input on calibration data.

    Freshly initialised BN layers are identities (mean 0, variance 1), so with random weights
    the activations shrink or grow layer by layer until the softmax input of a deep model has a
    scale near 1e-8 -- far from anything trained, and enough to make TFLM abort in
    ``QuantizeMultiplierGreaterThanOne`` while preparing SOFTMAX. One forward pass in training
    mode with momentum 0 sets each layer's moving statistics to its batch statistics, so every
    feature map is roughly unit-scaled, as in a trained network.
    """
    tf = _tf()
    bn_layers = [layer for layer in model.layers
                 if isinstance(layer, tf.keras.layers.BatchNormalization)]
    if not bn_layers:
        return model
    momenta = [layer.momentum for layer in bn_layers]
    for layer in bn_layers:
        layer.momentum = 0.0
    with warnings.catch_warnings():  # Keras applications expect a list of inputs; one is fine
        warnings.simplefilter("ignore")
        model(_calibration_batch(model, CALIBRATION_SAMPLES, seed=1), training=True)
    for layer, momentum in zip(bn_layers, momenta):
        layer.momentum = momentum
    return model


def _calibration_batch(model, samples: int, seed: int) -> np.ndarray:
    """Seeded inputs in [-1, 1], the range a normalised image or spectrogram has."""
    shape = (samples, *model.inputs[0].shape[1:])
    return np.random.default_rng(seed).uniform(-1.0, 1.0, shape).astype(np.float32)


def _classifier(x, classes: int):
    L = _tf().keras.layers
    x = L.GlobalAveragePooling2D()(x)
    return L.Dense(classes, activation="softmax")(x)


# ----------------------------------------------------------------------------------------------
# The models. Each builder seeds Keras so that the weights, and so the file, are reproducible.


def mbconv_se_hswish():
    """MobileNetV3-Small-like: hard-swish stem, residual MBConv blocks with squeeze-excite."""
    tf = _tf()
    tf.keras.utils.set_random_seed(0)
    inputs = _input((64, 64, 3))
    x = _conv_bn_act(inputs, 16, 3, strides=2, activation="hard_swish")  # 32x32x16
    x = _mbconv(x, 16, 16, 3, 1, se=True, activation="relu")               # residual
    x = _mbconv(x, 64, 24, 3, 2, se=False, activation="relu")              # 16x16x24
    x = _mbconv(x, 72, 24, 3, 1, se=False, activation="relu")              # residual
    x = _mbconv(x, 72, 40, 5, 2, se=True, activation="hard_swish")         # 8x8x40
    x = _mbconv(x, 120, 40, 5, 1, se=True, activation="hard_swish")        # residual
    x = _conv_bn_act(x, 96, 1, activation="hard_swish")
    return _calibrate_batch_norm(tf.keras.Model(inputs, _classifier(x, 10), name="mbconv_se_hswish"))


def resnet8():
    """MLPerf Tiny image classification reference (ResNet-8 on CIFAR-10), after
    mlcommons/tiny benchmark/training/image_classification/keras_model.py."""
    tf = _tf()
    L = tf.keras.layers
    tf.keras.utils.set_random_seed(0)
    inputs = _input((32, 32, 3))
    x = _conv_bn_act(inputs, 16, 3)
    for filters, strides in ((16, 1), (32, 2), (64, 2)):
        y = _conv_bn_act(x, filters, 3, strides=strides)
        y = _conv_bn_act(y, filters, 3, activation=None)
        if strides != 1:
            x = L.Conv2D(filters, 1, strides=strides, padding="same")(x)
        x = L.Activation("relu")(L.Add()([x, y]))
    x = L.AveragePooling2D(pool_size=x.shape[1])(x)
    x = L.Flatten()(x)
    outputs = L.Dense(10, activation="softmax")(x)
    return _calibrate_batch_norm(tf.keras.Model(inputs, outputs, name="resnet8"))


def ds_cnn_kws():
    """MLPerf Tiny keyword spotting reference (DS-CNN), after
    mlcommons/tiny benchmark/training/keyword_spotting/keras_model.py."""
    tf = _tf()
    L = tf.keras.layers
    tf.keras.utils.set_random_seed(0)
    inputs = _input((49, 10, 1))
    x = _conv_bn_act(inputs, 64, (10, 4), strides=2)                       # 25x5x64
    x = L.Dropout(0.2)(x)
    for _ in range(4):
        x = _dw_bn_act(x, 3)
        x = _conv_bn_act(x, 64, 1)
    x = L.Dropout(0.4)(x)
    x = L.AveragePooling2D(pool_size=(24, 5))(x)  # (49/2, 10/2) as in the reference
    x = L.Flatten()(x)
    outputs = L.Dense(12, activation="softmax")(x)
    return _calibrate_batch_norm(tf.keras.Model(inputs, outputs, name="ds_cnn_kws"))


def _inception(x, c1: int, c3_reduce: int, c3: int, c5: int, c_pool: int):
    L = _tf().keras.layers
    b1 = _conv_bn_act(x, c1, 1)
    b3 = _conv_bn_act(_conv_bn_act(x, c3_reduce, 1), c3, 3)
    b5 = _conv_bn_act(_dw_bn_act(x, 5), c5, 1)  # depthwise 5x5 + pointwise
    bp = L.MaxPooling2D(3, strides=1, padding="same")(x)
    bp = _conv_bn_act(bp, c_pool, 1)
    return L.Concatenate(axis=-1)([b1, b3, b5, bp])


def concat_branches():
    """Two inception-style blocks: four parallel branches concatenated on channels."""
    tf = _tf()
    L = tf.keras.layers
    tf.keras.utils.set_random_seed(0)
    inputs = _input((48, 48, 3))
    x = _conv_bn_act(inputs, 16, 3, strides=2)                             # 24x24x16
    x = _inception(x, 16, 16, 24, 8, 8)                                    # 24x24x56
    x = L.MaxPooling2D(2)(x)                                               # 12x12x56
    x = _inception(x, 24, 24, 32, 16, 16)                                  # 12x12x88
    return _calibrate_batch_norm(tf.keras.Model(inputs, _classifier(x, 10), name="concat_branches"))


def dw_stack_160():
    """MobileNetV1's first blocks at 160x160: large early feature maps, where TFLM's greedy
    planner leaves holes."""
    tf = _tf()
    tf.keras.utils.set_random_seed(0)
    inputs = _input((160, 160, 3))
    x = _conv_bn_act(inputs, 16, 3, strides=2, activation="relu6")         # 80x80x16
    for channels, strides in ((32, 1), (64, 2), (64, 1), (128, 2), (128, 1)):
        x = _dw_bn_act(x, 3, strides, activation="relu6")
        x = _conv_bn_act(x, channels, 1, activation="relu6")
    return _calibrate_batch_norm(tf.keras.Model(inputs, _classifier(x, 10), name="dw_stack_160"))


def float_cnn():
    """An unquantized float32 MNIST-sized CNN."""
    tf = _tf()
    L = tf.keras.layers
    tf.keras.utils.set_random_seed(0)
    inputs = _input((28, 28, 1))
    x = L.Conv2D(8, 3, activation="relu")(inputs)                         # 26x26x8
    x = L.MaxPooling2D(2)(x)                                               # 13x13x8
    x = L.Conv2D(16, 3, activation="relu")(x)                              # 11x11x16
    x = L.Flatten()(x)
    outputs = L.Dense(10, activation="softmax")(x)
    return _calibrate_batch_norm(tf.keras.Model(inputs, outputs, name="float_cnn"))


def mobilenet_v2_tiny():
    """Keras' own MobileNetV2 at alpha 0.35, 96x96 (the MCUNet/Visual Wake Words regime)."""
    tf = _tf()
    tf.keras.utils.set_random_seed(0)
    return _calibrate_batch_norm(tf.keras.applications.MobileNetV2(
        input_tensor=_input((96, 96, 3)), alpha=0.35, weights=None, classes=10))


def large_early_tensor():
    """A 128x128x24 first feature map followed by fast downsampling: the peak is at the start."""
    tf = _tf()
    tf.keras.utils.set_random_seed(0)
    inputs = _input((128, 128, 3))
    x = _conv_bn_act(inputs, 24, 3)                                        # 128x128x24
    x = _dw_bn_act(x, 3, strides=2)                                        # 64x64x24
    x = _conv_bn_act(x, 16, 1)
    x = _conv_bn_act(x, 32, 3, strides=2)                                  # 32x32x32
    x = _conv_bn_act(x, 48, 3, strides=2)                                  # 16x16x48
    return _calibrate_batch_norm(tf.keras.Model(inputs, _classifier(x, 10), name="large_early_tensor"))


def fc_only():
    """A tiny MLP: RESHAPE and FULLY_CONNECTED only."""
    tf = _tf()
    L = tf.keras.layers
    tf.keras.utils.set_random_seed(0)
    inputs = _input((8, 8, 1))
    x = L.Flatten()(inputs)
    x = L.Dense(32, activation="relu")(x)
    x = L.Reshape((4, 8))(x)
    x = L.Flatten()(x)
    outputs = L.Dense(10)(x)
    return _calibrate_batch_norm(tf.keras.Model(inputs, outputs, name="fc_only"))


def pool_mix():
    """Max and average pooling, a residual Add across a stride-1 block, and a Concatenate of a
    tensor with a convolution of itself (one tensor read twice by the same op's inputs)."""
    tf = _tf()
    L = tf.keras.layers
    tf.keras.utils.set_random_seed(0)
    inputs = _input((32, 32, 3))
    x = _conv_bn_act(inputs, 16, 3)                                        # 32x32x16
    x = L.MaxPooling2D(2)(x)                                               # 16x16x16
    y = _conv_bn_act(x, 16, 3)
    y = _conv_bn_act(y, 16, 3, activation=None)
    x = L.Activation("relu")(L.Add()([x, y]))
    x = L.Concatenate(axis=-1)([x, _conv_bn_act(x, 8, 1)])                 # 16x16x24
    x = L.AveragePooling2D(2)(x)                                           # 8x8x24
    x = _conv_bn_act(x, 32, 3)
    return _calibrate_batch_norm(tf.keras.Model(inputs, _classifier(x, 10), name="pool_mix"))


def int16_cnn():
    """A small CNN quantized 16x8 (int16 activations, int8 weights), with int16 input/output."""
    tf = _tf()
    L = tf.keras.layers
    tf.keras.utils.set_random_seed(0)
    inputs = _input((24, 24, 1))
    x = _conv_bn_act(inputs, 8, 3, strides=2)                              # 12x12x8
    x = _dw_bn_act(x, 3)
    x = _conv_bn_act(x, 16, 1)
    y = _conv_bn_act(x, 16, 3, activation=None)
    x = L.Activation("relu")(L.Add()([x, y]))
    x = L.MaxPooling2D(2)(x)                                               # 6x6x16
    x = L.Flatten()(x)
    outputs = L.Dense(10, activation="softmax")(x)
    return _calibrate_batch_norm(tf.keras.Model(inputs, outputs, name="int16_cnn"))


CORPUS: dict[str, Callable[[], tf.keras.Model]] = {
    "mbconv_se_hswish": mbconv_se_hswish,
    "resnet8": resnet8,
    "ds_cnn_kws": ds_cnn_kws,
    "concat_branches": concat_branches,
    "dw_stack_160": dw_stack_160,
    "float_cnn": float_cnn,
    "mobilenet_v2_tiny": mobilenet_v2_tiny,
    "large_early_tensor": large_early_tensor,
    "fc_only": fc_only,
    "pool_mix": pool_mix,
    "int16_cnn": int16_cnn,
}

# Converted as plain float32, no quantization.
FLOAT_MODELS: set[str] = {"float_cnn"}
# Quantized 16x8: int16 activations and input/output, int8 weights.
INT16_MODELS: set[str] = {"int16_cnn"}
# Everything else: full-integer int8 with int8 input/output.
INT8_MODELS: set[str] = set(CORPUS) - FLOAT_MODELS - INT16_MODELS


def io_dtype(name: str) -> np.dtype:
    """The element type of a corpus model's input and output tensors."""
    if name in FLOAT_MODELS:
        return np.dtype(np.float32)
    if name in INT16_MODELS:
        return np.dtype(np.int16)
    return np.dtype(np.int8)


# ----------------------------------------------------------------------------------------------
# Conversion and cache


def _convert(model, name: str) -> bytes:
    tf = _tf()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if name not in FLOAT_MODELS:
        samples = _calibration_batch(model, CALIBRATION_SAMPLES, seed=0)

        def representative_dataset():
            for sample in samples:
                yield [sample[np.newaxis]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        if name in INT16_MODELS:
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
            converter.inference_input_type = converter.inference_output_type = tf.int16
        else:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = converter.inference_output_type = tf.int8
    return _quietly(converter.convert)


def _quietly(fn: Callable[[], bytes]) -> bytes:
    """Run a conversion without Keras' export banner on stdout or the converter's warnings."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return fn()


def _write_atomically(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder, so a reader (or a parallel test worker)
    never sees a half-written model."""
    from toolchain.files import write_atomically

    write_atomically(path, data)


def build_model(name: str, out_dir: Path) -> Path:
    """Convert ``CORPUS[name]`` to ``out_dir/<name>.tflite`` unless it is already there."""
    if name not in CORPUS:
        raise KeyError(f"unknown corpus model {name!r}; known: {', '.join(sorted(CORPUS))}")
    path = Path(out_dir) / f"{name}.tflite"
    if not path.exists():
        model = CORPUS[name]()
        _write_atomically(path, _convert(model, name))
        _tf().keras.backend.clear_session()
    return path


def build_all(out_dir: Path) -> dict[str, Path]:
    return {name: build_model(name, out_dir) for name in CORPUS}


def _tensorflow_version() -> str:
    for dist in ("tensorflow", "tensorflow-cpu", "tf-nightly"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(dist)
    return "unknown"


def cache_dir() -> Path:
    """``<repo>/.cache/corpus-<hash>``; the hash covers this file and the TensorFlow version
    (a different converter writes different files)."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(_tensorflow_version().encode())
    path = REPO_ROOT / ".cache" / f"corpus-{digest.hexdigest()[:16]}"
    path.mkdir(parents=True, exist_ok=True)
    return path


# ----------------------------------------------------------------------------------------------
# Bad inputs for error-path tests


def _not_a_model_flatbuffer() -> bytes:
    """A well-formed flatbuffer whose root is a one-string table, with identifier ``MOOF``
    instead of TFLite's ``TFL3``."""
    import flatbuffers

    builder = flatbuffers.Builder(64)
    text = builder.CreateString("this flatbuffer is not a TFLite model")
    builder.StartObject(1)
    builder.PrependUOffsetTRelativeSlot(0, text, 0)
    root = builder.EndObject()
    builder.Finish(root, file_identifier=b"MOOF")
    return bytes(builder.Output())


def _tflm_cannot_run_model() -> bytes:
    """A valid float TFLite model whose only op, RFFT2D, is a TFLite builtin that TFLM lacks."""
    tf = _tf()

    @tf.function(input_signature=[tf.TensorSpec((1, 8, 8), tf.float32)])
    def spectrum(x):
        return tf.abs(tf.signal.rfft2d(x))

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [spectrum.get_concrete_function()], spectrum)
    return _quietly(converter.convert)


def bad_inputs(out_dir: Path) -> dict[str, Path]:
    """Files that ``moofa verify`` must reject with exit code 2 (or, for ``tflm_cannot_run``,
    that it can read but TFLM cannot run)."""
    out_dir = Path(out_dir) / "bad"
    makers: dict[str, Callable[[], bytes]] = {
        "empty": lambda: b"",
        "truncated": lambda: (lambda data: data[: len(data) * 2 // 5])(
            build_model("resnet8", out_dir.parent).read_bytes()),
        "random": lambda: np.random.default_rng(0).bytes(4096),
        "not_a_model": _not_a_model_flatbuffer,
        "tflm_cannot_run": _tflm_cannot_run_model,
    }
    paths = {}
    for name, make in makers.items():
        path = out_dir / f"{name}.tflite"
        if not path.exists():
            _write_atomically(path, make())
        paths[name] = path
    return paths


# ----------------------------------------------------------------------------------------------
# The referee: run a model in the real TFLM interpreter


_TFLM_SCRIPT = """
import sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime
it = runtime.Interpreter.from_file(sys.argv[1], arena_size=int(sys.argv[2]))
d = it.get_input_details(0)  # every corpus model has one input
it.set_input(np.zeros(d["shape"], d["dtype"]), 0)
it.invoke()
it.print_allocations()
"""


class TflmError(RuntimeError):
    """TFLM could not load or run a model (the subprocess failed or aborted)."""


def tflm_allocations(path: Path, arena_bytes: int = TFLM_ARENA_BYTES,
                     timeout_s: float = 120) -> dict[str, int]:
    """Run ``path`` once in TFLM in a subprocess (TFLM may abort the process on a bad model)
    and return ``{"head": bytes, "tail": bytes, "total": bytes}`` from ``print_allocations``.

    Raises :class:`TflmError` with TFLM's output when it cannot run the model."""
    proc = subprocess.run(
        [sys.executable, "-c", _TFLM_SCRIPT, str(path), str(arena_bytes)],
        capture_output=True, text=True, timeout=timeout_s)
    log = proc.stdout + proc.stderr
    found = dict(re.findall(r"Arena allocation (head|tail|total) (\d+) bytes", log))
    if proc.returncode != 0 or len(found) != 3:
        raise TflmError(f"TFLM could not run {path} (exit {proc.returncode}):\n{log[-2000:]}")
    return {key: int(value) for key, value in found.items()}
