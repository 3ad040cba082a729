"""The memory logger: what a real PyTorch subnet keeps alive, op by op, measured with hooks.

As in the MOOFA paper, forward hooks on a real subnet record every op's input and output
tensors as it runs. From that trace alone (no graph IR, no planner) the logger works out each
tensor's lifetime -- created by the op that returns it (the model input: before the first op),
alive until the last op that reads it (the model output: to the end) -- and reports, for
every op, the int8 activation bytes alive while it runs, each buffer rounded up to TFLM's
16-byte alignment. That is the quantity :func:`moofa.cost.lowering.subnet_graph` plus the planner
predict (``MemoryPlan.op_profile`` without kernel scratch); the tests hold them equal.

The paper's own measure is also recorded for the layers that have weights: input + output +
weight elements, plus the residual input kept alive across the block.

:func:`plot_profiles` draws per-layer profiles side by side (the paper's Figure 5: OFA peaks in
its first blocks, MOOFA is flat).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from moofa.nn.supernet import Add, Conv, Flatten, HardSwish, Mean, Mul, Scale, Subnet
from toolchain.memory.planner import align_up

_KINDS = {HardSwish: "HARD_SWISH", Mean: "MEAN", Scale: "MUL", Mul: "MUL", Add: "ADD", nn.Linear: "FULLY_CONNECTED"}
# Views, not ops: the exported model has no RESHAPE (FULLY_CONNECTED reads the 1x1 map).
_VIEWS = (Flatten,)


def _kind(module: nn.Module) -> str | None:
    if isinstance(module, Conv):
        return "DEPTHWISE_CONV_2D" if module.depthwise else "CONV_2D"
    return _KINDS.get(type(module))


@dataclass
class LoggedOp:
    name: str  # module path in the subnet
    kind: str  # the TFLite op it exports to
    live_bytes: int  # int8 activation bytes alive while it runs (16-byte aligned buffers)
    output_shape: tuple[int, ...]
    weight_count: int
    paper_elements: int | None  # input + output + weights (+ residual) for layers with weights


@dataclass
class MemoryLog:
    ops: list[LoggedOp]

    @property
    def profile(self) -> list[int]:
        return [op.live_bytes for op in self.ops]

    @property
    def peak_bytes(self) -> int:
        return max(self.profile, default=0)

    @property
    def paper_peak_elements(self) -> int:
        return max((op.paper_elements for op in self.ops if op.paper_elements is not None), default=0)


def log_memory(net: nn.Module, x: torch.Tensor) -> MemoryLog:
    """Run ``net`` on ``x`` (batch 1) with hooks on every op module; return the live memory."""
    if x.shape[0] != 1:
        raise ValueError("the memory logger models batch 1 (what runs on a microcontroller)")
    trace: list[tuple[str, str, list[torch.Tensor], torch.Tensor, int]] = []
    alias: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id of a view -> (view, viewed)
    hooks = []

    def resolve(t: torch.Tensor) -> torch.Tensor:
        while id(t) in alias:
            t = alias[id(t)][1]
        return t

    for name, module in net.named_modules():
        if isinstance(module, _VIEWS):
            # The view is kept referenced so that its id is not reused while we log.
            hooks.append(module.register_forward_hook(lambda mod, inputs, output: alias.__setitem__(id(output), (output, inputs[0]))))
            continue
        kind = _kind(module)
        if kind is None:
            continue

        def hook(mod, inputs, output, name=name, kind=kind):
            weights = sum(p.numel() for n, p in mod.named_parameters() if n.endswith("weight") and p.dim() > 1)
            trace.append((name, kind, [resolve(t) for t in inputs if isinstance(t, torch.Tensor)], output, weights))

        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            out = net(x)
    finally:
        for h in hooks:
            h.remove()

    # Lifetimes in scopes: scope 0 is before the first op, op i runs in scope i + 1.
    keep: dict[int, torch.Tensor] = {id(x): x}  # holds the tensors so that ids stay unique
    first = {id(x): 0}
    last = {id(x): 0}
    for i, (_, _, inputs, output, _) in enumerate(trace):
        for t in inputs:
            if id(t) in first:
                last[id(t)] = i + 1
        keep[id(output)] = output
        first[id(output)] = last[id(output)] = i + 1
    last[id(out)] = len(trace)

    ops = []
    residual_inputs = _residual_inputs(trace)
    for i, (name, kind, inputs, output, weights) in enumerate(trace):
        scope = i + 1
        live = sum(align_up(keep[t].numel()) for t in first if first[t] <= scope <= last[t])
        paper = None
        if weights:
            paper = sum(t.numel() for t in inputs) + output.numel() + weights
            paper += sum(keep[t].numel() for t in residual_inputs if first[t] < scope < last[t] and t not in {id(u) for u in inputs})
        ops.append(LoggedOp(name, kind, live, tuple(output.shape), weights, paper))
    return MemoryLog(ops)


def _residual_inputs(trace) -> set[int]:
    """Ids of tensors an ADD reads that were made before the op just preceding it."""
    made_at = {id(out): i for i, (_, _, _, out, _) in enumerate(trace)}
    ids = set()
    for i, (_, kind, inputs, _, _) in enumerate(trace):
        if kind == "ADD":
            ids |= {id(t) for t in inputs if made_at.get(id(t), -1) < i - 1}
    return ids


def log_subnet(subnet: Subnet) -> MemoryLog:
    """The memory log of a static subnet at its own input size."""
    spec = subnet.spec
    return log_memory(subnet.eval(), torch.zeros(1, spec.in_channels, *spec.in_size))


def plot_profiles(logs: dict[str, MemoryLog], path, title: str = "", paper: bool = False) -> None:
    """One panel per log: live memory per op (KiB), or the paper's elements per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(logs), figsize=(6 * len(logs), 3.6), sharey=True, squeeze=False)
    for ax, (label, log) in zip(axes[0], logs.items()):
        if paper:
            values = [op.paper_elements / 1e3 for op in log.ops if op.paper_elements is not None]
            unit = "k elements (input + output + weights)"
        else:
            values = [op.live_bytes / 1024 for op in log.ops]
            unit = "live int8 activations (KiB)"
        peak = max(values, default=0)
        ax.bar(range(len(values)), values, width=1.0, color=["#c0392b" if v == peak else "#2e86c1" for v in values])
        ax.axhline(peak, color="#c0392b", lw=0.8, ls="--")
        ax.set_title(f"{label}: peak {peak:,.1f}")
        ax.set_xlabel("layer" if paper else "op (execution order)")
        ax.set_ylabel(unit)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    from toolchain.files import atomic_output

    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)


def figure5(path, resolution: int = 224, in_channels: int = 3, num_classes: int = 1000, paper: bool = False, configs: dict | None = None) -> dict[str, MemoryLog]:
    """The paper's Figure 5: memory per layer of the largest OFA and MOOFA subnets (or the
    given ``{"ofa": config, "moofa": config}``), written as a PNG to ``path``."""
    from moofa.arch.blocks import subnet_spec
    from moofa.arch.catalog import get_layout
    from moofa.arch.space import SearchSpace

    logs = {}
    for name in ("ofa", "moofa"):
        lay = get_layout(name, resolution, in_channels, num_classes)
        config = (configs or {}).get(name) or SearchSpace(lay).max_config()
        logs[f"{name} ({config.resolution}x{config.resolution}x{in_channels})"] = log_subnet(Subnet(subnet_spec(lay, config)))
    plot_profiles(logs, path, title="Memory per layer during a forward pass (Figure 5)", paper=paper)
    return logs
