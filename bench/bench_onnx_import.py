"""ONNX import: conversion time and int8 accuracy of `moofa-deploy --model M.onnx` on a real network.

    python bench/bench_onnx_import.py [--supernet moofa] [--subnet max|min|FILE] [--target nucleo-h743zi2]

1. Extract a subnet of the bundled supernet (BN recalibrated) and score its float top-1 on the
   Fashion-MNIST test set.
2. Write it as ONNX (`toolchain.convert.export.export_onnx`: BN folded, SAME pads in the Conv nodes; timed).
3. Run `moofa-deploy --model subnet.onnx --target B --json` without --calibration, so the model
   (a 1x28x28 input) is calibrated on Fashion-MNIST training images by default (timed: the whole
   command, and the conversion alone as the command reports it).
4. Score the int8 .tflite it wrote on the same test set (LiteRT), and report both.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from moofa.arch.space import SubnetConfig
from moofa.deploy import int8_top1
from moofa.search.predictor import load_search_setup
from moofa.train.data import make_loaders
from moofa.train.loop import evaluate_subnet, top1
from toolchain.convert.export import export_onnx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--supernet", default="moofa")
    ap.add_argument("--subnet", default="max", help="max, min or a subnet JSON file")
    ap.add_argument("--target", default="nucleo-h743zi2")
    args = ap.parse_args()
    torch.set_num_threads(1)
    setup = load_search_setup(args.supernet)
    net, meta, space = setup.net, setup.meta, setup.space
    if args.subnet in ("max", "min"):
        config = space.max_config() if args.subnet == "max" else space.min_config()
    else:
        config = SubnetConfig.from_json(Path(args.subnet).read_text())
    preset = meta["preset"]
    loaders = make_loaders(meta["dataset"]["name"], None, preset["batch_size"], tuple(meta["resolutions"]), preset["val_size"], meta["seed"])
    _, _, subnet = evaluate_subnet(net, config, loaders, torch.device("cpu"), split="val", bn_images=preset["bn_recal_images"])
    test_loader = loaders.eval_loader("test", config.resolution, batch_size=500)
    float_acc, n = top1(subnet, test_loader, torch.device("cpu"))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        check = next(iter(loaders.eval_loader("train", config.resolution, batch_size=8, max_images=8)))[0].numpy()
        t = time.perf_counter()
        onnx = export_onnx(subnet.float().to(memory_format=torch.contiguous_format), check, tmp / "subnet.onnx")
        export_s = time.perf_counter() - t
        t = time.perf_counter()
        cmd = [sys.executable, "-c", "import sys; from moofa.cli import deploy_main; sys.exit(deploy_main())",
               "--model", str(tmp / "subnet.onnx"), "--target", args.target, "--out", str(tmp / "deploy"), "--json"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        deploy_s = time.perf_counter() - t
        if r.returncode not in (0, 1):
            sys.exit(f"moofa-deploy failed: {r.stderr.strip().splitlines()[-1]}")
        s = json.loads(r.stdout)
        int8_acc = int8_top1(tmp / "deploy" / "model.tflite", test_loader)

    c = s["conversion"]
    print(f"subnet: {config.to_string()}")
    print(f"ONNX export: {export_s:.1f} s, {onnx.model_bytes:,} B, onnxruntime vs torch {onnx.max_abs_diff:.2g}")
    print(f"moofa-deploy --model subnet.onnx --target {args.target}: {deploy_s:.1f} s wall, exit {r.returncode}; "
          f"conversion {c['seconds']:.1f} s ({c['converter']})")
    print(f"  input {c['onnx_input_shape']} -> {c['tflite_input_shape']}; float graph vs onnxruntime {c['float_max_abs_diff']:.2g}; "
          f"int8 vs float on {c['checked_samples']} calibration inputs: max |diff| {c['int8_max_abs_diff']:.3g} "
          f"(outputs reach {c['output_abs_max']:.3g}), top-1 agreement {c['int8_top1_agreement']:.3f}")
    print(f"  ops {', '.join(c['op_kinds'])}; arena {s['sram']['arena_bytes']:,} B, model {s['flash']['model_bytes']:,} B; "
          f"measured = predicted: {s['measured']['agrees']}; TFLM vs LiteRT on {s['tflm_vs_litert']['samples']} inputs: "
          f"max diff {s['tflm_vs_litert']['max_abs_diff']:g} on {s['tflm_vs_litert']['differing_samples']}")
    print(f"top-1 on {n:,} test images: float (PyTorch) {float_acc * 100:.2f}%, int8 (ONNX -> TFLite) {int8_acc * 100:.2f}%")


if __name__ == "__main__":
    main()
