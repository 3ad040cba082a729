"""``moofa-deploy --model M.onnx``: an ONNX model converted to full-int8 TFLite, then deployed.

It lives in ``moofa`` rather than ``toolchain`` for one reason: without ``--calibration``, a
1x28x28 input is calibrated on Fashion-MNIST training images, and the data sets are moofa's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FMNIST_CALIBRATION_IMAGES = 256


def onnx_calibration(info, calibration: str | None, data: str | None):
    """(inputs, how they were chosen): the ``calibration`` .npy, or Fashion-MNIST training images
    (normalized with the data set's mean and std) for a 1x28x28 input."""
    import sys

    from toolchain.convert.onnx_import import load_calibration
    from toolchain.errors import InputError

    if calibration:
        return load_calibration(calibration, info), f"{Path(calibration).name}, as given"
    if tuple(info.input_shape[1:]) != (1, 28, 28):
        shape = "x".join(map(str, info.input_shape[1:]))
        raise InputError(f"{info.path}: input `{info.input_name}` is {shape}, not Fashion-MNIST's 1x28x28: pass "
                         f"--calibration FILE.npy (float32, N x {shape}, preprocessed as the model expects)")
    from moofa.train.data import load_dataset

    ds, train, _ = load_dataset("fashion-mnist", data)
    images = train.images[:FMNIST_CALIBRATION_IMAGES].numpy().astype(np.float32) / 255.0
    x = ((images - ds.mean[0]) / ds.std[0]).astype(np.float32)
    source = (f"the first {len(x)} Fashion-MNIST training images, scaled to [0, 1] and normalized with the "
              f"dataset's mean {ds.mean[0]} and std {ds.std[0]}")
    print(f"moofa-deploy: note: no --calibration given; calibrating on {source} (pass --calibration FILE.npy "
          "if the model expects other preprocessing)", file=sys.stderr, flush=True)
    return x, source


def deploy_onnx(model: Path, target, out_dir: Path, calibration: str | None, data: str | None, options, progress=None):
    """ONNX -> full-int8 .tflite (onnx2tf + TFLiteConverter, in a temporary folder), then the
    .tflite deploy with ``options`` (a :class:`toolchain.deploy.pipeline.DeployOptions`).
    Nothing is written into ``out_dir`` unless the conversion succeeds."""
    import dataclasses
    import tempfile

    from toolchain.convert.onnx_import import convert_onnx_int8, read_onnx
    from toolchain.deploy.pipeline import deploy_tflite

    say = progress or (lambda msg: None)
    info = read_onnx(model)
    inputs, source = onnx_calibration(info, calibration, data)
    with tempfile.TemporaryDirectory(prefix="moofa-deploy-") as tmp:
        staged = Path(tmp) / f"{model.stem}.tflite"
        say(f"convert: {model.name} -> full-int8 TFLite (onnx2tf + TFLiteConverter, {len(inputs)} calibration inputs)")
        conv = convert_onnx_int8(info, inputs, staged, source)
        layout = "x".join(map(str, conv.tflite_input_shape))
        say(f"convert: done in {conv.seconds:.1f} s; .tflite input {layout} (ONNX {'x'.join(map(str, conv.onnx_input_shape))}); "
            f"int8 vs float max |diff| {conv.int8_max_abs_diff:.3g} on {conv.checked_samples} inputs")
        options = dataclasses.replace(options, inputs=conv.quantize(inputs[: options.samples]), conversion=conv.to_dict(),
                                      model_name=f"{model.name} (int8 via onnx2tf; input {layout}, channels last)")
        return deploy_tflite(staged, target, out_dir, options, progress=say)
