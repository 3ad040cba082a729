"""Layouts are data: the widths, strides, activations and squeeze-excite of a supernet.

Two layouts exist:

- ``ofa``: OFA's MobileNetV3 supernet (Cai et al., ICLR 2020), typed in from the
  paper and its released supernet: first conv 16, first block 16, stages 24/40/80/112/160,
  final expand 960, feature mix 1280; expand ratios {3, 4, 6}.
- ``moofa``: the memory-balanced layout of the MOOFA paper (Girard et al.), *solved*: starting
  from seed widths (first stage 24; under the ``paper`` definition also first conv 3 and first
  block 8, the published stem; under ``sram`` the stem is solved too), each following stage gets the
  widest channel count whose per-stage memory does not exceed the memory before it, so that
  memory stays constant across the network; expand ratios {2, 3, 4}.

The solver that makes the ``moofa`` widths is :mod:`moofa.arch.balance`; the names are looked up
in :mod:`moofa.arch.catalog`. A :class:`Layout` round-trips through :meth:`Layout.to_dict` /
:meth:`Layout.from_dict`, which is how a checkpoint stores the layout it was trained with and
loads it back unchanged whatever the solver does today.

Small inputs (Fashion-MNIST 28×28 or 32×32, CIFAR 32×32) keep the layout's stride schedule but
drop stride-2 steps from the end until the last feature map is at least ``MIN_FINAL_SIZE``
pixels wide, so that the deepest depthwise kernels still see neighbours.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from moofa.arch.blocks import same_output_size
from toolchain.errors import InputError

MIN_FINAL_SIZE = 3
MEMORY_DEFINITIONS = ("paper", "sram")
REFERENCE_RESOLUTION = 224

# OFA MobileNetV3 (Cai et al., ICLR 2020, Table/Fig. of the MobileNetV3 supernet).
OFA_FIRST_CONV = (16, 2, "h_swish")
OFA_FIRST_BLOCK = (16, 1, "relu", False)
OFA_STAGES = (  # width, stride, activation, squeeze-excite
    (24, 2, "relu", False),
    (40, 2, "relu", True),
    (80, 2, "h_swish", False),
    (112, 1, "h_swish", True),
    (160, 2, "h_swish", True),
)
OFA_FINAL_EXPAND, OFA_FEATURE_MIX = 960, 1280
OFA_KERNELS, OFA_EXPANDS, OFA_DEPTHS = (3, 5, 7), (3, 4, 6), (2, 3, 4)

# MOOFA (Girard et al.; seed widths and the schedule as the authors' released code has them).
MOOFA_SEED_WIDTHS = (3, 8, 24)  # first conv, first block, first stage
MOOFA_FIRST_CONV_STRIDE, MOOFA_FIRST_CONV_ACT = 2, "h_swish"
MOOFA_FIRST_BLOCK = (1, "relu", False)  # stride, activation, squeeze-excite
MOOFA_STAGES = ((2, "h_swish", False), (2, "h_swish", True), (2, "h_swish", True), (2, "relu", False), (2, "h_swish", True))
MOOFA_KERNELS, MOOFA_EXPANDS, MOOFA_DEPTHS = (3, 5, 7), (2, 3, 4), (2, 3, 4)
MAX_DEPTH = 4


# What a stored layout may say (a checkpoint is data from elsewhere): generous for any
# microcontroller network, small enough that building the supernet cannot exhaust memory.
LIMITS = {"resolution": (8, 1024), "in_channels": (1, 16), "num_classes": (1, 100_000), "width": (1, 8192),
          "kernel": (1, 11), "expand": (0.01, 16), "stages": (1, 16)}


@dataclass(frozen=True)
class StageSpec:
    width: int
    stride: int
    act: str
    se: bool
    max_depth: int = MAX_DEPTH


@dataclass(frozen=True)
class Layout:
    """A supernet's fixed shape; its elastic choices are the ``*_choices``."""

    name: str
    resolution: int  # the largest input resolution the layout was made for
    in_channels: int
    num_classes: int
    first_conv_width: int
    first_conv_stride: int
    first_conv_act: str
    first_block_width: int
    first_block_stride: int
    first_block_act: str
    first_block_se: bool
    stages: tuple[StageSpec, ...]
    final_expand_width: int
    feature_mix_width: int
    kernel_choices: tuple[int, ...]
    expand_choices: tuple
    depth_choices: tuple[int, ...]
    memory: str = "sram"  # the definition stage_memory is in
    stage_memory: tuple = field(default=(), compare=False)
    notes: str = field(default="", compare=False)

    @property
    def widths(self) -> list[int]:
        """First conv, first block, each stage, final expand, feature mix."""
        return [self.first_conv_width, self.first_block_width, *(s.width for s in self.stages), self.final_expand_width, self.feature_mix_width]

    @property
    def strides(self) -> list[int]:
        """First conv, first block, each stage."""
        return [self.first_conv_stride, self.first_block_stride, *(s.stride for s in self.stages)]

    @property
    def memory_unit(self) -> str:
        return "elements" if self.memory == "paper" else "bytes"

    def stage_sizes(self, resolution: int | None = None) -> list[int]:
        """Spatial size each stage runs at (its blocks' output size)."""
        size = same_output_size(same_output_size(resolution or self.resolution, self.first_conv_stride), self.first_block_stride)
        sizes = []
        for st in self.stages:
            size = same_output_size(size, st.stride)
            sizes.append(size)
        return sizes

    def to_dict(self) -> dict:
        sizes = self.stage_sizes()
        return {
            "name": self.name,
            "resolution": self.resolution,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "widths": self.widths,
            "strides": self.strides,
            "first_conv": {"width": self.first_conv_width, "stride": self.first_conv_stride, "act": self.first_conv_act},
            "first_block": {"width": self.first_block_width, "stride": self.first_block_stride, "act": self.first_block_act, "se": self.first_block_se},
            "stages": [
                {**asdict(st), "size": size, "memory": mem}
                for st, size, mem in zip(self.stages, sizes, self.stage_memory or [None] * len(self.stages))
            ],
            "final_expand_width": self.final_expand_width,
            "feature_mix_width": self.feature_mix_width,
            "kernel_choices": list(self.kernel_choices),
            "expand_choices": list(self.expand_choices),
            "depth_choices": list(self.depth_choices),
            "memory": self.memory,
            "memory_unit": self.memory_unit,
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Layout":
        """The layout :meth:`to_dict` wrote, exactly (checked: the sizes stay within :data:`LIMITS`)."""
        try:
            first_conv, first_block = d["first_conv"], d["first_block"]
            stages = tuple(StageSpec(int(s["width"]), int(s["stride"]), str(s["act"]), bool(s["se"]), int(s.get("max_depth", MAX_DEPTH)))
                           for s in d["stages"])
            lay = cls(
                name=str(d["name"]), resolution=int(d["resolution"]), in_channels=int(d["in_channels"]),
                num_classes=int(d["num_classes"]),
                first_conv_width=int(first_conv["width"]), first_conv_stride=int(first_conv["stride"]),
                first_conv_act=str(first_conv["act"]),
                first_block_width=int(first_block["width"]), first_block_stride=int(first_block["stride"]),
                first_block_act=str(first_block["act"]), first_block_se=bool(first_block["se"]),
                stages=stages, final_expand_width=int(d["final_expand_width"]), feature_mix_width=int(d["feature_mix_width"]),
                kernel_choices=tuple(int(k) for k in d["kernel_choices"]),
                expand_choices=tuple(d["expand_choices"]),
                depth_choices=tuple(int(k) for k in d["depth_choices"]),
                memory=str(d.get("memory", "sram")),
                stage_memory=tuple(s.get("memory") for s in d["stages"]) if all(s.get("memory") is not None for s in d["stages"]) else (),
                notes=str(d.get("notes", "")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"stored layout is malformed ({type(e).__name__}: {e})") from None
        lay.check_limits()
        return lay

    def check_limits(self) -> None:
        """Refuse a layout whose sizes no microcontroller model has (and that would take gigabytes to build)."""
        def bad(what, value, lo, hi):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise InputError(f"stored layout: {what} {value!r} is outside {lo}..{hi}")
        bad("resolution", self.resolution, *LIMITS["resolution"])
        bad("in_channels", self.in_channels, *LIMITS["in_channels"])
        bad("num_classes", self.num_classes, *LIMITS["num_classes"])
        for w in self.widths:
            bad("width", w, *LIMITS["width"])
        for s in self.strides:
            bad("stride", s, 1, 2)
        for k in self.kernel_choices:
            bad("kernel choice", k, 1, LIMITS["kernel"][1])
        for e in self.expand_choices:
            bad("expand choice", e, 0.01, LIMITS["expand"][1])
        for dep in self.depth_choices:
            bad("depth choice", dep, 1, MAX_DEPTH)
        if not self.stages or len(self.stages) > LIMITS["stages"][1]:
            raise InputError(f"stored layout: {len(self.stages)} stages (expected 1..{LIMITS['stages'][1]})")



# --- stride schedule -----------------------------------------------------------------------------
def adapt_strides(strides: list[int], resolution: int, min_final: int = MIN_FINAL_SIZE) -> list[int]:
    """Drop stride-2 steps from the end until the last feature map is >= ``min_final`` wide."""
    strides = list(strides)

    def final(ss):
        size = resolution
        for s in ss:
            size = same_output_size(size, s)
        return size

    i = len(strides) - 1
    while final(strides) < min_final and i >= 0:
        if strides[i] > 1:
            strides[i] = 1
        i -= 1
    return strides



def check_inputs(resolution, in_channels, memory=None):
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 8:
        raise InputError(f"layout: resolution {resolution!r} must be an integer >= 8")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or not 1 <= in_channels <= 16:
        raise InputError(f"layout: channels {in_channels!r} must be an integer from 1 to 16")
    if memory is not None and memory not in MEMORY_DEFINITIONS:
        raise InputError(f"layout: memory definition {memory!r} is not one of {', '.join(MEMORY_DEFINITIONS)}")
