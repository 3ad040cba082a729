"""Import TensorFlow quietly: its C++ and Python logging would drown our one-line messages."""

from __future__ import annotations

import contextlib
import io
import os
import warnings


def tf_quiet():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import logging

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
