"""`moofa verify` against the referee: the real TFLM interpreter's recorded arena.

For every model of the Keras-built corpus, the predicted head must equal TFLM's measured head
and the predicted host tail its measured tail, to the byte. The command's contract (JSON keys,
exit codes, one-line errors) is checked through a real subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from corpus import CORPUS

from toolchain.boards.targets import resolve_target
from toolchain.memory.estimate import estimate_arena
from toolchain.memory.planner import check_no_overlap
from toolchain.runtime.tflm import measure
from toolchain.tflite.reader import read_model

REPO = Path(__file__).resolve().parents[1]


def moofa(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "moofa", *args], capture_output=True, text=True, cwd=cwd or REPO, timeout=300
    )


@pytest.fixture(scope="module")
def measurements(corpus):
    return {name: measure(path) for name, path in corpus.items()}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_predicted_head_and_host_tail_equal_tflm(name, corpus, measurements):
    graph = read_model(corpus[name])
    estimate = estimate_arena(graph, pointer_bytes=8, kernel_library="reference")
    measured = measurements[name]
    assert estimate.arena_head_bytes == measured.arena_head_bytes
    assert estimate.arena_tail_bytes == measured.arena_tail_bytes
    assert estimate.tail_exact
    check_no_overlap(estimate.plan.buffers, estimate.plan.offsets)
    assert estimate.lower_bound_bytes <= estimate.arena_head_bytes


def test_corpus_covers_what_the_issue_asks(corpus):
    kinds = {name: set(read_model(path).op_kinds) for name, path in corpus.items()}
    assert len(corpus) >= 8
    assert {"HARD_SWISH", "MEAN", "MUL", "ADD"} <= kinds["mbconv_se_hswish"]  # SE + h-swish + residual
    assert "CONCATENATION" in kinds["concat_branches"]
    assert any(t.dtype == "float32" for t in read_model(corpus["float_cnn"]).tensors if not t.is_constant)


def test_mcu_prediction_differs_only_where_it_should(corpus):
    """32-bit builds shrink the tail; CMSIS-NN scratch can only grow the head."""
    graph = read_model(corpus["ds_cnn_kws"])
    host = estimate_arena(graph, 8, "reference")
    mcu = estimate_arena(graph, 4, "cmsis-nn")
    assert mcu.arena_tail_bytes < host.arena_tail_bytes
    assert mcu.arena_head_bytes >= host.arena_head_bytes
    # DS-CNN's 10x4 first convolution needs a CMSIS-NN im2col buffer (2 columns x 10 x 4 x 1
    # int16 = 160 B) and its average pool one int32 per channel (64 x 4 = 256 B); the depthwise
    # layers are 3x3 (no buffer) and reference kernels ask for none.
    assert mcu.scratch_bytes == 160 + 256 and host.scratch_bytes == 0


def test_verify_json_contract_and_measure(corpus):
    r = moofa("verify", str(corpus["resnet8"]), "--target", "host,esp32-s3", "--json", "--measure")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model"] == str(corpus["resnet8"])
    assert [t["target"] for t in out["targets"]] == ["host", "esp32-s3-devkitc-1"]
    for t in out["targets"]:
        assert {"arena_bytes", "arena_head_bytes", "arena_tail_bytes", "scratch_bytes", "reserved_bytes", "budget_bytes"} <= t["sram"].keys()
        assert {"model_bytes", "reserved_bytes", "budget_bytes"} <= t["flash"].keys()
        assert t["sram"]["arena_bytes"] == t["sram"]["arena_head_bytes"] + t["sram"]["arena_tail_bytes"]
        assert t["flash"]["model_bytes"] == corpus["resnet8"].stat().st_size
        assert t["fits"] is True
    host = out["targets"][0]
    assert host["measured"]["arena_head_bytes"] == host["sram"]["arena_head_bytes"]
    assert host["measured"]["arena_tail_bytes"] == host["sram"]["arena_tail_bytes"]


def test_fit_arithmetic_matches_the_board_file(corpus):
    board = resolve_target("nucleo-f746zg")
    r = moofa("verify", str(corpus["large_early_tensor"]), "--target", "f746", "--json")
    t = json.loads(r.stdout)["targets"][0]
    sram = t["sram"]
    assert sram["budget_bytes"] == board.arena_region_bytes
    assert sram["reserved_bytes"] == board.reserved_ram_bytes
    fits = sram["arena_bytes"] + sram["reserved_bytes"] <= sram["budget_bytes"]
    assert t["fits"] is fits
    # 480 KiB of activations cannot fit a 320 KiB board: exit code 1.
    assert not fits and r.returncode == 1


def test_does_not_fit_gives_exit_1_and_junit_failure(corpus, tmp_path):
    junit = tmp_path / "fit.xml"
    r = moofa("verify", str(corpus["large_early_tensor"]), "--target", "uno-r4,h743", "--junit", str(junit))
    assert r.returncode == 1
    assert "DOES NOT FIT" in r.stdout
    suite = ET.parse(junit).getroot()
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["fits arduino-uno-r4"]


def test_all_targets_lists_every_board(corpus):
    r = moofa("verify", str(corpus["fc_only"]), "--all-targets", "--json")
    assert r.returncode == 0, r.stderr
    names = [t["target"] for t in json.loads(r.stdout)["targets"]]
    assert len(names) >= 11 and "host" in names


def _assert_one_line_exit_2(r: subprocess.CompletedProcess, must_mention: str = "") -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert must_mention.lower() in lines[0].lower()
    assert r.stdout == ""


@pytest.mark.parametrize("kind", ["empty", "truncated", "random", "not_a_model"])
def test_bad_model_files_exit_2_with_one_line(kind, bad_inputs):
    r = moofa("verify", str(bad_inputs[kind]), "--target", "host")
    _assert_one_line_exit_2(r, str(bad_inputs[kind]))


def _with_first_op_replaced(model_bytes: bytes, builtin: int) -> bytes:
    """The same model with its first operator code swapped for another builtin."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model_bytes, 0))
    model.operatorCodes[0].builtinCode = builtin
    model.operatorCodes[0].deprecatedBuiltinCode = min(builtin, 127)
    builder = flatbuffers.Builder(len(model_bytes) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_model_tflm_cannot_run_gives_exit_2_under_measure(bad_inputs, corpus, tmp_path):
    from ai_edge_litert import schema_py_generated as schema

    # The corpus' complex-valued FFT model reads (COMPLEX64 is sized as TFLM sizes it; RFFT2D is
    # an op without figures, so the figures are approximate), but TFLM has no kernel for it ...
    r = moofa("verify", str(bad_inputs["tflm_cannot_run"]), "--target", "host", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["targets"][0]["unmodelled_ops"] == ["COMPLEX_ABS", "RFFT2D"]
    _assert_one_line_exit_2(moofa("verify", str(bad_inputs["tflm_cannot_run"]), "--target", "host", "--measure"))
    # ... and this one it reads (an op it has no figures for), but TFLM has no kernel for it.
    odd = tmp_path / "odd_op.tflite"
    odd.write_bytes(_with_first_op_replaced(corpus["fc_only"].read_bytes(), schema.BuiltinOperator.RFFT2D))
    assert moofa("verify", str(odd), "--target", "host").returncode == 0
    r = moofa("verify", str(odd), "--target", "host", "--measure")
    _assert_one_line_exit_2(r, "TFLM interpreter could not run")


def test_missing_file_unknown_board_and_bad_toml_exit_2(corpus, tmp_path):
    _assert_one_line_exit_2(moofa("verify", str(tmp_path / "nope.tflite"), "--target", "host"), "no such file")
    _assert_one_line_exit_2(moofa("verify", str(corpus["fc_only"]), "--target", "no-such-board"), "unknown board")
    bad = tmp_path / "myboard.toml"
    bad.write_text('schema = 1\nname = "myboard"\nflash_bytes = "1M"\n')
    _assert_one_line_exit_2(moofa("verify", str(corpus["fc_only"]), "--target", str(bad)), "myboard.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("name = [unclosed\n")
    _assert_one_line_exit_2(moofa("verify", str(corpus["fc_only"]), "--target", str(broken)), "broken.toml")
    _assert_one_line_exit_2(moofa("verify", str(tmp_path), "--target", "host"), "directory")


def test_usage_errors_exit_2():
    r = moofa("verify")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = moofa("frobnicate")
    assert r.returncode == 2


def test_help_teaches():
    r = moofa("verify", "--help")
    assert r.returncode == 0
    for word in ("--measure", "--junit", "--all-targets", "reserved"):
        assert word in r.stdout


def test_targets_command_lists_boards_as_json():
    r = moofa("targets", "--json")
    assert r.returncode == 0
    boards = json.loads(r.stdout)
    assert {"nucleo-f746zg", "raspberry-pi-pico", "host"} <= {b["name"] for b in boards}
    r = moofa("targets")
    assert "nucleo-f746zg" in r.stdout
