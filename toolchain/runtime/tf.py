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
    (seconds): only for a process that never imports torch, such as the ONNX conversion child."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import logging

    if "tensorflow" not in sys.modules and load_triton:
        load_triton_before_tensorflow()

    with _silenced_fd(2):  # the oneDNN notice some CPUs get at import: not our line to print
        import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
    return tf


def quietly(fn):
    """Run ``fn`` with Python warnings, stdout banners (Keras' export messages) and the C++
    converter's own lines on file descriptor 2 ("fully_quantize: 0, inference_type: 6, ...")
    silenced. Errors still arrive as Python exceptions with their messages."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _silenced_fd(2):
        warnings.simplefilter("ignore")
        return fn()


@contextlib.contextmanager
def _silenced_fd(fd: int):
    try:
        sys.stderr.flush()
        saved = os.dup(fd)
    except (OSError, ValueError, AttributeError):
        yield  # no such descriptor (an embedding host): nothing to silence
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)
