"""Model-agnostic deployment toolchain: graph IR, arena planner, .tflite reader, verifier.

Nothing here imports :mod:`moofa`; ``moofa verify`` serves any TFLite model through this package.
"""
