"""Search: an accuracy predictor and constrained evolution against a board's SRAM and flash.

The accuracy predictor (OFA, Cai et al. 2020) is an MLP over the search space's fixed-length
encoding, trained on subnets of the supernet measured on the *validation* split (batch-norm
recalibrated per subnet). The evolution is OFA's: a population of subnets that fit, the best
``parent_ratio`` kept each generation, ``mutation_ratio`` of the rest made by mutating a parent
and the others by crossing two; every candidate priced by the analytic memory model
(:class:`moofa.cost.pricer.Pricer`) so that only subnets that fit the board are ever kept.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from toolchain.errors import InputError
from toolchain.files import atomic_output, write_atomically

# OFA's evolution defaults (ofa/nas/search_algorithm/evolution.py): population 100, 500
# generations, parent ratio 0.25, mutation ratio 0.5, mutation probability 0.1 (arch) and 0.5
# (resolution).
POPULATION, GENERATIONS, PARENT_RATIO, MUTATION_RATIO, MUTATE_PROB, RESOLUTION_MUTATE_PROB = 100, 500, 0.25, 0.5, 0.1, 0.5
PREDICTOR_FORMAT = "moofa-predictor/1"
# The fewest measured subnets a predictor is built from or loaded with. ``fit_predictor`` holds
# out a fifth (at least one), and Kendall's tau on the held-out part needs two of them: n >= 10.
MIN_SUBNETS = 10
# Bounds on the MLP a predictor file may ask for (OFA's is 3 x 400), so that a corrupt file cannot
# make the loader allocate gigabytes before the shapes are checked.
MAX_HIDDEN, MAX_LAYERS = 4096, 16
CACHE_ENV = "MOOFA_CACHE_DIR"


# --- accuracy predictor --------------------------------------------------------------------------
class PredictorMLP(nn.Module):
    """OFA's accuracy predictor: 3 hidden layers of 400 ReLU units over the encoding, scaled by
    the measured accuracies' spread and added to their mean (both fixed when fitted).

    The scale matters: a well-trained supernet's subnets differ by a few tenths of a point, and an
    unscaled MLP fitted to such targets under weight decay shrinks to a constant (every held-out
    prediction equal, Kendall's tau undefined)."""

    def __init__(self, n_inputs: int, hidden: int = 400, layers: int = 3, base_acc: float = 0.0, acc_scale: float = 1.0):
        super().__init__()
        dims = [n_inputs] + [hidden] * layers
        mods: list[nn.Module] = []
        for a, b in zip(dims, dims[1:]):
            mods += [nn.Linear(a, b), nn.ReLU()]
        mods.append(nn.Linear(dims[-1], 1, bias=False))
        self.net = nn.Sequential(*mods)
        self.base_acc = nn.Parameter(torch.tensor(float(base_acc)), requires_grad=False)
        self.acc_scale = nn.Parameter(torch.tensor(float(acc_scale)), requires_grad=False)

    def forward(self, x):
        return self.net(x).squeeze(-1) * self.acc_scale + self.base_acc


def supernet_digest(path: Path) -> str:
    """The first 16 hex digits of the checkpoint's SHA-256 (what a predictor is tied to)."""
    st = os.stat(path)
    return _digest(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _digest(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a rewritten file is hashed again
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _one_line(e: BaseException, limit: int = 160) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}" if text else type(e).__name__


@dataclass
class Predictor:
    """A trained predictor, tied to the supernet it was measured on."""

    space: object
    model: PredictorMLP
    meta: dict = field(default_factory=dict)
    path: Path | None = None  # the file it was loaded from or saved to

    @torch.no_grad()
    def predict(self, configs) -> np.ndarray:
        x = torch.from_numpy(self.space.encode_many(list(configs)))
        return self.model(x).numpy()

    def non_finite(self, configs=()) -> str | None:
        """What is not finite about this predictor (a weight, or its prediction for one of
        ``configs`` or of the space's smallest and largest subnets), or None."""
        for name, value in self.model.state_dict().items():
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                return f"weight {name!r} holds NaN or infinite values"
        probes = list(configs) + [c for r in self.space.resolutions for c in (self.space.min_config(r), self.space.max_config(r))]
        if not np.isfinite(self.predict(probes)).all():
            return "its predictions are NaN or infinite"
        return None

    def save(self, path: Path) -> None:
        state = {"format": PREDICTOR_FORMAT, "meta_json": json.dumps(self.meta), "model": self.model.state_dict()}
        with atomic_output(path) as tmp:
            torch.save(state, tmp)
        self.path = Path(path)

    @classmethod
    def load(cls, path: Path, space) -> "Predictor":
        """Load and check a predictor file for ``space``: any file that is not a whole, finite
        predictor of this space, built from at least :data:`MIN_SUBNETS` subnets, is a one-line
        :class:`InputError` naming it."""
        path = Path(path)
        rebuild = "rebuild it with `moofa predictor build`"
        if not path.is_file():
            raise InputError(f"{path}: no accuracy predictor; build one with `moofa predictor build --supernet ...`")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError ... on a bad file
            raise InputError(f"{path}: unreadable accuracy predictor, truncated or not a torch file ({_one_line(e)}); {rebuild}") from None
        if not isinstance(state, dict) or state.get("format") != PREDICTOR_FORMAT:
            raise InputError(f"{path}: not a moofa accuracy predictor")
        try:
            meta = json.loads(state.get("meta_json"))
        except (TypeError, ValueError):
            meta = None
        if not isinstance(meta, dict):
            raise InputError(f"{path}: malformed accuracy predictor (no readable metadata); {rebuild}")
        hidden, layers, n = meta.get("hidden", 400), meta.get("layers", 3), meta.get("n")
        for key, value, top in (("hidden", hidden, MAX_HIDDEN), ("layers", layers, MAX_LAYERS)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise InputError(f"{path}: malformed accuracy predictor ({key} = {value!r}, expected an integer in [1, {top}]); {rebuild}")
        if isinstance(n, bool) or not isinstance(n, int) or n < MIN_SUBNETS:
            raise InputError(f"{path}: accuracy predictor built from {n!r} subnets, fewer than the {MIN_SUBNETS} it needs; "
                             f"rebuild it with `moofa predictor build --subnets N` (N >= {MIN_SUBNETS})")
        weights = state.get("model")
        if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
            raise InputError(f"{path}: malformed accuracy predictor (no weight tensors); {rebuild}")
        model = PredictorMLP(space.encoding_length, hidden, layers)
        expected = model.state_dict()
        if "acc_scale" not in weights:  # files written before the scale existed predict unscaled
            weights = {**weights, "acc_scale": torch.tensor(1.0)}
        missing, unexpected = sorted(expected.keys() - weights.keys()), sorted(weights.keys() - expected.keys())
        if missing or unexpected:
            what = f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(unexpected[:3])}"
            raise InputError(f"{path}: accuracy predictor does not match this search space ({what}); {rebuild}")
        for name, value in expected.items():
            if tuple(weights[name].shape) != tuple(value.shape) or not weights[name].is_floating_point():
                raise InputError(f"{path}: accuracy predictor does not match this search space (layer {name!r} is "
                                 f"{weights[name].dtype} {tuple(weights[name].shape)}, expected {value.dtype} {tuple(value.shape)}); {rebuild}")
        try:
            model.load_state_dict(weights)
        except (RuntimeError, TypeError, ValueError) as e:
            raise InputError(f"{path}: accuracy predictor does not match this search space ({_one_line(e)}); {rebuild}") from None
        predictor = cls(space, model.eval(), meta, path)
        bad = predictor.non_finite()
        if bad:
            raise InputError(f"{path}: broken accuracy predictor: {bad}; {rebuild}")
        return predictor


def kendall_tau(a, b) -> float:
    """Kendall's tau-b rank correlation (ties counted as in scipy's tau-b); O(n^2), n is small."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2:
        return float("nan")
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    iu = np.triu_indices(len(a), 1)
    da, db = da[iu], db[iu]
    s = float(np.sum(da * db))
    denom = np.sqrt(float(np.sum(da != 0)) * float(np.sum(db != 0)))
    return s / denom if denom else float("nan")


def holdout_split(n: int, seed: int = 0, holdout: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """(held-out, training) indices of ``n`` measurements, as :func:`fit_predictor` splits them."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(n * holdout))
    return order[:n_test], order[n_test:]


def fit_predictor(space, configs, accs, epochs: int = 300, lr: float = 1e-3, seed: int = 0, holdout: float = 0.2) -> tuple[Predictor, dict]:
    """Train the MLP on (config, accuracy) pairs; report RMSE and Kendall's tau on a held-out part."""
    test, train = holdout_split(len(configs), seed, holdout)
    n_test = len(test)
    x = torch.from_numpy(space.encode_many(list(configs)))
    y = torch.tensor(np.asarray(accs, dtype=np.float32))
    torch.manual_seed(seed)
    spread = float(y[train].std()) if len(train) > 1 else 0.0
    scale = spread if np.isfinite(spread) and spread > 0 else 1.0
    model = PredictorMLP(x.shape[1], base_acc=float(y[train].mean()), acc_scale=scale)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
    xt, yt = x[train], y[train]
    for _ in range(epochs):
        perm = torch.randperm(len(train))
        for i in range(0, len(train), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            loss = torch.mean(((model(xt[idx]) - yt[idx]) / scale) ** 2)  # in units of the spread
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(x[test]).numpy()
    truth = y[test].numpy()
    tau = kendall_tau(pred, truth)
    with np.errstate(all="ignore"):  # a broken fit is reported (and refused by build_predictor), not warned about
        rmse = float(np.sqrt(np.mean((pred.astype(np.float64) - truth) ** 2)))
    report = {"rmse": rmse, "kendall_tau": float(tau), "train": int(len(train)), "heldout": int(n_test)}
    return Predictor(space, model), report


def measure_subnets(supernet_path: Path, n: int, seed: int = 0, val_images: int | None = None, data: str | None = None, progress: bool = True,
                    threads: int | None = None):
    """Sample ``n`` subnets and measure each on the validation split (BN recalibrated);
    ``val_images=None`` scores on the whole split. ``threads``: torch threads per process
    (None: :func:`moofa.train.loop.cpu_threads`); it changes speed only, never a measurement.

    Under ``torchrun`` the subnets are split across ranks and gathered on rank 0. Each rank keeps
    its finished measurements in :func:`partial_path_for` (``<supernet>.predictor-partial.<rank>.json``
    next to a user's supernet, in the user predictor folder for a bundled one; written atomically,
    keyed by the supernet's digest, seed and images), so a killed build resumes where it stopped.
    Measurements of an earlier build's dataset (:func:`dataset_path_for`, and for a bundled
    supernet the dataset shipped with it, read only) are reused too."""
    import os

    from tqdm import tqdm

    from moofa.train.data import make_loaders
    from moofa.train.evaluate import load_supernet, trained_space
    from moofa.train.loop import cpu_threads, evaluate_subnet, local_device

    net, meta = load_supernet(str(supernet_path))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = 0
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
        rank = dist.get_rank()
    torch.set_num_threads(threads or cpu_threads(world))
    preset = meta["preset"]
    loaders = make_loaders(meta["dataset"]["name"], data, preset["batch_size"], tuple(meta["resolutions"]), preset["val_size"], meta["seed"])
    rng = random.Random(seed)
    space = trained_space(net, meta)
    configs = [space.sample(rng) for _ in range(n)]
    mine = list(range(rank, n, world))
    partial = partial_path_for(supernet_path, rank)
    key = {"supernet_sha256_16": supernet_digest(supernet_path), "seed": seed, "val_images": val_images}
    own = set(mine)
    results: dict[int, float] = {}
    if partial.is_file():
        try:
            saved = json.loads(partial.read_text())
            if saved.get("key") == key:
                results = {int(i): float(a) for i, a in saved["results"].items() if int(i) in own}
        except (ValueError, KeyError, AttributeError):
            results = {}  # unreadable leftovers: measure again
    for dataset in dict.fromkeys((dataset_path_for(supernet_path), _beside(supernet_path, ".predictor-data.json"))):
        for i, acc in _dataset_measurements(dataset, key, configs).items():
            if i in own:
                results.setdefault(i, acc)  # a larger --n grows the dataset instead of starting over
    last_save = time.monotonic()
    # On a GPU the extracted subnets are measured there (the supernet stays on the CPU: extraction
    # is slicing); one GPU per rank under torchrun. Not yet run on a GPU by this project.
    device = local_device()
    todo = [i for i in mine if i not in results]
    for j, i in enumerate(tqdm(todo, desc="measuring subnets on val", initial=len(mine) - len(todo), total=len(mine),
                               disable=not progress or rank != 0)):
        acc, _, _ = evaluate_subnet(net, configs[i], loaders, device, split="val",
                                    bn_images=preset["bn_recal_images"], max_images=val_images)
        results[i] = acc
        if time.monotonic() - last_save > 30 or j == len(todo) - 1:
            _make_folder(partial.parent)
            write_atomically(partial, json.dumps({"key": key, "results": {str(k): v for k, v in results.items()}}))
            last_save = time.monotonic()
    if world > 1:
        import torch.distributed as dist

        gathered = [None] * world
        dist.all_gather_object(gathered, results)
        results = {k: v for part in gathered for k, v in part.items()}
    return space, meta, configs, [results[i] for i in range(n)], rank


def is_bundled(supernet_path: Path) -> bool:
    """Whether ``supernet_path`` is one of the supernets shipped in the package
    (``moofa/supernets/``): those files, and the predictors beside them, are never written."""
    from moofa.train.evaluate import BUNDLED_DIR

    return Path(BUNDLED_DIR).resolve() in Path(supernet_path).resolve().parents


def user_predictor_dir() -> Path:
    """Where predictors of the bundled supernets are built: ``$MOOFA_CACHE_DIR`` if set, else
    ``~/.cache/moofa/predictors/``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "moofa" / "predictors"


def _beside(supernet_path: Path, suffix: str) -> Path:
    return supernet_path.with_name(supernet_path.stem + suffix)


def _output_base(supernet_path: Path) -> Path:
    """The path prefix of everything ``moofa predictor build`` writes for this supernet: next to
    a user's checkpoint; for a bundled one, in :func:`user_predictor_dir` under the checkpoint's
    name and digest (another version of the bundled supernet gets files of its own)."""
    if is_bundled(supernet_path):
        return user_predictor_dir() / f"{supernet_path.stem}-{supernet_digest(supernet_path)}"
    return supernet_path.with_name(supernet_path.stem)


def predictor_path_for(supernet_path: Path) -> Path:
    """Where ``moofa predictor build`` writes the predictor: ``<supernet>.predictor.pt`` next to
    a user's checkpoint, ``<user folder>/<name>-<digest>.predictor.pt`` for a bundled one."""
    base = _output_base(supernet_path)
    return base.with_name(base.name + ".predictor.pt")


def dataset_path_for(supernet_path: Path) -> Path:
    """Where ``moofa predictor build`` writes its measurements (next to the predictor)."""
    base = _output_base(supernet_path)
    return base.with_name(base.name + ".predictor-data.json")


def partial_path_for(supernet_path: Path, rank: int) -> Path:
    """Where rank ``rank`` keeps the measurements of an unfinished build (next to the predictor)."""
    base = _output_base(supernet_path)
    return base.with_name(f"{base.name}.predictor-partial.{rank}.json")


def predictor_in_use(supernet_path: Path) -> Path:
    """The predictor file search and deploy read for this supernet: the one ``moofa predictor
    build`` wrote (:func:`predictor_path_for`) when it exists; for a bundled supernet without a
    user-built one, the predictor shipped beside it."""
    built = predictor_path_for(supernet_path)
    if built.exists() or not is_bundled(supernet_path):
        return built
    return _beside(supernet_path, ".predictor.pt")


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{folder}: cannot create the predictor folder ({e.strerror or e}); set {CACHE_ENV} to a writable folder") from None


def _dataset_measurements(dataset: Path, key: dict, configs: list) -> dict[int, float]:
    """Measurements in an earlier build's dataset that this build would repeat: same supernet,
    seed and image count, and the same subnet at the same index (the sample sequence is seeded)."""
    try:
        data = json.loads(dataset.read_text())
        if {k: data.get(k) for k in key} != key or data.get("split") != "val":
            return {}
        return {i: float(e["val_top1"]) for i, e in enumerate(data["subnets"][:len(configs)]) if e["config"] == configs[i].to_dict()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def build_predictor(supernet_spec: str, n: int = 500, seed: int = 0, val_images: int | None = None, data: str | None = None, progress: bool = True,
                    threads: int | None = None) -> dict:
    """``moofa predictor build``: measure ``n`` >= :data:`MIN_SUBNETS` subnets, fit, save the
    dataset and the predictor.

    For a user's checkpoint the files go next to it (``<supernet>.predictor.pt``,
    ``<supernet>.predictor-data.json``). The bundled supernets' files are never written: for
    those, everything (predictor, dataset, the partial files of an unfinished build) goes to
    :func:`user_predictor_dir` (``$MOOFA_CACHE_DIR``, else ``~/.cache/moofa/predictors/``) as
    ``<name>-<digest>.*``, and the measurements shipped with the bundled predictor are reused.
    A predictor whose weights or predictions are not finite is refused and not saved."""
    from moofa.train.evaluate import resolve_supernet

    if isinstance(n, bool) or not isinstance(n, int) or n < MIN_SUBNETS:
        raise InputError(f"--subnets must be at least {MIN_SUBNETS} (got {n!r}): a predictor fitted on fewer subnets cannot be "
                         f"checked on held-out ones; measure {MIN_SUBNETS} or more (default 500)")
    path = resolve_supernet(supernet_spec)
    out = predictor_path_for(path)
    _make_folder(out.parent)
    t0 = time.perf_counter()
    space, meta, configs, accs, rank = measure_subnets(path, n, seed, val_images, data, progress, threads)
    measure_s = time.perf_counter() - t0
    if rank != 0:
        return {}
    if not np.isfinite(np.asarray(accs, dtype=np.float64)).all():
        raise InputError(f"{path}: some measured accuracies are NaN or infinite; no predictor was saved")
    predictor, report = fit_predictor(space, configs, accs, seed=seed)
    bad = predictor.non_finite(configs)
    if bad:
        raise InputError(f"{path}: the fitted predictor is broken ({bad}); it was not saved (the measurements are kept for the next build)")
    digest = supernet_digest(path)
    predictor.meta = {"supernet": path.name, "supernet_sha256_16": digest, "n": n, "seed": seed, "val_images": val_images,
                      "hidden": 400, "layers": 3, **report}
    dataset = dataset_path_for(path)
    write_atomically(dataset, json.dumps({"supernet_sha256_16": digest, "split": "val", "seed": seed, "val_images": val_images, "subnets": [
        {"config": c.to_dict(), "val_top1": a} for c, a in zip(configs, accs)]}))
    predictor.save(out)
    for leftover in out.parent.glob(f"{out.name.removesuffix('.predictor.pt')}.predictor-partial.*.json"):
        leftover.unlink(missing_ok=True)  # the dataset above now holds every measurement
    return {"predictor": str(out), "dataset": str(dataset), "measure_s": round(measure_s, 1), **report}


@dataclass
class SearchSetup:
    """A trained supernet ready to search: checkpoint path, supernet, metadata, space, predictor."""

    path: Path
    net: object
    meta: dict
    space: object
    predictor: "Predictor"


def load_search_setup(supernet_spec: str) -> SearchSetup:
    """Load a supernet (path or bundled name), its trained space and its accuracy predictor."""
    from moofa.train.evaluate import load_supernet, resolve_supernet, trained_space

    path = resolve_supernet(supernet_spec)
    net, meta = load_supernet(supernet_spec)
    space = trained_space(net, meta)
    return SearchSetup(path, net, meta, space, load_predictor_for(path, space))


def load_predictor_for(supernet_path: Path, space) -> Predictor:
    """The accuracy predictor of a supernet (:func:`predictor_in_use`): the one ``moofa
    predictor build`` wrote, next to a user's checkpoint or, for a bundled supernet, in
    :func:`user_predictor_dir` for this checkpoint's digest; else the bundled one. Checked by
    :meth:`Predictor.load` and against the supernet's digest."""
    path = predictor_in_use(supernet_path)
    p = Predictor.load(path, space)
    if p.meta.get("supernet_sha256_16") != supernet_digest(supernet_path):
        raise InputError(f"{path} was built for another supernet; rebuild it with `moofa predictor build`")
    return p


# --- constrained evolution -------------------------------------------------------------------------
@dataclass
class Constraints:
    sram_budget_bytes: int
    flash_budget_bytes: int | None = None
    max_macs: int | None = None


class UnreachableBudget(Exception):
    """The smallest subnet does not fit; carries its needs."""

    def __init__(self, message: str, smallest: dict):
        super().__init__(message)
        self.smallest = smallest


@dataclass
class SearchResult:
    config: object
    predicted_top1: float
    cost: object  # moofa.cost.pricer.SubnetCost
    history: list = field(default_factory=list)  # best predicted accuracy per generation
    evaluated: int = 0
    search_s: float = 0.0
    population: list = field(default_factory=list)  # (config, predicted, cost) of the last generation


def evolution_search(space, predictor: Predictor, pricer, constraints: Constraints, population: int = POPULATION,
                     generations: int = GENERATIONS, parent_ratio: float = PARENT_RATIO, mutation_ratio: float = MUTATION_RATIO,
                     mutate_prob: float = MUTATE_PROB, resolution_mutate_prob: float = RESOLUTION_MUTATE_PROB,
                     seed: int = 0, max_tries: int = 200) -> SearchResult:
    """OFA's evolutionary search; only subnets within ``constraints`` enter the population."""
    rng = random.Random(seed)
    t0 = time.perf_counter()
    evaluated = 0
    cost_cache: dict = {}

    def fits(config) -> bool:
        nonlocal evaluated
        if config in cost_cache:
            return cost_cache[config] is not None
        evaluated += 1
        ok = pricer.fits(config, constraints.sram_budget_bytes, constraints.flash_budget_bytes)
        if ok and constraints.max_macs is not None:
            ok = pricer(config).macs <= constraints.max_macs
        cost_cache[config] = True if ok else None
        return ok

    smallest = space.min_config(min(space.resolutions))
    if not fits(smallest):
        cost = pricer(smallest)
        raise UnreachableBudget("no subnet fits: even the smallest needs more", {"subnet": smallest.to_dict(), **cost.to_dict()})

    def draw(make):
        for _ in range(max_tries):
            c = make()
            if fits(c):
                return c
        return None

    pop = []
    while len(pop) < population:
        c = draw(lambda: space.sample(rng))
        pop.append(c if c is not None else smallest)
    scores = list(predictor.predict(pop))
    n_parents = max(1, int(round(population * parent_ratio)))
    n_mutate = int(round(population * mutation_ratio))
    history = []
    for _ in range(generations):
        ranked = sorted(range(len(pop)), key=lambda i: -scores[i])[:n_parents]
        parents = [pop[i] for i in ranked]
        parent_scores = [scores[i] for i in ranked]
        history.append(float(parent_scores[0]))
        children = []
        for _ in range(n_mutate):
            c = draw(lambda: space.mutate(rng.choice(parents), rng, arch_prob=mutate_prob, resolution_prob=resolution_mutate_prob))
            if c is not None:
                children.append(c)
        while len(children) < population - n_parents:
            c = draw(lambda: space.crossover(rng.choice(parents), rng.choice(parents), rng))
            children.append(c if c is not None else rng.choice(parents))
        child_scores = list(predictor.predict(children)) if children else []
        pop, scores = parents + children, parent_scores + child_scores
    best = max(range(len(pop)), key=lambda i: scores[i])
    final = sorted(range(len(pop)), key=lambda i: -scores[i])
    return SearchResult(pop[best], float(scores[best]), pricer(pop[best]), history, evaluated, time.perf_counter() - t0,
                        [(pop[i], float(scores[i])) for i in final])


def random_search(space, predictor: Predictor, pricer, constraints: Constraints, n: int, seed: int = 0):
    """The baseline: best predicted accuracy among ``n`` random subnets that fit."""
    rng = random.Random(seed)
    best, best_score = None, -1.0
    for _ in range(n):
        c = space.sample(rng)
        if not pricer.fits(c, constraints.sram_budget_bytes, constraints.flash_budget_bytes):
            continue
        if constraints.max_macs is not None and pricer(c).macs > constraints.max_macs:
            continue
        s = float(predictor.predict([c])[0])
        if s > best_score:
            best, best_score = c, s
    return best, best_score
