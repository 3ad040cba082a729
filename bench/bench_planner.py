"""Arena planner throughput: how fast ``plan_graph`` and ``estimate_arena`` run.

Two kinds of input:

- synthetic MobileNet-like int8 chains (stem conv, inverted-residual blocks of 1x1 expand,
  3x3 depthwise, 1x1 project and a residual ADD, stride-2 blocks without the ADD, then
  MEAN -> FULLY_CONNECTED -> SOFTMAX), built directly with :mod:`toolchain.ir.graph` at a chosen
  op count, to show how the planner scales;
- the 11 corpus models of ``tests/corpus.py`` (built and cached on first use), read from their
  ``.tflite`` files, to show what ``moofa verify`` pays per model.

Each figure is the mean time per call over as many calls as fit in a round, after one warm-up
call; ``--min-seconds`` (default 0.3 s) is split into 3 rounds and the fastest round is kept, so
that another process briefly taking the CPU does not count as planner time.

    python bench/bench_planner.py [--sizes 20,60,200,600] [--min-seconds 0.3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))

from toolchain.ir.graph import Graph, Tensor  # noqa: E402
from toolchain.memory.estimate import estimate_arena  # noqa: E402
from toolchain.memory.planner import arena_buffers, plan_graph  # noqa: E402
from toolchain.tflite.reader import read_model  # noqa: E402

# Synthetic network shape: input resolution and the channel plan of MobileNetV2-ish stages.
INPUT_RESOLUTION = 96
STEM_CHANNELS = 16
EXPAND_RATIO = 4
BLOCKS_PER_STAGE = 4  # the first block of a stage has stride 2 (while the resolution allows)
MIN_RESOLUTION = 3


class _Chain:
    """Appends int8 ops to a graph the way the converter writes them (weights and int32 biases
    as constants with per-channel quantization)."""

    def __init__(self, name: str, resolution: int, channels: int):
        self.graph = Graph([], [], [], [], name)
        self.x = self._activation((1, resolution, resolution, channels))
        self.graph.inputs.append(self.x)

    def _activation(self, shape) -> int:
        return self.graph.add_tensor(Tensor(f"t{len(self.graph.tensors)}", tuple(shape), "int8", quant_channels=1))

    def _constant(self, shape, dtype="int8", channels=1) -> int:
        return self.graph.add_tensor(
            Tensor(f"c{len(self.graph.tensors)}", tuple(shape), dtype, is_constant=True, quant_channels=channels))

    @property
    def shape(self):
        return self.graph.tensors[self.x].shape

    def conv(self, out_channels: int, kernel: int = 1, stride: int = 1, depthwise: bool = False) -> int:
        _, h, w, c = self.shape
        out_channels = c if depthwise else out_channels
        weights = self._constant((1, kernel, kernel, c) if depthwise else (out_channels, kernel, kernel, c),
                                 channels=out_channels)
        bias = self._constant((out_channels,), "int32", out_channels)
        out = self._activation((1, -(-h // stride), -(-w // stride), out_channels))
        kind = "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"
        self.graph.add_op(kind, (self.x, weights, bias), (out,), stride=(stride, stride), padding="SAME")
        self.x = out
        return out

    def add(self, other: int) -> None:
        out = self._activation(self.shape)
        self.graph.add_op("ADD", (self.x, other), (out,))
        self.x = out

    def head(self, classes: int = 10) -> None:
        _, _, _, c = self.shape
        axes = self._constant((2,), "int32", 0)
        pooled = self._activation((1, c))
        self.graph.add_op("MEAN", (self.x, axes), (pooled,))
        self.x = pooled
        weights, bias = self._constant((classes, c)), self._constant((classes,), "int32")
        logits = self._activation((1, classes))
        self.graph.add_op("FULLY_CONNECTED", (self.x, weights, bias), (logits,))
        probs = self._activation((1, classes))
        self.graph.add_op("SOFTMAX", (logits,), (probs,))
        self.graph.outputs.append(probs)


def mobilenet_like(num_ops: int) -> Graph:
    """A MobileNet-like chain with residuals of exactly ``num_ops`` ops (at least 5)."""
    chain = _Chain(f"mobilenet_like_{num_ops}", INPUT_RESOLUTION, 3)
    chain.conv(STEM_CHANNELS, kernel=3, stride=2)
    head_ops = 3
    block = 0
    while True:
        left = num_ops - head_ops - len(chain.graph.ops)
        _, res, _, c = chain.shape
        downsample = block % BLOCKS_PER_STAGE == 0 and res // 2 >= MIN_RESOLUTION
        if left >= 4 and not downsample:
            skip = chain.x
            chain.conv(c * EXPAND_RATIO)
            chain.conv(0, kernel=3, depthwise=True)
            chain.conv(c)
            chain.add(skip)
        elif left >= 3:
            chain.conv(c * EXPAND_RATIO)
            chain.conv(0, kernel=3, stride=2 if downsample else 1, depthwise=True)
            chain.conv(min(c * 2, 320) if downsample else c)
        elif left > 0:
            chain.conv(c)  # fill up to the exact op count with 1x1 convs
            continue
        else:
            break
        block += 1
    chain.head()
    chain.graph.check()
    return chain.graph


ROUNDS = 3  # the budget is split in rounds and the fastest round kept: the build machine is shared


def seconds_per_call(fn, min_seconds: float) -> float:
    """Mean seconds per call over the fastest of ``ROUNDS`` rounds of ``min_seconds / ROUNDS``."""
    fn()  # warm-up
    best = float("inf")
    for _ in range(ROUNDS):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds / ROUNDS:
                break
        best = min(best, elapsed / calls)
    return best


def bench(name: str, graph: Graph, min_seconds: float, path: Path | None = None) -> dict:
    n_buffers = len(arena_buffers(graph))
    plan_s = seconds_per_call(lambda: plan_graph(graph), min_seconds)
    estimate_s = seconds_per_call(lambda: estimate_arena(graph), min_seconds)
    read_s = seconds_per_call(lambda: read_model(path), min_seconds) if path else None
    return {
        "graph": name,
        "ops": len(graph.ops),
        "tensors": len(graph.tensors),
        "buffers": n_buffers,
        "plans_per_s": 1 / plan_s,
        "us_per_plan": plan_s * 1e6,
        "us_per_buffer": plan_s * 1e6 / max(n_buffers, 1),
        "estimates_per_s": 1 / estimate_s,
        "read_ms": read_s * 1e3 if read_s else None,
        "head_bytes": plan_graph(graph).head_bytes,
    }


def format_table(rows: list[dict]) -> str:
    header = ("graph", "ops", "buffers", "plan_graph plans/s", "µs/plan", "µs/buffer",
              "estimate_arena estimates/s", "read .tflite ms", "head B")
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for r in rows:
        cells = (r["graph"], r["ops"], r["buffers"], f"{r['plans_per_s']:,.0f}", f"{r['us_per_plan']:,.0f}",
                 f"{r['us_per_buffer']:.1f}", f"{r['estimates_per_s']:,.0f}",
                 "—" if r["read_ms"] is None else f"{r['read_ms']:.2f}", f"{r['head_bytes']:,}")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20,60,200,600", help="op counts of the synthetic chains")
    parser.add_argument("--min-seconds", type=float, default=0.3, help="time spent per figure")
    parser.add_argument("--no-corpus", action="store_true", help="synthetic graphs only (no TensorFlow)")
    args = parser.parse_args(argv)

    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        graph = mobilenet_like(size)
        rows.append(bench(graph.name, graph, args.min_seconds))
    if not args.no_corpus:
        import corpus

        for name, path in corpus.build_all(corpus.cache_dir()).items():
            rows.append(bench(name, read_model(path), args.min_seconds, path))
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
