"""Shared fixtures: the corpus of real TFLite models (see ``corpus.py``), built once per session
and cached on disk across sessions."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Make ``import corpus`` work whatever pytest's import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus as _corpus  # noqa: E402
from toolchain._tf import load_triton_before_tensorflow  # noqa: E402

# Tests load both torch and TensorFlow; Triton must come first or the process crashes.
load_triton_before_tensorflow()


@pytest.fixture(scope="session")
def corpus() -> dict[str, Path]:
    """Model name -> path of its .tflite (every model in ``corpus.CORPUS``)."""
    return _corpus.build_all(_corpus.cache_dir())


@pytest.fixture(scope="session")
def bad_inputs() -> dict[str, Path]:
    """Kind -> path of a file that is not a runnable model (see ``corpus.bad_inputs``)."""
    return _corpus.bad_inputs(_corpus.cache_dir())
