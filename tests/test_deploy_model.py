"""`moofa-deploy --model`: firmware files for a model the user brings, checked end to end."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from toolchain.boards.targets import resolve_target
from toolchain.firmware.codegen import RESOLVER_METHODS, compile_model_data
from toolchain.tflite.reader import read_model

REPO = Path(__file__).resolve().parents[1]
EXPECTED = {"model.tflite", "model_data.h", "model_data.cc", "model_ops.h", "model_config.h", "main.cc", "report.md", "memory_profile.png"}


def deploy(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from moofa.cli import deploy_main; sys.exit(deploy_main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO, timeout=600)


@pytest.fixture(scope="module")
def kws_deploy(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("kws")
    r = deploy("--model", str(corpus["ds_cnn_kws"]), "--target", "nucleo-f746zg", "--out", str(out), "--json", "--labels", "silence,unknown,yes,no,up,down,left,right,on,off,stop,go")
    return r, out


def test_deploy_writes_every_file_and_all_checks_pass(kws_deploy, corpus):
    r, out = kws_deploy
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert EXPECTED <= {p.name for p in out.iterdir()}
    assert summary["ok"] and summary["fits"]
    assert summary["measured"]["agrees"] is True
    assert summary["tflm_vs_litert"]["identical"] is True
    assert {"arena_bytes", "arena_head_bytes", "arena_tail_bytes", "scratch_bytes", "reserved_bytes", "budget_bytes"} <= summary["sram"].keys()
    assert (out / "model.tflite").read_bytes() == corpus["ds_cnn_kws"].read_bytes()


def test_op_resolver_registers_exactly_the_ops_used(kws_deploy, corpus):
    _, out = kws_deploy
    text = (out / "model_ops.h").read_text()
    kinds = read_model(corpus["ds_cnn_kws"]).op_kinds
    assert f"MicroMutableOpResolver<{len(kinds)}>" in text
    assert re.findall(r"resolver\.(\w+)\(\)", text) == [RESOLVER_METHODS[k] for k in kinds]


def test_model_config_carries_arena_and_quantization(kws_deploy, corpus):
    _, out = kws_deploy
    text = (out / "model_config.h").read_text()
    graph = read_model(corpus["ds_cnn_kws"])
    x = graph.tensors[graph.inputs[0]]
    assert "kInputShape[kInputDims] = {1, 49, 10, 1}" in text
    assert f"kInputZeroPoint = {x.zero_point};" in text
    arena = int(re.search(r"kTensorArenaSize = (\d+);", text)[1])
    summary_arena = json.loads(kws_deploy[0].stdout)["sram"]["arena_bytes"]
    assert arena % 16 == 0 and summary_arena <= arena < summary_arena + 16
    assert '"yes",' in text and "kNumLabels = 12" in text


def test_model_data_is_tflm_convention_and_round_trips(kws_deploy, corpus):
    _, out = kws_deploy
    text = (out / "model_data.cc").read_text()
    assert "alignas(16) const unsigned char g_model[]" in text
    data = bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{2})", text))
    assert data == corpus["ds_cnn_kws"].read_bytes()
    assert f"g_model_len = {len(data)};" in text


@pytest.mark.skipif(shutil.which("arm-none-eabi-g++") is None, reason="gcc-arm-none-eabi not installed (scripts/setup.sh installs it)")
@pytest.mark.parametrize("board", ["nucleo-f746zg", "raspberry-pi-pico", "arduino-nano-33-ble-sense"])
def test_model_data_compiles_for_the_board_core(kws_deploy, board, tmp_path):
    _, out = kws_deploy
    target = resolve_target(board)
    check = compile_model_data(out / "model_data.cc", target.core, target.flash_bytes)
    assert check.compiled, check.reason
    model_bytes = (out / "model.tflite").stat().st_size
    assert model_bytes <= check.section_bytes < model_bytes + 64  # the array, plus g_model_len
    assert check.fits_flash


def test_flash_check_fails_a_model_too_big_for_the_board(kws_deploy):
    _, out = kws_deploy
    check = compile_model_data(out / "model_data.cc", "cortex-m0plus", 1024)
    assert check.compiled and not check.fits_flash


def test_model_that_does_not_fit_exits_1(corpus, tmp_path):
    r = deploy("--model", str(corpus["large_early_tensor"]), "--target", "uno-r4", "--out", str(tmp_path / "o"), "--samples", "2")
    assert r.returncode == 1, r.stderr
    assert "DOES NOT FIT" in r.stdout
    assert "DOES NOT FIT" in (tmp_path / "o" / "report.md").read_text()


def test_deploy_bad_input_exits_2_one_line(tmp_path, bad_inputs):
    for args in (
        ["--model", str(tmp_path / "missing.tflite"), "--target", "f746", "--out", str(tmp_path / "a")],
        ["--model", str(bad_inputs["random"]), "--target", "f746", "--out", str(tmp_path / "b")],
        ["--supernet", str(tmp_path / "no-such.pt"), "--target", "f746", "--out", str(tmp_path / "c")],
        ["--model", "x.onnx", "--target", "f746", "--out", str(tmp_path / "d")],
    ):
        r = deploy(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_deploy_embeds_a_plan_that_beats_greedy_and_tflm_confirms_it(tmp_path):
    import plan_corpus

    model = plan_corpus.build_all()["dw_sep_160_plain"]
    r = deploy("--model", str(model), "--target", "nucleo-h743zi2", "--out", str(tmp_path), "--json", "--samples", "4")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    plan = s["offline_plan"]
    assert plan["embedded"] and plan["planned_head_bytes"] < plan["greedy_head_bytes"]
    # TFLM (host) measures the planned head, and our host prediction with the plan agrees.
    assert s["measured"]["agrees"] and s["tflm_vs_litert"]["identical"]
    assert read_model(tmp_path / "model.tflite").offline_offsets is not None


def test_plan_command(tmp_path):
    import plan_corpus

    model = plan_corpus.build_all()["uneven_chain"]
    out = tmp_path / "planned.tflite"
    code = "import sys; from moofa.cli import main; sys.exit(main())"
    r = subprocess.run([sys.executable, "-c", code, "plan", str(model), "-o", str(out), "--json", "--target", "f746"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["planned_head_bytes"] == result["lower_bound_bytes"] < result["greedy_head_bytes"]
    assert out.is_file()
    r = subprocess.run([sys.executable, "-c", code, "plan", str(tmp_path / "missing.tflite")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
