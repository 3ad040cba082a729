"""Where the per-op tail figures in ``toolchain/memory/persistent.py`` come from, reproducibly.

Each model below is a tiny TFLite file built the ordinary way (Keras or ``tf.function`` +
``tf.lite.TFLiteConverter``; full int8 with int8 input/output unless its builder says otherwise)
that isolates one op kind, or repeats it three times so that the alignment padding between
consecutive allocations shows. Every model is run once on the real TFLM interpreter
(:func:`toolchain.runtime.tflm.measure`, the host build's recording allocator) and compared with
:func:`toolchain.memory.estimate.estimate_arena`. The script exits 1 if any head or tail differs.

Deriving a figure for a new op kind: add a builder, run ``--only NAME``, and read the
``PB - ptrs`` column: the 'Persistent buffer data' bytes TFLM was asked for, minus the graph's
input and output pointer arrays (8 bytes per tensor on the 64-bit host). What is left is the
kernels' ``OpData`` (``Init``) plus any per-channel multiplier/shift arrays (``Prepare``, 2 x 4
bytes per output channel for CONV_2D, DEPTHWISE_CONV_2D and int8 FULLY_CONNECTED); the builtin
options size is the rest of the tail once the prefix and the structs are accounted for.

Models are cached under ``<repo>/.cache/calibration-<hash>``; the hash covers this file's text
and the TensorFlow version (another converter writes other files), so editing a builder
rebuilds everything.

    python bench/calibrate_tail.py [--only NAME[,NAME...]] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import io
import json
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is first imported

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from toolchain.files import write_atomically  # noqa: E402
from toolchain.memory.estimate import estimate_arena  # noqa: E402
from toolchain.runtime.tflm import measure  # noqa: E402
from toolchain.tflite.reader import parse_model  # noqa: E402

HOST_POINTER_BYTES = 8  # the tflite-micro package is a 64-bit host build
CALIBRATION_SAMPLES = 8  # representative inputs for the int8 activation ranges


def _tf():
    import tensorflow as tf
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)
    tf.get_logger().setLevel("ERROR")
    return tf


# ----------------------------------------------------------------------------------------------
# What a builder returns, and how it is converted


@dataclass
class Traced:
    """A ``tf.function`` body and its batch-1 float32 input shapes."""

    fn: Callable
    input_shapes: list[tuple[int, ...]]
    input_dtypes: tuple[str, ...] = ()  # per input, "float32" (the default) or "int32" (indices)
    # Applied to the converted flatbuffer: for ops the converter never emits (EMBEDDING_LOOKUP).
    rewrite: Callable[[bytes], bytes] | None = None
    # Handed to the converter with the function (from_concrete_functions' trackable_obj): it then
    # converts through a SavedModel, which keeps the functions' "api_implements" attributes that
    # fuse a tf_keras LSTM into UNIDIRECTIONAL_SEQUENCE_LSTM (without it: a WHILE loop).
    trackable: object | None = None


@dataclass(frozen=True)
class Quantization:
    int8: bool = True  # full-integer int8 ops; False: a plain float32 model
    int8_io: bool = True  # int8 input/output tensors; False: float32 I/O around QUANTIZE/DEQUANTIZE
    int16: bool = False  # 16x8: int16 activations and I/O, int8 weights (with int8 True)


FULL_INT8 = Quantization()
FLOAT32 = Quantization(int8=False, int8_io=False)
INT8_FLOAT_IO = Quantization(int8=True, int8_io=False)
INT16X8 = Quantization(int16=True)

MODELS: dict[str, tuple[Callable[[], object], Quantization]] = {}

#: Models measured on the host only (bench/bench_board_arena.py and tests/test_board_arena.py skip
#: them): on the Cortex-M runner AllocateTensors succeeds, and firmware's arena_used_bytes() equals
#: the prediction, but the runner's smallest-arena search then hard-faults inside TFLM: when the
#: arena runs out inside these kernels' Prepare (BATCH_MATMUL with a constant operand, int8
#: EMBEDDING_LOOKUP), they return without freeing their temporary tensors, and TFLM's next
#: ResetTempAllocations fails ("All temp buffers must be freed"). Float SVDF and int8 LOG_SOFTMAX
#: fault too, with no message.
HOST_ONLY: set[str] = set()

#: The same, on one kernel library's build only: kernel library -> models its runner faults on.
#: The integer UNIDIRECTIONAL_SEQUENCE_LSTMs lstm, lstm_tm, lstm_16x8 and lstm_tm_16x8 on the
#: CMSIS-NN build: firmware's arena_used_bytes equals the prediction (head + tail), then the
#: smallest-arena search faults ("Number of allocated temp buffers: 6 ... All temp buffers must be
#: freed"), so the head and tail are not seen apart (lstm_last, int8 too, runs through). On the
#: reference build they run.
FAULTS_ON: dict[str, set[str]] = {}


def calibration_model(quantization: Quantization = FULL_INT8, host_only: bool = False, faults_on: tuple[str, ...] = ()):
    """Register a builder under its function name. A builder returns a Keras model or a Traced."""

    def register(builder):
        MODELS[builder.__name__] = (builder, quantization)
        if host_only:
            HOST_ONLY.add(builder.__name__)
        for library in faults_on:
            FAULTS_ON.setdefault(library, set()).add(builder.__name__)
        return builder

    return register


def _convert(model, quantization: Quantization) -> bytes:
    if isinstance(model, bytes):  # assembled with the schema, for ops no TensorFlow op converts to
        return model
    tf = _tf()
    if isinstance(model, Traced):
        dtypes = model.input_dtypes or ("float32",) * len(model.input_shapes)
        specs = [tf.TensorSpec(shape, dtype) for shape, dtype in zip(model.input_shapes, dtypes)]
        concrete = tf.function(model.fn, input_signature=specs).get_concrete_function()
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model.trackable)
        shapes = dict(enumerate(model.input_shapes))
        integer = {k for k, dtype in enumerate(dtypes) if dtype == "int32"}
    else:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        # Fed by name: the converted model does not keep Keras' input order.
        shapes = {x.name: (1,) + tuple(x.shape[1:]) for x in model.inputs}
        integer = set()
    if quantization.int8:
        def representative_dataset():
            rng = np.random.default_rng(0)
            for _ in range(CALIBRATION_SAMPLES):
                # Index inputs get indices 0..3 (every lookup table below has at least four rows).
                sample = {key: rng.integers(0, 4, shape).astype(np.int32) if key in integer
                          else rng.random(shape).astype(np.float32) for key, shape in shapes.items()}
                yield list(sample.values()) if isinstance(model, Traced) else sample

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if quantization.int16:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
            converter.inference_input_type = converter.inference_output_type = tf.int16
        elif quantization.int8_io:
            converter.inference_input_type = converter.inference_output_type = tf.int8
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _native_output_silenced():
        warnings.simplefilter("ignore")
        data = converter.convert()
    return model.rewrite(data) if isinstance(model, Traced) and model.rewrite else data


@contextlib.contextmanager
def _native_output_silenced():
    """The MLIR quantizer prints a line per model on the process's own stdout/stderr."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def cache_dir() -> Path:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for dist in ("tensorflow", "tensorflow-cpu", "tf-nightly"):  # whichever wheel is installed
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            digest.update(f"{dist}=={importlib.metadata.version(dist)}".encode())
    return REPO_ROOT / ".cache" / f"calibration-{digest.hexdigest()[:16]}"


def build(name: str, out_dir: Path) -> Path:
    """``out_dir/<name>.tflite``, converted unless already cached."""
    path = out_dir / f"{name}.tflite"
    if path.exists():
        return path
    builder, quantization = MODELS[name]
    tf = _tf()
    tf.keras.utils.set_random_seed(0)
    data = _convert(builder(), quantization)
    tf.keras.backend.clear_session()
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, data)  # the usual modes (umask), not mkstemp's 0600


# ----------------------------------------------------------------------------------------------
# Keras building blocks: one layer on a batch-1 input


def _keras_one_layer(layer, *input_shapes):
    # Batch left unknown, as a plain Keras model has it: Flatten then converts to
    # SHAPE + STRIDED_SLICE + PACK + RESHAPE (reshape_8), which calibrates those kinds too.
    # Named, so that the representative dataset can be fed by name.
    tf = _tf()
    inputs = [tf.keras.Input(shape, name=f"input_{k}") for k, shape in enumerate(input_shapes)]
    out = layer(inputs if len(inputs) > 1 else inputs[0])
    return tf.keras.Model(inputs, out)


def _layers():
    return _tf().keras.layers


def _constant(shape, seed: int = 0):
    """Weights for the tf.function models; their values do not change any arena figure."""
    return _tf().constant(np.random.default_rng(seed).random(shape).astype(np.float32) - 0.5)


def _conv(hw, cin, cout, kernel=3):
    return _keras_one_layer(_layers().Conv2D(cout, kernel, padding="same"), (hw, hw, cin))


def _dw(hw, c):
    return _keras_one_layer(_layers().DepthwiseConv2D(3, padding="same"), (hw, hw, c))


def _fc(n, m):
    return _keras_one_layer(_layers().Dense(m), (n,))


# ---- one op, int8: Keras layers ----------------------------------------------------------------

@calibration_model()
def conv_8_8():
    return _conv(8, 8, 8)


@calibration_model()
def conv_8_16():
    return _conv(8, 8, 16)


@calibration_model()
def conv_8_32():
    return _conv(8, 8, 32)


@calibration_model()
def conv_3_8_1x1():
    return _conv(8, 3, 8, kernel=1)


@calibration_model()
def dw_8():
    return _dw(8, 8)


@calibration_model()
def dw_16():
    return _dw(8, 16)


@calibration_model()
def dw_32():
    return _dw(8, 32)


@calibration_model()
def fc_8_8():
    return _fc(8, 8)


@calibration_model()
def fc_8_16():
    return _fc(8, 16)


@calibration_model()
def fc_16_32():
    return _fc(16, 32)


@calibration_model()
def add_8():
    return _keras_one_layer(_layers().Add(), (8, 8, 8), (8, 8, 8))


@calibration_model()
def add_16():
    return _keras_one_layer(_layers().Add(), (4, 4, 16), (4, 4, 16))


@calibration_model()
def mul_8():
    """Broadcast multiply, the shape of a squeeze-excite scale."""
    return _keras_one_layer(_layers().Multiply(), (8, 8, 8), (1, 1, 8))


@calibration_model()
def mul_16():
    return _keras_one_layer(_layers().Multiply(), (4, 4, 16), (1, 1, 16))


@calibration_model()
def mean_8():
    return _keras_one_layer(_layers().GlobalAveragePooling2D(), (8, 8, 8))


@calibration_model()
def mean_16():
    return _keras_one_layer(_layers().GlobalAveragePooling2D(), (8, 8, 16))


@calibration_model()
def meank_16():
    return _keras_one_layer(_layers().GlobalAveragePooling2D(keepdims=True), (8, 8, 16))


@calibration_model()
def avgp_8():
    return _keras_one_layer(_layers().AveragePooling2D(2), (8, 8, 8))


@calibration_model()
def maxp_8():
    return _keras_one_layer(_layers().MaxPooling2D(2), (8, 8, 8))


@calibration_model()
def softmax_10():
    return _keras_one_layer(_layers().Softmax(), (10,))


@calibration_model()
def softmax_20():
    return _keras_one_layer(_layers().Softmax(), (20,))


@calibration_model()
def hswish_8():
    return _keras_one_layer(_layers().Activation("hard_swish"), (8, 8, 8))


@calibration_model()
def hsig_8():
    """Keras' hard_sigmoid converts to ADD + MUL, not a kernel of its own."""
    return _keras_one_layer(_layers().Activation("hard_sigmoid"), (8, 8, 8))


@calibration_model()
def sigm_8():
    return _keras_one_layer(_layers().Activation("sigmoid"), (8, 8, 8))


@calibration_model()
def tanh_8():
    return _keras_one_layer(_layers().Activation("tanh"), (8, 8, 8))


@calibration_model()
def concat_8():
    return _keras_one_layer(_layers().Concatenate(), (8, 8, 8), (8, 8, 8))


@calibration_model()
def reshape_8():
    """Keras' Flatten converts to SHAPE, STRIDED_SLICE, PACK, RESHAPE."""
    return _keras_one_layer(_layers().Flatten(), (4, 4, 8))


@calibration_model()
def relu_8():
    return _keras_one_layer(_layers().ReLU(), (8, 8, 8))


@calibration_model()
def relu6_8():
    return _keras_one_layer(_layers().ReLU(6.0), (8, 8, 8))


@calibration_model()
def tconv_8():
    """TRANSPOSE_CONV, stride 2, 8 input channels (CMSIS-NN: the column-buffer path)."""
    return _keras_one_layer(_layers().Conv2DTranspose(8, 3, strides=2, padding="same"), (4, 4, 8))


@calibration_model()
def tconv_32():
    """TRANSPOSE_CONV with 32 input channels (CMSIS-NN: the reverse-convolution path, more than 16)."""
    return _keras_one_layer(_layers().Conv2DTranspose(16, 3, strides=2, padding="same"), (4, 4, 32))


@calibration_model()
def tconv_s3():
    """TRANSPOSE_CONV, stride 3, no bias (CMSIS-NN: the column buffer again; three inputs)."""
    return _keras_one_layer(_layers().Conv2DTranspose(8, 2, strides=3, padding="valid", use_bias=False), (3, 3, 24))


# ---- one or two ops: tf.function ---------------------------------------------------------------

IMAGE_8 = (1, 8, 8, 8)


@calibration_model()
def reshape():
    tf = _tf()
    return Traced(lambda x: tf.reshape(x, [1, 128]), [(1, 4, 4, 8)])


@calibration_model(FLOAT32)
def reshape_f():
    tf = _tf()
    return Traced(lambda x: tf.reshape(x, [1, 128]), [(1, 4, 4, 8)])


@calibration_model()
def pad():
    tf = _tf()
    return Traced(lambda x: tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), [IMAGE_8])


@calibration_model(INT8_FLOAT_IO)
def q_float_io():
    """int8 ops behind float32 I/O: QUANTIZE, RELU, MUL, DEQUANTIZE."""
    tf = _tf()
    return Traced(lambda x: tf.nn.relu(x) * 2.0, [IMAGE_8])


@calibration_model()
def strided_slice():
    return Traced(lambda x: x[:, 1:5, :, :], [IMAGE_8])


@calibration_model()
def transpose():
    tf = _tf()
    return Traced(lambda x: tf.transpose(x, [0, 2, 1, 3]), [(1, 8, 4, 8)])


@calibration_model()
def sub():
    return Traced(lambda x, y: x - y, [IMAGE_8, IMAGE_8])


@calibration_model()
def mean_squeeze():
    tf = _tf()
    return Traced(lambda x: tf.squeeze(tf.reduce_mean(x, axis=[1, 2], keepdims=True), [1, 2]), [IMAGE_8])


@calibration_model(FLOAT32)
def conv_f():
    tf = _tf()
    w = _constant((3, 3, 8, 8))
    return Traced(lambda x: tf.nn.conv2d(x, w, 1, "SAME"), [IMAGE_8])


@calibration_model(FLOAT32)
def mean_f():
    tf = _tf()
    w = _constant((3, 3, 8, 8))
    return Traced(lambda x: tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(x, w, 1, "SAME")), axis=[1, 2]), [IMAGE_8])


@calibration_model(FLOAT32)
def maxpool_f():
    tf = _tf()
    w = _constant((3, 3, 8, 8))
    return Traced(lambda x: tf.nn.max_pool2d(tf.nn.conv2d(x, w, 1, "SAME"), 2, 2, "VALID"), [IMAGE_8])


@calibration_model(FLOAT32)
def softmax_f():
    tf = _tf()
    return Traced(lambda x: tf.nn.softmax(tf.reshape(x, [1, 128])), [(1, 4, 4, 8)])


@calibration_model()
def maximum():
    tf = _tf()
    return Traced(lambda x: tf.maximum(x, 0.5), [IMAGE_8])


@calibration_model()
def concat_mul():
    tf = _tf()
    return Traced(lambda x: tf.concat([x, x * 2.0], axis=3), [IMAGE_8])


def _dense_with_bias(x):
    tf = _tf()
    return tf.matmul(x, _constant((16, 10), seed=1)) + _constant((10,), seed=2)


@calibration_model()
def fc_bias():
    return Traced(_dense_with_bias, [(1, 16)])


@calibration_model(FLOAT32)
def fc_bias_f():
    return Traced(_dense_with_bias, [(1, 16)])


@calibration_model(FLOAT32)
def fc_f():
    tf = _tf()
    w = _constant((16, 10), seed=1)
    return Traced(lambda x: tf.matmul(x, w), [(1, 16)])


@calibration_model()
def avgpool_global():
    tf = _tf()
    return Traced(lambda x: tf.nn.avg_pool2d(x, 8, 8, "VALID"), [(1, 8, 8, 16)])


@calibration_model()
def fc_softmax():
    tf = _tf()
    return Traced(lambda x: tf.nn.softmax(_dense_with_bias(x)), [(1, 16)])


def _two_transpose_convs(x):
    tf = _tf()
    k1, k2 = _constant((3, 3, 8, 8), 1), _constant((3, 3, 4, 8), 2)  # (h, w, out, in)
    x = tf.nn.conv2d_transpose(x, k1, [1, 8, 8, 8], 2, "SAME")
    return tf.nn.conv2d_transpose(x, k2, [1, 16, 16, 4], 2, "SAME")


@calibration_model()
def tconv2():
    """Two TRANSPOSE_CONVs with a fixed output shape (a constant operand, no SHAPE ops)."""
    return Traced(_two_transpose_convs, [(1, 4, 4, 8)])


@calibration_model(INT16X8)
def tconv_16():
    """TRANSPOSE_CONV quantized 16x8 with a bias (int64)."""
    tf = _tf()
    w, b = _constant((3, 3, 8, 8), 1), _constant((8,), 2)
    return Traced(lambda x: tf.nn.conv2d_transpose(x, w, [1, 8, 8, 8], 2, "SAME") + b, [(1, 4, 4, 8)])


def tconv2_16() -> bytes:
    """Two bias-free TRANSPOSE_CONVs quantized 16x8 (int64 accumulators). Not a calibration model:
    CMSIS-NN's kernel refuses an int16 TRANSPOSE_CONV without a bias (coverage.tflm_refusals), so
    tests/test_board_arena.py converts it and checks both builds (reference: equal)."""
    return _convert(Traced(_two_transpose_convs, [(1, 4, 4, 8)]), INT16X8)


@calibration_model(FLOAT32)
def tconv2_f():
    """The same in float: the per-channel arrays are allocated all the same, no scratch."""
    return Traced(_two_transpose_convs, [(1, 4, 4, 8)])


@calibration_model()
def bmm():
    """BATCH_MATMUL of two activations (adj_y false: the kernel keeps a transposed copy of the rhs)."""
    tf = _tf()
    return Traced(lambda x, y: tf.matmul(x, y), [(1, 4, 8), (1, 8, 6)])


@calibration_model()
def bmm_adj():
    """BATCH_MATMUL with adj_x and adj_y: a transposed copy of the lhs, none of the rhs."""
    tf = _tf()
    return Traced(lambda x, y: tf.matmul(x, y, transpose_a=True, transpose_b=True), [(1, 8, 4), (1, 6, 8)])


@calibration_model(FLOAT32)
def bmm_f():
    """Float BATCH_MATMUL, rank 4, batch 2: no quantization data; the rhs copy in float32."""
    tf = _tf()
    return Traced(lambda x, y: tf.matmul(x, y), [(1, 2, 4, 8), (1, 2, 8, 6)])


@calibration_model(host_only=True)
def bmm_const():
    """BATCH_MATMUL with a constant rhs (batch 2, so the converter keeps it a BATCH_MATMUL): the
    transposed copy is made all the same."""
    tf = _tf()
    w = _constant((1, 2, 8, 6), seed=3)
    return Traced(lambda x: tf.matmul(x, w), [(1, 2, 4, 8)])


@calibration_model()
def bmm2():
    """Two BATCH_MATMULs in a row (adj_x on the second), rank 4."""
    tf = _tf()

    def two(x, y, z):
        return tf.matmul(tf.matmul(x, y), z, transpose_a=True)

    return Traced(two, [(1, 2, 4, 8), (1, 2, 8, 6), (1, 2, 4, 5)])


@calibration_model()
def concat10():
    """CONCATENATION of ten activations, the most TFLM's kernel takes (kMaxInputNum)."""
    tf = _tf()
    return Traced(lambda x: tf.concat([tf.nn.relu(x - 0.05 * k) for k in range(10)], axis=3), [(1, 4, 4, 4)])


@calibration_model()
def concat_inputs8():
    """CONCATENATION of eight graph inputs: eight input TfLiteTensors and their quantization."""
    tf = _tf()
    return Traced(lambda *xs: tf.concat(xs, axis=3), [(1, 4, 4, 2)] * 8)


@calibration_model()
def multi_io():
    """Three inputs, three outputs (a concatenation, a sum, an activation), one output feeding none."""
    tf = _tf()

    def three(a, b, c):
        return tf.concat([a, b], axis=3), a + c, tf.nn.relu(c)

    return Traced(three, [(1, 4, 4, 4), (1, 4, 4, 4), (1, 4, 4, 4)])


def _embedding(ids):
    tf = _tf()
    return tf.nn.embedding_lookup(_constant((6, 2, 8), seed=4), ids)


def _packed(model) -> bytes:
    """A model of the LiteRT schema's object API, packed into a .tflite file."""
    import flatbuffers

    builder = flatbuffers.Builder(4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _add_tensor(model, sub, name: str, shape, ttype, data=None, quant=None, variable: bool = False) -> int:
    """Append a tensor to subgraph ``sub`` of ``model`` (object API) and return its index:
    ``data`` (numpy) makes it a constant in a buffer of its own, ``quant`` is (scale, zero point)."""
    from ai_edge_litert import schema_py_generated as schema

    t = schema.TensorT()
    t.name, t.shape, t.type, t.isVariable, t.buffer = name, list(shape), ttype, variable, 0
    if data is not None:
        buf = schema.BufferT()
        buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
        model.buffers.append(buf)
        t.buffer = len(model.buffers) - 1
    if quant is not None:
        q = schema.QuantizationParametersT()
        q.scale, q.zeroPoint = [quant[0]], [quant[1]]
        t.quantization = q
    sub.tensors.append(t)
    return len(sub.tensors) - 1


def _gather_as_embedding_lookup(data: bytes) -> bytes:
    """The converter writes ``tf.nn.embedding_lookup`` as GATHER(table, ids) on axis 0; the same
    lookup as TFLite's EMBEDDING_LOOKUP(ids, table), which takes no options."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    for code in model.operatorCodes:
        if code.builtinCode == schema.BuiltinOperator.GATHER:
            code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.EMBEDDING_LOOKUP
    for op in model.subgraphs[0].operators:
        if model.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.EMBEDDING_LOOKUP:
            op.inputs = [int(op.inputs[1]), int(op.inputs[0])]
            op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.NONE, None
    return _packed(model)


@calibration_model(host_only=True)
def embed():
    """EMBEDDING_LOOKUP in a constant int8 (6, 2, 8) table by three int32 indices."""
    return Traced(_embedding, [(3,)], ("int32",), rewrite=_gather_as_embedding_lookup)


@calibration_model(FLOAT32)
def embed_f():
    return Traced(_embedding, [(3,)], ("int32",), rewrite=_gather_as_embedding_lookup)


def _svdf_model(int8: bool, layers: int) -> bytes:
    """``layers`` SVDF ops in a row (input 16, rank 2, 4 units, memory 4), each with its variable
    activation-state tensor, assembled with the LiteRT schema's object API: no TensorFlow op
    converts to SVDF (TFLite's SVDF models come from hand-written converters). int8: int8 input,
    feature weights and output, int16 time weights and state, int32 bias on the state scale x the
    time-weights scale (what TFLM's PrepareSvdf checks)."""
    from ai_edge_litert import schema_py_generated as schema

    rng = np.random.default_rng(5)
    T = schema.TensorType
    model, sub = schema.ModelT(), schema.SubGraphT()
    model.version, model.buffers, sub.tensors, sub.operators = 3, [schema.BufferT()], [], []
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.SVDF
    code.version = 3 if int8 else 1
    model.operatorCodes = [code]

    def tensor(name, shape, ttype, scale=None, data=None, variable=False):
        return _add_tensor(model, sub, name, shape, ttype, data, None if scale is None else (scale, 0), variable)

    def values(shape, dtype):
        if dtype == np.float32:
            return (rng.random(shape) - 0.5).astype(np.float32)
        info = np.iinfo(dtype)
        return rng.integers(info.min // 2, info.max // 2, shape).astype(dtype)

    units, rank, memory, size = 4, 2, 4, 16
    filters = units * rank
    x = tensor("input", (1, size), T.INT8 if int8 else T.FLOAT32, 0.05 if int8 else None)
    sub.inputs = [x]
    for k in range(layers):
        width = size if k == 0 else units
        state_scale, time_scale = 0.02, 0.001
        feature = tensor(f"feature_{k}", (filters, width), T.INT8 if int8 else T.FLOAT32, 0.01 if int8 else None,
                         values((filters, width), np.int8 if int8 else np.float32))
        time = tensor(f"time_{k}", (filters, memory), T.INT16 if int8 else T.FLOAT32, time_scale if int8 else None,
                      values((filters, memory), np.int16 if int8 else np.float32))
        bias = tensor(f"bias_{k}", (units,), T.INT32 if int8 else T.FLOAT32, state_scale * time_scale if int8 else None,
                      values((units,), np.int32 if int8 else np.float32) // (1 << 20) if int8 else values((units,), np.float32))
        state = tensor(f"state_{k}", (1, memory * filters), T.INT16 if int8 else T.FLOAT32, state_scale if int8 else None,
                       variable=True)
        y = tensor(f"output_{k}", (1, units), T.INT8 if int8 else T.FLOAT32, 0.1 if int8 else None)
        op, options = schema.OperatorT(), schema.SVDFOptionsT()
        options.rank, options.fusedActivationFunction = rank, schema.ActivationFunctionType.NONE
        op.opcodeIndex, op.inputs, op.outputs = 0, [x, feature, time, bias, state], [y]
        op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.SVDFOptions, options
        sub.operators.append(op)
        x = y
    sub.outputs = [x]
    model.subgraphs = [sub]
    return _packed(model)


@calibration_model()
def svdf():
    """One int8 SVDF: its int16 activation state is a variable tensor, allocated in the tail."""
    return _svdf_model(int8=True, layers=1)


@calibration_model()
def svdf2():
    """Two int8 SVDFs in a row: two variable states (one persistent buffer each)."""
    return _svdf_model(int8=True, layers=2)


@calibration_model(FLOAT32, host_only=True)
def svdf2_f():
    """The same in float."""
    return _svdf_model(int8=False, layers=2)


def _lstm(steps: int, features: int, units: int, return_sequences: bool = True, time_major: bool = False,
          batch: int = 1) -> Traced:
    """One tf_keras ``LSTM(units, unroll=False)`` on a fixed-batch input, which the converter fuses
    into one UNIDIRECTIONAL_SEQUENCE_LSTM (Keras 3's LSTM converts to a WHILE loop instead, and the
    fusion needs the SavedModel path: ``Traced.trackable``). Its hidden and cell states become
    variable tensors (inputs 18 and 19); ``return_sequences=False`` adds a STRIDED_SLICE (the last
    step); ``time_major``: input (steps, batch, features)."""
    import tf_keras

    shape = (steps, batch, features) if time_major else (batch, steps, features)
    x = tf_keras.Input(shape[1:], batch_size=shape[0])
    lstm = tf_keras.layers.LSTM(units, return_sequences=return_sequences, unroll=False, time_major=time_major)
    model = tf_keras.Model(x, lstm(x))
    return Traced(lambda t: model(t), [shape], trackable=model)


def _lstm_as_16x8(data: bytes) -> bytes:
    """TensorFlow's converter refuses 16x8 for this op ("Quantization to 16x8-bit not yet supported
    for op: 'UNIDIRECTIONAL_SEQUENCE_LSTM'"), so the 16x8 models are the converted full-int8 ones
    retyped to what TFLM's 16x8 kernel takes (EvalLstm<int16_t, int8_t, int16_t, int64_t>): the
    input, the hidden state (input 18) and every op output int16 with zero point 0 (scale / 256),
    the four gate biases (inputs 12-15) int64; weights stay int8 and the cell state int16."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(data, 0)
    sub = model.subgraphs[0]
    lstm_code = [k for k, c in enumerate(model.operatorCodes)
                 if c.builtinCode == schema.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM]
    retyped, biases = set(), set()
    for op in sub.operators:
        retyped |= {int(t) for t in op.outputs}
        if op.opcodeIndex in lstm_code:
            retyped |= {int(op.inputs[0]), int(op.inputs[18])}
            biases |= {int(op.inputs[k]) for k in range(12, 16) if op.inputs[k] >= 0}
    for k in retyped:
        t = sub.tensors[k]
        t.type = schema.TensorType.INT16
        t.quantization.scale = [float(t.quantization.scale[0]) / 256]
        t.quantization.zeroPoint = [0]
    for k in biases:
        t = sub.tensors[k]
        buf = model.buffers[t.buffer]
        values = np.frombuffer(np.asarray(buf.data, np.uint8).tobytes(), np.int32).astype(np.int64)
        buf.data = np.frombuffer(values.tobytes(), np.uint8)
        t.type = schema.TensorType.INT64
    return _packed(model)


# Two shapes per dtype, so that each shape-dependent size (the four scratch buffers of batch x
# units cell-state elements, the two variable states) is proved at more than one point: lstm and
# lstm_tm differ in steps, features, units, batch and time_major; lstm_last returns the last step.
@calibration_model(faults_on=("cmsis-nn",))
def lstm():
    """One int8 LSTM (4 steps, 3 features, 8 units, all steps returned): int16 cell state."""
    return _lstm(4, 3, 8)


@calibration_model(FLOAT32)
def lstm_f():
    return _lstm(4, 3, 8)


@calibration_model(faults_on=("cmsis-nn",))
def lstm_tm():
    """Time-major int8 LSTM: 5 steps of a batch of 2, 5 features, 6 units."""
    return _lstm(5, 5, 6, time_major=True, batch=2)


@calibration_model(FLOAT32)
def lstm_tm_f():
    return _lstm(5, 5, 6, time_major=True, batch=2)


@calibration_model()
def lstm_last():
    """int8 LSTM returning its last step only (6 steps, 5 features, 4 units): + STRIDED_SLICE."""
    return _lstm(6, 5, 4, return_sequences=False)


@calibration_model(FLOAT32)
def lstm_last_f():
    return _lstm(6, 5, 4, return_sequences=False)


@calibration_model(faults_on=("cmsis-nn",))
def lstm_16x8():
    """``lstm`` in 16x8 (:func:`_lstm_as_16x8`): int16 activations and states, int8 weights."""
    traced = _lstm(4, 3, 8)
    traced.rewrite = _lstm_as_16x8
    return traced


@calibration_model(faults_on=("cmsis-nn",))
def lstm_tm_16x8():
    traced = _lstm(5, 5, 6, time_major=True, batch=2)
    traced.rewrite = _lstm_as_16x8
    return traced


# ---- simple ops, two of each in a row (the padding between their allocations shows) --------------

def _twice(op):
    return lambda x: op(op(x))


def _spatial_then_channels(reduce):
    """``reduce`` over the spatial axes (kept), then over the channels."""
    return lambda x: reduce(reduce(x, axis=[1, 2], keepdims=True), axis=3)


@calibration_model()
def sum2():
    """SUM over the spatial axes (kept), then over the channels: accumulator and index scratch."""
    return Traced(_spatial_then_channels(_tf().reduce_sum), [IMAGE_8])


@calibration_model()
def reduce_max2():
    return Traced(_spatial_then_channels(_tf().reduce_max), [IMAGE_8])


@calibration_model()
def reduce_min2():
    return Traced(_spatial_then_channels(_tf().reduce_min), [IMAGE_8])


@calibration_model()
def sqdiff2():
    tf = _tf()
    return Traced(_twice(lambda x: tf.math.squared_difference(x, 0.3)), [IMAGE_8])


@calibration_model()
def div():
    return Traced(lambda x, y: x / (y + 0.5), [IMAGE_8, IMAGE_8])


@calibration_model()
def unpack():
    """UNPACK along the rows: four outputs."""
    tf = _tf()
    return Traced(lambda x: tuple(tf.unstack(x, axis=1)), [(1, 4, 4, 8)])


@calibration_model()
def split_v():
    tf = _tf()
    return Traced(lambda x: tuple(tf.split(x, [2, 6], axis=3)), [IMAGE_8])


@calibration_model()
def elu2():
    tf = _tf()
    return Traced(_twice(tf.nn.elu), [IMAGE_8])


@calibration_model()
def arg_max():
    tf = _tf()
    return Traced(lambda x: tf.argmax(x, axis=3, output_type=tf.int32), [IMAGE_8])


@calibration_model()
def arg_min():
    tf = _tf()
    return Traced(lambda x: tf.argmin(x, axis=3, output_type=tf.int32), [IMAGE_8])


@calibration_model()
def l2norm():
    tf = _tf()
    return Traced(lambda x: tf.math.l2_normalize(x, axis=3), [IMAGE_8])


@calibration_model(host_only=True)
def log_softmax():
    tf = _tf()
    return Traced(tf.nn.log_softmax, [(1, 16)])


@calibration_model()
def space_batch():
    """SPACE_TO_BATCH_ND then BATCH_TO_SPACE_ND (a dilated-convolution rewrite without the conv)."""
    tf = _tf()
    return Traced(lambda x: tf.batch_to_space(tf.space_to_batch_nd(x, [2, 2], [[0, 0], [0, 0]]) * 2.0, [2, 2], [[0, 0], [0, 0]]),
                  [IMAGE_8])


@calibration_model()
def padv2():
    tf = _tf()
    return Traced(lambda x: tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=0.5), [IMAGE_8])


@calibration_model(FLOAT32)
def unary_f():
    """A chain of the elementwise kernels (kernels/elementwise.cc, floor.cc, ceil.cc, round.cc, neg.cc)."""
    tf = _tf()

    def chain(x):
        y = tf.math.rsqrt(tf.sqrt(tf.abs(x)) + 1.0)
        y = tf.math.log(tf.square(y) + 1.0)
        y = tf.cos(tf.sin(y))
        return -tf.round(tf.math.ceil(tf.math.floor(y * 4.0) * 0.5))

    return Traced(chain, [IMAGE_8])


@calibration_model(FLOAT32)
def exp_f():
    """EXP three times (kernels/exp.cc: float32 only, no Init, nothing in Prepare)."""
    tf = _tf()
    return Traced(lambda x: tf.exp(tf.exp(tf.exp(x * 0.1) * 0.1) * 0.1), [IMAGE_8])


def _module_model(module, fn, resource_variables: bool = False) -> bytes:
    """Convert one ``tf.function`` of a ``tf.Module`` (control flow and variables need the module:
    the converter keeps its functions as subgraphs and its variables as resource variables)."""
    tf = _tf()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], module)
    if resource_variables:
        converter.experimental_enable_resource_variables = True
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _native_output_silenced():
        warnings.simplefilter("ignore")
        return converter.convert()


@calibration_model(FLOAT32)
def if_f():
    """IF (``tf.cond`` on a bool input): three subgraphs, the branches MUL + ADD and TANH + SUB."""
    tf = _tf()

    class Branches(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32), tf.TensorSpec([1], tf.bool)], autograph=False)
        def cond(self, x, c):
            return tf.cond(c[0], lambda: tf.nn.relu(x * 2.0 + 1.0), lambda: tf.tanh(x) - 1.0)

    module = Branches()
    return _module_model(module, module.cond)


@calibration_model(FLOAT32)
def if_mean_f():
    """IF with reductions in both branches (MEAN and REDUCE_MAX make scratch requests, so the
    plan holds scratch buffers of subgraph ops) around larger tensors, and work after the IF."""
    tf = _tf()

    class Branches(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 8], tf.float32), tf.TensorSpec([1], tf.bool)],
                     autograph=False)
        def cond(self, x, c):
            y = tf.tanh(x)
            z = tf.cond(c[0], lambda: tf.reduce_mean(y * 2.0, axis=[1, 2]), lambda: tf.reduce_max(y + x, axis=[1, 2]))
            return tf.nn.relu(z) * 3.0

    module = Branches()
    return _module_model(module, module.cond)


@calibration_model(FLOAT32)
def while_f():
    """WHILE (``tf.while_loop``, three steps of tanh): the condition LESS, the body ADD, TANH, MUL."""
    tf = _tf()

    class Loop(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32)], autograph=False)
        def loop(self, x):
            _, y = tf.while_loop(lambda i, y: i < 3, lambda i, y: (i + 1, tf.tanh(y) * 1.5), [tf.constant(0), x])
            return y

    module = Loop()
    return _module_model(module, module.loop)


@calibration_model(FLOAT32)
def nested_f():
    """A WHILE inside an IF's branch (five subgraphs: the clock steps into the branch, then into
    the loop's condition and body), a MEAN in the other branch, work before and after."""
    tf = _tf()

    class Nested(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 16], tf.float32), tf.TensorSpec([1], tf.bool)], autograph=False)
        def nested(self, x, c):
            def loop(y):
                return tf.while_loop(lambda i, y: i < 2, lambda i, y: (i + 1, tf.tanh(y) * 1.5), [tf.constant(0), y])[1]

            def mean(y):
                return tf.reduce_mean(tf.reshape(y, [1, 4, 4, 1]), axis=[1, 2]) + y

            return tf.cond(c[0], lambda: loop(x * 2.0), lambda: mean(x)) * 3.0

    module = Nested()
    return _module_model(module, module.nested)


@calibration_model(FLOAT32)
def var_f():
    """Two ``tf.Variable`` states updated on every call (``experimental_enable_resource_variables``):
    CALL_ONCE runs the initialiser subgraph (VAR_HANDLE, ASSIGN_VARIABLE), the main graph reads,
    updates and writes both (VAR_HANDLE, READ_VARIABLE, ASSIGN_VARIABLE)."""
    tf = _tf()

    class State(tf.Module):
        def __init__(self):
            super().__init__()
            self.v = tf.Variable(tf.zeros([1, 8]))
            self.w = tf.Variable(tf.zeros([1, 24]))

        @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32)], autograph=False)
        def step(self, x):
            self.v.assign(self.v * 0.5 + x)
            self.w.assign(tf.concat([self.w[:, 8:], self.v.read_value()], axis=1))
            return self.w.read_value() * 2.0

    module = State()
    return _module_model(module, module.step, resource_variables=True)


@calibration_model(FLOAT32)
def logic_f():
    """Comparisons, logical ops and CAST."""
    tf = _tf()

    def f(x, y):
        keep = tf.logical_or(tf.logical_and(x > y, x < 0.9), tf.logical_not(tf.equal(x, y)))
        keep = tf.logical_and(keep, tf.logical_or(x >= 0.1, y <= 0.2))
        return tf.cast(keep, tf.int32), tf.cast(tf.not_equal(x, 0.5), tf.int32)

    return Traced(f, [IMAGE_8, IMAGE_8])


@calibration_model(FLOAT32)
def misc_f():
    """FLOOR_DIV, FLOOR_MOD, MIRROR_PAD (reflect), CUMSUM, REVERSE_V2 and a broadcasting SELECT_V2."""
    tf = _tf()

    def f(x, y):
        z = tf.math.floormod(tf.math.floordiv(x, y + 0.5), y + 0.5)
        z = tf.pad(z, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
        z = tf.reverse(tf.math.cumsum(z, axis=3), axis=[2])
        return tf.where(z[:, :, :, :1] > 0.5, z, 0.0)

    return Traced(f, [IMAGE_8, IMAGE_8])


@calibration_model(FLOAT32)
def logic2_f():
    """LOGICAL_NOT of a bool input, EQUAL, GATHER_ND by int32 indices (the converter folds the
    EXPAND_DIMS and SQUEEZE around the gather away: expand_squeeze_f assembles them)."""
    tf = _tf()
    table = _constant((4, 4, 8), seed=6)

    def f(b, x, y, ids):
        rows = tf.squeeze(tf.expand_dims(tf.gather_nd(table, ids), 1), 1)
        return tf.logical_not(b), tf.equal(x, y), rows

    return Traced(f, [(1, 8), (1, 8), (1, 8), (3, 2)], ("bool", "float32", "float32", "int32"))


def _assembled(tensors: list[tuple], operators: list[tuple], inputs: list[int], outputs: list[int]) -> bytes:
    """A one-subgraph model assembled with the LiteRT schema's object API, for ops TensorFlow's
    converter folds or rewrites (EXPAND_DIMS and SQUEEZE become RESHAPE, ZEROS_LIKE of a static
    shape a constant; no TensorFlow op converts to L2_POOL_2D or to an int8 CUMSUM).
    ``tensors``: (shape, TensorType, constant numpy data or None, (scale, zero point) or None);
    ``operators``: (BuiltinOperator, inputs, outputs, BuiltinOptions type, options object or None)."""
    from ai_edge_litert import schema_py_generated as schema

    model, sub = schema.ModelT(), schema.SubGraphT()
    model.version, model.buffers, sub.tensors, sub.operators, model.operatorCodes = 3, [schema.BufferT()], [], [], []
    for k, (shape, ttype, data, quant) in enumerate(tensors):
        _add_tensor(model, sub, f"t{k}", shape, ttype, data, quant)
    codes: dict[int, int] = {}
    for builtin, ins, outs, options_type, options in operators:
        if builtin not in codes:
            code = schema.OperatorCodeT()
            code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
            codes[builtin] = len(model.operatorCodes)
            model.operatorCodes.append(code)
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = codes[builtin], list(ins), list(outs)
        if options is not None:
            op.builtinOptionsType, op.builtinOptions = options_type, options
        sub.operators.append(op)
    sub.inputs, sub.outputs = list(inputs), list(outputs)
    model.subgraphs = [sub]
    return _packed(model)


def _with_custom_ops(data: bytes, custom: dict[int, tuple[str, dict]]) -> bytes:
    """``data`` with operator ``k`` turned into the custom op ``custom[k] = (name, options)``
    (its options a flexbuffer map, as TFLM's signal kernels read them in Init)."""
    from ai_edge_litert import schema_py_generated as schema
    from flatbuffers import flexbuffers

    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    for k, (name, options) in custom.items():
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
        code.customCode, code.version = name, 1
        model.operatorCodes.append(code)
        op = model.subgraphs[0].operators[k]
        op.opcodeIndex = len(model.operatorCodes) - 1
        op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.NONE, None
        op.customOptions = list(flexbuffers.Dumps(options)) if options else None
        op.customOptionsFormat = schema.CustomOptionsFormat.FLEXBUFFERS
    return _packed(model)


@calibration_model(FLOAT32)
def signal_f():
    """The audio front end's simpler signal-library kernels (signal/micro/kernels/), twice each
    where an Init allocates: SignalWindow (int16; Init: {shift, input_size}, 8 B), SignalFftAutoScale
    (no Init), SignalEnergy (int16 complex in, uint32 out; Init: {end_index, start_index}, 8 B),
    SignalPCAN (uint32, int16 gain table; Init: {snr_shift}, 4 B) and SignalFilterBankSquareRoot
    (uint64 in, uint32 out; no Init). Assembled with the schema (no TensorFlow op converts to them),
    each op's options a flexbuffer map."""
    from ai_edge_litert import schema_py_generated as schema

    T, B, none = schema.TensorType, schema.BuiltinOperator, schema.BuiltinOptions.NONE
    rng = np.random.default_rng(7)
    tensors = [((16,), T.INT16, None, None),                                              # 0 samples
               ((16,), T.INT16, rng.integers(0, 1 << 14, 16).astype(np.int16), None),     # 1 window
               ((16,), T.INT16, None, None), ((16,), T.INT16, None, None),                # 2, 3 windowed
               ((16,), T.INT16, None, None), ((), T.INT32, None, None),                   # 4, 5 scaled, scale
               ((8,), T.UINT32, None, None), ((8,), T.UINT32, None, None),                # 6, 7 energy
               ((8,), T.UINT32, None, None),                                              # 8 noise estimate
               ((8,), T.INT16, rng.integers(0, 1 << 12, 8).astype(np.int16), None),       # 9 gain table
               ((8,), T.UINT32, None, None), ((8,), T.UINT32, None, None),                # 10, 11 pcan
               ((8,), T.UINT64, None, None), ((), T.INT32, np.array(3, np.int32), None),  # 12 sums, 13 bits
               ((8,), T.UINT32, None, None)]                                              # 14 square roots
    # Placeholders the rewrite turns into the custom ops (kinds and operands as each kernel checks).
    ops = [(B.ADD, [0, 1], [2], none, None), (B.ADD, [2, 1], [3], none, None),
           (B.ADD, [3], [4, 5], none, None),
           (B.ADD, [4], [6], none, None), (B.ADD, [3], [7], none, None),
           (B.ADD, [6, 8, 9], [10], none, None), (B.ADD, [7, 8, 9], [11], none, None),
           (B.ADD, [12, 13], [14], none, None)]
    data = _assembled(tensors, ops, [0, 8, 12], [5, 10, 11, 14])
    return _with_custom_ops(data, {
        0: ("SignalWindow", {"shift": 12}), 1: ("SignalWindow", {"shift": 10}),
        2: ("SignalFftAutoScale", {}),
        3: ("SignalEnergy", {"end_index": 8, "start_index": 0}), 4: ("SignalEnergy", {"end_index": 6, "start_index": 1}),
        5: ("SignalPCAN", {"snr_shift": 6}), 6: ("SignalPCAN", {"snr_shift": 4}),
        7: ("SignalFilterBankSquareRoot", {}),
    })


@calibration_model(FLOAT32)
def stacker_f():
    """SignalStacker twice (int16 frames of 8 channels, two contexts): its Init allocates its
    params and a circular buffer sized from the options (num_channels x (left + right + 1))."""
    from ai_edge_litert import schema_py_generated as schema

    T, B, none = schema.TensorType, schema.BuiltinOperator, schema.BuiltinOptions.NONE
    tensors = [((8,), T.INT16, None, None), ((32,), T.INT16, None, None), ((), T.BOOL, None, None),
               ((40,), T.INT16, None, None), ((), T.BOOL, None, None)]
    ops = [(B.ADD, [0], [1, 2], none, None), (B.ADD, [0], [3, 4], none, None)]
    data = _assembled(tensors, ops, [0], [1, 2, 3, 4])
    return _with_custom_ops(data, {
        0: ("SignalStacker", {"num_channels": 8, "stacker_left_context": 2, "stacker_right_context": 1, "stacker_step": 1}),
        1: ("SignalStacker", {"num_channels": 8, "stacker_left_context": 4, "stacker_right_context": 0, "stacker_step": 2}),
    })


@calibration_model(FLOAT32)
def signal_state_f():
    """The signal kernels that keep state per row of their input, sized in Prepare from its shape
    and their options: SignalDelay on (2, 8) and (8,) int16 (one circular buffer of frame + delay
    elements per row), SignalFramer on (16,) and (2, 16) (capacity: the frame size rounded up to a
    multiple of the step), SignalOverlapAdd on (2, 3, 8) int16 and (3, 8) float32 (a frame of state
    per row). Assembled with the schema, options as flexbuffer maps."""
    from ai_edge_litert import schema_py_generated as schema

    T, B, none = schema.TensorType, schema.BuiltinOperator, schema.BuiltinOptions.NONE
    tensors = [((2, 8), T.INT16, None, None), ((2, 8), T.INT16, None, None),            # 0, 1 delay 1
               ((8,), T.INT16, None, None), ((8,), T.INT16, None, None),                # 2, 3 delay 2
               ((16,), T.INT16, None, None), ((4, 8), T.INT16, None, None), ((), T.BOOL, None, None),  # 4-6 framer 1
               ((2, 16), T.INT16, None, None), ((2, 4, 6), T.INT16, None, None), ((), T.BOOL, None, None),  # 7-9
               ((2, 3, 8), T.INT16, None, None), ((2, 12), T.INT16, None, None),        # 10, 11 overlap-add 1
               ((3, 8), T.FLOAT32, None, None), ((12,), T.FLOAT32, None, None)]         # 12, 13 overlap-add 2
    ops = [(B.ADD, [0], [1], none, None), (B.ADD, [2], [3], none, None),
           (B.ADD, [4], [5, 6], none, None), (B.ADD, [7], [8, 9], none, None),
           (B.ADD, [10], [11], none, None), (B.ADD, [12], [13], none, None)]
    data = _assembled(tensors, ops, [0, 2, 4, 7, 10, 12], [1, 3, 5, 6, 8, 9, 11, 13])
    return _with_custom_ops(data, {
        0: ("SignalDelay", {"delay_length": 3}), 1: ("SignalDelay", {"delay_length": 21}),
        2: ("SignalFramer", {"frame_size": 8, "frame_step": 4, "prefill": True}),
        3: ("SignalFramer", {"frame_size": 6, "frame_step": 4, "prefill": False}),
        4: ("SignalOverlapAdd", {"T": int(T.INT16), "frame_step": 4}),
        5: ("SignalOverlapAdd", {"T": int(T.FLOAT32), "frame_step": 4}),
    })


@calibration_model(FLOAT32)
def signal_fft_f():
    """The signal kernels whose Init sizes a buffer from the options: SignalFilterBank (a work
    area of num_channels + 1 uint64), SignalFilterBankSpectralSubtraction (a noise estimate per
    channel), SignalRfft (a KISS FFT state of fft_length, and a scratch work area) in int16 and
    float32, SignalIrfft in int16 and int32; and SignalFilterBankLog (8 B of options). Assembled
    with the schema: a 4-channel filter bank over a 16-bin spectrum (valid band tables, as the
    kernel reads them in Eval), FFTs of 32 points."""
    from ai_edge_litert import schema_py_generated as schema

    T, B, none = schema.TensorType, schema.BuiltinOperator, schema.BuiltinOptions.NONE
    rng = np.random.default_rng(11)
    band = np.arange(0, 10, 2, dtype=np.int16)
    tensors = [((16,), T.UINT32, None, None),                                           # 0 spectrum
               ((10,), T.INT16, rng.integers(0, 1 << 12, 10).astype(np.int16), None),   # 1 weights
               ((10,), T.INT16, rng.integers(0, 1 << 12, 10).astype(np.int16), None),   # 2 unweights
               ((5,), T.INT16, band, None), ((5,), T.INT16, band.copy(), None),          # 3, 4 starts
               ((5,), T.INT16, np.full(5, 2, np.int16), None),                          # 5 widths
               ((4,), T.UINT64, None, None),                                            # 6 channels
               ((4,), T.UINT32, None, None), ((4,), T.UINT32, None, None), ((4,), T.UINT32, None, None),  # 7-9
               ((4,), T.INT16, None, None),                                             # 10 log
               ((2, 30), T.INT16, None, None), ((2, 34), T.INT16, None, None),          # 11, 12 rfft int16
               ((20,), T.FLOAT32, None, None), ((34,), T.FLOAT32, None, None),          # 13, 14 rfft float
               ((2, 32), T.INT16, None, None),                                          # 15 irfft int16
               ((34,), T.INT32, None, None), ((32,), T.INT32, None, None)]              # 16, 17 irfft int32
    ops = [(B.ADD, [0, 1, 2, 3, 4, 5], [6], none, None),
           (B.ADD, [7], [8, 9], none, None), (B.ADD, [8], [10], none, None),
           (B.ADD, [11], [12], none, None), (B.ADD, [13], [14], none, None),
           (B.ADD, [12], [15], none, None), (B.ADD, [16], [17], none, None)]
    data = _assembled(tensors, ops, [0, 7, 11, 13, 16], [6, 9, 10, 14, 15, 17])
    subtraction = {"alternate_one_minus_smoothing": 0, "alternate_smoothing": 0, "clamping": False,
                   "min_signal_remaining": 655, "num_channels": 4, "one_minus_smoothing": 15729,
                   "smoothing": 655, "smoothing_bits": 0, "spectral_subtraction_bits": 14}
    return _with_custom_ops(data, {
        0: ("SignalFilterBank", {"num_channels": 4}),
        1: ("SignalFilterBankSpectralSubtraction", subtraction),
        2: ("SignalFilterBankLog", {"input_correction_bits": 3, "output_scale": 1600}),
        3: ("SignalRfft", {"T": int(T.INT16), "fft_length": 32}),
        4: ("SignalRfft", {"T": int(T.FLOAT32), "fft_length": 32}),
        5: ("SignalIrfft", {"T": int(T.INT16), "fft_length": 32}),
        6: ("SignalIrfft", {"T": int(T.INT32), "fft_length": 32}),
    })


@calibration_model(FLOAT32)
def circular_buffer_8():
    """TFLM's CIRCULAR_BUFFER custom op twice (int8 (1, 1, 1, depth) in, (1, slots, 1, depth) out,
    one scale; cycles_max 1: with more, Invoke returns kTfLiteAbort until the op has run): its
    Init allocates an 8-byte OpData (kernels/circular_buffer.cc)."""
    from ai_edge_litert import schema_py_generated as schema

    T, B, none = schema.TensorType, schema.BuiltinOperator, schema.BuiltinOptions.NONE
    q = (0.1, 0)
    tensors = [((1, 1, 1, 8), T.INT8, None, q), ((1, 4, 1, 8), T.INT8, None, q),
               ((1, 1, 1, 16), T.INT8, None, q), ((1, 3, 1, 16), T.INT8, None, q)]
    ops = [(B.ADD, [0], [1], none, None), (B.ADD, [2], [3], none, None)]
    data = _assembled(tensors, ops, [0, 2], [1, 3])
    return _with_custom_ops(data, {0: ("CIRCULAR_BUFFER", {"cycles_max": 1}), 1: ("CIRCULAR_BUFFER", {"cycles_max": 1})})


@calibration_model(FLOAT32)
def detection_f():
    """TFLite_Detection_PostProcess twice (float32 SSD heads of 6 and 10 anchors, 2 and 3 classes
    plus background; fast and regular NMS): Init allocates a 112-byte OpData, Prepare asks for
    eleven scratch buffers from the box count, the score shape and the options
    (kernels/detection_postprocess.cc)."""
    from ai_edge_litert import schema_py_generated as schema

    T, B, none = schema.TensorType, schema.BuiltinOperator, schema.BuiltinOptions.NONE
    rng = np.random.default_rng(5)

    def anchors(n):  # (y, x, h, w) centre-size anchors inside the unit square
        return np.column_stack([rng.uniform(0.2, 0.8, (n, 2)), rng.uniform(0.1, 0.3, (n, 2))]).astype(np.float32)

    tensors = [((1, 6, 4), T.FLOAT32, None, None), ((1, 6, 3), T.FLOAT32, None, None),
               ((6, 4), T.FLOAT32, anchors(6), None),
               ((1, 3, 4), T.FLOAT32, None, None), ((1, 3), T.FLOAT32, None, None),
               ((1, 3), T.FLOAT32, None, None), ((1,), T.FLOAT32, None, None),
               ((1, 10, 4), T.FLOAT32, None, None), ((1, 10, 4), T.FLOAT32, None, None),
               ((10, 4), T.FLOAT32, anchors(10), None),
               ((1, 5, 4), T.FLOAT32, None, None), ((1, 5), T.FLOAT32, None, None),
               ((1, 5), T.FLOAT32, None, None), ((1,), T.FLOAT32, None, None)]
    ops = [(B.ADD, [0, 1, 2], [3, 4, 5, 6], none, None), (B.ADD, [7, 8, 9], [10, 11, 12, 13], none, None)]
    data = _assembled(tensors, ops, [0, 1, 7, 8], [3, 4, 5, 6, 10, 11, 12, 13])
    common = {"nms_iou_threshold": 0.5, "nms_score_threshold": 0.1, "y_scale": 10.0, "x_scale": 10.0,
              "h_scale": 5.0, "w_scale": 5.0, "max_classes_per_detection": 1}
    return _with_custom_ops(data, {
        0: ("TFLite_Detection_PostProcess", {**common, "max_detections": 3, "num_classes": 2}),
        1: ("TFLite_Detection_PostProcess", {**common, "max_detections": 5, "num_classes": 3,
                                             "use_regular_nms": True, "detections_per_class": 2}),
    })


@calibration_model(FLOAT32)
def add_n_f():
    """ADD_N of three, then of five inputs (float32): each asks for a scratch buffer of one
    pointer per input (kernels/add_n.cc); no Init, nothing persistent."""
    tf = _tf()

    def f(a, b, c, d, e):
        return tf.math.add_n([a, b, c]), tf.math.add_n([a, b, c, d, e])

    return Traced(f, [(1, 4, 4, 8)] * 5)


@calibration_model(FLOAT32)
def add_n_8():
    """int8 ADD_N of three, then of four inputs (one scale and zero point, as the kernel checks):
    Prepare allocates a 40-byte OpData and asks for the pointer scratch (kernels/add_n.cc).
    Assembled: the converter's quantizer leaves ADD_N float between DEQUANTIZE and QUANTIZE."""
    from ai_edge_litert import schema_py_generated as schema

    T, B, none = schema.TensorType, schema.BuiltinOperator, schema.BuiltinOptions.NONE
    q = (0.05, -3)
    tensors = [((1, 4, 4, 8), T.INT8, None, q) for _ in range(6)]
    ops = [(B.ADD_N, [0, 1, 2], [4], none, None), (B.ADD_N, [0, 1, 2, 3], [5], none, None)]
    return _assembled(tensors, ops, [0, 1, 2, 3], [4, 5])


@calibration_model(FLOAT32)
def expand_squeeze_f():
    """EXPAND_DIMS twice (constant int32 axes 1 and 3), then SQUEEZE twice (squeeze_dims [3], then
    [1]): (1, 8) -> (1, 1, 8) -> (1, 1, 8, 1) -> (1, 1, 8) -> (1, 8). Assembled: the converter
    rewrites both ops to RESHAPE. kernels/expand_dims.cc and squeeze.cc have no Init and allocate
    nothing in Prepare; SQUEEZE's parser allocates TfLiteSqueezeParams."""
    from ai_edge_litert import schema_py_generated as schema

    T, B, O = schema.TensorType, schema.BuiltinOperator, schema.BuiltinOptions

    def squeeze(dims):
        options = schema.SqueezeOptionsT()
        options.squeezeDims = dims
        return options

    tensors = [((1, 8), T.FLOAT32, None, None), ((1,), T.INT32, np.array([1], np.int32), None),
               ((1, 1, 8), T.FLOAT32, None, None), ((1,), T.INT32, np.array([3], np.int32), None),
               ((1, 1, 8, 1), T.FLOAT32, None, None), ((1, 1, 8), T.FLOAT32, None, None), ((1, 8), T.FLOAT32, None, None)]
    ops = [(B.EXPAND_DIMS, [0, 1], [2], O.ExpandDimsOptions, schema.ExpandDimsOptionsT()),
           (B.EXPAND_DIMS, [2, 3], [4], O.ExpandDimsOptions, schema.ExpandDimsOptionsT()),
           (B.SQUEEZE, [4], [5], O.SqueezeOptions, squeeze([3])),
           (B.SQUEEZE, [5], [6], O.SqueezeOptions, squeeze([1]))]
    return _assembled(tensors, ops, [0], [6])


@calibration_model(FLOAT32)
def fill_zeros_f():
    """FILL of a scalar input to a constant int32 shape (1, 4, 8), ZEROS_LIKE of the other input,
    each twice (kernels/fill.cc and zeros_like.cc: no options, no Init, nothing in Prepare).
    Assembled: the converter folds both into constants when the shape is static."""
    from ai_edge_litert import schema_py_generated as schema

    T, B = schema.TensorType, schema.BuiltinOperator
    tensors = [((), T.FLOAT32, None, None), ((1, 4, 8), T.FLOAT32, None, None),
               ((3,), T.INT32, np.array([1, 4, 8], np.int32), None),
               ((1, 4, 8), T.FLOAT32, None, None), ((1, 4, 8), T.FLOAT32, None, None),
               ((1, 4, 8), T.FLOAT32, None, None), ((1, 4, 8), T.FLOAT32, None, None)]
    none = schema.BuiltinOptions.NONE
    ops = [(B.FILL, [2, 0], [3], none, None), (B.ZEROS_LIKE, [1], [4], none, None),
           (B.ZEROS_LIKE, [4], [5], none, None), (B.FILL, [2, 0], [6], none, None)]
    return _assembled(tensors, ops, [0, 1], [3, 5, 6])


@calibration_model(FLOAT32)
def l2pool_f():
    """L2_POOL_2D twice (2x2, stride 2, VALID): (1, 8, 8, 4) -> (1, 4, 4, 4) -> (1, 2, 2, 4).
    kernels/l2_pool_2d.cc: float32 only, TfLitePoolParams, no Init; Prepare copies the output's
    dims (CreateWritableTensorDimsWithCopy). Assembled: no TensorFlow op converts to it."""
    from ai_edge_litert import schema_py_generated as schema

    T, B = schema.TensorType, schema.BuiltinOperator

    def pool():
        options = schema.Pool2DOptionsT()
        options.padding, options.strideW, options.strideH = schema.Padding.VALID, 2, 2
        options.filterWidth = options.filterHeight = 2
        return options

    tensors = [((1, 8, 8, 4), T.FLOAT32, None, None), ((1, 4, 4, 4), T.FLOAT32, None, None),
               ((1, 2, 2, 4), T.FLOAT32, None, None)]
    ops = [(B.L2_POOL_2D, [0], [1], schema.BuiltinOptions.Pool2DOptions, pool()),
           (B.L2_POOL_2D, [1], [2], schema.BuiltinOptions.Pool2DOptions, pool())]
    return _assembled(tensors, ops, [0], [2])


@calibration_model()
def cumsum2():
    """Two int8 CUMSUMs (axis 1, then axis 2 exclusive and reversed) on (1, 8, 4): kernels/cumsum.cc
    allocates its OpData in Prepare for int8 outputs only. Assembled: the converter keeps CUMSUM
    float between DEQUANTIZE and QUANTIZE."""
    from ai_edge_litert import schema_py_generated as schema

    T, B = schema.TensorType, schema.BuiltinOperator

    def cumsum(exclusive, reverse):
        options = schema.CumsumOptionsT()
        options.exclusive, options.reverse = exclusive, reverse
        return options

    tensors = [((1, 8, 4), T.INT8, None, (0.05, 0)), ((), T.INT32, np.array(1, np.int32), None),
               ((1, 8, 4), T.INT8, None, (0.4, 0)), ((), T.INT32, np.array(2, np.int32), None),
               ((1, 8, 4), T.INT8, None, (1.6, 0))]
    ops = [(B.CUMSUM, [0, 1], [2], schema.BuiltinOptions.CumsumOptions, cumsum(False, False)),
           (B.CUMSUM, [2, 3], [4], schema.BuiltinOptions.CumsumOptions, cumsum(True, True))]
    return _assembled(tensors, ops, [0], [4])


@calibration_model(FLOAT32)
def broadcast_f():
    """BROADCAST_ARGS of two int32 shape inputs, and BROADCAST_TO twice to constant int32 shapes:
    (1, 1, 8) -> (1, 4, 8) -> (2, 4, 8) (kernels/broadcast_args.cc, broadcast_to.cc: no options, no
    Init, nothing in Prepare; BROADCAST_TO takes a constant shape only). Assembled: the converter
    folds BROADCAST_ARGS of static shapes, and BROADCAST_TO into the broadcasting op that uses it."""
    from ai_edge_litert import schema_py_generated as schema

    T, B, none = schema.TensorType, schema.BuiltinOperator, schema.BuiltinOptions.NONE
    tensors = [((1, 1, 8), T.FLOAT32, None, None), ((3,), T.INT32, np.array([1, 4, 8], np.int32), None),
               ((1, 4, 8), T.FLOAT32, None, None), ((3,), T.INT32, np.array([2, 4, 8], np.int32), None),
               ((2, 4, 8), T.FLOAT32, None, None),
               ((3,), T.INT32, None, None), ((2,), T.INT32, None, None), ((3,), T.INT32, None, None)]
    ops = [(B.BROADCAST_TO, [0, 1], [2], none, None), (B.BROADCAST_ARGS, [5, 6], [7], none, None),
           (B.BROADCAST_TO, [2, 3], [4], none, None)]
    return _assembled(tensors, ops, [0, 5, 6], [4, 7])


@calibration_model(FLOAT32)
def dus_f():
    """DYNAMIC_UPDATE_SLICE twice: a (1, 2, 4) update into a (1, 8, 8) operand at int32 start
    indices, all three inputs (kernels/dynamic_update_slice.cc: no options, no Init, nothing in
    Prepare). Assembled: the converter emits it only from XLA-style graphs."""
    from ai_edge_litert import schema_py_generated as schema

    T, B, none = schema.TensorType, schema.BuiltinOperator, schema.BuiltinOptions.NONE
    tensors = [((1, 8, 8), T.FLOAT32, None, None), ((1, 2, 4), T.FLOAT32, None, None), ((3,), T.INT32, None, None),
               ((1, 8, 8), T.FLOAT32, None, None), ((1, 8, 8), T.FLOAT32, None, None)]
    ops = [(B.DYNAMIC_UPDATE_SLICE, [0, 1, 2], [3], none, None), (B.DYNAMIC_UPDATE_SLICE, [3, 1, 2], [4], none, None)]
    return _assembled(tensors, ops, [0, 1, 2], [4])


@calibration_model(FLOAT32)
def reduce_all2():
    """REDUCE_ALL over the spatial axes (kept), then over the channels, of a comparison (bool:
    kernels/reduce_common.cc PrepareAllHelper takes bool only): InitReduce's OpDataReduce and
    REDUCE_MAX's two index scratch buffers."""
    tf = _tf()
    return Traced(lambda x: _spatial_then_channels(tf.reduce_all)(x > 0.5), [IMAGE_8])


@calibration_model()
def minimum2():
    tf = _tf()
    return Traced(_twice(lambda x: tf.minimum(x, 0.5)), [IMAGE_8])


@calibration_model()
def gather2():
    """GATHER of rows of a constant table by int32 indices, twice (the converter's embedding lookup)."""
    tf = _tf()
    table = _constant((6, 2, 8), seed=4)
    return Traced(lambda ids: tf.gather(table, ids) + tf.gather(table, ids[::-1]), [(3,)], ("int32",))


@calibration_model()
def leaky2():
    tf = _tf()
    return Traced(_twice(lambda x: tf.nn.leaky_relu(x, 0.2)), [IMAGE_8])


@calibration_model()
def prelu2():
    layers = _layers()
    tf = _tf()
    inp = tf.keras.Input((8, 8, 8), batch_size=1, name="input_0")
    return tf.keras.Model(inp, layers.PReLU(shared_axes=[1, 2])(layers.PReLU(shared_axes=[1, 2])(inp)))


@calibration_model()
def resize_nn2():
    tf = _tf()
    return Traced(lambda x: tf.image.resize(tf.image.resize(x, (8, 8), "nearest"), (16, 16), "nearest"), [(1, 4, 4, 8)])


@calibration_model()
def resize_bl2():
    tf = _tf()
    return Traced(lambda x: tf.image.resize(tf.image.resize(x, (8, 8), "bilinear"), (16, 16), "bilinear"), [(1, 4, 4, 8)])


@calibration_model()
def split2():
    tf = _tf()

    def f(x):
        a, b = tf.split(x, 2, axis=3)
        c, d = tf.split(a, 2, axis=3)
        return b, c, d

    return Traced(f, [IMAGE_8])


@calibration_model()
def slice2():
    tf = _tf()
    return Traced(_twice(lambda x: tf.slice(x, [0, 1, 1, 0], [1, x.shape[1] - 2, x.shape[2] - 2, 8])), [IMAGE_8])


@calibration_model()
def depth_to_space2():
    tf = _tf()
    return Traced(lambda x: tf.nn.depth_to_space(tf.nn.depth_to_space(x, 2), 2), [(1, 2, 2, 32)])


@calibration_model()
def space_to_depth2():
    tf = _tf()
    return Traced(_twice(lambda x: tf.nn.space_to_depth(x, 2)), [(1, 8, 8, 2)])


# ---- the same op three times in a row: padding between consecutive allocations shows -------------

def _three_dense(x):
    tf = _tf()
    for seed in range(3):
        x = tf.matmul(x, _constant((16, 16), seed=seed)) + 0.1
    return x


@calibration_model()
def f3():
    return Traced(_three_dense, [(1, 16)])


@calibration_model(FLOAT32)
def f3_f():
    return Traced(_three_dense, [(1, 16)])


@calibration_model()
def c3():
    tf = _tf()
    kernels = [_constant((3, 3, 8, 8), seed) for seed in range(3)]

    def three_convs(x):
        for k in kernels:
            x = tf.nn.conv2d(x, k, 1, "SAME")
        return x

    return Traced(three_convs, [IMAGE_8])


@calibration_model()
def d3():
    tf = _tf()
    kernels = [_constant((3, 3, 8, 1), seed) for seed in range(3)]

    def three_depthwise(x):
        for k in kernels:
            x = tf.nn.depthwise_conv2d(x, k, [1, 1, 1, 1], "SAME")
        return x

    return Traced(three_depthwise, [IMAGE_8])


@calibration_model()
def p3():
    tf = _tf()

    def three_pools(x):
        for _ in range(3):
            x = tf.nn.avg_pool2d(x, 2, 2, "VALID")
        return x

    return Traced(three_pools, [(1, 16, 16, 8)])


@calibration_model()
def a3():
    def three_adds(x):
        y = x
        for _ in range(3):
            y = y + x
        return y

    return Traced(three_adds, [IMAGE_8])


@calibration_model()
def s3():
    tf = _tf()

    def three_softmaxes(x):
        for _ in range(3):
            x = tf.nn.softmax(x)
        return x

    return Traced(three_softmaxes, [(1, 16)])


@calibration_model()
def m3():
    def three_squares(x):
        for _ in range(3):
            x = x * x
        return x

    return Traced(three_squares, [IMAGE_8])


@calibration_model()
def mean3():
    """Three MEANs (each makes three scratch requests) interleaved with MUL and ADD."""
    tf = _tf()

    def three_means(x):
        def mean(t):
            return tf.reduce_mean(t, axis=[1, 2], keepdims=True)

        return mean(x) + mean(x * 2.0) + mean(x * 3.0)

    return Traced(three_means, [IMAGE_8])


# ----------------------------------------------------------------------------------------------
# Measure, predict, compare


def _op_summary(kinds: list[str]) -> str:
    """``CONV_2D x3`` for runs of one kind, comma-separated otherwise."""
    runs: list[list] = []
    for kind in kinds:
        if runs and runs[-1][0] == kind:
            runs[-1][1] += 1
        else:
            runs.append([kind, 1])
    return ", ".join(kind if n == 1 else f"{kind} x{n}" for kind, n in runs)


def calibrate(name: str, path: Path) -> dict:
    graph = parse_model(path.read_bytes(), str(path), control_flow=True)
    measured = measure(path)
    predicted = estimate_arena(graph)
    pointer_array_bytes = HOST_POINTER_BYTES * (len(graph.inputs) + len(graph.outputs))
    persistent_requested = measured.tail_by_kind.get("Persistent buffer data", {}).get("requested_bytes", 0)
    ok = measured.agrees_with(predicted)
    return {
        "model": name,
        "ops": [op.kind for g in (graph, *graph.subgraphs) for op in g.ops],
        "measured": measured.to_dict(),
        "predicted": {"arena_head_bytes": predicted.arena_head_bytes, "arena_tail_bytes": predicted.arena_tail_bytes,
                      "tail_exact": predicted.tail_exact},
        "persistent_buffer_requested_bytes": persistent_requested,
        "pointer_array_bytes": pointer_array_bytes,
        "kernel_persistent_bytes": persistent_requested - pointer_array_bytes,
        "ok": ok,
    }


def format_table(rows: list[dict]) -> str:
    header = ("model", "ops", "meas head", "meas tail", "pred head", "pred tail", "PB - ptrs", "result")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        m, p = r["measured"], r["predicted"]
        cells = (r["model"], _op_summary(r["ops"]), m["arena_head_bytes"], m["arena_tail_bytes"],
                 p["arena_head_bytes"], p["arena_tail_bytes"], r["kernel_persistent_bytes"],
                 "OK" if r["ok"] else "MISMATCH")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated model names (default: all %d)" % len(MODELS))
    parser.add_argument("--json", metavar="FILE", help="also write every row, with TFLM's per-kind tail, here")
    args = parser.parse_args(argv)

    names = list(MODELS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in MODELS]
        if unknown:
            print(f"error: unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}", file=sys.stderr)
            return 2

    out_dir = cache_dir()
    rows = [calibrate(name, build(name, out_dir)) for name in names]
    print(format_table(rows))
    bad = [r["model"] for r in rows if not r["ok"]]
    print(f"\n{len(rows)} models, {len(bad)} mismatches" + (f": {', '.join(bad)}" if bad else "")
          + f" (models in {out_dir.relative_to(REPO_ROOT)})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
