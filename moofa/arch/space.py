"""Subnet configs and the search space they are drawn from.

A :class:`SubnetConfig` names one subnet of a supernet: the layout it belongs to, the input
resolution, and per stage the kernel size and expand ratio of each active block (so the depth
of a stage is how many blocks it lists). It reads at a glance, in the spirit of timm's block
strings::

    ofa r224 | k3e4 k5e6 | k7e3 k3e3 k3e4 | k5e4 k5e4 | k3e6 k7e6 k3e3 k5e4 | k3e3 k3e3

and as a small JSON object that round-trips exactly::

    {"layout": "ofa", "resolution": 224, "depth": [2, 3, 2, 4, 2],
     "kernel": [[3, 5], ...], "expand": [[4, 6], ...]}

A :class:`SearchSpace` holds a layout's choices and the operators regularized evolution needs
(uniform sampling, mutation, crossover), the fixed-length encoding the accuracy predictor reads,
and CompOFA's coupled mode (Sahni et al., ICLR 2021), where a stage's depth and expand ratio move
together as one "compound" choice.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from toolchain.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from moofa.arch.layouts import Layout

CONFIG_KEYS = ("layout", "resolution", "depth", "kernel", "expand")


def _show_expand(e) -> str:
    return str(int(e)) if float(e).is_integer() else repr(float(e))


def _normalize_expand(value, where: str):
    """Expand ratios are numbers; an integral float becomes an int so that JSON round-trips."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"subnet config: {where} = {value!r} is not a number")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _check_int(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"subnet config: {where} = {value!r} is not an integer")
    return value


@dataclass(frozen=True)
class SubnetConfig:
    """One subnet: ``kernels[s][b]`` and ``expands[s][b]`` for active block ``b`` of stage ``s``."""

    layout: str
    resolution: int
    kernels: tuple[tuple[int, ...], ...]
    expands: tuple[tuple[Any, ...], ...]

    def __post_init__(self):
        if len(self.kernels) != len(self.expands):
            raise InputError(
                f"subnet config: kernel has {len(self.kernels)} stages but expand has {len(self.expands)}"
            )
        for s, (k, e) in enumerate(zip(self.kernels, self.expands)):
            if len(k) != len(e):
                raise InputError(f"subnet config: stage {s} has {len(k)} kernels but {len(e)} expand ratios")

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(k) for k in self.kernels)

    # --- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "layout": self.layout,
            "resolution": self.resolution,
            "depth": list(self.depths),
            "kernel": [list(k) for k in self.kernels],
            "expand": [list(e) for e in self.expands],
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any) -> "SubnetConfig":
        """Build from a parsed JSON object, checking its structure (values are checked by
        :meth:`SearchSpace.validate`)."""
        if not isinstance(data, dict):
            raise InputError(f"subnet config: expected a JSON object, got {type(data).__name__}")
        missing = [k for k in CONFIG_KEYS if k not in data]
        if missing:
            raise InputError(f"subnet config: missing field {missing[0]!r} (fields: {', '.join(CONFIG_KEYS)})")
        unknown = sorted(set(data) - set(CONFIG_KEYS))
        if unknown:
            raise InputError(f"subnet config: unknown field {unknown[0]!r} (fields: {', '.join(CONFIG_KEYS)})")
        if not isinstance(data["layout"], str) or not data["layout"]:
            raise InputError(f"subnet config: layout = {data['layout']!r} is not a layout name")
        resolution = _check_int(data["resolution"], "resolution")
        depth, kernel, expand = data["depth"], data["kernel"], data["expand"]
        for name, value in (("depth", depth), ("kernel", kernel), ("expand", expand)):
            if not isinstance(value, list):
                raise InputError(f"subnet config: {name} must be a list, got {value!r}")
        if not (len(depth) == len(kernel) == len(expand)):
            raise InputError(
                f"subnet config: depth, kernel and expand must list the same number of stages "
                f"(got {len(depth)}, {len(kernel)}, {len(expand)})"
            )
        kernels, expands = [], []
        for s, (d, ks, es) in enumerate(zip(depth, kernel, expand)):
            d = _check_int(d, f"depth[{s}]")
            for name, value in (("kernel", ks), ("expand", es)):
                if not isinstance(value, list):
                    raise InputError(f"subnet config: {name}[{s}] must be a list, got {value!r}")
                if len(value) != d:
                    raise InputError(
                        f"subnet config: {name}[{s}] lists {len(value)} blocks but depth[{s}] = {d}"
                    )
            kernels.append(tuple(_check_int(k, f"kernel[{s}][{b}]") for b, k in enumerate(ks)))
            expands.append(tuple(_normalize_expand(e, f"expand[{s}][{b}]") for b, e in enumerate(es)))
        return cls(data["layout"], resolution, tuple(kernels), tuple(expands))

    @classmethod
    def from_json(cls, text: str) -> "SubnetConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"subnet config: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
        return cls.from_dict(data)

    # --- block string -----------------------------------------------------------------------
    def to_string(self) -> str:
        stages = [" ".join(f"k{k}e{_show_expand(e)}" for k, e in zip(ks, es)) for ks, es in zip(self.kernels, self.expands)]
        return " | ".join([f"{self.layout} r{self.resolution}"] + stages)

    __str__ = to_string

    _HEAD_RE = re.compile(r"^(?P<layout>[A-Za-z0-9_.-]+) r(?P<res>\d+)$")
    _BLOCK_RE = re.compile(r"^k(?P<k>\d+)e(?P<e>\d+(?:\.\d+)?)$")

    @classmethod
    def from_string(cls, text: str) -> "SubnetConfig":
        """Parse :meth:`to_string`'s form: ``"LAYOUT rRES | kKeE kKeE | ..."``."""
        parts = [p.strip() for p in text.strip().split("|")]
        head = cls._HEAD_RE.match(parts[0])
        if not head:
            raise InputError(f"subnet string: {parts[0]!r} should read 'LAYOUT rRESOLUTION', e.g. 'ofa r224'")
        kernels, expands = [], []
        for s, part in enumerate(parts[1:]):
            ks, es = [], []
            for b, token in enumerate(part.split()):
                m = cls._BLOCK_RE.match(token)
                if not m:
                    raise InputError(f"subnet string: stage {s} block {b}: {token!r} should read like 'k5e4'")
                ks.append(int(m["k"]))
                es.append(_normalize_expand(float(m["e"]) if "." in m["e"] else int(m["e"]), f"expand[{s}][{b}]"))
            kernels.append(tuple(ks))
            expands.append(tuple(es))
        return cls(head["layout"], int(head["res"]), tuple(kernels), tuple(expands))


class SearchSpace:
    """The subnets of one layout: choices, sampling, evolution operators and encoding.

    ``resolutions`` are the input resolutions the search may pick (default: the layout's).
    With ``coupled=True`` (CompOFA) a stage's depth and the expand ratio of all its blocks are
    one choice: the i-th depth goes with the i-th expand ratio; kernels stay free per block.
    """

    def __init__(self, layout: "Layout", resolutions=None, coupled: bool = False):
        self.layout = layout
        self.kernel_choices = tuple(layout.kernel_choices)
        self.expand_choices = tuple(layout.expand_choices)
        self.depth_choices = tuple(layout.depth_choices)
        self.resolutions = tuple(resolutions) if resolutions else (layout.resolution,)
        self.coupled = coupled
        self.n_stages = len(layout.stages)
        self.max_depths = tuple(st.max_depth for st in layout.stages)
        if coupled and len(self.depth_choices) != len(self.expand_choices):
            raise ValueError("coupled mode pairs depth and expand choices one to one; their counts differ")
        if max(self.depth_choices) > min(self.max_depths):
            raise ValueError("a depth choice exceeds a stage's number of blocks")

    # --- membership -------------------------------------------------------------------------
    def validate(self, config: SubnetConfig, check_resolution: bool = True) -> SubnetConfig:
        """Return ``config`` if it belongs to this space, else raise InputError naming the field.

        ``check_resolution=False`` accepts any resolution (the supernet runs at any size)."""
        lay = self.layout
        if config.layout != lay.name:
            raise InputError(f"subnet config: layout = {config.layout!r} but this supernet's layout is {lay.name!r}")
        if check_resolution and config.resolution not in self.resolutions:
            raise InputError(
                f"subnet config: resolution = {config.resolution} is not one of {_choices(self.resolutions)}"
            )
        if len(config.kernels) != self.n_stages:
            raise InputError(f"subnet config: depth lists {len(config.kernels)} stages; layout {lay.name!r} has {self.n_stages}")
        for s, (ks, es) in enumerate(zip(config.kernels, config.expands)):
            if len(ks) not in self.depth_choices:
                raise InputError(f"subnet config: depth[{s}] = {len(ks)} is not one of {_choices(self.depth_choices)}")
            for b, (k, e) in enumerate(zip(ks, es)):
                if k not in self.kernel_choices:
                    raise InputError(f"subnet config: kernel[{s}][{b}] = {k} is not one of {_choices(self.kernel_choices)}")
                if e not in self.expand_choices:
                    raise InputError(f"subnet config: expand[{s}][{b}] = {_show_expand(e)} is not one of {_choices(self.expand_choices)}")
            if self.coupled:
                want = self.expand_choices[self.depth_choices.index(len(ks))]
                if any(e != want for e in es):
                    raise InputError(
                        f"subnet config: expand[{s}] = {list(es)} but coupled depth {len(ks)} goes with expand {_show_expand(want)} in every block"
                    )
        return config

    def __contains__(self, config: SubnetConfig) -> bool:
        try:
            self.validate(config)
        except InputError:
            return False
        return True

    def parse(self, text: str) -> SubnetConfig:
        """A config from JSON or a block string, validated against this space."""
        text = text.strip()
        config = SubnetConfig.from_json(text) if text.startswith("{") else SubnetConfig.from_string(text)
        return self.validate(config)

    # --- sampling and evolution ---------------------------------------------------------------
    def _stage(self, rng: random.Random, depth: int | None = None):
        if self.coupled:
            i = rng.randrange(len(self.depth_choices)) if depth is None else self.depth_choices.index(depth)
            d, e = self.depth_choices[i], self.expand_choices[i]
            return tuple(rng.choice(self.kernel_choices) for _ in range(d)), (e,) * d
        d = rng.choice(self.depth_choices) if depth is None else depth
        return (
            tuple(rng.choice(self.kernel_choices) for _ in range(d)),
            tuple(rng.choice(self.expand_choices) for _ in range(d)),
        )

    def sample(self, rng: random.Random | None = None) -> SubnetConfig:
        """A uniformly random subnet (each choice independent and uniform, as OFA samples)."""
        rng = rng or random.Random()
        stages = [self._stage(rng) for _ in range(self.n_stages)]
        return SubnetConfig(
            self.layout.name,
            rng.choice(self.resolutions),
            tuple(k for k, _ in stages),
            tuple(e for _, e in stages),
        )

    def max_config(self, resolution: int | None = None) -> SubnetConfig:
        return self._uniform(max(self.kernel_choices), -1, resolution or max(self.resolutions))

    def min_config(self, resolution: int | None = None) -> SubnetConfig:
        return self._uniform(min(self.kernel_choices), 0, resolution or min(self.resolutions))

    def _uniform(self, k, index, resolution) -> SubnetConfig:
        # Choices are listed ascending (coupled pairs too), so the ends are the extremes.
        d, e = sorted(self.depth_choices)[index], sorted(self.expand_choices)[index]
        return SubnetConfig(self.layout.name, resolution, ((k,) * d,) * self.n_stages, ((e,) * d,) * self.n_stages)

    def mutate(self, config: SubnetConfig, rng: random.Random | None = None, arch_prob: float = 0.1, resolution_prob: float = 0.5) -> SubnetConfig:
        """OFA's mutation: resample the resolution with ``resolution_prob``, every stage depth
        and every block's kernel and expand with ``arch_prob`` (OFA's ``ofa/nas/search_algorithm/evolution.py``: 0.5 and 0.1).
        Blocks a deeper stage reveals are drawn fresh."""
        rng = rng or random.Random()
        resolution = rng.choice(self.resolutions) if rng.random() < resolution_prob else config.resolution
        kernels, expands = [], []
        for ks, es in zip(config.kernels, config.expands):
            ks, es = list(ks), list(es)
            if self.coupled:
                if rng.random() < arch_prob:
                    new_k, new_e = self._stage(rng)
                    ks = (ks + list(new_k))[: len(new_k)]
                    es = list(new_e)
                ks = [rng.choice(self.kernel_choices) if rng.random() < arch_prob else k for k in ks]
            else:
                if rng.random() < arch_prob:
                    d = rng.choice(self.depth_choices)
                    extra_k, extra_e = self._stage(rng, d)
                    ks = (ks + list(extra_k))[:d]
                    es = (es + list(extra_e))[:d]
                ks = [rng.choice(self.kernel_choices) if rng.random() < arch_prob else k for k in ks]
                es = [rng.choice(self.expand_choices) if rng.random() < arch_prob else e for e in es]
            kernels.append(tuple(ks))
            expands.append(tuple(es))
        return SubnetConfig(config.layout, resolution, tuple(kernels), tuple(expands))

    def crossover(self, a: SubnetConfig, b: SubnetConfig, rng: random.Random | None = None) -> SubnetConfig:
        """OFA's crossover: every gene from either parent with equal chance. A stage's depth
        comes from one parent; each of its blocks from a parent that has that block."""
        rng = rng or random.Random()
        resolution = rng.choice((a.resolution, b.resolution))
        kernels, expands = [], []
        for s in range(self.n_stages):
            parents = (a, b)
            depth = rng.choice((a.depths[s], b.depths[s]))
            ks, es = [], []
            for blk in range(depth):
                have = [p for p in parents if p.depths[s] > blk]
                ks.append(rng.choice(have).kernels[s][blk])
                if not self.coupled:
                    es.append(rng.choice(have).expands[s][blk])
            if self.coupled:
                es = [self.expand_choices[self.depth_choices.index(depth)]] * depth
            kernels.append(tuple(ks))
            expands.append(tuple(es))
        return SubnetConfig(a.layout, resolution, tuple(kernels), tuple(expands))

    # --- encoding for the accuracy predictor --------------------------------------------------
    @property
    def encoding_length(self) -> int:
        slots = sum(self.max_depths)
        return slots * (len(self.kernel_choices) + len(self.expand_choices)) + len(self.resolutions)

    def encode(self, config: SubnetConfig) -> np.ndarray:
        """Fixed-length one-hot vector (OFA's arch encoder): per block slot a one-hot kernel and a
        one-hot expand ratio (all zeros where the block is inactive), then a one-hot resolution."""
        nk, ne = len(self.kernel_choices), len(self.expand_choices)
        vec = np.zeros(self.encoding_length, dtype=np.float32)
        pos = 0
        for s, max_d in enumerate(self.max_depths):
            for blk in range(max_d):
                if blk < config.depths[s]:
                    vec[pos + self.kernel_choices.index(config.kernels[s][blk])] = 1
                    vec[pos + nk + self.expand_choices.index(config.expands[s][blk])] = 1
                pos += nk + ne
        vec[pos + self.resolutions.index(config.resolution)] = 1
        return vec

    def encode_many(self, configs) -> np.ndarray:
        return np.stack([self.encode(c) for c in configs]) if configs else np.zeros((0, self.encoding_length), np.float32)

    def size(self) -> int:
        """How many distinct subnets the space holds."""
        nk, ne = len(self.kernel_choices), len(self.expand_choices)
        per_stage = 0
        for i, d in enumerate(self.depth_choices):
            per_stage += nk**d if self.coupled else (nk * ne) ** d
        return per_stage**self.n_stages * len(self.resolutions)


def _choices(values) -> str:
    return ", ".join(_show_expand(v) if isinstance(v, float) else str(v) for v in values)
