"""``moofa eval``: a subnet's float top-1 (and with ``--int8`` its int8 export's top-1 and where
it loses precision), and the bundled supernets' names.

The bundled Fashion-MNIST supernets live in ``moofa/supernets/`` and answer to ``moofa`` (the
default everywhere a supernet is asked for) and ``ofa``.
"""

from __future__ import annotations

import random
from pathlib import Path

from toolchain.errors import InputError

BUNDLED_DIR = Path(__file__).resolve().parents[1] / "supernets"
BUNDLED = {"moofa": "moofa-fmnist.pt", "ofa": "ofa-fmnist.pt"}
CALIBRATION_IMAGES = 256  # training images that calibrate an int8 export (moofa-deploy's default too)
ERROR_IMAGES = 200  # validation images the per-op int8 error is measured on


def calibration_images(loaders, resolution: int, count: int = CALIBRATION_IMAGES):
    """The first ``count`` training images at ``resolution``, unaugmented, as float32 NCHW: what
    an int8 export is calibrated on."""
    import torch

    return torch.cat([x for x, _ in loaders.eval_loader("train", resolution, batch_size=count, max_images=count)]).numpy()


def resolve_supernet(spec: str) -> Path:
    """A checkpoint path from a path or a bundled name."""
    if spec in BUNDLED:
        path = BUNDLED_DIR / BUNDLED[spec]
        if not path.is_file():
            raise InputError(f"the bundled {spec!r} supernet is not in this checkout ({path}); train one with `moofa train --layout {spec}`")
        return path
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"{spec}: no such checkpoint (or use a bundled name: {', '.join(BUNDLED)})")
    return path


def load_supernet(spec: str):
    """(supernet in eval mode, checkpoint metadata)."""
    from moofa.train.checkpoint import build_supernet, load_checkpoint, load_weights

    path = resolve_supernet(spec)
    state, meta = load_checkpoint(path)
    for key in ("resolutions", "dataset", "preset"):
        if key not in meta:
            raise InputError(f"{path}: checkpoint metadata has no {key!r}")
    net = build_supernet(meta)
    load_weights(net, state, path)
    return net.eval(), meta


def trained_space(net, meta: dict):
    """The search space of a trained supernet: its layout at the resolutions it was trained on."""
    from moofa.arch.space import SearchSpace

    res = meta.get("resolutions")
    if not isinstance(res, list) or not res or any(isinstance(r, bool) or not isinstance(r, int) or not 8 <= r <= net.layout.resolution for r in res):
        raise InputError(f"checkpoint: trained resolutions {res!r} must be integers in [8, {net.layout.resolution}]")
    return SearchSpace(net.layout, resolutions=tuple(res))


def pick_subnet(space, which: str, resolution: int, seed: int = 0):
    if which == "max":
        return space.max_config(resolution)
    if which == "min":
        return space.min_config(resolution)
    if which == "random":
        config = space.sample(random.Random(seed))
        return type(config)(config.layout, resolution, config.kernels, config.expands)
    path = Path(which)
    text = path.read_text() if path.is_file() else which
    config = space.parse(text) if text.strip().startswith("{") else space.validate(space.parse(text), check_resolution=False)
    return config


def evaluate_command(supernet: str, subnet: str, resolution: int | None = None, data: str | None = None,
                     split: str = "test", seed: int = 0, max_images: int | None = None, int8: bool = False,
                     error_images: int = ERROR_IMAGES) -> dict:
    """Float top-1 of a subnet on ``split``; with ``int8``, also the top-1 of its full-int8 export
    (calibrated as moofa-deploy calibrates it; LiteRT's int8 kernels) and the per-op error of that
    export on ``error_images`` validation images (:mod:`toolchain.convert.int8_error`)."""
    import torch

    from moofa.arch.blocks import subnet_spec
    from moofa.cost.params import params_macs
    from moofa.train.data import make_loaders
    from moofa.train.loop import evaluate_subnet

    net, meta = load_supernet(supernet)
    res = resolution or max(meta["resolutions"])
    config = pick_subnet(net.space, subnet, res, seed)
    preset = meta["preset"]
    loaders = make_loaders(meta["dataset"]["name"], data, preset["batch_size"], tuple(meta["resolutions"]), preset["val_size"], meta["seed"])
    top1, n, static = evaluate_subnet(net, config, loaders, torch.device("cpu"), split=split, bn_images=preset["bn_recal_images"], max_images=max_images)
    params, macs = params_macs(subnet_spec(net.layout, config))
    result = {"top1": top1, "split": split, "images": n, "subnet": config.to_dict(), "subnet_string": config.to_string(),
              "params": params, "macs": macs, "supernet": str(resolve_supernet(supernet))}
    if int8:
        result["int8"] = _int8_figures(static, loaders, config.resolution, split, max_images, error_images)
    return result


def _int8_figures(static, loaders, resolution: int, split: str, max_images: int | None, error_images: int) -> dict:
    import tempfile

    from moofa.deploy import int8_top1
    from toolchain.convert.export import export_int8
    from toolchain.convert.int8_error import int8_errors

    calib = calibration_images(loaders, resolution)
    with tempfile.TemporaryDirectory(prefix="moofa-eval-") as tmp:
        export = export_int8(static, calib, Path(tmp) / "subnet.tflite")
        top1 = int8_top1(export.path, loaders.eval_loader(split, resolution, batch_size=500, max_images=max_images))
    images = loaders.in_memory("val", resolution, max_images=error_images)[0].numpy()
    errors = int8_errors(static, calib, images)
    return {"top1": top1, "model_bytes": export.model_bytes, "calibration_images": len(calib), **errors.to_dict()}
