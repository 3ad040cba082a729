"""Train a supernet with progressive shrinking and knowledge distillation (OFA, Cai et al. 2020).

One loop, top to bottom; the recipe is data (a preset TOML in ``moofa/presets/``):

1. ``teacher``: train the largest subnet alone.
2. ``kernel``: elastic kernel (7 -> 5 -> 3 through the kernel transformation matrices), distilled
   from a frozen copy of the teacher.
3. ``depth-1``, ``depth-2``: elastic depth, the deepest choices first.
4. ``expand-1``, ``expand-2``: elastic expand ratio, after sorting the expanded channels by
   importance (``Supernet.reorganize_channels``).

Each step samples ``subnets_per_step`` subnets from the phase's choices (with ``sandwich`` the
first is the phase's largest, with ``smallest`` the last is its smallest), accumulates their
gradients (loss = cross-entropy + ``kd_ratio`` x distillation) and takes one optimizer step.
Subnets are drawn from a generator keyed by (seed, phase, epoch, step, k), so every DDP rank
picks the same subnet at the same step. Run on one CPU, one GPU, or many through
``torchrun --nproc_per_node N -m moofa train ...`` (gloo on CPU, nccl on GPU).

Checkpoints are written atomically (temporary file + rename) and hold weights, optimizer,
scheduler position, phase, epoch, step, RNG state, layout and preset; ``--resume`` continues a
run killed mid-epoch from the last one. They load with ``torch.load(weights_only=True)``: only
tensors and plain data, no pickled code.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import math
import os
import random
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from moofa.train.checkpoint import contiguous_state, load_checkpoint, save_checkpoint, stored_layout, weights_digest
from toolchain.errors import InputError
from toolchain.files import write_atomically

PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"


# --- the recipe ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Phase:
    name: str
    epochs: float
    lr: float
    # Choices the phase samples from: "max" (the largest only), "top2" (the two largest), "all",
    # or an explicit list. Relative names let one preset serve layouts with different choices.
    kernels: str | tuple = "max"
    depths: str | tuple = "max"
    expands: str | tuple = "max"
    subnets_per_step: int = 1
    distill: bool = True
    reorganize: int | None = None  # expand stage for reorganize_channels before the phase
    warmup_epochs: float = 0.0
    # The sandwich rule (Yu et al., BigNAS): the first subnet of every step is the phase's
    # largest, so the largest keeps learning while the smaller ones are trained.
    sandwich: bool = False
    # BigNAS's full sandwich: the last subnet of every step is the phase's smallest, so the
    # smallest is trained every step instead of when the draw happens to reach it.
    smallest: bool = False


@dataclass(frozen=True)
class Preset:
    name: str
    dataset: str = "fashion-mnist"
    resolutions: tuple[int, ...] = (28,)
    batch_size: int = 128
    weight_decay: float = 3e-5
    momentum: float = 0.9
    label_smoothing: float = 0.1
    kd_ratio: float = 1.0
    val_size: int = 5000
    bn_recal_images: int = 2000
    checkpoint_every_s: float = 120.0
    dropout: float = 0.1
    crop_padding: int | None = None  # training random-crop padding; None = the dataset's default
    erase: float = 0.0  # random-erasing probability per training image (moofa.train.data.random_erase)
    # Phase learning rates are for this global batch; runs with another (batch_size x ranks)
    # scale them linearly, as OFA does per GPU. None: use the rates as written.
    lr_reference_batch: int | None = None
    num_workers: int = 0  # data-loading processes per rank (ImageFolder decoding wants several)
    # The memory definition the moofa layout is solved under ("paper" elements or the "sram"
    # int8 arena); None: the layout's default (moofa.arch.catalog.get_layout).
    memory: str | None = None
    # Train with the stem's outputs rounded as the int8 model rounds them (moofa.nn.supernet.Stem).
    stem_fake_quant: bool = False
    phases: tuple[Phase, ...] = field(default_factory=tuple)


def _preset_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESETS_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.toml")))
        raise InputError(f"unknown preset {name_or_path!r}; known: {known} (or a path to a .toml file)")
    return path


def _preset_data(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A preset file's keys over those of its ``base`` preset (if it names one): the base's
    [[phase]] tables stand unless the file has its own."""
    if path.resolve() in seen:
        raise InputError(f"{path}: base presets form a cycle ({' -> '.join(p.stem for p in seen + (path,))})")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not valid TOML: {e}") from None
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise InputError(f"{path}: base = {base!r}: expected a preset name or path")
    return {**_preset_data(_preset_path(base), seen + (path.resolve(),)), **data}


def load_preset(name_or_path: str) -> Preset:
    """A preset by name (``moofa/presets/NAME.toml``) or by path; ``base = "NAME"`` in it starts
    from another preset's keys."""
    path = _preset_path(name_or_path)
    data = _preset_data(path)
    phases = []
    for i, p in enumerate(data.pop("phase", [])):
        try:
            for key in ("kernels", "depths", "expands"):
                if isinstance(p.get(key), list):
                    p[key] = tuple(p[key])
            phases.append(Phase(**p))
        except TypeError as e:
            raise InputError(f"{path}: [[phase]] {i + 1}: {e}") from None
    try:
        preset = Preset(**{**data, "resolutions": tuple(data.get("resolutions", (28,))), "phases": tuple(phases)})
    except TypeError as e:
        raise InputError(f"{path}: {e}") from None
    if not preset.phases:
        raise InputError(f"{path}: no [[phase]] tables")
    check_preset(preset, path)
    return preset


# (key, low, high, low excluded): the valid range of every numeric preset and phase key.
_PRESET_RANGES = {
    "batch_size": (1, 1 << 16, False), "weight_decay": (0, 1, False), "momentum": (0, 1, False),
    "label_smoothing": (0, 1, False), "kd_ratio": (0, 100, False), "val_size": (1, 10_000_000, False),
    "bn_recal_images": (1, 10_000_000, False), "checkpoint_every_s": (0, 86_400, False), "dropout": (0, 1, False),
    "erase": (0, 1, False), "crop_padding": (0, 64, False),
    "lr_reference_batch": (1, 1 << 20, False), "num_workers": (0, 256, False),
}
_PHASE_RANGES = {"epochs": (0, 100_000, True), "lr": (0, 100, True), "subnets_per_step": (1, 64, False),
                 "warmup_epochs": (0, 100_000, False), "reorganize": (0, 64, False)}


def _check_range(where: str, key: str, value, lo, hi, lo_open: bool) -> None:
    if value is None:
        return
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and \
        (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        raise InputError(f"{where}: {key} = {value!r} is outside {'(' if lo_open else '['}{lo}, {hi}]")


def check_preset(preset: Preset, where) -> None:
    """Every numeric key of the preset and its phases within its range (finite), in one line each."""
    for key, (lo, hi, lo_open) in _PRESET_RANGES.items():
        _check_range(str(where), key, getattr(preset, key), lo, hi, lo_open)
    if not isinstance(preset.stem_fake_quant, bool):
        raise InputError(f"{where}: stem_fake_quant = {preset.stem_fake_quant!r} must be true or false")
    if preset.memory is not None and preset.memory not in ("paper", "sram"):
        raise InputError(f"{where}: memory = {preset.memory!r}: expected \"paper\" or \"sram\"")
    if not preset.resolutions or any(isinstance(r, bool) or not isinstance(r, int) or not 8 <= r <= 1024 for r in preset.resolutions):
        raise InputError(f"{where}: resolutions = {list(preset.resolutions)!r}: each must be an integer in [8, 1024]")
    for i, phase in enumerate(preset.phases):
        for key in ("distill", "sandwich", "smallest"):
            if not isinstance(getattr(phase, key), bool):
                raise InputError(f"{where}: [[phase]] {i + 1} ({phase.name}): {key} = {getattr(phase, key)!r} must be true or false")
        if phase.smallest and phase.subnets_per_step < 2 + phase.sandwich:
            raise InputError(f"{where}: [[phase]] {i + 1} ({phase.name}): smallest = true needs subnets_per_step >= "
                             f"{2 + phase.sandwich} (the smallest{', the largest' if phase.sandwich else ''} and a random one), "
                             f"not {phase.subnets_per_step}")
        for key, (lo, hi, lo_open) in _PHASE_RANGES.items():
            _check_range(f"{where}: [[phase]] {i + 1} ({phase.name})", key, getattr(phase, key), lo, hi, lo_open)


# --- distributed plumbing ----------------------------------------------------------------------
def local_device() -> torch.device:
    """This process's device: its torchrun rank's GPU (``LOCAL_RANK``, 0 alone) when there is one."""
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else torch.device("cpu")


def _dist_setup():
    """(rank, world_size, device) from torchrun's environment; one process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = local_device()
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return dist.get_rank(), world, device
    return 0, 1, device


def _all_reduce_grads(model, world: int) -> None:
    """Average gradients over ranks. Explicit (not DDP) because each step runs several subnets
    that use different parameters; every rank samples the same subnets, so all hold the same set."""
    if world == 1:
        return
    import torch.distributed as dist

    for p in model.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad /= world


def _average_buffers(model, world: int) -> None:
    """Average batch-norm running statistics over ranks, so every rank holds the same model."""
    if world == 1:
        return
    import torch.distributed as dist

    for b in model.buffers():
        if b.is_floating_point():
            dist.all_reduce(b, op=dist.ReduceOp.SUM)
            b /= world


def cpu_threads(world: int = 1) -> int:
    """Torch threads per process on a CPU run: leave a core for the data pipeline and the rest of
    the machine (on a busy 2-core box two OpenMP threads wait on each other and run several times
    slower than one)."""
    return max(1, (os.cpu_count() or 1) // world - 1)


# --- subnets of a phase -----------------------------------------------------------------------
def resolve_choices(spec, available) -> tuple:
    """A phase's choice spec ("max", "top2", "all" or a list) against the space's choices."""
    ordered = tuple(sorted(available))
    if isinstance(spec, str):
        if spec == "all":
            return ordered
        if spec == "max":
            return ordered[-1:]
        if spec.startswith("top") and spec[3:].isdigit():
            return ordered[-int(spec[3:]):]
        if spec == "min":
            return ordered[:1]
        raise InputError(f"phase choice {spec!r}: expected max, min, topN, all or a list")
    bad = [c for c in spec if c not in ordered]
    if bad:
        raise InputError(f"phase choices {list(spec)} include {bad}, not in this layout's {list(ordered)}")
    return tuple(spec)


def phase_config(space, phase: Phase, rng: random.Random, resolution: int):
    """A subnet drawn uniformly from the phase's choices."""
    from moofa.arch.space import SubnetConfig

    kernels = resolve_choices(phase.kernels, space.kernel_choices)
    depths = resolve_choices(phase.depths, space.depth_choices)
    expands = resolve_choices(phase.expands, space.expand_choices)
    ks, es = [], []
    for _ in range(space.n_stages):
        d = rng.choice(depths)
        ks.append(tuple(rng.choice(kernels) for _ in range(d)))
        es.append(tuple(rng.choice(expands) for _ in range(d)))
    return SubnetConfig(space.layout.name, resolution, tuple(ks), tuple(es))


# --- evaluation --------------------------------------------------------------------------------
def _batch(x: torch.Tensor, device) -> torch.Tensor:
    """A batch of images on ``device`` in channels-last order: convolutions (depthwise ones above
    all) run about twice as fast that way on CPU (bench/bench_train_step.py)."""
    return x.to(device, memory_format=torch.channels_last) if x.dim() == 4 else x.to(device)


# Images (x pixels) per forward when BN statistics are re-estimated or a split is scored from
# memory: 256 images of 28x28, 4 of 224x224. Larger batches measured slower on CPU (caches).
PIXELS_PER_FORWARD = 256 * 28 * 28


def _chunks(images: torch.Tensor, labels: torch.Tensor | None = None):
    per = max(1, PIXELS_PER_FORWARD // max(1, images.shape[-1] * images.shape[-2]))
    for i in range(0, len(images), per):
        yield images[i : i + per], (labels[i : i + per] if labels is not None else None)


def _pairs(data):
    """(images, labels) batches of a DataLoader, or of an (images, labels) pair held in memory."""
    return _chunks(*data) if isinstance(data, tuple) else iter(data)


@torch.no_grad()
def recalibrate_bn(net, data, device) -> None:
    """Re-estimate batch-norm statistics of a (static) subnet on ``data`` (OFA's
    set_running_statistics): cumulative averages over the batches, then eval mode. ``data`` is a
    loader, or (images, labels) in memory, run in batches of :data:`PIXELS_PER_FORWARD` pixels."""
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    for x, _ in _pairs(data):
        net(_batch(x, device))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    net.eval()


@torch.no_grad()
def top1(net, data, device) -> tuple[float, int]:
    """(fraction correct, images seen) on a loader or on (images, labels) in memory."""
    net.eval()
    correct = total = 0
    for x, y in _pairs(data):
        correct += (net(_batch(x, device)).argmax(1).cpu() == y).sum().item()
        total += len(y)
    return correct / max(total, 1), total


def evaluate_subnet(supernet, config, loaders, device, split: str = "val", bn_images: int = 2000, max_images: int | None = None):
    """Extract ``config``, recalibrate its BN on validation images; return (top-1, images, subnet).
    The images come from ``loaders.in_memory`` (each split and resolution prepared once)."""
    net = supernet.extract(config).to(device, memory_format=torch.channels_last)
    recalibrate_bn(net, loaders.in_memory("val", config.resolution, max_images=bn_images), device)
    acc, n = top1(net, loaders.in_memory(split, config.resolution, max_images=max_images), device)
    return acc, n, net


# --- the loop ----------------------------------------------------------------------------------
def frozen_teacher(model, weights: dict | None = None):
    """The distillation teacher: a copy of ``model`` (with ``weights`` when given: a checkpoint's
    saved teacher), as its largest subnet, in eval mode (BN running statistics, no dropout), with
    no gradients. A resumed run must build it this way too, or its soft labels change."""
    teacher = copy.deepcopy(model)
    if weights is not None:
        teacher.load_state_dict(weights)
    teacher.eval()
    teacher.set_max()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """A phase's learning rate at ``step``: linear warm-up to ``peak``, then cosine decay to 0."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps)))


def accumulate_gradients(model, teacher, phase: Phase, preset: Preset, x, y, rngs) -> tuple[float, float]:
    """One step's gradients: a subnet per ``rngs`` entry drawn from the phase's choices, each
    trained on the batch (cross-entropy, plus distillation from ``teacher`` when given).
    Returns the mean loss and the mean top-1 on the batch."""
    with torch.no_grad():
        soft = F.softmax(teacher(x), dim=1) if teacher is not None else None
    loss_sum = correct = 0.0
    n = len(rngs)
    for k, rng in enumerate(rngs):
        if phase.sandwich and k == 0:
            spec = _extreme(phase, model.space, max)
        elif phase.smallest and k == n - 1:
            spec = _extreme(phase, model.space, min)
        else:
            spec = phase
        model.set_active(phase_config(model.space, spec, rng, x.shape[-1]))
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=preset.label_smoothing)
        if soft is not None:
            loss = loss + preset.kd_ratio * torch.mean(torch.sum(-soft * F.log_softmax(logits, dim=1), dim=1))
        (loss / n).backward()
        loss_sum += loss.item() / n
        correct += (logits.argmax(1) == y).float().mean().item() / n
    return loss_sum, correct


def train(
    preset: Preset,
    layout_name: str,
    out_dir: Path,
    data_root: str | None = None,
    resume: bool = False,
    seed: int = 0,
    max_steps: int | None = None,
    progress: bool = True,
    teacher_from: Path | None = None,
    threads: int | None = None,
) -> Path:
    """Train ``layout_name`` with ``preset`` into ``out_dir``; returns the final checkpoint path.

    ``threads``: torch threads per process on a CPU run (None: :func:`cpu_threads`). The count
    changes speed only, not the recipe, so a resumed run may use another.

    ``teacher_from`` (a run folder or its checkpoint) starts after the teacher phase with that run's
    trained teacher, when that run was the same recipe up to there (see :func:`_check_teacher_run`).
    """
    from tqdm import tqdm

    from moofa.arch.catalog import get_layout
    from moofa.nn.supernet import Supernet
    from moofa.train.data import make_loaders

    rank, world, device = _dist_setup()
    torch.manual_seed(seed)  # same initial weights on every rank and every run
    if device.type == "cpu":
        torch.set_num_threads(threads or cpu_threads(world))
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, final_path = out_dir / "checkpoint.pt", out_dir / "supernet.pt"

    loaders = make_loaders(preset.dataset, data_root, preset.batch_size, preset.resolutions, preset.val_size, seed,
                           distributed=world > 1, rank=rank, world_size=world, crop_padding=preset.crop_padding,
                           erase=preset.erase, num_workers=preset.num_workers, pin_memory=device.type == "cuda")
    lr_scale = preset.batch_size * world / preset.lr_reference_batch if preset.lr_reference_batch else 1.0
    info = loaders.info
    layout = get_layout(layout_name, resolution=max(preset.resolutions), in_channels=info.in_channels, num_classes=info.num_classes,
                        memory=preset.memory)
    meta = {
        "layout": layout.to_dict(),  # the solved widths: loaded as stored, whatever the solver says later
        "dataset": info.to_json(), "preset": asdict(preset), "seed": seed, "dropout": preset.dropout,
        "resolutions": list(preset.resolutions), "phase": 0, "epoch": 0, "step": 0, "global_step": 0,
        "val_indices_digest": hashlib.sha256(loaders.val_indices.tobytes()).hexdigest()[:16], "history": [],
    }
    model = Supernet(layout, dropout=preset.dropout, stem_fake_quant=preset.stem_fake_quant).to(device, memory_format=torch.channels_last)
    teacher = None
    state = None
    start = None  # (state, metadata) of the checkpoint this run continues: its own, or a teacher run's
    if resume and ckpt_path.exists():
        state, saved = start = load_checkpoint(ckpt_path)
        if saved["layout"]["name"] != layout.name or saved["preset"]["name"] != preset.name:
            raise InputError(f"{ckpt_path}: was trained as {saved['layout']['name']} / {saved['preset']['name']}, not {layout.name} / {preset.name}")
    elif teacher_from is not None:
        src = Path(teacher_from)
        src_ckpt = src / "checkpoint.pt" if src.is_dir() else src
        start = load_checkpoint(src_ckpt)  # state stays None: the next phase starts fresh
        _check_teacher_run(src_ckpt, start[1], meta, preset, layout, seed)
        src_metrics = src_ckpt.parent / "metrics.csv"
        if rank == 0 and src_metrics.is_file() and not (out_dir / "metrics.csv").exists():
            write_atomically(out_dir / "metrics.csv", src_metrics.read_text())
    if start is not None:
        start_state, saved = start
        if stored_layout(saved) != layout:  # the solver changed since: go on with the layout the run started with
            layout = stored_layout(saved)
            meta["layout"] = saved["layout"]
            model = Supernet(layout, dropout=preset.dropout, stem_fake_quant=preset.stem_fake_quant).to(device, memory_format=torch.channels_last)
        model.load_state_dict(start_state["model"])
        torch.set_rng_state(start_state["rng_torch"])  # a teacher run's too: as if this run had trained it
        meta.update({k: saved[k] for k in ("phase", "epoch", "step", "global_step", "history")})
        if state is not None and "teacher" in state:
            teacher = frozen_teacher(model, state["teacher"])
    steps_per_epoch = loaders.train.sampler.steps_per_epoch()
    metrics_path = out_dir / "metrics.csv"
    if rank == 0 and not metrics_path.exists():
        metrics_path.write_text("time,phase,epoch,step,global_step,lr,loss,top1,imgs_per_s\n")
    last_save, steps_done = time.monotonic(), 0

    optimizer = None
    try:
        for phase_index in range(meta["phase"], len(preset.phases)):
            phase = preset.phases[phase_index]
            resuming_phase = state is not None and phase_index == meta["phase"]
            if phase.distill and teacher is None:
                teacher = frozen_teacher(model)  # the trained largest subnet
            if phase.reorganize is not None and not (resuming_phase and (meta["epoch"] or meta["step"])):
                model.reorganize_channels(phase.reorganize)
                model.to(memory_format=torch.channels_last)
            optimizer = torch.optim.SGD(model.parameters(), lr=phase.lr * lr_scale, momentum=preset.momentum, nesterov=True, weight_decay=preset.weight_decay)
            if resuming_phase and "optimizer" in state:
                optimizer.load_state_dict(state["optimizer"])
            total_steps = max(1, math.ceil(phase.epochs * steps_per_epoch))
            warmup_steps = int(phase.warmup_epochs * steps_per_epoch)
            start_epoch = meta["epoch"] if resuming_phase else 0
            phase_step = start_epoch * steps_per_epoch + (meta["step"] if resuming_phase else 0)
            n_epochs = math.ceil(phase.epochs)
            bar = tqdm(total=total_steps, initial=phase_step, desc=f"{layout.name} {phase.name}", disable=not progress or rank != 0,
                       unit="step", dynamic_ncols=True)
            for epoch in range(start_epoch, n_epochs):
                start_step = meta["step"] if (resuming_phase and epoch == start_epoch) else 0
                loaders.set_epoch(phase_index * 10_000 + epoch, start_step)
                model.train()
                for step, (x, y) in enumerate(loaders.train, start=start_step):
                    if phase_step >= total_steps:
                        break
                    t0 = time.perf_counter()
                    lr = lr_at(phase_step, total_steps, warmup_steps, phase.lr * lr_scale)
                    for g in optimizer.param_groups:
                        g["lr"] = lr
                    x, y = _batch(x, device), y.to(device)
                    optimizer.zero_grad(set_to_none=True)
                    rngs = [random.Random(hash((seed, phase_index, epoch, step, k)) & 0xFFFFFFFF) for k in range(phase.subnets_per_step)]
                    loss_sum, correct = accumulate_gradients(model, teacher if phase.distill else None, phase, preset, x, y, rngs)
                    _all_reduce_grads(model, world)
                    optimizer.step()
                    _average_buffers(model, world)
                    phase_step += 1
                    steps_done += 1
                    meta.update(phase=phase_index, epoch=epoch, step=step + 1, global_step=meta["global_step"] + 1)
                    rate = len(y) * world / (time.perf_counter() - t0)
                    bar.set_postfix(loss=f"{loss_sum:.3f}", acc=f"{correct:.3f}", lr=f"{lr:.2e}", imgs_s=f"{rate:.0f}")
                    bar.update(1)
                    if rank == 0 and (step % 20 == 0):
                        with metrics_path.open("a", newline="") as f:
                            csv.writer(f).writerow([f"{time.time():.0f}", phase.name, epoch, step, meta["global_step"], f"{lr:.5g}", f"{loss_sum:.4f}", f"{correct:.4f}", f"{rate:.1f}"])
                    if rank == 0 and time.monotonic() - last_save > preset.checkpoint_every_s:
                        _save_progress(ckpt_path, model, meta, optimizer, teacher)
                        last_save = time.monotonic()
                    if max_steps is not None and steps_done >= max_steps:
                        bar.close()
                        return _finish(out_dir, ckpt_path, final_path, model, meta, optimizer, teacher, rank, world, partial=True)
                meta.update(epoch=epoch + 1, step=0)
                if phase_step >= total_steps:
                    break
            bar.close()
            # Phase done: record the largest and smallest subnets' validation accuracy.
            if rank == 0:
                res = max(preset.resolutions)
                acc_max, _, _ = evaluate_subnet(model, model.space.max_config(res), loaders, device, bn_images=preset.bn_recal_images)
                acc_min, _, _ = evaluate_subnet(model, phase_config(model.space, _extreme(phase, model.space, min), random.Random(0), min(preset.resolutions)), loaders, device, bn_images=preset.bn_recal_images)
                meta["history"].append({"phase": phase.name, "val_top1_max": acc_max, "val_top1_min": acc_min, "global_step": meta["global_step"]})
                print(f"[moofa train] {layout.name} {phase.name}: val top-1 largest {acc_max:.4f}, smallest {acc_min:.4f}", flush=True)
            meta.update(phase=phase_index + 1, epoch=0, step=0)
            state = None
            if rank == 0:
                _save_progress(ckpt_path, model, meta, None, teacher)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (the CLI raises it): keep what was trained
        if rank == 0 and steps_done:
            _save_progress(ckpt_path, model, meta, optimizer, teacher)
            print(f"[moofa train] interrupted: saved {ckpt_path} at step {meta['global_step']}; --resume continues", flush=True)
        raise
    return _finish(out_dir, ckpt_path, final_path, model, meta, None, teacher, rank, world, partial=False)


_RUN_ONLY_KEYS = ("name", "phases", "checkpoint_every_s", "num_workers")  # keys that do not change what is trained


def _check_teacher_run(path, saved: dict, meta: dict, preset: Preset, layout, seed: int) -> None:
    """Refuse a ``--teacher-from`` run unless continuing it equals training the teacher here.

    The run must have stopped right after its teacher phase, with this layout, seed, data split and
    every preset key that shapes training equal (its first phase included): the teacher phase's
    data order, schedule and random state depend on nothing else, so the result is the same network
    this preset would have trained.
    """
    where = f"--teacher-from {path}"
    as_json = lambda d: json.loads(json.dumps(d))  # noqa: E731 -- tuples as the checkpoint's lists
    if (saved.get("phase"), saved.get("epoch"), saved.get("step")) != (1, 0, 0):
        raise InputError(f"{where}: the run did not stop right after its teacher phase (it is at phase {saved.get('phase')}, "
                         f"epoch {saved.get('epoch')}); train the teacher with a preset of only the teacher phase")
    if saved["layout"]["name"] != layout.name:
        raise InputError(f"{where}: trained the {saved['layout']['name']} layout, not {layout.name}")
    if saved.get("seed") != seed:
        raise InputError(f"{where}: trained with --seed {saved.get('seed')}, not {seed}")
    for key in ("dataset", "val_indices_digest", "resolutions", "dropout"):
        if as_json(saved.get(key)) != as_json(meta[key]):
            raise InputError(f"{where}: its {key} differs from this run's ({saved.get(key)!r} vs {meta[key]!r})")
    mine, theirs = as_json(meta["preset"]), saved.get("preset", {})
    defaults = as_json(asdict(Preset(name=preset.name)))
    for key, value in mine.items():
        if key not in _RUN_ONLY_KEYS and theirs.get(key, defaults.get(key)) != value:
            raise InputError(f"{where}: its preset's {key} is {theirs.get(key, defaults.get(key))!r}, this one's {value!r}")
    first_theirs = (theirs.get("phases") or [None])[0]
    if first_theirs != mine["phases"][0]:
        raise InputError(f"{where}: its teacher phase {first_theirs} differs from this preset's {mine['phases'][0]}")


def _extreme(phase: Phase, space, pick=min) -> Phase:
    """The phase with only its smallest (``pick=min``) or largest (``max``) choices."""
    one = lambda spec, avail: (pick(resolve_choices(spec, avail)),)  # noqa: E731
    return Phase(phase.name, 0, 0, one(phase.kernels, space.kernel_choices), one(phase.depths, space.depth_choices),
                 one(phase.expands, space.expand_choices))


def _save_progress(path, model, meta, optimizer, teacher):
    save_checkpoint(path, model, meta, optimizer, {"teacher": contiguous_state(teacher.state_dict())} if teacher is not None else None)


def _finish(out_dir, ckpt_path, final_path, model, meta, optimizer, teacher, rank, world, partial: bool) -> Path:
    digests = [weights_digest(model)]
    if world > 1:
        import torch.distributed as dist

        gathered = [None] * world
        dist.all_gather_object(gathered, digests[0])
        digests = gathered
    if rank == 0:
        _save_progress(ckpt_path, model, meta, optimizer, teacher)
        if not partial:
            save_checkpoint(final_path, model, meta)  # weights + metadata only: the bundled form
        summary = {"partial": partial, "global_step": meta["global_step"], "history": meta["history"], "rank_weight_digests": digests}
        write_atomically(out_dir / "train_summary.json", json.dumps(summary, indent=2))
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return final_path if not partial else ckpt_path
