"""moofa-deploy from a supernet: search -> extract -> export -> verify -> firmware, end to end
on a tiny supernet trained here (the bundled one is exercised by `make deploy`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moofa.search.predictor import build_predictor
from moofa.train.loop import load_preset, train
from toolchain.boards.targets import resolve_target
from toolchain.tflite.reader import read_model

EXPECTED = {"model.tflite", "model.onnx", "subnet.json", "model_data.h", "model_data.cc", "model_ops.h", "model_config.h", "report.md", "memory_profile.png"}


@pytest.fixture(scope="module")
def tiny_supernet(tiny, tmp_path_factory):
    root, preset = tiny
    run = tmp_path_factory.mktemp("run")
    path = train(load_preset(str(preset)), "moofa", run, data_root=str(root), progress=False)
    report = build_predictor(str(path), n=12, val_images=32, data=str(root), progress=False)
    return path, root, report


def test_predictor_is_saved_next_to_the_supernet_with_its_identity(tiny_supernet):
    path, _, report = tiny_supernet
    assert Path(report["predictor"]).parent == path.parent
    data = json.loads(Path(report["dataset"]).read_text())
    assert data["split"] == "val" and len(data["subnets"]) == 12


def test_predictor_measurements_resume_after_a_kill(tiny_supernet):
    """A killed `moofa predictor build` keeps its finished measurements: a rerun reuses them
    (identified by supernet digest, seed and images) and measures only the rest."""
    from moofa.search.predictor import measure_subnets, supernet_digest

    path, root, report = tiny_supernet
    assert not list(path.parent.glob("*.predictor-partial.*.json"))  # a finished build leaves none
    partial = path.with_name(f"{path.stem}.predictor-partial.0.json")
    key = {"supernet_sha256_16": supernet_digest(path), "seed": 5, "val_images": 32}
    partial.write_text(json.dumps({"key": key, "results": {"0": 0.123, "2": 0.456}}))
    _, _, configs, accs, _ = measure_subnets(path, 4, seed=5, val_images=32, data=str(root), progress=False)
    assert accs[0] == 0.123 and accs[2] == 0.456  # reused, not measured again
    assert all(0.0 <= a <= 1.0 for a in accs) and len(configs) == 4
    saved = json.loads(partial.read_text())
    assert saved["key"] == key and set(saved["results"]) == {"0", "1", "2", "3"}
    # Another seed is another set of subnets: the leftovers are not reused.
    _, _, _, other, _ = measure_subnets(path, 2, seed=6, val_images=32, data=str(root), progress=False)
    assert 0.123 not in other
    for leftover in path.parent.glob("*.predictor-partial.*.json"):
        leftover.unlink()


def test_predictor_threads_set_the_torch_threads_and_change_no_measurement(tiny_supernet):
    """`moofa predictor build --threads N` is speed only: the same subnets measure the same at
    one thread and at two (to float noise: a batch's sums may be reduced in another order)."""
    import torch

    from moofa.search.predictor import measure_subnets

    path, root, _ = tiny_supernet
    before = torch.get_num_threads()
    try:
        runs = []
        for threads in (1, 2):
            for leftover in path.parent.glob("*.predictor-partial.*.json"):
                leftover.unlink()
            _, _, _, accs, _ = measure_subnets(path, 3, seed=9, val_images=32, data=str(root), progress=False, threads=threads)
            assert torch.get_num_threads() == threads
            runs.append(accs)
        assert runs[0] == pytest.approx(runs[1], abs=1 / 32 + 1e-9)  # at most one image of 32 flips on a tie
    finally:
        torch.set_num_threads(before)
        for leftover in path.parent.glob("*.predictor-partial.*.json"):
            leftover.unlink()


def test_predictor_threads_flag_refuses_zero_before_measuring(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "moofa", "predictor", "build", "--threads", "0", "--supernet", str(tmp_path / "none.pt")],
                       capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 2 and "--threads" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_a_larger_build_grows_the_dataset(tiny_supernet):
    """`moofa predictor build --subnets 14` after a 12-subnet build measures only the 2 new
    subnets: the dataset's measurements (same supernet, seed, images) are reused by index."""
    from moofa.search.predictor import dataset_path_for, measure_subnets

    path, root, _ = tiny_supernet
    dataset = dataset_path_for(path)
    original = dataset.read_text()
    data = json.loads(original)
    assert (data["seed"], data["val_images"]) == (0, 32)
    data["subnets"][3]["val_top1"] = 0.777  # a marker: reused, never measured as such
    dataset.write_text(json.dumps(data))
    try:
        _, _, configs, accs, _ = measure_subnets(path, 14, seed=0, val_images=32, data=str(root), progress=False)
        assert accs[:12] == [e["val_top1"] for e in data["subnets"]] and accs[3] == 0.777
        assert [c.to_dict() for c in configs[:12]] == [e["config"] for e in data["subnets"]]
        _, _, _, other, _ = measure_subnets(path, 4, seed=0, val_images=16, data=str(root), progress=False)
        assert other[3] != 0.777  # other images: measured again
    finally:
        dataset.write_text(original)
        for leftover in path.parent.glob("*.predictor-partial.*.json"):
            leftover.unlink()


def test_deploy_supernet_end_to_end_and_reproducible(tiny_supernet, tmp_path):
    from moofa.deploy import SupernetDeployOptions, deploy_supernet

    path, root, _ = tiny_supernet
    target = resolve_target("nucleo-f746zg")
    a = deploy_supernet(str(path), target, tmp_path / "a", SupernetDeployOptions(data=str(root), generations=15))
    assert EXPECTED <= {p.name for p in (tmp_path / "a").iterdir()}
    # TFLM's and LiteRT's int8 kernels may round one step apart (FULLY_CONNECTED, HARD_SWISH): the
    # tiny supernet trains to other weights on another CPU, so the outputs agree within the
    # deploy's tolerance, and are bit-identical only on some machines.
    xcheck = a["tflm_vs_litert"]
    assert a["fits"] and a["measured"]["agrees"] and xcheck["agree"] and xcheck["tolerance"] == 2
    acc = a["accuracy"]
    assert {"float_top1", "int8_top1"} <= acc.keys() and acc["test_images"] == 48
    # The exported graph is the one the analytic model priced.
    graph = read_model(tmp_path / "a" / "model.tflite")
    assert "PAD" not in graph.op_kinds and "TRANSPOSE" not in graph.op_kinds
    assert json.loads((tmp_path / "a" / "subnet.json").read_text()) == a["subnet"]
    # The float subnet as ONNX: a valid model, the checked export, the same bytes for the same seed.
    import onnx

    onnx.checker.check_model(onnx.load(str(tmp_path / "a" / "model.onnx")), full_check=True)
    assert a["files"]["model.onnx"] == str(tmp_path / "a" / "model.onnx") and a["onnx"]["onnxruntime_vs_torch_max_abs_diff"] < 1e-3
    report = (tmp_path / "a" / "report.md").read_text()
    assert "`model.onnx`" in report
    assert f"| int8 top-1 on the test set (LiteRT built-in int8 kernels) | {acc['int8_top1'] * 100:.2f}% |" in report
    deploy_supernet(str(path), target, tmp_path / "b", SupernetDeployOptions(data=str(root), generations=15))
    assert (tmp_path / "a" / "model.tflite").read_bytes() == (tmp_path / "b" / "model.tflite").read_bytes()
    assert (tmp_path / "a" / "model.onnx").read_bytes() == (tmp_path / "b" / "model.onnx").read_bytes()


def test_eval_int8_scores_the_export_and_names_its_worst_ops(tiny_supernet, capsys):
    """`moofa eval --int8`: the int8 export's top-1 on the same test images, and one SQNR row per
    op of that export; the text report lists the five ops with the largest drop, largest first."""
    from moofa.cli import main

    path, root, _ = tiny_supernet
    args = ["eval", "--supernet", str(path), "--data", str(root), "--subnet", "min", "--int8"]
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    q = result["int8"]
    assert 0.0 <= q["top1"] <= 1.0 and q["calibration_images"] == 160 - 32 and result["images"] == 48
    kinds = [e["kind"] for e in q["ops"]]
    assert kinds[0] == "CONV_2D" and kinds[-1] == "FULLY_CONNECTED" and q["ops"][-1]["shape"] == [1, 10]
    assert q["output_sqnr_db"] == q["ops"][-1]["sqnr_db"] and q["images"] == 32
    assert main(args) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[2].startswith(f"int8 test top-1 {q['top1'] * 100:.2f}%")
    ranked = sorted(q["ops"], key=lambda e: (-e["drop_db"], e["index"]))[:5]
    assert [int(line.split()[0]) for line in text[-5:]] == [e["index"] for e in ranked]
    for line, e in zip(text[-5:], ranked):  # each row ends with its narrowest channel's int8 steps
        steps = e["narrowest_steps"]
        assert line.endswith("-" if steps is None else f"{steps:.0f} of 255 steps"), line


def test_sweep_writes_a_table_and_plot_and_reports_unreachable_budgets(tiny_supernet, tmp_path):
    from types import SimpleNamespace

    from moofa.search.run import run_sweep

    path, _, _ = tiny_supernet
    out = str(tmp_path / "sweep")
    args = SimpleNamespace(supernet=str(path), sram_budgets="1,512", targets="pico", flash_target="nucleo-f746zg",
                           generations=5, seed=0, out=out)
    assert run_sweep(args) == 0
    rows = json.loads(Path(out + ".json").read_text())
    assert [r["fits"] for r in rows] == [False, True, True]
    assert rows[1]["arena_bytes"] <= 512 * 1024 and rows[0]["smallest_arena_bytes"] > 1024
    assert Path(out + ".png").stat().st_size > 0 and "does not fit" in Path(out + ".md").read_text()


def test_int8_process_reports_failures_as_one_line(tmp_path):
    """The int8 half of the deploy runs in a second process: an export error comes back as the
    same one-line InputError as in-process, and a process that dies is reported, not waited on."""
    import numpy as np
    import torch

    from moofa.deploy import Int8Process
    from toolchain.errors import InputError

    worker = Int8Process()
    try:
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Tanh()).eval()
        x = np.zeros((2, 1, 8, 8), np.float32)
        worker.submit(net, x, tmp_path / "x.tflite", x, np.zeros(2, np.int64))
        with pytest.raises(InputError, match="tanh"):
            worker.receive("exported")
    finally:
        worker.close()
    assert not (tmp_path / "x.tflite").exists() and not worker.proc.is_alive()

    dead = Int8Process()
    try:
        dead.proc.kill()
        with pytest.raises(InputError, match="ended without a result"):
            dead.receive("exported")
    finally:
        dead.close()
