"""The graph IR shared by every part of moofa.

A :class:`Graph` is what the memory model needs to know about a network, and no more:
tensors (shape, element type, whether their bytes live in flash) and ops (kind, input and
output tensor indices, a few attributes), in execution order. It is built from a ``.tflite``
file (:mod:`toolchain.tflite.reader`) or analytically from a subnet config (``moofa``), and
both must give the same numbers.

Op kinds are TFLite builtin operator names (``"CONV_2D"``, ``"DEPTHWISE_CONV_2D"`` ...) so that
the two sources agree without a translation table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# Bytes per element of every tensor type in the LiteRT schema (``TensorType``), as TFLM sizes it
# when it plans the arena: tflite-micro ``memory_helpers.cc`` (``TfLiteTypeSizeOf``). INT4 is one
# byte per element there (unpacked in the arena), RESOURCE an int32 handle.
DTYPE_BYTES: dict[str, int] = {
    "int8": 1,
    "uint8": 1,
    "bool": 1,
    "int4": 1,
    "int16": 2,
    "uint16": 2,
    "float16": 2,
    "bfloat16": 2,
    "int32": 4,
    "uint32": 4,
    "float32": 4,
    "resource": 4,
    "int64": 8,
    "uint64": 8,
    "float64": 8,
    "complex64": 8,
    "complex128": 16,
    # Types TFLM reads (flatbuffer_conversions.cc ConvertTensorType) but cannot size:
    # TfLiteTypeSizeOf fails for them, so AllocateTensors fails on any model that has one
    # (coverage.tflm_refusals says so). The figures are the element's storage, or 1 where it has
    # none (a string's bytes are its data; a variant is a runtime object).
    "string": 1,
    "variant": 1,
    "int2": 1,
    "uint4": 1,
    "float8_e4m3fn": 1,
    "float8_e5m2": 1,
}

#: The tensor types TFLM cannot size (``TfLiteTypeSizeOf`` has no case for them).
TFLM_UNSIZED_DTYPES = frozenset({"string", "variant", "int2", "uint4", "float8_e4m3fn", "float8_e5m2"})


@dataclass(frozen=True)
class Tensor:
    """One tensor of the graph.

    ``is_constant`` tensors carry their data in the model (flash) and take no arena space;
    ``is_variable`` tensors are state that TFLM allocates in the persistent tail.
    ``quant_channels`` is the number of (scale, zero point) pairs of its quantization: 0 for a
    float tensor, 1 for per-tensor, C for per-channel weights.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    is_constant: bool = False
    is_variable: bool = False
    quant_channels: int = 0
    scale: float | None = None  # first (or only) quantization scale
    zero_point: int | None = None

    @property
    def element_count(self) -> int:
        return math.prod(self.shape) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.element_count * DTYPE_BYTES[self.dtype]


@dataclass(frozen=True)
class Op:
    """One operator: ``inputs`` and ``outputs`` are tensor indices (-1: optional input absent)."""

    kind: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    attrs: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Graph:
    """Tensors and ops in execution order, plus the graph's own input and output tensors.

    ``offline_offsets`` is the arena plan a model may carry (TFLM's ``OfflineMemoryAllocation``
    metadata): one offset per tensor, -1 where TFLM plans online; ``None`` when absent.
    """

    tensors: list[Tensor]
    ops: list[Op]
    inputs: list[int]
    outputs: list[int]
    name: str = "graph"
    offline_offsets: list[int] | None = None
    # The model's other subgraphs (control flow: IF's branches, WHILE's condition and body,
    # CALL_ONCE's init), read only where asked (``parse_model(..., control_flow=True)``, what
    # `moofa verify` does). The memory model plans this graph alone, so figures are approximate.
    subgraphs: list[Graph] = field(default_factory=list)

    def add_tensor(self, tensor: Tensor) -> int:
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def add_op(self, kind: str, inputs, outputs, **attrs) -> Op:
        op = Op(kind, tuple(inputs), tuple(outputs), attrs)
        self.ops.append(op)
        return op

    @property
    def op_kinds(self) -> list[str]:
        """Distinct op kinds in first-use order (what an op resolver must register)."""
        seen: dict[str, None] = {}
        for op in self.ops:
            seen.setdefault(op.kind, None)
        return list(seen)

    def constant_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors if t.is_constant)

    def check(self) -> None:
        """Raise ValueError if an op refers to a tensor that does not exist."""
        n = len(self.tensors)
        for i, op in enumerate(self.ops):
            for t in op.inputs + op.outputs:
                if t >= n or t < -1:
                    raise ValueError(f"op {i} ({op.kind}) refers to tensor {t}; graph has {n}")
        for t in self.inputs + self.outputs:
            if not 0 <= t < n:
                raise ValueError(f"graph input/output {t} out of range; graph has {n} tensors")
