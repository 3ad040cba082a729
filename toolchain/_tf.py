"""Import TensorFlow quietly: its C++ and Python logging would drown our one-line messages."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings


def load_triton_before_tensorflow() -> None:
    """Load torch's compiler stack (and Triton's LLVM) before TensorFlow's.

    With torch 2.14 + tensorflow 2.21 in one process, importing Triton *after* TensorFlow crashes
    the process (a segmentation fault in Triton's native module: the two bundle clashing LLVM
    builds); the other order works. torch imports Triton lazily (``torch._dynamo``, e.g. on an
    optimizer's first step), so whoever may use both imports it first, here.
    """
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        import torch._dynamo  # noqa: F401


def tf_quiet(load_triton: bool = True):
    """TensorFlow, imported quietly. ``load_triton=False`` skips loading torch's compiler first
    (5 s): only for a process that never imports torch, such as the ONNX conversion child."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import logging

    if "tensorflow" not in sys.modules and load_triton:
        load_triton_before_tensorflow()

    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
    return tf


def quietly(fn):
    """Run ``fn`` with Python warnings and stdout banners (Keras' export messages) silenced."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return fn()
