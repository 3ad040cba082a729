"""Hardened edges: outputs that never clobber, deploys that are all-or-nothing, exit codes that
keep their promise (0 / 1 / 2, 3 for a bug, 130 / 143 interrupted), limits before work."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, entry: str = "main", timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    code = f"import sys; from moofa.cli import {entry}; sys.exit({entry}())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO, timeout=timeout, **kwargs)


def one_line_exit(r: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="module")
def model(corpus) -> Path:
    return corpus["fc_only"]


# --- the output layer -------------------------------------------------------------------------
def test_a_fifo_destination_is_refused_and_left_a_fifo(model, tmp_path):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    r = cli("plan", str(model), "-o", str(fifo), timeout=60)
    one_line_exit(r, 2, "not a regular file")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    r = cli("verify", str(model), "--target", "f746", "--junit", str(fifo), timeout=60)
    one_line_exit(r, 2, "not a regular file")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_symlink_destination_is_written_through_not_replaced(model, tmp_path):
    real = tmp_path / "real.xml"
    real.write_text("old")
    os.chmod(real, 0o640)
    link = tmp_path / "link.xml"
    link.symlink_to(real)
    r = cli("verify", str(model), "--target", "f746", "--junit", str(link))
    assert r.returncode == 0, r.stderr
    assert link.is_symlink() and "<testsuite" in real.read_text()
    assert stat.S_IMODE(real.stat().st_mode) == 0o640  # an overwritten file keeps its mode


def test_an_output_that_is_an_input_is_refused(model, tmp_path):
    copy = tmp_path / "m.tflite"
    shutil.copyfile(model, copy)
    before = copy.read_bytes()
    one_line_exit(cli("verify", str(copy), "--target", "f746", "--junit", str(copy)), 2, "is also an input")
    one_line_exit(cli("plan", str(copy), "-o", str(tmp_path / "." / "m.tflite")), 2, "is also an input")
    assert copy.read_bytes() == before
    from moofa.train.evaluate import resolve_supernet

    ckpt = tmp_path / "s.pt"
    shutil.copyfile(resolve_supernet("moofa"), ckpt)
    one_line_exit(cli("search", "--supernet", str(ckpt), "--out", str(ckpt)), 2, "is also an input")
    assert ckpt.read_bytes() == resolve_supernet("moofa").read_bytes()


def test_written_files_get_the_umask_mode(tmp_path):
    from toolchain.files import write_atomically

    for name, mask, mode in (("a.txt", 0o027, 0o640), ("b.txt", 0o022, 0o644)):
        old = os.umask(mask)
        try:
            write_atomically(tmp_path / name, "x")
        finally:
            os.umask(old)
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode
    assert not list(tmp_path.glob(".*.tmp"))


# --- inputs: regular files, bounded, checked before work ---------------------------------------
def test_a_fifo_or_device_input_is_refused_without_reading(tmp_path):
    fifo = tmp_path / "in.tflite"
    os.mkfifo(fifo)
    t = time.monotonic()
    one_line_exit(cli("verify", str(fifo), "--target", "f746", timeout=60), 2, "not a regular file")
    one_line_exit(cli("verify", "/dev/zero", "--target", "f746", timeout=60), 2, "not a regular file")
    assert time.monotonic() - t < 60


def test_tampered_checkpoints_are_one_line(tmp_path):
    import torch

    from moofa.train.evaluate import resolve_supernet

    src = resolve_supernet("moofa")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(src.read_bytes()[:100_000])
    state = torch.load(src, weights_only=True)
    meta = json.loads(state["meta_json"])
    meta["layout"]["resolution"] = 100_000
    huge = tmp_path / "huge.pt"
    torch.save({**state, "meta_json": json.dumps(meta)}, huge)
    wrong = tmp_path / "wrong.pt"
    torch.save({**state, "model": {k: v[:1] if v.dim() else v for k, v in state["model"].items()}}, wrong)
    for path, needle in ((empty, "not a moofa checkpoint"), (truncated, "not a moofa checkpoint"),
                         (huge, "resolution"), (wrong, "do not match")):
        one_line_exit(cli("eval", "--supernet", str(path)), 2, needle)


# --- numeric flags and presets -------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ("search", "--sram-budget", "nan"), ("search", "--sram-budget", "-5"), ("search", "--population", "0"),
    ("search", "--generations", "-1"), ("search", "--max-macs", "0"), ("search", "--parent-ratio", "1.5"),
    ("layout", "moofa", "--resolution", "0"), ("layout", "moofa", "--num-classes", "-10"),
    ("plan", "x.tflite", "--time-limit", "inf"), ("predictor", "build", "--subnets", "0"),
    ("sweep", "--sram-budgets", "16,nan"),
])
def test_nonsense_numbers_are_refused_with_the_range(args):
    r = cli(*args)
    one_line_exit(r, 2)
    assert any(w in r.stderr for w in ("outside", "finite", "must be")), r.stderr


def test_a_preset_with_nan_or_negative_values_is_refused(tmp_path):
    from moofa.train.loop import load_preset
    from toolchain.errors import InputError

    base = (REPO / "moofa" / "presets" / "fmnist-cpu.toml").read_text()
    for old, new, needle in (("lr = ", "lr = nan #", "lr"), ("epochs = ", "epochs = -1 #", "epochs"),
                             ("batch_size = ", "batch_size = 0 #", "batch_size")):
        path = tmp_path / "p.toml"
        path.write_text(base.replace(old, new, 1))
        with pytest.raises(InputError, match=needle):
            load_preset(str(path))


def test_resume_with_nothing_to_resume_is_an_error(tmp_path):
    one_line_exit(cli("train", "--out", str(tmp_path / "run"), "--resume"), 2, "nothing to resume")


# --- exit codes ----------------------------------------------------------------------------------
def test_an_internal_error_is_exit_3_one_line_and_debug_keeps_the_code(capsys):
    import argparse

    from moofa.cli import EXIT_INTERNAL, _Parser, run
    from toolchain.errors import InputError

    def bug(args):
        raise ZeroDivisionError("boom")

    def bad(args):
        raise InputError("x.tflite: no such file")

    parser = _Parser(prog="moofa")
    assert run([], parser, {None: bug}) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "internal error" in err and "--debug" in err
    assert run(["--debug"], parser, {None: bug}) == EXIT_INTERNAL
    assert "Traceback" in capsys.readouterr().err
    assert run(["--debug"], parser, {None: bad}) == 2
    assert isinstance(parser, argparse.ArgumentParser)


def test_debug_is_taken_after_the_subcommand_too(model):
    r = cli("verify", "missing.tflite", "--target", "f746", "--debug")
    assert r.returncode == 2 and "Traceback" in r.stderr and r.stderr.strip().splitlines()[-1].endswith("no such file")


def test_verify_measure_fails_when_tflm_needs_more_than_predicted(model, monkeypatch, capsys):
    from moofa import cli as moofa_cli
    from toolchain.runtime import tflm

    real = tflm.measure

    def inflated(path, *a, **k):
        m = real(path, *a, **k)
        return tflm.Measurement(m.arena_head_bytes * 22, m.arena_tail_bytes, m.arena_total_bytes + 21 * m.arena_head_bytes)

    monkeypatch.setattr(tflm, "measure", inflated)
    assert moofa_cli.main(["verify", str(model), "--target", "host", "--measure", "--json"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["measured_exceeds_prediction"] is True and "cannot be trusted" in err


# --- moofa-deploy: all or nothing, one writer, nothing left behind -------------------------------
def _deploy_cmd(model: Path, out: Path) -> list[str]:
    code = "import sys; from moofa.cli import deploy_main; sys.exit(deploy_main())"
    return [sys.executable, "-c", code, "--model", str(model), "--target", "f746", "--out", str(out), "--samples", "4"]


def _wait_for_staging(parent: Path, name: str, proc, timeout: float = 120) -> None:
    t = time.monotonic()
    while not list(parent.glob(f".{name}.staging-*")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t < timeout
        time.sleep(0.05)


def test_sigterm_of_a_deploy_leaves_no_process_and_no_partial_out(corpus, tmp_path):
    import psutil

    out = tmp_path / "out"
    proc = subprocess.Popen(_deploy_cmd(corpus["ds_cnn_kws"], out), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_staging(tmp_path, "out", proc)
    me = psutil.Process(proc.pid)
    time.sleep(0.5)  # let it start a child (TFLM, LiteRT, the compiler)
    children = me.children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "terminated" in err
    assert not out.exists() and not list(tmp_path.glob(".out.staging-*")) and not list(tmp_path.glob(".out.old-*"))
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, alive


def test_sigterm_that_an_import_turns_into_another_exception_still_exits_143(capsys):
    """SIGTERM landing inside an extension module's import comes out of it as "ImportError:
    initialization failed", not as Terminated: still the SIGTERM exit, not an internal error."""
    import argparse

    from moofa import cli as moofa_cli

    def command(args):
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here and raises Terminated
            time.sleep(5)
        except moofa_cli.Terminated:
            raise ImportError("initialization failed") from None
        raise AssertionError("no SIGTERM")

    parser = argparse.ArgumentParser(prog="moofa-deploy")
    assert moofa_cli.run([], parser, {None: command}) == moofa_cli.EXIT_SIGTERM
    assert capsys.readouterr().err == "moofa-deploy: terminated; nothing half-written was left\n"
    # the next run in the same process starts clean: a real bug is an internal error again
    assert moofa_cli.run([], parser, {None: lambda args: 1 / 0}) == moofa_cli.EXIT_INTERNAL
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_two_deploys_into_one_folder_cannot_interleave(corpus, tmp_path):
    out = tmp_path / "out"
    first = subprocess.Popen(_deploy_cmd(corpus["ds_cnn_kws"], out), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_staging(tmp_path, "out", first)
    second = subprocess.run(_deploy_cmd(corpus["fc_only"], out), cwd=REPO, capture_output=True, text=True, timeout=300)
    one_line_exit(second, 2, "another run is writing")
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert "ds_cnn_kws" in (out / "model_data.cc").read_text()[:2000]


def test_a_deploy_replaces_an_earlier_one_whole_and_refuses_foreign_folders(corpus, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("{}")  # from an earlier supernet deploy
    r = subprocess.run(_deploy_cmd(corpus["fc_only"], out), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert not (out / "summary.json").exists() and (out / "model.tflite").is_file()
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~_umask()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    r = subprocess.run(_deploy_cmd(corpus["fc_only"], mine), cwd=REPO, capture_output=True, text=True, timeout=600)
    one_line_exit(r, 2, "did not write")
    assert (mine / "notes.txt").read_text() == "keep me"


def test_a_failed_deploy_writes_nothing(bad_inputs, tmp_path):
    for name in ("truncated", "random"):
        out = tmp_path / name
        r = subprocess.run(_deploy_cmd(bad_inputs[name], out), cwd=REPO, capture_output=True, text=True, timeout=300)
        one_line_exit(r, 2)
        assert not out.exists() and not list(tmp_path.glob(f".{name}.staging-*"))


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_sigterm_of_training_saves_a_checkpoint_that_resumes(tiny, tmp_path):
    from moofa.train.checkpoint import load_checkpoint

    root, preset = tiny
    slow = tmp_path / "slow.toml"
    slow.write_text(preset.read_text().replace("checkpoint_every_s = 0", "checkpoint_every_s = 86400")
                    .replace("epochs = 0.5", "epochs = 500", 1))
    out = tmp_path / "run"
    code = "import sys; from moofa.cli import main; sys.exit(main())"
    args = [sys.executable, "-c", code, "train", "--preset", str(slow), "--data", str(root), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.csv"
    t = time.monotonic()
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 2):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t < 300
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "saved" in stdout and "--resume" in stdout
    _, meta = load_checkpoint(out / "checkpoint.pt")
    assert meta["global_step"] >= 1 and meta["phase"] == 0
