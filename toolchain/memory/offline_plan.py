"""Offline arena plans: better tensor offsets than TFLM's greedy planner, embedded in the model.

TFLM places the arena head's buffers with a greedy rule (largest first, each at the lowest gap
that fits; :mod:`toolchain.memory.planner`). That rule is fast but not optimal: on a chain whose
tensors go big, medium, medium, big it puts both big ones at offset 0 and has to stack the two
medium ones above them, where putting them at alternate ends would fit all four in big + medium.
TFLM lets a model carry its own plan instead, as ``OfflineMemoryAllocation`` metadata
(``micro_allocation_info.cc``, ``GetOfflinePlannedOffsets``): a buffer of little-endian int32
``[version=0, subgraph=0, tensor count, one offset per tensor]``, -1 meaning "plan this tensor
online"; the count must equal the number of tensors or TFLM refuses the model. This module finds such plans and writes them into a copy of the model.

The problem is two-dimensional packing with one dimension fixed: every buffer is a rectangle
whose extent in time (its allocation scopes) is given and whose place in the address space we
choose; rectangles that overlap in time must not overlap in address; the arena head is the
highest top. No plan can have a head below the *liveness lower bound*, the most bytes alive in
any one scope, so a plan that reaches it is optimal by definition.

1. Heuristic (default). A portfolio of orderings (by size, by start time, by lifetime, by area,
   by the peak they are alive in) times two placement rules, then a short seeded local search on
   the best ordering. The rules:
   - *first fit*: the lowest offset that is free for the buffer's whole lifetime;
   - *two-ended best fit* against a target head (the lower bound): the tightest free gap below
     the target, and inside it the end that touches the arena's floor or ceiling, else the end
     whose neighbour dies closest to when this buffer dies (so the holes they leave merge). On a
     chain taken in time order this alternates bottom, top, bottom ... which is optimal.
   Stops early once the lower bound is reached.
2. Exact (``exact=True``): OR-Tools CP-SAT with ``AddNoOverlap2D`` over (address x time)
   intervals, minimising the head, warm-started from the heuristic, within a time limit. The
   solver's status says whether the result is proven optimal.

Scratch buffers that kernels request are part of the packing (so room is kept for them), but
TFLM always plans them online: it places the offline tensors first and then fills the online
buffers in around them with its greedy rule. The head we report is therefore never the
packing's own top but :func:`toolchain.memory.planner.greedy_offsets` run on the buffers with the
tensor offsets fixed, exactly what TFLM does with the embedded plan; the tests check it against
TFLM's measurement.

Offsets are multiples of TFLM's 16-byte arena alignment (every size is, so a packing can always
be slid down to one); the solver works in 16-byte units.
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolchain.errors import InputError
from toolchain.files import read_input_bytes, write_atomically
from toolchain.ir.graph import Graph
from toolchain.memory.planner import (
    ARENA_ALIGNMENT,
    ONLINE,
    Buffer,
    MemoryPlan,
    arena_buffers,
    check_no_overlap,
    greedy_offsets,
    head_bytes,
    live_profile,
)
from toolchain.memory.scratch import KERNEL_LIBRARIES, scratch_requests
from toolchain.tflite.reader import OFFLINE_PLAN_METADATA, check_identifier, parse_model

# First field of the metadata buffer: "Offline allocation format version - set to 0" (the format
# comment in tflite-micro tensorflow/lite/micro/micro_allocator.cc). TFLM reads neither it nor the
# subgraph field (micro_allocation_info.cc, GetOfflinePlannedOffsets: only the count and offsets).
OFFLINE_PLAN_VERSION = 0
# Iterations of the heuristic's local search after the portfolio (each one re-places every
# buffer; a few hundred take well under a second on the corpus). Seeded: same model, same plan.
LOCAL_SEARCH_ITERATIONS = 300
LOCAL_SEARCH_SEED = 0
# Wall-clock cap of the heuristic's local search, for very large graphs.
HEURISTIC_TIME_LIMIT_S = 2.0


# ----------------------------------------------------------------------------------------------
# Packing: offsets for a list of buffers


@dataclass
class Packing:
    """Offsets for every buffer of a list, with how they were found."""

    offsets: list[int]
    head_bytes: int
    method: str
    proven_optimal: bool = False  # the solver proved that no packing has a lower head


def _conflicts(buffers: list[Buffer]) -> list[list[int]]:
    """For each buffer, the buffers alive in at least one of its scopes."""
    n = len(buffers)
    out: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        a = buffers[i]
        for j in range(i + 1, n):
            if a.overlaps(buffers[j]):
                out[i].append(j)
                out[j].append(i)
    return out


def _free_gaps(busy: list[tuple[int, int]]) -> list[tuple[int, float]]:
    """Free address ranges ``[lo, hi)`` around the sorted busy ranges; the last is unbounded."""
    gaps = []
    lo = 0
    for start, end in busy:
        if start > lo:
            gaps.append((lo, start))
        lo = max(lo, end)
    gaps.append((lo, float("inf")))
    return gaps


def _place(buffers: list[Buffer], conflicts: list[list[int]], order: list[int], rule: str,
           target: int) -> list[int]:
    """Place buffers one by one in ``order`` by ``rule`` ("first-fit" or "two-ended")."""
    offsets = [-1] * len(buffers)
    for i in order:
        size = buffers[i].size_bytes
        placed = [j for j in conflicts[i] if offsets[j] >= 0]
        busy = sorted((offsets[j], offsets[j] + buffers[j].size_bytes) for j in placed)
        gaps = _free_gaps(busy)
        if rule == "first-fit":
            offsets[i] = next(lo for lo, hi in gaps if hi - lo >= size)
            continue
        # Two-ended best fit below the target head.
        best = None
        for lo, hi in gaps:
            ceiling = min(hi, target)
            if ceiling - lo < size:
                continue
            slack = ceiling - lo - size
            if best is None or slack < best[0]:
                best = (slack, lo, ceiling)
        if best is None:  # nothing fits below the target: lowest place that fits at all
            offsets[i] = next(lo for lo, hi in gaps if hi - lo >= size)
            continue
        _, lo, ceiling = best
        offsets[i] = lo if _prefer_bottom(buffers, placed, offsets, i, lo, ceiling, target) \
            else ceiling - size
    return offsets


def _prefer_bottom(buffers, placed, offsets, i, lo, ceiling, target) -> bool:
    """Which end of the gap ``[lo, ceiling)`` buffer ``i`` should touch (see the module doc)."""
    if lo == 0:
        return True
    if ceiling == target:
        return False
    last = buffers[i].last_scope

    def distance(edge: int, at_bottom: bool) -> int:
        neighbours = [j for j in placed
                      if (offsets[j] + buffers[j].size_bytes == edge if at_bottom else offsets[j] == edge)]
        return min((abs(buffers[j].last_scope - last) for j in neighbours), default=1 << 30)

    return distance(lo, True) <= distance(ceiling, False)


def _num_scopes(buffers: list[Buffer]) -> int:
    return max(1, 1 + max((b.last_scope for b in buffers), default=0))


def _lower_bound(buffers: list[Buffer]) -> int:
    """The most bytes alive in one scope (as :class:`toolchain.memory.planner.MemoryPlan` counts it)."""
    return max(live_profile(buffers, _num_scopes(buffers)), default=0)


def _orderings(buffers: list[Buffer], profile: list[int]) -> dict[str, list[int]]:
    n = len(buffers)
    idx = list(range(n))
    size = [b.size_bytes for b in buffers]
    length = [b.last_scope - b.first_scope + 1 for b in buffers]

    def peak(b: Buffer) -> int:
        scopes = range(max(b.first_scope, 0), min(b.last_scope, len(profile) - 1) + 1)
        return max((profile[s] for s in scopes), default=0)

    breadth = [peak(b) for b in buffers]
    return {
        "size": sorted(reversed(idx), key=lambda i: -size[i]),
        "time": sorted(idx, key=lambda i: (buffers[i].first_scope, -size[i])),
        "lifetime": sorted(idx, key=lambda i: (-length[i], -size[i])),
        "area": sorted(idx, key=lambda i: (-size[i] * length[i], -size[i])),
        "breadth": sorted(idx, key=lambda i: (-breadth[i], -size[i], buffers[i].first_scope)),
    }


def heuristic_packing(buffers: list[Buffer], iterations: int = LOCAL_SEARCH_ITERATIONS,
                      time_limit_s: float = HEURISTIC_TIME_LIMIT_S) -> Packing:
    """The best packing of the portfolio and a short local search (see the module doc)."""
    if not buffers:
        return Packing([], 0, "heuristic")
    lower = _lower_bound(buffers)
    profile = live_profile(buffers, _num_scopes(buffers))
    conflicts = _conflicts(buffers)
    tflm = greedy_offsets([dataclasses.replace(b, offline_offset=ONLINE) for b in buffers])
    best = (head_bytes(buffers, tflm), tflm, "tflm-greedy", None, None)
    for name, order in _orderings(buffers, profile).items():
        for rule in ("two-ended", "first-fit"):
            offsets = _place(buffers, conflicts, order, rule, lower)
            head = head_bytes(buffers, offsets)
            if head < best[0]:
                best = (head, offsets, f"{rule}/{name}", order, rule)
            if best[0] == lower:
                return Packing(best[1], best[0], best[2])

    # Local search: move one buffer elsewhere in the best ordering; keep ties (plateaus).
    head, offsets, method, order, rule = best
    searched_from = method
    if order is None:  # TFLM's own plan was best: search from its ordering, by first fit
        order, rule, searched_from = _orderings(buffers, profile)["size"], "first-fit", "first-fit/size"
    rng = random.Random(LOCAL_SEARCH_SEED)
    deadline = time.perf_counter() + time_limit_s
    improved = False
    for _ in range(iterations):
        if head == lower or time.perf_counter() > deadline or len(order) < 2:
            break
        trial = order[:]
        item = trial.pop(rng.randrange(len(trial)))
        trial.insert(rng.randrange(len(trial) + 1), item)
        trial_rule = rule if rng.random() < 0.8 else ("first-fit" if rule == "two-ended" else "two-ended")
        trial_offsets = _place(buffers, conflicts, trial, trial_rule, lower)
        trial_head = head_bytes(buffers, trial_offsets)
        if trial_head <= head:
            improved |= trial_head < head
            head, offsets, order, rule = trial_head, trial_offsets, trial, trial_rule
    if improved:
        method = f"{searched_from}+local-search"
    return Packing(offsets, head, method)


def solve_cp_sat(problem: dict) -> dict:
    """CP-SAT on plain data (run in a child process by :func:`exact_packing`)."""
    from ortools.sat.python import cp_model

    sizes, firsts, lasts = problem["sizes"], problem["firsts"], problem["lasts"]
    lower, upper = problem["lower"], problem["upper"]
    model = cp_model.CpModel()
    head = model.new_int_var(lower, upper, "head")
    xs, x_intervals, t_intervals = [], [], []
    for i, size in enumerate(sizes):
        x = model.new_int_var(0, upper - size, f"x{i}")
        model.add(x + size <= head)
        model.add_hint(x, problem["hint"][i])
        xs.append(x)
        x_intervals.append(model.new_fixed_size_interval_var(x, size, f"addr{i}"))
        # Scopes start at -1 for tensors no op touches; shift so time starts at 0.
        t_intervals.append(model.new_fixed_size_interval_var(firsts[i] + 1, lasts[i] - firsts[i] + 1, f"time{i}"))
    model.add_no_overlap_2d(x_intervals, t_intervals)
    model.add_hint(head, upper)
    model.minimize(head)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(problem["time_limit_s"], 0.01)
    solver.parameters.num_workers = problem["num_workers"]
    solver.parameters.random_seed = 0
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return {"found": False}
    return {"found": True, "optimal": status == cp_model.OPTIMAL, "offsets": [solver.value(x) for x in xs]}


_CP_SAT_CHILD = """
import json, sys
from toolchain.memory.offline_plan import solve_cp_sat
print(json.dumps(solve_cp_sat(json.load(sys.stdin))))
"""


def exact_packing(buffers: list[Buffer], hint: Packing, time_limit_s: float = 10.0,
                  num_workers: int = 2) -> Packing:
    """Minimise the head with CP-SAT (no overlap in address x time), warm-started by ``hint``.

    The solver runs in a child process: OR-Tools' native library and TensorFlow's share
    dependencies (protobuf, abseil) built differently, and CP-SAT crashes a process that has
    loaded TensorFlow (seen in this project's test suite).
    """
    import importlib.util
    import json

    from toolchain.runtime.runner import run_python

    if importlib.util.find_spec("ortools") is None:  # pragma: no cover - ortools is in the `plan` extra
        raise InputError("exact planning needs OR-Tools: pip install 'moofa[plan]'")
    if not buffers:
        return Packing([], 0, "cp-sat", proven_optimal=True)
    unit = ARENA_ALIGNMENT
    problem = {
        "sizes": [b.size_bytes // unit for b in buffers],
        "firsts": [b.first_scope for b in buffers],
        "lasts": [b.last_scope for b in buffers],
        "lower": _lower_bound(buffers) // unit,
        "upper": hint.head_bytes // unit,
        "hint": [o // unit for o in hint.offsets],
        "time_limit_s": time_limit_s,
        "num_workers": num_workers,
    }
    proc = run_python(_CP_SAT_CHILD, input=json.dumps(problem), what="the CP-SAT solver", timeout_s=time_limit_s + 120,
                      check=True)
    result = json.loads(proc.stdout)
    if not result["found"]:
        return dataclasses.replace(hint, proven_optimal=False)
    offsets = [x * unit for x in result["offsets"]]
    found = head_bytes(buffers, offsets)
    if found > hint.head_bytes:  # cannot happen (head <= upper), kept as a guard
        return hint
    method = "cp-sat" if found < hint.head_bytes else f"{hint.method}, cp-sat"
    return Packing(offsets, found, method, proven_optimal=result["optimal"])


# ----------------------------------------------------------------------------------------------
# From a packing to what TFLM will do with it


def tensor_offsets(graph: Graph, buffers: list[Buffer], offsets: list[int]) -> list[int]:
    """The metadata's offsets: one per tensor of the graph, -1 for those TFLM does not plan."""
    out = [ONLINE] * len(graph.tensors)
    for b, o in zip(buffers, offsets):
        if b.tensor >= 0:
            out[b.tensor] = o
    return out


def predict_with_offsets(graph: Graph, scratch, offsets: list[int] | None) -> MemoryPlan:
    """The plan TFLM makes for ``graph`` carrying ``offsets`` (None: no offline plan)."""
    planned = dataclasses.replace(graph, offline_offsets=offsets)
    buffers = arena_buffers(planned, scratch)
    placed = greedy_offsets(buffers)
    planner = "offline" if offsets is not None else "tflm-greedy"
    return MemoryPlan(buffers, placed, num_scopes=len(graph.ops) + 1, planner=planner)


# ----------------------------------------------------------------------------------------------
# The metadata, in and out of the flatbuffer


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _aligned_buffer_class(schema):
    class AlignedBufferT(schema.BufferT):
        """``BufferT`` that keeps the schema's ``force_align: 16`` on buffer data, which the
        generated Python ``Pack`` drops (it aligns to the element size, 1): TFLM reads weights
        and this plan's int32 values in place, and Cortex-M cores fault on unaligned loads."""

        def Pack(self, builder):
            data = None
            if self.data is not None:
                payload = np.asarray(self.data, dtype=np.uint8).tobytes()
                builder.StartVector(1, len(payload), ARENA_ALIGNMENT)
                builder.head -= len(payload)
                builder.Bytes[builder.head:builder.head + len(payload)] = payload
                data = builder.EndVector()
            schema.BufferStart(builder)
            if data is not None:
                schema.BufferAddData(builder, data)
            schema.BufferAddOffset(builder, self.offset)
            schema.BufferAddSize(builder, self.size)
            return schema.BufferEnd(builder)

    return AlignedBufferT


def _unpack(model_bytes: bytes, where: str):
    schema = _schema()
    check_identifier(model_bytes, where)
    try:
        return schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    except Exception as e:  # the flatbuffers runtime raises anything on bad bytes
        raise InputError(f"{where}: corrupt or truncated model ({type(e).__name__}: {e})") from None


def _pack(model) -> bytes:
    import flatbuffers

    schema = _schema()
    aligned = _aligned_buffer_class(schema)
    for buf in model.buffers or []:
        buf.__class__ = aligned
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _metadata_name(meta) -> str:
    name = meta.name
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else (name or "")


def _private_buffer(model, meta) -> bool:
    """Whether ``meta``'s buffer is its own: in range, not buffer 0 (the schema's empty
    sentinel), and used by no tensor and no other metadata, so rewriting it touches nothing else."""
    index = meta.buffer
    if not 0 < index < len(model.buffers or []):
        return False
    for subgraph in model.subgraphs or []:
        if any(t.buffer == index for t in subgraph.tensors or []):
            return False
    return not any(m is not meta and m.buffer == index for m in model.metadata or [])


def embed_offline_plan(model_bytes: bytes, offsets: list[int] | None, where: str = "<model>") -> bytes:
    """``model_bytes`` with its ``OfflineMemoryAllocation`` metadata set to ``offsets`` (one per
    tensor of subgraph 0, -1 = online), replacing any there was; ``None`` removes it.

    Everything else is unpacked and packed again unchanged (the schema's object API), so the
    result means the same to any reader; packing is deterministic, so embedding the same offsets
    twice gives the same bytes."""
    schema = _schema()
    model = _unpack(model_bytes, where)
    if not model.subgraphs:
        raise InputError(f"{where}: model has no subgraph")
    n_tensors = len(model.subgraphs[0].tensors or [])
    metadata = list(model.metadata or [])
    existing = [m for m in metadata if _metadata_name(m) == OFFLINE_PLAN_METADATA]
    if offsets is None:
        if not existing:
            return bytes(model_bytes)
        model.metadata = [m for m in metadata if _metadata_name(m) != OFFLINE_PLAN_METADATA] or None
        for m in existing:  # leave the (now unused) buffer empty rather than renumber buffers
            if _private_buffer(model, m):
                model.buffers[m.buffer] = schema.BufferT()
        return _pack(model)
    if len(offsets) != n_tensors:
        raise ValueError(f"{len(offsets)} offsets for a subgraph of {n_tensors} tensors")
    values = np.array([OFFLINE_PLAN_VERSION, 0, n_tensors, *offsets], dtype="<i4")
    data = np.frombuffer(values.tobytes(), dtype=np.uint8)
    if existing and _private_buffer(model, existing[0]):
        keep = existing[0]
        model.metadata = [m for m in metadata if m is keep or _metadata_name(m) != OFFLINE_PLAN_METADATA]
        model.buffers[keep.buffer] = schema.BufferT(data=data)
    else:
        metadata = [m for m in metadata if _metadata_name(m) != OFFLINE_PLAN_METADATA]
        model.buffers = list(model.buffers or []) + [schema.BufferT(data=data)]
        metadata.append(schema.MetadataT(name=OFFLINE_PLAN_METADATA, buffer=len(model.buffers) - 1))
        model.metadata = metadata
    return _pack(model)


# ----------------------------------------------------------------------------------------------
# The command's library entry point


@dataclass
class PlanResult:
    """What ``moofa plan`` found for one model.

    ``optimal``: the planned head equals the liveness lower bound (nothing can beat it).
    ``proven_optimal``: no plan can beat it: ``optimal``, or CP-SAT proved it in its time limit.
    ``offsets`` are the embedded per-tensor offsets (-1 online), empty when no plan is embedded.
    """

    model: str
    greedy_head_bytes: int
    planned_head_bytes: int
    lower_bound_bytes: int
    optimal: bool
    proven_optimal: bool
    method: str
    planning_s: float
    offsets: list[int] = field(default_factory=list)
    kept_existing: bool = False
    message: str = ""
    existing_head_bytes: int | None = None
    out_path: str | None = None
    kernel_library: str = "reference"

    @property
    def saving_bytes(self) -> int:
        return self.greedy_head_bytes - self.planned_head_bytes

    @property
    def saving_percent(self) -> float:
        return 100.0 * self.saving_bytes / self.greedy_head_bytes if self.greedy_head_bytes else 0.0

    @property
    def embedded(self) -> bool:
        return bool(self.offsets)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "out": self.out_path,
            "kernel_library": self.kernel_library,
            "greedy_head_bytes": self.greedy_head_bytes,
            "planned_head_bytes": self.planned_head_bytes,
            "lower_bound_bytes": self.lower_bound_bytes,
            "saving_bytes": self.saving_bytes,
            "saving_percent": round(self.saving_percent, 2),
            "optimal": self.optimal,
            "proven_optimal": self.proven_optimal,
            "method": self.method,
            "planning_s": round(self.planning_s, 3),
            "embedded": self.embedded,
            "kept_existing": self.kept_existing,
            "existing_head_bytes": self.existing_head_bytes,
            "offsets": self.offsets,
            "message": self.message,
        }


def plan_graph_offline(graph: Graph, exact: bool = False, time_limit_s: float = 10.0,
                       kernel_library: str = "reference", pointer_bytes: int = 8) -> tuple[Packing, MemoryPlan, MemoryPlan]:
    """Plan ``graph`` (ignoring any plan it carries): the packing, TFLM's own greedy plan, and
    the plan TFLM will make with the packing's tensor offsets embedded."""
    online = dataclasses.replace(graph, offline_offsets=None)
    scratch = scratch_requests(online, kernel_library, pointer_bytes)
    greedy = predict_with_offsets(online, scratch, None)
    buffers = greedy.buffers
    start = time.perf_counter()
    packing = heuristic_packing(buffers)
    if exact and packing.head_bytes > greedy.lower_bound_bytes:
        remaining = max(time_limit_s - (time.perf_counter() - start), 0.01)
        packing = exact_packing(buffers, packing, remaining)
    offsets = tensor_offsets(online, buffers, packing.offsets)
    predicted = predict_with_offsets(online, scratch, offsets)
    return packing, greedy, predicted


def default_out_path(path) -> Path:
    """Where ``moofa plan MODEL`` writes without ``-o``: ``MODEL.planned.tflite`` beside it."""
    path = Path(path)
    return path.with_name(f"{path.stem}.planned{path.suffix or '.tflite'}")


_write_atomically = write_atomically
_read = read_input_bytes


def plan_model(path, out_path=None, exact: bool = False, time_limit_s: float = 10.0,
               kernel_library: str = "reference", pointer_bytes: int = 8) -> PlanResult:
    """Plan the arena of the model at ``path`` and, given ``out_path``, write a copy carrying the
    plan (atomically). The copy embeds a plan only where it beats TFLM's greedy one; otherwise it
    is the model as it was (less a plan that was worse than TFLM's own). A plan the model already
    carries is kept when it is at least as good as ours (so re-running changes nothing) and
    replaced otherwise."""
    path = Path(path)
    if kernel_library not in KERNEL_LIBRARIES:
        raise InputError(f"unknown kernel library {kernel_library!r}; known: {', '.join(KERNEL_LIBRARIES)}")
    if not time_limit_s > 0:
        raise InputError(f"time limit must be a positive number of seconds, got {time_limit_s}")
    data = _read(path)
    malformed = None
    try:
        graph = parse_model(data, str(path))
    except InputError as e:
        if OFFLINE_PLAN_METADATA not in str(e):
            raise
        # TFLM refuses a model whose plan does not list one offset per tensor; drop it and plan.
        malformed = str(e).split(": ", 1)[-1]
        data = embed_offline_plan(data, None, str(path))
        graph = parse_model(data, str(path))
    start = time.perf_counter()
    packing, greedy, predicted = plan_graph_offline(graph, exact, time_limit_s, kernel_library, pointer_bytes)
    planning_s = time.perf_counter() - start
    check_no_overlap(predicted.buffers, predicted.offsets)
    lower = greedy.lower_bound_bytes
    ours = tensor_offsets(graph, predicted.buffers, predicted.offsets)  # == the packing's tensors
    ours_head = predicted.head_bytes
    method = packing.method
    solver_proof = packing.proven_optimal and ours_head == packing.head_bytes

    existing_head = None
    existing_ok = False
    if graph.offline_offsets is not None:
        scratch = scratch_requests(graph, kernel_library, pointer_bytes)
        existing = predict_with_offsets(graph, scratch, graph.offline_offsets)
        existing_head = existing.head_bytes
        try:
            check_no_overlap(existing.buffers, existing.offsets)
            existing_ok = all(o == ONLINE or (o >= 0 and o % ARENA_ALIGNMENT == 0) for o in graph.offline_offsets)
        except ValueError:
            existing_ok = False

    if existing_ok and existing_head <= min(ours_head, greedy.head_bytes):
        out_bytes, offsets, head, kept = data, list(graph.offline_offsets), existing_head, True
        method = "existing"
        message = f"kept the offline plan the model already carries (head {existing_head} B; ours: {ours_head} B)"
        solver_proof = solver_proof and existing_head == ours_head
    elif ours_head < greedy.head_bytes:
        out_bytes, offsets, head, kept = embed_offline_plan(data, ours, str(path)), ours, ours_head, False
        message = "embedded an offline plan"
        if graph.offline_offsets is not None:
            why = "it overlaps or is misaligned" if not existing_ok else f"head {existing_head} B"
            message = f"replaced the model's offline plan ({why}) with ours"
    else:
        out_bytes = embed_offline_plan(data, None, str(path))
        offsets, head, kept, method = [], greedy.head_bytes, False, "tflm-greedy"
        message = ("TFLM's greedy plan already reaches the lower bound" if greedy.head_bytes == lower
                   else "TFLM's greedy plan is as good as the best we found") + "; no plan embedded"
        if graph.offline_offsets is not None:
            why = "it overlaps or is misaligned" if not existing_ok else f"head {existing_head} B"
            message = f"removed the model's offline plan ({why}); TFLM's greedy plan is as good as ours"
        solver_proof = solver_proof and greedy.head_bytes == ours_head

    if malformed is not None:
        message = f"dropped a malformed offline plan ({malformed}); {message}"
    if out_path is not None:
        try:
            _write_atomically(Path(out_path), out_bytes)
        except OSError as e:
            raise InputError(f"{out_path}: cannot write: {e.strerror or e}") from None
    return PlanResult(
        model=str(path),
        greedy_head_bytes=greedy.head_bytes,
        planned_head_bytes=head,
        lower_bound_bytes=lower,
        optimal=head == lower,
        proven_optimal=head == lower or solver_proof,
        method=method,
        planning_s=planning_s,
        offsets=offsets,
        kept_existing=kept,
        message=message,
        existing_head_bytes=existing_head,
        out_path=str(out_path) if out_path is not None else None,
        kernel_library=kernel_library,
    )


def format_plan_result(r: PlanResult) -> str:
    """The human summary ``moofa plan`` prints."""

    def kib(n: int) -> str:
        return f"{n / 1024:,.1f} KiB ({n:,} B)"

    if r.proven_optimal:
        verdict = "optimal (equals the lower bound)" if r.optimal else "optimal (proven by CP-SAT)"
    else:
        verdict = f"{r.planned_head_bytes / r.lower_bound_bytes:.3f}x the lower bound, not proven optimal" \
            if r.lower_bound_bytes else "not proven optimal"
    lines = [
        f"{r.model}: arena head planning ({r.kernel_library} kernels)",
        f"  TFLM greedy head   {kib(r.greedy_head_bytes)}",
        f"  planned head       {kib(r.planned_head_bytes)}  [{r.method}, {r.planning_s:.2f} s]",
        f"  lower bound        {kib(r.lower_bound_bytes)}",
        f"  saving             {kib(r.saving_bytes)} = {r.saving_percent:.1f}% of the greedy head; {verdict}",
    ]
    if r.existing_head_bytes is not None:
        lines.append(f"  plan in the model  {kib(r.existing_head_bytes)}")
    lines.append(f"  {r.message}" + (f" -> {r.out_path}" if r.out_path else ""))
    return "\n".join(lines)
