"""Flash: the bytes of a subnet's exported ``.tflite``, from its graph IR (the model below)."""

from __future__ import annotations

from toolchain.ir.graph import Graph, Tensor

# Flash: the .tflite file's bytes. Every tensor costs its constant data (exact), its quantization
# (a float32 scale + an int64 zero point per channel: 12 bytes), its name (a flatbuffer string:
# 4-byte length + bytes + NUL, padded to 4) and a fixed share of flatbuffer tables (the Tensor
# and Buffer tables, shape vector, its place in the op's input/output vectors). TENSOR_BYTES and
# MODEL_BYTES are the least-squares fit of file size - data - quantization - names on 12 subnets
# exported by toolchain.convert.export.export_int8 with trained (or trained-like: non-zero BN statistics)
# weights (TensorFlow 2.21; OFA and MOOFA layouts of several sizes and class counts), made and
# re-fitted by ``bench/bench_flash_estimate.py --fit``; its error is in docs/BENCHMARKS.md.
# Constant data is counted per tensor: the converter stores equal constants once, which only
# happens with untrained weights (below).
QUANT_PARAM_BYTES_PER_CHANNEL = 12
TENSOR_BYTES = 111
MODEL_BYTES = 518

# The names TFLiteConverter gives the tensors (TensorFlow 2.21, Keras 3) are a few percent of a
# subnet's file: each names the Keras layers it was fused from, as
# "functional_1/<layer scope>/<op>" joined with ";", where a layer's scope is its class name and
# counter ("conv2d_44_1"; the first two of a class are "conv2d_1" and "conv2d_1_2"); the input is
# "input" and the output "Identity" (toolchain.convert.export converts a frozen graph function). A conv's bias
# is "[<relu scope>/Relu;]<conv scope>/BiasAdd;<conv scope>/convolution;<conv scope>/Squeeze"
# and its output the same + "1". Each name is predicted from the op that makes or reads the
# tensor, with two-digit counters: the few layers numbered below 10 make the predictions a
# fixed number of bytes too long on every subnet, and MODEL_BYTES absorbs that.
# A conv whose bias is all zeros (the feature mix, which has none; and every BN-folded conv of an
# untrained supernet, whose BN statistics are still 0 and 1) loses its BiasAdd in conversion:
# its bias becomes "arith.constantN" and its output "<scope>/convolution1", ~55 bytes shorter,
# and equal zero biases share one buffer. An untrained supernet's export is therefore smaller
# than the estimate: the estimate is an upper bound there.
_LAYER_PREFIX = len("functional_1/")
_SCOPE = {  # class name + "_NN_1"
    "conv": len("conv2d_NN_1"),
    "depthwise": len("depthwise_conv2d_NN_1"),
    "relu": len("re_lu_NN_1"),
    "hard_swish": len("activation_NN_1"),
    "add": len("add_NN_1"),
    "multiply": len("multiply_NN_1"),
    "rescaling": len("rescaling_NN_1"),
    "mean": len("global_average_pooling2d_NN_1"),
}


def _layer_op(scope: str, op: str) -> int:
    """len("functional_1/<scope>/<op>")."""
    return _LAYER_PREFIX + _SCOPE[scope] + len(op)


def tflite_name_lengths(graph: Graph) -> list[int]:
    """The predicted length of each tensor's name in the exported .tflite (see above)."""
    lengths = [len("input")] * len(graph.tensors)  # what no op makes: the input
    for op in graph.ops:
        kind, inputs, outputs = op.kind, op.inputs, op.outputs
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            scope, conv = ("depthwise", "/depthwise") if kind == "DEPTHWISE_CONV_2D" else ("conv", "/convolution")
            lengths[inputs[1]] = _layer_op(scope, conv)
            if op.attrs.get("zero_bias"):
                lengths[inputs[2]] = len("arith.constantN")
                lengths[outputs[0]] = _layer_op(scope, conv + "1")
                continue
            bias = 3 * _LAYER_PREFIX + 3 * _SCOPE[scope] + len("/BiasAdd;" + conv + ";/Squeeze")
            act = op.attrs.get("fused_activation", "NONE")
            if act in ("RELU", "RELU6"):
                bias += _layer_op("relu", "/" + act.capitalize() + ";")  # "/Relu;" or "/Relu6;"
            lengths[inputs[2]], lengths[outputs[0]] = bias, bias + 1
        elif kind == "HARD_SWISH":
            lengths[outputs[0]] = 4 * _LAYER_PREFIX + 4 * _SCOPE["hard_swish"] + len("/mul;;/Relu6;/add;/truediv")
        elif kind == "MEAN":
            lengths[outputs[0]] = _layer_op("mean", "/Mean")
            lengths[inputs[1]] = len("arith.constant")
        elif kind == "MUL" and graph.tensors[inputs[1]].is_constant:  # Rescaling by 1/6
            lengths[outputs[0]] = _layer_op("rescaling", "/mul")
            lengths[inputs[1]] = len("arith.constantN")
        elif kind == "MUL":
            lengths[outputs[0]] = _layer_op("multiply", "/Mul")
        elif kind == "ADD":
            lengths[outputs[0]] = _layer_op("add", "/Add")
        elif kind == "FULLY_CONNECTED":
            lengths[inputs[1]] = len("functional_1/dense_1/MatMul")
            lengths[inputs[2]] = len("functional_1/dense_1/BiasAdd")
            lengths[outputs[0]] = len("Identity")
    return lengths


def string_bytes(length: int) -> int:
    return (4 + length + 1 + 3) // 4 * 4


def tensor_flash_bytes(t: Tensor, name_length: int) -> int:
    return (t.nbytes if t.is_constant else 0) + QUANT_PARAM_BYTES_PER_CHANNEL * t.quant_channels + TENSOR_BYTES + string_bytes(name_length)


def flash_estimate(graph: Graph) -> int:
    """Bytes of the .tflite: constant data exactly, quantization, names and tables estimated
    (the fit above; its error is in docs/BENCHMARKS.md)."""
    names = tflite_name_lengths(graph)
    return sum(tensor_flash_bytes(t, n) for t, n in zip(graph.tensors, names)) + MODEL_BYTES
