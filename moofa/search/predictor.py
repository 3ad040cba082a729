"""Search: an accuracy predictor and constrained evolution against a board's SRAM and flash.

The accuracy predictor (OFA, Cai et al. 2020) is an MLP over the search space's fixed-length
encoding, trained on subnets of the supernet measured on the *validation* split (batch-norm
recalibrated per subnet). The evolution is OFA's: a population of subnets that fit, the best
``parent_ratio`` kept each generation, ``mutation_ratio`` of the rest made by mutating a parent
and the others by crossing two; every candidate priced by the analytic memory model
(:class:`moofa.cost.pricer.Pricer`) so that only subnets that fit the board are ever kept.
"""

from __future__ import annotations

import hashlib
import json
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


# --- accuracy predictor --------------------------------------------------------------------------
class PredictorMLP(nn.Module):
    """OFA's accuracy predictor: 3 hidden layers of 400 ReLU units over the encoding, plus a
    learned base accuracy."""

    def __init__(self, n_inputs: int, hidden: int = 400, layers: int = 3, base_acc: float = 0.0):
        super().__init__()
        dims = [n_inputs] + [hidden] * layers
        mods: list[nn.Module] = []
        for a, b in zip(dims, dims[1:]):
            mods += [nn.Linear(a, b), nn.ReLU()]
        mods.append(nn.Linear(dims[-1], 1, bias=False))
        self.net = nn.Sequential(*mods)
        self.base_acc = nn.Parameter(torch.tensor(float(base_acc)), requires_grad=False)

    def forward(self, x):
        return self.net(x).squeeze(-1) + self.base_acc


def supernet_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


@dataclass
class Predictor:
    """A trained predictor, tied to the supernet it was measured on."""

    space: object
    model: PredictorMLP
    meta: dict = field(default_factory=dict)

    @torch.no_grad()
    def predict(self, configs) -> np.ndarray:
        x = torch.from_numpy(self.space.encode_many(list(configs)))
        return self.model(x).numpy()

    def save(self, path: Path) -> None:
        state = {"format": PREDICTOR_FORMAT, "meta_json": json.dumps(self.meta), "model": self.model.state_dict()}
        with atomic_output(path) as tmp:
            torch.save(state, tmp)

    @classmethod
    def load(cls, path: Path, space) -> "Predictor":
        if not path.is_file():
            raise InputError(f"{path}: no accuracy predictor; build one with `moofa predictor build --supernet ...`")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != PREDICTOR_FORMAT:
            raise InputError(f"{path}: not a moofa accuracy predictor")
        meta = json.loads(state["meta_json"])
        model = PredictorMLP(space.encoding_length, meta.get("hidden", 400), meta.get("layers", 3))
        model.load_state_dict(state["model"])
        return cls(space, model.eval(), meta)


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


def fit_predictor(space, configs, accs, epochs: int = 300, lr: float = 1e-3, seed: int = 0, holdout: float = 0.2) -> tuple[Predictor, dict]:
    """Train the MLP on (config, accuracy) pairs; report RMSE and Kendall's tau on a held-out part."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(configs))
    n_test = max(1, int(len(configs) * holdout))
    test, train = order[:n_test], order[n_test:]
    x = torch.from_numpy(space.encode_many(list(configs)))
    y = torch.tensor(np.asarray(accs, dtype=np.float32))
    torch.manual_seed(seed)
    model = PredictorMLP(x.shape[1], base_acc=float(y[train].mean()))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    xt, yt = x[train], y[train]
    for _ in range(epochs):
        perm = torch.randperm(len(train))
        for i in range(0, len(train), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            loss = torch.mean((model(xt[idx]) - yt[idx]) ** 2)
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(x[test]).numpy()
    truth = y[test].numpy()
    tau = kendall_tau(pred, truth)
    report = {"rmse": float(np.sqrt(np.mean((pred - truth) ** 2))), "kendall_tau": float(tau), "train": int(len(train)), "heldout": int(n_test)}
    return Predictor(space, model), report


def measure_subnets(supernet_path: Path, n: int, seed: int = 0, val_images: int | None = None, data: str | None = None, progress: bool = True):
    """Sample ``n`` subnets and measure each on the validation split (BN recalibrated);
    ``val_images=None`` scores on the whole split.

    Under ``torchrun`` the subnets are split across ranks and gathered on rank 0. Each rank keeps
    its finished measurements in ``<supernet>.predictor-partial.<rank>.json`` (written atomically,
    keyed by the supernet's digest, seed and images), so a killed build resumes where it stopped."""
    import os

    from tqdm import tqdm

    from moofa.train.data import make_loaders
    from moofa.train.evaluate import load_supernet, trained_space
    from moofa.train.loop import cpu_threads, evaluate_subnet

    net, meta = load_supernet(str(supernet_path))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = 0
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
        rank = dist.get_rank()
    torch.set_num_threads(cpu_threads(world))
    preset = meta["preset"]
    loaders = make_loaders(meta["dataset"]["name"], data, preset["batch_size"], tuple(meta["resolutions"]), preset["val_size"], meta["seed"])
    rng = random.Random(seed)
    space = trained_space(net, meta)
    configs = [space.sample(rng) for _ in range(n)]
    mine = list(range(rank, n, world))
    partial = supernet_path.with_name(f"{supernet_path.stem}.predictor-partial.{rank}.json")
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
    for i, acc in _dataset_measurements(dataset_path_for(supernet_path), key, configs).items():
        if i in own:
            results.setdefault(i, acc)  # a larger --n grows the dataset instead of starting over
    last_save = time.monotonic()
    todo = [i for i in mine if i not in results]
    for j, i in enumerate(tqdm(todo, desc="measuring subnets on val", initial=len(mine) - len(todo), total=len(mine),
                               disable=not progress or rank != 0)):
        acc, _, _ = evaluate_subnet(net, configs[i], loaders, torch.device("cpu"), split="val",
                                    bn_images=preset["bn_recal_images"], max_images=val_images)
        results[i] = acc
        if time.monotonic() - last_save > 30 or j == len(todo) - 1:
            write_atomically(partial, json.dumps({"key": key, "results": {str(k): v for k, v in results.items()}}))
            last_save = time.monotonic()
    if world > 1:
        import torch.distributed as dist

        gathered = [None] * world
        dist.all_gather_object(gathered, results)
        results = {k: v for part in gathered for k, v in part.items()}
    return space, meta, configs, [results[i] for i in range(n)], rank


def predictor_path_for(supernet_path: Path) -> Path:
    return supernet_path.with_name(supernet_path.stem + ".predictor.pt")


def dataset_path_for(supernet_path: Path) -> Path:
    return supernet_path.with_name(supernet_path.stem + ".predictor-data.json")


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


def build_predictor(supernet_spec: str, n: int = 500, seed: int = 0, val_images: int | None = None, data: str | None = None, progress: bool = True) -> dict:
    """``moofa predictor build``: measure, fit, save the dataset and the predictor next to the supernet."""
    from moofa.train.evaluate import resolve_supernet

    path = resolve_supernet(supernet_spec)
    t0 = time.perf_counter()
    space, meta, configs, accs, rank = measure_subnets(path, n, seed, val_images, data, progress)
    measure_s = time.perf_counter() - t0
    if rank != 0:
        return {}
    predictor, report = fit_predictor(space, configs, accs, seed=seed)
    digest = supernet_digest(path)
    predictor.meta = {"supernet": path.name, "supernet_sha256_16": digest, "n": n, "seed": seed, "val_images": val_images,
                      "hidden": 400, "layers": 3, **report}
    dataset = dataset_path_for(path)
    write_atomically(dataset, json.dumps({"supernet_sha256_16": digest, "split": "val", "seed": seed, "val_images": val_images, "subnets": [
        {"config": c.to_dict(), "val_top1": a} for c, a in zip(configs, accs)]}))
    out = predictor_path_for(path)
    predictor.save(out)
    for leftover in path.parent.glob(f"{path.stem}.predictor-partial.*.json"):
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
    p = Predictor.load(predictor_path_for(supernet_path), space)
    digest = supernet_digest(supernet_path)
    if p.meta.get("supernet_sha256_16") != digest:
        raise InputError(f"{predictor_path_for(supernet_path)} was built for another supernet; rebuild it with `moofa predictor build`")
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
