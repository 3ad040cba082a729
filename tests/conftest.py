"""Shared fixtures: the corpus of real TFLite models (see ``corpus.py``), built once per session
and cached on disk across sessions."""

from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

# Make ``import corpus`` work whatever pytest's import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus as _corpus  # noqa: E402

from toolchain.runtime.tf import load_triton_before_tensorflow  # noqa: E402

# Tests load both torch and TensorFlow; Triton must come first or the process crashes.
load_triton_before_tensorflow()


TINY_PRESET = """
name = "tiny"
dataset = "idx"
resolutions = [12, 16]
batch_size = 16
val_size = 32
bn_recal_images = 32
checkpoint_every_s = 0
[[phase]]
name = "teacher"
epochs = 0.5
lr = 0.05
distill = false
[[phase]]
name = "kernel"
epochs = 0.5
lr = 0.01
kernels = "all"
[[phase]]
name = "depth-1"
epochs = 0.5
lr = 0.01
kernels = "all"
depths = "top2"
subnets_per_step = 2
[[phase]]
name = "expand-1"
epochs = 0.5
lr = 0.01
kernels = "all"
depths = "all"
expands = "all"
subnets_per_step = 2
reorganize = 0
"""


def _idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A 160-image, 16x16 IDX dataset whose class is learnable from brightness, and a preset
    that runs every phase in a few steps: (data folder, preset path)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for split, n in (("train", 160), ("t10k", 48)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 60, (n, 16, 16)) + labels[:, None, None] * 18  # learnable: brightness = class
        _idx(root / f"{split}-images-idx3-ubyte.gz", images)
        _idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    preset_path = tmp_path_factory.mktemp("preset") / "tiny.toml"
    preset_path.write_text(TINY_PRESET)
    return root, preset_path


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for the module: the build machine's two cores are shared, and one thread
    is several times faster than two there for these small networks."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def corpus() -> dict[str, Path]:
    """Model name -> path of its .tflite (every model in ``corpus.CORPUS``)."""
    return _corpus.build_all(_corpus.cache_dir())


@pytest.fixture(scope="session")
def bad_inputs() -> dict[str, Path]:
    """Kind -> path of a file that is not a runnable model (see ``corpus.bad_inputs``)."""
    return _corpus.bad_inputs(_corpus.cache_dir())
