"""Training: every phase runs, checkpoints resume mid-epoch, DDP ranks stay in lockstep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from moofa.train.checkpoint import load_checkpoint
from moofa.train.loop import load_preset, resolve_choices, train
from toolchain.errors import InputError

REPO = Path(__file__).resolve().parents[1]

def test_all_phases_then_weights_only_checkpoint(tiny, tmp_path):
    root, preset_path = tiny
    final = train(load_preset(str(preset_path)), "moofa", tmp_path, data_root=str(root), progress=False)
    state, meta = load_checkpoint(final)  # torch.load(weights_only=True) inside
    assert meta["phase"] == 4 and [h["phase"] for h in meta["history"]] == ["teacher", "kernel", "depth-1", "expand-1"]
    assert all(0.0 <= h["val_top1_max"] <= 1.0 for h in meta["history"])
    assert "optimizer" not in state  # the bundled form: weights and metadata only
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("time,phase,epoch,step")


@pytest.mark.parametrize("max_steps, phase, step", [(3, 0, 3), (6, 1, 2)], ids=["in the teacher phase", "inside a distilled phase"])
def test_resume_continues_where_the_run_stopped(tiny, tmp_path, max_steps, phase, step):
    """A run resumed mid-epoch reaches the weights of one that was never stopped, BN statistics
    included. Inside a distilled phase (two steps into the kernel phase) that needs the saved
    teacher rebuilt frozen (eval mode, the largest subnet), as a fresh phase builds it."""
    root, preset_path = tiny
    preset = load_preset(str(preset_path))
    ckpt = train(preset, "moofa", tmp_path, data_root=str(root), max_steps=max_steps, progress=False)
    state, meta = load_checkpoint(ckpt)
    assert meta["global_step"] == max_steps and meta["phase"] == phase and meta["step"] == step
    assert ("teacher" in state) == (phase > 0)
    final = train(preset, "moofa", tmp_path, data_root=str(root), resume=True, progress=False)
    straight = train(preset, "moofa", tmp_path / "straight", data_root=str(root), progress=False)
    a, _ = load_checkpoint(final)
    b, _ = load_checkpoint(straight)
    for name in b["model"]:
        assert torch.allclose(a["model"][name].float(), b["model"][name].float(), atol=1e-5), name


def test_threads_set_the_torch_threads_and_a_resume_may_change_them(tiny, tmp_path):
    """--threads is speed only: a run stopped at one thread and resumed at two ends at the weights of
    a run that never stopped, up to float noise (the reductions' order changes)."""
    root, preset_path = tiny
    preset = load_preset(str(preset_path))
    before = torch.get_num_threads()
    try:
        train(preset, "moofa", tmp_path, data_root=str(root), max_steps=4, progress=False, threads=1)
        assert torch.get_num_threads() == 1
        final = train(preset, "moofa", tmp_path, data_root=str(root), resume=True, max_steps=4, progress=False, threads=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    straight = train(preset, "moofa", tmp_path / "straight", data_root=str(root), max_steps=8, progress=False, threads=1)
    (a, meta), (b, _) = load_checkpoint(final), load_checkpoint(straight)
    assert meta["global_step"] == 8
    for name in b["model"]:
        assert torch.allclose(a["model"][name].float(), b["model"][name].float(), rtol=1e-3, atol=1e-4), name


def test_threads_flag_refuses_zero_before_training(tmp_path):
    r = subprocess.run([sys.executable, "-m", "moofa", "train", "--threads", "0", "--out", str(tmp_path / "run")],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "--threads" in r.stderr and not (tmp_path / "run").exists()


def test_teacher_from_a_teacher_only_run_equals_training_the_teacher_here(tiny, tmp_path):
    root, preset_path = tiny
    full_text = preset_path.read_text()
    teacher_text = full_text.split("[[phase]]\nname = \"kernel\"")[0].replace('name = "tiny"', 'name = "tiny-teacher"')
    (tmp_path / "teacher.toml").write_text(teacher_text)
    teacher_run = tmp_path / "teacher"
    train(load_preset(str(tmp_path / "teacher.toml")), "moofa", teacher_run, data_root=str(root), progress=False)
    preset = load_preset(str(preset_path))
    spliced = train(preset, "moofa", tmp_path / "spliced", data_root=str(root), progress=False, teacher_from=teacher_run)
    straight = train(preset, "moofa", tmp_path / "straight", data_root=str(root), progress=False)
    a, meta_a = load_checkpoint(spliced)
    b, meta_b = load_checkpoint(straight)
    assert meta_a["global_step"] == meta_b["global_step"]
    assert [h["phase"] for h in meta_a["history"]] == [h["phase"] for h in meta_b["history"]]
    for name in b["model"]:
        assert torch.allclose(a["model"][name].float(), b["model"][name].float(), atol=1e-6), name
    assert (tmp_path / "spliced" / "metrics.csv").read_text().count("teacher") >= 1  # the teacher's steps are kept

    # Refused: another seed, another teacher recipe, a run that went past its teacher.
    with pytest.raises(InputError, match="seed"):
        train(preset, "moofa", tmp_path / "s1", data_root=str(root), progress=False, seed=1, teacher_from=teacher_run)
    (tmp_path / "other.toml").write_text(full_text.replace("lr = 0.05", "lr = 0.07"))
    with pytest.raises(InputError, match="teacher phase"):
        train(load_preset(str(tmp_path / "other.toml")), "moofa", tmp_path / "o", data_root=str(root), progress=False, teacher_from=teacher_run)
    with pytest.raises(InputError, match="right after its teacher phase"):
        train(preset, "moofa", tmp_path / "f", data_root=str(root), progress=False, teacher_from=tmp_path / "straight")
    with pytest.raises(InputError, match="layout"):
        train(preset, "ofa", tmp_path / "l", data_root=str(root), progress=False, teacher_from=teacher_run)


def test_teacher_from_flag_checks_its_folder_before_training(tmp_path):
    r = subprocess.run([sys.executable, "-m", "moofa", "train", "--teacher-from", str(tmp_path / "none"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "no checkpoint.pt" in r.stderr, r.stderr


def test_phase_choices_are_relative_to_the_layout():
    assert resolve_choices("top2", (3, 4, 6)) == (4, 6)
    assert resolve_choices("all", (7, 3, 5)) == (3, 5, 7)
    assert resolve_choices("max", (2, 3, 4)) == (4,)


def test_two_cpu_ranks_hold_the_same_weights(tiny, tmp_path):
    root, preset_path = tiny
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517", "-m", "moofa", "train",
         "--preset", str(preset_path), "--layout", "moofa", "--data", str(root), "--out", str(tmp_path), "--max-steps", "2", "--no-progress"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    digests = json.loads((tmp_path / "train_summary.json").read_text())["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]


def test_bad_preset_is_one_line(tmp_path):
    from toolchain.errors import InputError

    with pytest.raises(InputError, match="unknown preset"):
        load_preset("no-such-preset")
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[[phase]]\nname = "t"\nepochs = 1\nlr = 0.1\nfoo = 3\n')
    with pytest.raises(InputError, match="phase"):
        load_preset(str(bad))
    bad.write_text('name = "x"\nerase = 1.5\n[[phase]]\nname = "t"\nepochs = 1\nlr = 0.1\n')
    with pytest.raises(InputError, match="erase"):
        load_preset(str(bad))
    bad.write_text('name = "x"\nerase = 0.25\n[[phase]]\nname = "t"\nepochs = 1\nlr = 0.1\n')
    assert load_preset(str(bad)).erase == 0.25


def test_bundled_presets_load_and_imagenet_gpu_follows_ofa():
    import dataclasses

    from moofa.train.loop import PRESETS_DIR

    names = sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))
    assert {"fmnist-cpu", "imagenet-gpu"} <= set(names)
    for name in names:
        preset = load_preset(name)
        if name.endswith("-teacher"):  # a recipe's teacher phase alone, for --teacher-from
            recipe = load_preset(name.removesuffix("-teacher"))
            assert preset.phases == recipe.phases[:1]
            assert dataclasses.replace(preset, name=recipe.name, phases=recipe.phases) == recipe
            continue
        assert [p.name for p in preset.phases] == ["teacher", "kernel", "depth-1", "depth-2", "expand-1", "expand-2"]
    gpu = load_preset("imagenet-gpu")
    # OFA's schedule: 180 teacher epochs, then 120 / 25 / 120 / 25 / 120; resolutions 128-224.
    assert [p.epochs for p in gpu.phases] == [180, 120, 25, 120, 25, 120]
    assert gpu.resolutions == (128, 160, 192, 224) and gpu.lr_reference_batch == 64
    assert [p.subnets_per_step for p in gpu.phases] == [1, 1, 2, 2, 4, 4]


def test_learning_rate_scales_with_the_global_batch(tiny, tmp_path):
    """With lr_reference_batch the optimizer runs at lr x (batch x ranks) / reference."""
    import dataclasses

    root, preset_path = tiny
    base = load_preset(str(preset_path))
    first = dataclasses.replace(base.phases[0], warmup_epochs=0.0)
    preset = dataclasses.replace(base, phases=(first,), lr_reference_batch=base.batch_size * 4)
    ckpt = train(preset, "moofa", tmp_path, data_root=str(root), max_steps=1, progress=False)
    state, _ = load_checkpoint(ckpt)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(first.lr / 4)


def test_new_presets_train_the_sram_layout_with_the_sandwich_rule():
    for name in ("fmnist", "fmnist-gpu"):
        preset = load_preset(name)
        assert preset.memory == "sram" and preset.crop_padding == 2
        assert all(p.sandwich for p in preset.phases if p.subnets_per_step > 1)
    assert load_preset("fmnist-gpu").lr_reference_batch == 128


def test_fmnist_paper_is_fmnist_under_the_papers_memory_definition():
    import dataclasses

    paper, sram = load_preset("fmnist-paper"), load_preset("fmnist")
    assert paper.memory == "paper"
    assert dataclasses.replace(paper, name=sram.name, memory=sram.memory) == sram


def test_a_preset_with_a_base_overlays_its_keys_and_refuses_bad_bases(tmp_path):
    (tmp_path / "a.toml").write_text('base = "fmnist"\nname = "a"\nbatch_size = 64\n[[phase]]\nname = "t"\nepochs = 1\nlr = 0.1\n')
    a = load_preset(str(tmp_path / "a.toml"))
    assert (a.name, a.batch_size, [p.name for p in a.phases]) == ("a", 64, ["t"])
    assert a.weight_decay == load_preset("fmnist").weight_decay
    (tmp_path / "b.toml").write_text(f'base = "{tmp_path / "c.toml"}"\n')
    (tmp_path / "c.toml").write_text(f'base = "{tmp_path / "b.toml"}"\n')
    with pytest.raises(InputError, match="cycle"):
        load_preset(str(tmp_path / "b.toml"))
    (tmp_path / "d.toml").write_text('base = "no-such-preset"\n')
    with pytest.raises(InputError, match="unknown preset 'no-such-preset'"):
        load_preset(str(tmp_path / "d.toml"))


def test_sandwich_trains_the_largest_first(monkeypatch):
    import random

    from moofa.arch.catalog import get_layout
    from moofa.nn.supernet import Supernet
    from moofa.train import loop

    net = Supernet(get_layout("moofa", 16, 1, 10))
    phase = loop.Phase("depth-2", 1, 0.1, kernels="all", depths="all", expands="all", subnets_per_step=3, sandwich=True)
    preset = loop.Preset("p", phases=(phase,))
    seen = []
    real = net.set_active
    monkeypatch.setattr(net, "set_active", lambda c: (seen.append(c), real(c)))
    x, y = torch.randn(4, 1, 16, 16), torch.randint(0, 10, (4,))
    loop.accumulate_gradients(net, None, phase, preset, x, y, [random.Random(k) for k in range(3)])
    assert seen[0] == net.space.max_config(16)
    assert seen[1] != seen[0] and seen[2] != seen[0]  # the others drawn from all the choices


def test_full_sandwich_trains_the_smallest_last(monkeypatch):
    import random

    from moofa.arch.catalog import get_layout
    from moofa.nn.supernet import Supernet
    from moofa.train import loop

    net = Supernet(get_layout("moofa", 16, 1, 10))
    phase = loop.Phase("expand-2", 1, 0.1, kernels="all", depths="all", expands="all", subnets_per_step=3, sandwich=True, smallest=True)
    seen = []
    real = net.set_active
    monkeypatch.setattr(net, "set_active", lambda c: (seen.append(c), real(c)))
    x, y = torch.randn(4, 1, 16, 16), torch.randint(0, 10, (4,))
    loop.accumulate_gradients(net, None, phase, loop.Preset("p", phases=(phase,)), x, y, [random.Random(k) for k in range(3)])
    assert seen[0] == net.space.max_config(16) and seen[2] == net.space.min_config(16)
    assert seen[1] not in (seen[0], seen[2])


def test_smallest_needs_a_slot_of_its_own():
    from moofa.train import loop

    for per_step, sandwich in ((1, False), (2, True)):
        phase = loop.Phase("d", 1, 0.1, subnets_per_step=per_step, sandwich=sandwich, smallest=True)
        with pytest.raises(InputError, match="smallest = true needs subnets_per_step >= "):
            loop.check_preset(loop.Preset("p", phases=(phase,)), "x.toml")


def test_subnets_are_scored_from_images_held_in_memory(tiny):
    from moofa.arch.catalog import get_layout
    from moofa.nn.supernet import Supernet
    from moofa.train.data import make_loaders
    from moofa.train.loop import evaluate_subnet, top1

    root, _ = tiny
    loaders = make_loaders("fashion-mnist", str(root), 16, (16,), 32, 0)
    held = loaders.in_memory("val", 16)
    assert held is loaders.in_memory("val", 16)  # prepared once
    assert held[0].shape == (32, 1, 16, 16) and held[1].shape == (32,)
    net = Supernet(get_layout("moofa", 16, 1, 10))
    acc, n, subnet = evaluate_subnet(net, net.space.max_config(16), loaders, torch.device("cpu"), bn_images=32)
    # The same images as the loader's, so the same score in eval mode.
    assert (acc, n) == top1(subnet, loaders.eval_loader("val", 16), torch.device("cpu"))
    assert n == 32


def test_fmnist_paper_qstem_is_fmnist_paper_with_the_stem_fake_quantized(tmp_path):
    import dataclasses

    qstem, paper = load_preset("fmnist-paper-qstem"), load_preset("fmnist-paper")
    assert qstem.stem_fake_quant and not paper.stem_fake_quant
    assert dataclasses.replace(qstem, name=paper.name, stem_fake_quant=False) == paper
    (tmp_path / "q.toml").write_text('base = "fmnist-paper"\nname = "q"\nstem_fake_quant = 1\n')
    with pytest.raises(InputError, match="stem_fake_quant = 1 must be true or false"):
        load_preset(str(tmp_path / "q.toml"))
