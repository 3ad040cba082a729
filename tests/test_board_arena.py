"""The arena on the builds boards run: TFLM built for Cortex-M (reference and CMSIS-NN kernels),
run in QEMU, against moofa's prediction for that build — head and tail, on every corpus model.

The builds are made on first use and cached (~/.cache/moofa/tflm/, several minutes each on two
cores); then each model is one QEMU run of well under a second."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from corpus import CORPUS

from toolchain.errors import InputError
from toolchain.memory.coverage import tflm_refusals
from toolchain.memory.estimate import estimate_arena
from toolchain.runtime import cortexm
from toolchain.tflite.reader import parse_model, read_model

REPO = Path(__file__).resolve().parents[1]
BUILDS = [("cortex-m7", "reference"), ("cortex-m7", "cmsis-nn")]


def _source_or_skip():
    try:
        return cortexm.tflm_source()
    except InputError as e:  # a machine without the pinned TFLM tree: said, not hidden
        pytest.skip(str(e))


@pytest.fixture(scope="module", params=BUILDS, ids=lambda b: f"{b[0]}-{b[1]}")
def board_build(request):
    _source_or_skip()
    core, lib = request.param
    return cortexm.build(cortexm.EMULATED[core], lib, progress=lambda m: print(m, file=sys.stderr))


def test_the_runner_registers_every_op_the_resolver_offers():
    header = (_source_or_skip() / "tensorflow/lite/micro/micro_mutable_op_resolver.h").read_text()
    calls = cortexm.op_registrations(header)
    assert {"AddConv2D", "AddUnidirectionalSequenceLSTM", "AddSoftmax", "AddWindow"} <= set(calls)
    assert "AddBuiltin" not in calls and "AddCustom" not in calls and len(calls) == len(set(calls)) > 100


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_board_build_arena_equals_the_prediction(board_build, corpus, name):
    graph = read_model(corpus[name])
    if tflm_refusals(graph, board_build.kernel_library):  # predicted refused: the build must refuse it too
        with pytest.raises(InputError, match="AllocateTensors failed"):
            cortexm.run_on_qemu(board_build, corpus[name])
        return
    predicted = estimate_arena(graph, 4, board_build.kernel_library)
    measured = cortexm.run_on_qemu(board_build, corpus[name])
    assert (measured.arena_head_bytes, measured.arena_tail_bytes) == (predicted.arena_head_bytes, predicted.arena_tail_bytes), \
        (board_build.name, measured.tail_by_kind)
    assert measured.arena_used_bytes > 0 and measured.outputs


@pytest.mark.slow
def test_board_build_arena_equals_the_prediction_on_the_calibration_models(board_build):
    import importlib.util

    spec = importlib.util.spec_from_file_location("calibrate_tail", REPO / "bench" / "calibrate_tail.py")
    calibrate_tail = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("calibrate_tail", calibrate_tail)
    spec.loader.exec_module(calibrate_tail)
    cache, wrong = calibrate_tail.cache_dir(), []
    skipped = calibrate_tail.HOST_ONLY | calibrate_tail.FAULTS_ON.get(board_build.kernel_library, set())  # see their comments
    for name in sorted(set(calibrate_tail.MODELS) - skipped):
        path = calibrate_tail.build(name, cache)
        e = estimate_arena(parse_model(path.read_bytes(), str(path), control_flow=True), 4, board_build.kernel_library)
        m = cortexm.run_on_qemu(board_build, path)
        if not m.agrees_with(e):
            wrong.append((name, (m.arena_head_bytes, m.arena_tail_bytes), (e.arena_head_bytes, e.arena_tail_bytes)))
    assert not wrong, (board_build.name, wrong)


@pytest.mark.slow
def test_outputs_come_back_and_inputs_go_in(board_build, corpus):
    path = corpus["fc_only"]
    zeros = cortexm.run_on_qemu(board_build, path)
    graph = read_model(path)
    x = graph.tensors[graph.inputs[0]]
    ones = cortexm.run_on_qemu(board_build, path, inputs=bytes([1]) * x.nbytes)
    assert len(zeros.outputs) == 1 and len(zeros.outputs[0]) == graph.tensors[graph.outputs[0]].nbytes
    assert zeros.outputs != ones.outputs


@pytest.mark.slow
def test_verify_measure_on_a_board_says_which_build_measured(corpus):
    _source_or_skip()
    cortexm.build(cortexm.EMULATED["cortex-m7"], "cmsis-nn")
    r = subprocess.run([sys.executable, "-m", "moofa", "verify", str(corpus["ds_cnn_kws"]), "--target",
                        "host,nucleo-f746zg,esp32-s3", "--measure", "--json"], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr
    host, f746, esp = json.loads(r.stdout)["targets"]
    assert "host" in host["measured"]["measured_on"] and host["measured"]["agrees"]
    assert "cortex-m7" in f746["measured"]["measured_on"] and "cmsis-nn" in f746["measured"]["measured_on"]
    assert f746["measured"]["agrees"] and f746["exact"]
    assert esp["measured"] is None and "esp-nn" in esp["not_measured_because"]


@pytest.mark.slow
def test_the_generated_firmware_boots_with_the_exact_arena_and_not_with_less(corpus, tmp_path):
    """moofa-deploy's firmware on the f746's build: AllocateTensors succeeds with the generated
    kTensorArenaSize, uses exactly the predicted bytes, and fails with 16 bytes less."""
    import re
    import shutil

    import numpy as np

    from toolchain.boards.targets import resolve_target
    from toolchain.firmware.boot import boot_check

    _source_or_skip()
    out = tmp_path / "kws"
    r = subprocess.run([sys.executable, "-c", "import sys; from moofa.cli import deploy_main; sys.exit(deploy_main())",
                        "--model", str(corpus["ds_cnn_kws"]), "--target", "nucleo-f746zg", "--out", str(out), "--json", "--boot", "always"],
                       capture_output=True, text=True, cwd=REPO, timeout=900)
    assert r.returncode == 0, r.stderr
    boot = json.loads(r.stdout)["boot"]
    assert boot["ran"] and boot["allocate_ok"] and boot["classes_match"] and boot["images"] == 32
    assert boot["arena_used_bytes"] == boot["predicted_arena_bytes"] == json.loads(r.stdout)["sram"]["arena_bytes"]
    assert f"`arena_used_bytes()` {boot['arena_used_bytes']:,} B" in (out / "report.md").read_text()
    # The folder builds for the board by itself (TFLM's path is the one variable).
    made = subprocess.run(["make", f"TFLM_DIR={cortexm.tflm_source()}"], cwd=out, capture_output=True, text=True, timeout=600)
    assert made.returncode == 0 and (out / "firmware.a").stat().st_size > 0, made.stderr[-2000:]
    for built in ("firmware.a", "main.o", "model_data.o"):
        (out / built).unlink()

    less = tmp_path / "less"
    shutil.copytree(out, less)
    config = (less / "model_config.h").read_text()
    size = int(re.search(r"kTensorArenaSize = (\d+);", config).group(1))
    (less / "model_config.h").write_text(config.replace(f"kTensorArenaSize = {size};", f"kTensorArenaSize = {boot['arena_used_bytes'] - 16};"))
    graph = read_model(less / "model.tflite")
    x = np.zeros((1, *graph.tensors[graph.inputs[0]].shape), np.int8)
    small = boot_check({"main.cc": less / "main.cc", "model_data.cc": less / "model_data.cc"}, resolve_target("f746"), x.tobytes(),
                       [0], boot["predicted_arena_bytes"], (less / "model.tflite").stat().st_size)
    assert small.ran and not small.allocate_ok and not small.ok


@pytest.mark.slow
def test_a_model_the_board_build_refuses_is_confirmed_not_measured(corpus):
    _source_or_skip()
    cortexm.build(cortexm.EMULATED["cortex-m7"], "cmsis-nn")
    r = subprocess.run([sys.executable, "-m", "moofa", "verify", str(corpus["int16_cnn"]), "--target", "nucleo-f746zg",
                        "--measure", "--json"], capture_output=True, text=True, cwd=REPO, timeout=600)
    f746 = json.loads(r.stdout)["targets"][0]
    assert r.returncode == 1 and not f746["fits"] and f746["measured"] is None
    assert "refuses it on this board's build, as predicted" in f746["not_measured_because"]


@pytest.mark.slow
def test_a_bias_free_16x8_transpose_conv_runs_on_reference_and_cmsis_nn_refuses_it(tmp_path):
    """CMSIS-NN's TRANSPOSE_CONV dereferences the bias of an int16 input without checking for one:
    AllocateTensors fails, as tflm_refusals predicts for that build only; the reference build runs
    it and its arena equals the prediction."""
    import importlib.util

    _source_or_skip()
    spec = importlib.util.spec_from_file_location("calibrate_tail", REPO / "bench" / "calibrate_tail.py")
    calibrate_tail = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("calibrate_tail", calibrate_tail)
    spec.loader.exec_module(calibrate_tail)
    path = tmp_path / "tconv2_16.tflite"
    path.write_bytes(calibrate_tail.tconv2_16())
    graph = read_model(path)
    assert not tflm_refusals(graph) and not tflm_refusals(graph, "reference")
    assert "bias" in tflm_refusals(graph, "cmsis-nn")[0]
    reference = cortexm.build(cortexm.EMULATED["cortex-m7"], "reference")
    assert cortexm.run_on_qemu(reference, path).agrees_with(estimate_arena(graph, 4, "reference"))
    with pytest.raises(InputError, match="AllocateTensors failed"):
        cortexm.run_on_qemu(cortexm.build(cortexm.EMULATED["cortex-m7"], "cmsis-nn"), path)
