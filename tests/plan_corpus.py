"""Keras-built models on which TFLM's greedy arena planner leaves SRAM on the table.

Every model in ``corpus.py`` happens to be one where the greedy head already equals the
liveness lower bound, so none can show an offline plan saving anything. These can: plain
(no BatchNormalization) depthwise-separable stacks at camera resolution, residuals that keep a
large skip tensor alive across uneven blocks, concatenated branches of uneven widths, and a
network whose largest tensors come first. They are converted exactly like the corpus (full
int8 through ``tf.lite.TFLiteConverter`` with a representative dataset) and cached under
``<repo>/.cache/plan-corpus-<hash>``, the hash covering this file, ``corpus.py`` (whose
conversion code is reused) and the TensorFlow version.

Importing this module is cheap: TensorFlow is imported inside the builders.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import corpus as _corpus
from corpus import _calibrate_batch_norm, _conv_bn_act, _input, _tf

REPO_ROOT = _corpus.REPO_ROOT


def _conv(x, filters: int, kernel, strides=1, activation="relu"):
    """A plain convolution with bias and activation: what a network without BN is made of."""
    return _tf().keras.layers.Conv2D(filters, kernel, strides=strides, padding="same",
                                     activation=activation)(x)


def _dw(x, kernel, strides=1, activation="relu"):
    return _tf().keras.layers.DepthwiseConv2D(kernel, strides=strides, padding="same",
                                              activation=activation)(x)


def dw_sep_160_plain():
    """The issue's example: a plain 160x160 RGB depthwise-separable stack (MobileNetV1's first
    blocks, no BatchNormalization). The input is alive with the first, larger feature map."""
    tf = _tf()
    tf.keras.utils.set_random_seed(0)
    inputs = _input((160, 160, 3))
    x = _conv(inputs, 8, 3, strides=2, activation="relu6")                 # 80x80x8
    for channels, strides in ((16, 1), (32, 2), (32, 1), (64, 2), (64, 1)):
        x = _dw(x, 3, strides, activation="relu6")
        x = _conv(x, channels, 1, activation="relu6")
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf.keras.layers.Dense(10)(x)
    return tf.keras.Model(inputs, outputs, name="dw_sep_160_plain")


def uneven_chain():
    """A plain chain whose widths go big, medium, medium, big (16, 12, 12, 16 channels, then
    24, 32, 24, 24, 32 after a stride): greedy by size puts both big tensors at offset 0 and
    must then stack the two medium ones above them, where alternating ends fits all four in
    big + medium."""
    tf = _tf()
    tf.keras.utils.set_random_seed(0)
    inputs = _input((64, 64, 3))
    x = inputs
    for channels, strides in ((16, 1), (12, 1), (12, 1), (16, 1), (24, 2), (32, 1), (24, 1),
                              (24, 1), (32, 1), (8, 1)):
        x = _conv(x, channels, 3, strides=strides)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf.keras.layers.Dense(10)(x)
    return tf.keras.Model(inputs, outputs, name="uneven_chain")


def residual_uneven():
    """Residual blocks whose inner tensors are wider than the skip (16 -> 24, 12, 12, 24 -> 16)
    so a long-lived skip tensor sits beside an uneven chain, then a wider bottleneck residual."""
    tf = _tf()
    L = tf.keras.layers
    tf.keras.utils.set_random_seed(0)
    inputs = _input((48, 48, 3))
    x = _conv(inputs, 16, 3)                                                # 48x48x16
    for widths in ((24, 12, 12, 24), (32, 16, 16, 32)):
        y = x
        for channels in widths:
            y = _conv(y, channels, 3)
        y = _conv(y, 16, 1, activation=None)
        x = L.Add()([x, y])
    x = _conv(x, 32, 3, strides=2)                                          # 24x24x32
    y = _conv(x, 24, 1)
    y = _conv(y, 48, 3)
    y = _conv(y, 32, 1, activation=None)
    x = L.Add()([x, y])
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(10)(x)
    return tf.keras.Model(inputs, outputs, name="residual_uneven")


def branches_uneven():
    """Inception-like blocks of uneven branches (1x1; three 3x3 convolutions; depthwise +
    pointwise), concatenated, each followed by a big-medium-medium-big run of 3x3 convolutions."""
    tf = _tf()
    L = tf.keras.layers
    tf.keras.utils.set_random_seed(0)
    inputs = _input((64, 64, 3))
    x = _conv(inputs, 24, 3, strides=2)                                     # 32x32x24
    for c1, widths, c5 in ((4, (8, 16, 12), 8), (8, (8, 8), 8)):
        b1 = _conv(x, c1, 1)
        b5 = _conv(_dw(x, 3), c5, 1)
        y = x
        for channels in widths:
            y = _conv(y, channels, 3)
        x = L.Concatenate()([b1, b5, y])                                    # 24 channels
        for channels in (48, 36, 36, 48):
            x = _conv(x, channels, 3)
    x = _conv(x, 32, 3, strides=2)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(10)(x)
    return tf.keras.Model(inputs, outputs, name="branches_uneven")


def early_giants():
    """Large early tensors (a 96x96 input widened to 24 channels, with BN) and a side branch
    pooled from the first feature map that is consumed late, by a Concatenate."""
    tf = _tf()
    L = tf.keras.layers
    tf.keras.utils.set_random_seed(0)
    inputs = _input((96, 96, 3))
    x = _conv_bn_act(inputs, 24, 3)                                         # 96x96x24
    side = _conv(L.MaxPooling2D(4)(x), 8, 1)                                # 24x24x8, used late
    x = _conv(x, 16, 3, strides=2)                                          # 48x48x16
    for channels in (12, 12, 16):
        x = _conv(x, channels, 3)
    x = _conv(x, 24, 3, strides=2)                                          # 24x24x24
    x = L.Concatenate()([x, side])
    x = _conv(x, 16, 3, strides=2)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(10)(x)
    return _calibrate_batch_norm(tf.keras.Model(inputs, outputs, name="early_giants"))


PLAN_CORPUS: dict[str, Callable] = {
    "dw_sep_160_plain": dw_sep_160_plain,
    "uneven_chain": uneven_chain,
    "residual_uneven": residual_uneven,
    "branches_uneven": branches_uneven,
    "early_giants": early_giants,
}


def cache_dir() -> Path:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(Path(_corpus.__file__).read_bytes())
    digest.update(_corpus._tensorflow_version().encode())
    path = REPO_ROOT / ".cache" / f"plan-corpus-{digest.hexdigest()[:16]}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_model(name: str, out_dir: Path | None = None) -> Path:
    """Convert ``PLAN_CORPUS[name]`` to ``<cache>/<name>.tflite`` unless it is already there."""
    if name not in PLAN_CORPUS:
        raise KeyError(f"unknown plan-corpus model {name!r}; known: {', '.join(sorted(PLAN_CORPUS))}")
    path = Path(out_dir or cache_dir()) / f"{name}.tflite"
    if not path.exists():
        model = PLAN_CORPUS[name]()
        _corpus._write_atomically(path, _corpus._convert(model, name))
        _tf().keras.backend.clear_session()
    return path


def build_all(out_dir: Path | None = None) -> dict[str, Path]:
    """Every model, converted in a child process when any is missing: TensorFlow is then never
    imported into the caller (a test process that later imports torch crashes if it was)."""
    out_dir = Path(out_dir or cache_dir())
    paths = {name: out_dir / f"{name}.tflite" for name in PLAN_CORPUS}
    if not all(p.exists() for p in paths.values()):
        code = "import sys, plan_corpus; plan_corpus._build_here(sys.argv[1])"
        proc = subprocess.run([sys.executable, "-c", code, str(out_dir)], cwd=Path(__file__).parent,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"building the plan corpus failed:\n{proc.stderr[-3000:]}")
    return paths


def _build_here(out_dir: str) -> None:
    for name in PLAN_CORPUS:
        build_model(name, Path(out_dir))
