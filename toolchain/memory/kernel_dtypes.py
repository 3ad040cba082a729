"""The tensor types each TFLM kernel accepts, as data, and the ops of a model that break them.

:data:`KERNEL_DTYPES` maps a builtin op (the names of ``coverage.TFLM_BUILTIN_OPS``) to the type
rules its TFLM reference kernel enforces: which types a tensor of the op may have, which tensors
must share a type, and which weight (or output) types go with which input type. The facts were
read from the pinned tflite-micro source, commit 90b983c2, ``tensorflow/lite/micro/kernels/*.cc``
(the reference kernels: what the host interpreter and the Cortex-M "reference" build run); each
entry names its file. Nothing here is TFLM's code, only what its checks accept.

Each rule says *where* TFLM checks it, because that decides how the model fails:

- ``Prepare``: a ``TF_LITE_ENSURE`` (or a ``MicroPrintf`` and ``kTfLiteError``) in the kernel's
  Prepare. Every op is prepared before anything runs, so ``AllocateTensors`` fails.
- ``Eval``: the ``default:`` branch of the kernel's ``switch (input->type)`` (or an ``else``
  that returns ``kTfLiteError``) in Eval: ``AllocateTensors`` succeeds and ``Invoke`` fails.

An op with no entry is never refused here: where a kernel's rule was not certain (or has no type
check of its own), the op is left out rather than guessed, since a false refusal is worse than a
missing one. Ops with a hand-written Prepare check in ``coverage._PREPARE_CHECKS`` (SOFTMAX,
LOGISTIC, CONCATENATION, DEQUANTIZE) are not repeated here.

:func:`dtype_refusals` applies the table to a :class:`~toolchain.ir.graph.Graph`. It runs on
fuzzer-mutated models, so it never raises: a tensor index that is absent (-1), missing or out of
range makes the rules that need it not apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from toolchain.ir.graph import Graph

PREPARE, EVAL = "Prepare", "Eval"
_FAILS = {PREPARE: "AllocateTensors", EVAL: "Invoke"}

# Short names for the type sets below.
F32, I8, I16, I32, I64, U8, U32, BOOL, I4 = ("float32", "int8", "int16", "int32", "int64", "uint8", "uint32",
                                               "bool", "int4")

_REF = re.compile(r"(input|output) (\d+)")


@dataclass(frozen=True)
class Accepts:
    """``tensor`` (``"input 0"``, ``"output 0"``, optionally ``"input 1 (filter)"``) has one of ``dtypes``."""

    tensor: str
    dtypes: frozenset
    stage: str

    def __init__(self, tensor: str, dtypes, stage: str):
        object.__setattr__(self, "tensor", tensor)
        object.__setattr__(self, "dtypes", frozenset(dtypes))
        object.__setattr__(self, "stage", stage)

    def violation(self, graph: Graph, op) -> str | None:
        t = _dtype(graph, op, self.tensor)
        if t is None or t in self.dtypes:
            return None
        return f"{self.tensor} is {t}; TFLM's kernel accepts only {_names(self.dtypes)}"


@dataclass(frozen=True)
class Same:
    """Tensors ``a`` and ``b`` have the same type."""

    a: str
    b: str
    stage: str

    def violation(self, graph: Graph, op) -> str | None:
        ta, tb = _dtype(graph, op, self.a), _dtype(graph, op, self.b)
        if ta is None or tb is None or ta == tb:
            return None
        return f"{self.a} is {ta} and {self.b} is {tb}; TFLM's kernel needs them of one type"


@dataclass(frozen=True)
class Given:
    """When ``key`` has a type in ``allowed``, ``other`` has one of ``allowed[key type]``.

    ``others`` says what holds for a key type not in ``allowed``: ``"any"`` (this rule does not
    check it), ``"refuse"`` (the kernel accepts no other combination) or ``"same"`` (``other``
    must then have the key's type)."""

    key: str
    other: str
    allowed: dict = field(hash=False)
    stage: str
    others: str = "any"

    def violation(self, graph: Graph, op) -> str | None:
        tk, to = _dtype(graph, op, self.key), _dtype(graph, op, self.other)
        if tk is None or to is None:
            return None
        combos = "; ".join(f"{k} with {_names(v)}" for k, v in self.allowed.items())
        if tk in self.allowed:
            if to in self.allowed[tk]:
                return None
        elif self.others == "any" or (self.others == "same" and to == tk):
            return None
        only = " only" if self.others == "refuse" else ""
        same = "; or both of one type" if self.others == "same" else ""
        return f"{self.key} is {tk} with {self.other} {to}; TFLM's kernel takes{only}: {combos}{same}"


@dataclass(frozen=True)
class Kernel:
    """The rules of one op's kernel, in the order TFLM checks them (Prepare's before Eval's)."""

    source: str  # the file under tensorflow/lite/micro/kernels/
    rules: tuple


def _k(source: str, *rules) -> Kernel:
    return Kernel(source, tuple(rules))


def _float_only_unary(source: str) -> Kernel:
    # elementwise.cc GenericPrepare<IsNumericSupportedType>: output of the input's type, float32.
    return _k(source, Same("input 0", "output 0", PREPARE), Accepts("input 0", {F32}, PREPARE))


_COMPARE = (F32, I32, I64, I8)
_REDUCE_AXIS = Accepts("input 1 (axis)", {I32}, PREPARE)  # reduce_common.cc PrepareSimple

#: op -> the type rules of its TFLM reference kernel (tflite-micro 90b983c2, kernels/).
KERNEL_DTYPES: dict[str, Kernel] = {
    # elementwise.cc PrepareAbsRsqrt<IsAbsSupportedType>.
    "ABS": _k("elementwise.cc", Same("input 0", "output 0", PREPARE), Accepts("input 0", {F32, I8, I16}, PREPARE)),
    # add.cc AddEval: switch on the output's type.
    "ADD": _k("add.cc", Accepts("output 0", {F32, I32, I8, I16}, EVAL)),
    # add_n.cc CalculateOpData (Prepare): output and every input of one type; FLOAT32 or INT8.
    "ADD_N": _k("add_n.cc", Same("input 0", "output 0", PREPARE), Same("input 0", "input 1", PREPARE),
                Accepts("output 0", {F32, I8}, PREPARE)),
    # arg_min_max.cc Eval: int32 axis, int32 output (an int64 output_type is refused), float32/int8 input.
    "ARG_MAX": _k("arg_min_max.cc", Accepts("input 1 (axis)", {I32}, EVAL), Accepts("output 0", {I32}, EVAL),
                  Accepts("input 0", {F32, I8}, EVAL)),
    "ARG_MIN": _k("arg_min_max.cc", Accepts("input 1 (axis)", {I32}, EVAL), Accepts("output 0", {I32}, EVAL),
                  Accepts("input 0", {F32, I8}, EVAL)),
    # pooling_common.cc PoolingPrepare.
    "AVERAGE_POOL_2D": _k("pooling_common.cc", Accepts("input 0", {F32, I8, I16}, PREPARE)),
    "MAX_POOL_2D": _k("pooling_common.cc", Accepts("input 0", {F32, I8, I16}, PREPARE)),
    # batch_matmul.cc BatchMatMulPrepare: no hybrid, no int32 output.
    "BATCH_MATMUL": _k("batch_matmul.cc", Accepts("input 0", {F32, I8, I16}, PREPARE),
                       Accepts("input 1", {F32, I8, I16}, PREPARE), Same("input 0", "input 1", PREPARE),
                       Same("input 0", "output 0", PREPARE)),
    # batch_to_space_nd.cc / space_to_batch_nd.cc: Prepare types equal, Eval float32/int8.
    "BATCH_TO_SPACE_ND": _k("batch_to_space_nd.cc", Same("input 0", "output 0", PREPARE),
                            Accepts("input 0", {F32, I8}, EVAL)),
    "SPACE_TO_BATCH_ND": _k("space_to_batch_nd.cc", Same("input 0", "output 0", PREPARE),
                            Accepts("input 0", {F32, I8}, EVAL)),
    # broadcast_args.cc BroadcastArgsPrepare.
    "BROADCAST_ARGS": _k("broadcast_args.cc", Accepts("input 0", {I32, I64}, PREPARE),
                         Same("input 0", "input 1", PREPARE), Same("input 0", "output 0", PREPARE)),
    # broadcast_to.cc BroadcastToPrepare.
    "BROADCAST_TO": _k("broadcast_to.cc", Accepts("input 1 (shape)", {I32, I64}, PREPARE),
                       Same("input 0", "output 0", PREPARE)),
    # cast.cc CastEval: the input's switch, then copyToTensor's switch on the output.
    "CAST": _k("cast.cc", Accepts("input 0", {I8, I16, I32, U32, F32, BOOL}, EVAL),
               Accepts("output 0", {I8, I16, I32, U32, F32}, EVAL)),
    # ceil.cc / round.cc / exp.cc Prepare: float32 in and out.
    "CEIL": _k("ceil.cc", Accepts("input 0", {F32}, PREPARE), Same("input 0", "output 0", PREPARE)),
    "ROUND": _k("round.cc", Accepts("input 0", {F32}, PREPARE), Same("input 0", "output 0", PREPARE)),
    "EXP": _k("exp.cc", Accepts("input 0", {F32}, PREPARE), Same("input 0", "output 0", PREPARE)),
    # conv_common.cc ConvPrepare: types equal and the (input, filter) combination; conv.cc ConvEval:
    # an int16 input's bias is int32 or int64.
    "CONV_2D": _k("conv_common.cc, conv.cc", Same("input 0", "output 0", PREPARE),
                  Given("input 0", "input 1 (filter)", {F32: {F32}, I16: {I8}, I8: {I4, I8}}, PREPARE, "refuse"),
                  Given("input 0", "input 2 (bias)", {I16: {I32, I64}}, EVAL)),
    # depthwise_conv_common.cc DepthwiseConvPrepare: filter of the input's type, or int8 input with
    # int4/int8 filter, or int16 input with int8 filter; depthwise_conv.cc Eval: float32/int8/int16
    # input, and an int16 input takes only an int8 filter.
    "DEPTHWISE_CONV_2D": _k("depthwise_conv_common.cc, depthwise_conv.cc",
                            Given("input 0", "input 1 (filter)", {F32: {F32}, I8: {I4, I8}, I16: {I8, I16}}, PREPARE,
                                  "same"),
                            Accepts("input 0", {F32, I8, I16}, EVAL),
                            Given("input 0", "input 1 (filter)", {I16: {I8}}, EVAL)),
    # elementwise.cc GenericPrepare<IsNumericSupportedType>: float32 only.
    "COS": _float_only_unary("elementwise.cc"),
    "SIN": _float_only_unary("elementwise.cc"),
    "LOG": _float_only_unary("elementwise.cc"),
    "SQRT": _float_only_unary("elementwise.cc"),
    "SQUARE": _float_only_unary("elementwise.cc"),
    # elementwise.cc PrepareAbsRsqrt<IsRsqrtSupportedType> (Eval has an int16 case Prepare never lets through).
    "RSQRT": _k("elementwise.cc", Same("input 0", "output 0", PREPARE), Accepts("input 0", {F32, I8}, PREPARE)),
    # elementwise.cc GenericPrepare<IsLogicalSupportedType>.
    "LOGICAL_NOT": _k("elementwise.cc", Same("input 0", "output 0", PREPARE), Accepts("input 0", {BOOL}, PREPARE)),
    # cumsum.cc CalculateOpData (Prepare).
    "CUMSUM": _k("cumsum.cc", Accepts("input 0", {F32, I8}, PREPARE), Accepts("input 1 (axis)", {I32}, PREPARE),
                 Same("input 0", "output 0", PREPARE)),
    # depth_to_space.cc / space_to_depth.cc Prepare.
    "DEPTH_TO_SPACE": _k("depth_to_space.cc", Accepts("output 0", {F32, I8}, PREPARE),
                         Same("input 0", "output 0", PREPARE)),
    "SPACE_TO_DEPTH": _k("space_to_depth.cc", Accepts("output 0", {F32, I8}, PREPARE),
                         Same("input 0", "output 0", PREPARE)),
    # div.cc CalculateOpDataDiv (Prepare): one type; DivEval: float32, int32 or int8.
    "DIV": _k("div.cc", Same("input 0", "input 1", PREPARE), Same("input 0", "output 0", PREPARE),
              Accepts("output 0", {F32, I32, I8}, EVAL)),
    # dynamic_update_slice.cc Prepare (operand and update of one type, int32/int64 indices) and Eval.
    "DYNAMIC_UPDATE_SLICE": _k("dynamic_update_slice.cc", Same("input 0", "input 1", PREPARE),
                               Accepts("input 2 (start indices)", {I32, I64}, PREPARE),
                               Accepts("input 0", {F32, I8, I16, I32}, EVAL)),
    # elu.cc: Prepare types equal, Eval float32/int8.
    "ELU": _k("elu.cc", Same("input 0", "output 0", PREPARE), Accepts("input 0", {F32, I8}, EVAL)),
    # embedding_lookup.cc EmbeddingLookUpPrepare: int32 ids, float32 or int8 table; a float32
    # table gives float32, an int8 one int8 or float32 (hybrid).
    "EMBEDDING_LOOKUP": _k("embedding_lookup.cc", Accepts("input 0 (ids)", {I32}, PREPARE),
                           Accepts("input 1 (table)", {F32, I8}, PREPARE),
                           Given("input 1 (table)", "output 0", {F32: {F32}, I8: {F32, I8}}, PREPARE)),
    # comparisons.cc *Eval: switch on input 0 (GREATER alone also takes int16).
    "EQUAL": _k("comparisons.cc", Accepts("input 0", {BOOL, *_COMPARE}, EVAL)),
    "NOT_EQUAL": _k("comparisons.cc", Accepts("input 0", {BOOL, *_COMPARE}, EVAL)),
    "GREATER": _k("comparisons.cc", Accepts("input 0", {*_COMPARE, I16}, EVAL)),
    "GREATER_EQUAL": _k("comparisons.cc", Accepts("input 0", _COMPARE, EVAL)),
    "LESS": _k("comparisons.cc", Accepts("input 0", _COMPARE, EVAL)),
    "LESS_EQUAL": _k("comparisons.cc", Accepts("input 0", _COMPARE, EVAL)),
    # expand_dims.cc: Prepare reads an int32 axis; Eval copies float32/int16/int8.
    "EXPAND_DIMS": _k("expand_dims.cc", Accepts("input 1 (axis)", {I32}, PREPARE),
                      Accepts("input 0", {F32, I16, I8}, EVAL)),
    # fill.cc FillPrepare (integer dims, value and output of one type), FillEval (value type).
    "FILL": _k("fill.cc", Accepts("input 0 (dims)", {I8, I16, I32, I64}, PREPARE),
               Same("input 1 (value)", "output 0", PREPARE), Accepts("input 1 (value)", {F32, I32, I8}, EVAL)),
    # floor.cc FloorEval (no Prepare).
    "FLOOR": _k("floor.cc", Accepts("input 0", {F32}, EVAL)),
    # floor_div.cc / floor_mod.cc: Prepare one type, Eval float32.
    "FLOOR_DIV": _k("floor_div.cc", Same("input 0", "input 1", PREPARE), Same("input 0", "output 0", PREPARE),
                    Accepts("input 0", {F32}, EVAL)),
    "FLOOR_MOD": _k("floor_mod.cc", Same("input 0", "input 1", PREPARE), Same("input 0", "output 0", PREPARE),
                    Accepts("input 0", {F32}, EVAL)),
    # fully_connected.cc FullyConnectedPrepare: types equal; float32 input with float32 weights,
    # int8 with int8/int4, int16 with int8. FullyConnectedEval: float32/int8/int16 input.
    "FULLY_CONNECTED": _k("fully_connected.cc", Same("input 0", "output 0", PREPARE),
                          Given("input 0", "input 1 (weights)", {F32: {F32}, I8: {I8, I4}, I16: {I8}}, PREPARE),
                          Accepts("input 0", {F32, I8, I16}, EVAL)),
    # gather.cc / gather_nd.cc Prepare: int32 positions, float32/int8 values.
    "GATHER": _k("gather.cc", Accepts("input 1 (positions)", {I32}, PREPARE), Accepts("input 0", {F32, I8}, PREPARE)),
    "GATHER_ND": _k("gather_nd.cc", Accepts("input 0", {F32, I8}, PREPARE),
                    Accepts("input 1 (indices)", {I32}, PREPARE)),
    # hard_swish.cc HardSwishEval.
    "HARD_SWISH": _k("hard_swish.cc", Accepts("input 0", {F32, I8}, EVAL)),
    # if.cc IfPrepare: a bool condition.
    "IF": _k("if.cc", Accepts("input 0 (condition)", {BOOL}, PREPARE)),
    # l2norm.cc L2NormPrepare.
    "L2_NORMALIZATION": _k("l2norm.cc", Accepts("output 0", {F32, I8}, PREPARE), Same("input 0", "output 0", PREPARE)),
    # l2_pool_2d.cc L2Prepare.
    "L2_POOL_2D": _k("l2_pool_2d.cc", Same("input 0", "output 0", PREPARE), Accepts("input 0", {F32}, PREPARE)),
    # leaky_relu_common.cc (Prepare types equal), leaky_relu.cc Eval.
    "LEAKY_RELU": _k("leaky_relu_common.cc, leaky_relu.cc", Same("input 0", "output 0", PREPARE),
                     Accepts("input 0", {F32, I8, I16}, EVAL)),
    # log_softmax.cc: Prepare types equal, Eval float32/int8.
    "LOG_SOFTMAX": _k("log_softmax.cc", Same("input 0", "output 0", PREPARE), Accepts("input 0", {F32, I8}, EVAL)),
    # maximum_minimum.cc Eval (no Prepare): switch on the output's type.
    "MAXIMUM": _k("maximum_minimum.cc", Accepts("output 0", {F32, I8, I16, I32, I64}, EVAL)),
    "MINIMUM": _k("maximum_minimum.cc", Accepts("output 0", {F32, I8, I16, I32, I64}, EVAL)),
    # reduce_common.cc: PrepareSimple (int32 axis) for every reduction; Eval*Helper type switches.
    "MEAN": _k("reduce_common.cc", _REDUCE_AXIS, Accepts("input 0", {F32, I8, I16}, EVAL)),
    "SUM": _k("reduce_common.cc", _REDUCE_AXIS, Same("input 0", "output 0", EVAL),
              Accepts("input 0", {F32, I8, I16}, EVAL)),
    "REDUCE_MAX": _k("reduce_common.cc", _REDUCE_AXIS, Same("input 0", "output 0", EVAL),
                     Accepts("input 0", {F32, I8}, EVAL)),
    "REDUCE_MIN": _k("reduce_common.cc", _REDUCE_AXIS, Same("input 0", "output 0", EVAL),
                     Accepts("input 0", {F32, I8}, EVAL)),
    "REDUCE_ALL": _k("reduce_common.cc", Accepts("input 0", {BOOL}, PREPARE), _REDUCE_AXIS,
                     Same("input 0", "output 0", EVAL)),
    # mirror_pad.cc MirrorPadEval: switch on the output's type.
    "MIRROR_PAD": _k("mirror_pad.cc", Accepts("output 0", {F32, I8}, EVAL)),
    # mul_common.cc CalculateOpDataMul (Prepare: inputs of one type), mul.cc MulEval.
    "MUL": _k("mul_common.cc, mul.cc", Same("input 0", "input 1", PREPARE),
              Accepts("input 0", {I8, I16, I32, F32}, EVAL)),
    # neg.cc NegEval (no Prepare).
    "NEG": _k("neg.cc", Accepts("input 0", {F32}, EVAL)),
    # pack.cc PackEval (output's type) / unpack.cc UnpackEval (input's type).
    "PACK": _k("pack.cc", Accepts("output 0", {F32, I8, I16, I32, I64}, EVAL)),
    "UNPACK": _k("unpack.cc", Accepts("input 0", {F32, I32, I16, I8}, EVAL)),
    # pad_common.cc PadPrepare (output and PADV2's constant of the input's type), pad.cc PadEval.
    "PAD": _k("pad_common.cc, pad.cc", Same("input 0", "output 0", PREPARE),
              Accepts("input 0", {F32, I8, I16, I32}, EVAL)),
    "PADV2": _k("pad_common.cc, pad.cc", Same("input 0", "output 0", PREPARE),
                Same("input 0", "input 2 (constant)", PREPARE), Accepts("input 0", {F32, I8, I16, I32}, EVAL)),
    # prelu_common.cc PreluPrepare (an int16 output takes an int8 alpha), prelu.cc PreluEval.
    "PRELU": _k("prelu_common.cc, prelu.cc", Given("output 0", "input 1 (alpha)", {I16: {I8}}, PREPARE),
                Accepts("input 0", {F32, I8, I16}, EVAL)),
    # quantize_common.cc PrepareQuantizeReference (the type sets), EvalQuantizeReference (the pairs).
    "QUANTIZE": _k("quantize_common.cc", Accepts("input 0", {F32, I32, I16, I8, U8}, PREPARE),
                   Accepts("output 0", {I8, I16, I32, U8}, PREPARE),
                   Given("input 0", "output 0", {F32: {I8, I16}, I32: {I8, I16}, I16: {I8, I16, I32},
                                                 I8: {I8, U8, I16, I32}, U8: {I8}}, EVAL, "refuse")),
    # activations.cc ReluEval / Relu6Eval.
    "RELU": _k("activations.cc", Accepts("input 0", {F32, I8, I16}, EVAL)),
    "RELU6": _k("activations.cc", Accepts("input 0", {F32, I8, I16}, EVAL)),
    # reshape_common.cc ReshapeOutput (Prepare).
    "RESHAPE": _k("reshape_common.cc", Same("input 0", "output 0", PREPARE)),
    # resize_bilinear.cc / resize_nearest_neighbor.cc: int32 size (Prepare), output type (Eval).
    "RESIZE_BILINEAR": _k("resize_bilinear.cc", Accepts("input 1 (size)", {I32}, PREPARE),
                          Accepts("output 0", {F32, I8}, EVAL)),
    "RESIZE_NEAREST_NEIGHBOR": _k("resize_nearest_neighbor.cc", Accepts("input 1 (size)", {I32}, PREPARE),
                                  Accepts("output 0", {F32, I8, I16}, EVAL)),
    # reverse.cc ReverseV2Prepare.
    "REVERSE_V2": _k("reverse.cc", Accepts("input 0", {I32, F32, U8, I8, I16, I64, BOOL}, PREPARE),
                     Accepts("input 1 (axis)", {I32}, PREPARE), Same("input 0", "output 0", PREPARE)),
    # select.cc SelectPrepare (bool condition, x and y of one type), SelectEval (x's type).
    "SELECT_V2": _k("select.cc", Accepts("input 0 (condition)", {BOOL}, PREPARE),
                    Same("input 1", "input 2", PREPARE), Accepts("input 1", {F32, I8, I16}, EVAL)),
    # shape.cc ShapeEval: an int32 output only (out_type int64 is refused).
    "SHAPE": _k("shape.cc", Accepts("output 0", {I32}, EVAL)),
    # slice.cc SliceEval (begin's type, then the input's).
    "SLICE": _k("slice.cc", Accepts("input 1 (begin)", {I32, I64}, EVAL),
                Accepts("input 0", {F32, I32, I8, I16, BOOL}, EVAL)),
    # split.cc SplitEval (the value is input 1, the axis input 0) / split_v.cc SplitVEval (value input 0).
    "SPLIT": _k("split.cc", Accepts("input 1", {F32, I8, I16, I32}, EVAL)),
    "SPLIT_V": _k("split_v.cc", Accepts("input 0", {F32, I8, I16, I32}, EVAL)),
    # squared_difference.cc: Prepare inputs of one type, Eval output's type.
    "SQUARED_DIFFERENCE": _k("squared_difference.cc", Same("input 0", "input 1", PREPARE),
                             Accepts("output 0", {F32, I32, I8, I16}, EVAL)),
    # strided_slice.cc StridedSliceEval: switch on the output's type.
    "STRIDED_SLICE": _k("strided_slice.cc", Accepts("output 0", {F32, I8, I16, I32, BOOL}, EVAL)),
    # sub.cc SubEval: switch on the output's type.
    "SUB": _k("sub.cc", Accepts("output 0", {F32, I32, I8, I16}, EVAL)),
    # svdf_common.cc PrepareSvdf: float32 or int8 input; the weights, state, bias and output
    # types that go with each.
    "SVDF": _k("svdf_common.cc", Accepts("input 0", {F32, I8}, PREPARE),
               Given("input 0", "input 1 (feature weights)", {I8: {I8}, F32: {F32}}, PREPARE),
               Given("input 0", "input 2 (time weights)", {I8: {I16, I8}, F32: {F32}}, PREPARE),
               Given("input 0", "input 4 (state)", {I8: {I16, I8}, F32: {F32}}, PREPARE),
               Given("input 0", "input 3 (bias)", {I8: {I32}, F32: {F32}}, PREPARE),
               Given("input 0", "output 0", {I8: {I8}, F32: {F32}}, PREPARE)),
    # tanh.cc: Prepare types equal, Eval float32/int16/int8.
    "TANH": _k("tanh.cc", Same("input 0", "output 0", PREPARE), Accepts("input 0", {F32, I16, I8}, EVAL)),
    # transpose_common.cc TransposePrepare, transpose.cc TransposeEval.
    "TRANSPOSE": _k("transpose_common.cc, transpose.cc", Same("input 0", "output 0", PREPARE),
                    Accepts("input 0", {F32, I8, I16}, EVAL)),
    # transpose_conv.cc: the data input is input 2 and the filter input 1. Prepare: filter of the
    # input's type, or int16 input with int8 filter; Eval: output of the input's type, float32/int8/int16.
    "TRANSPOSE_CONV": _k("transpose_conv.cc",
                         Given("input 2", "input 1 (filter)", {I16: {I8, I16}}, PREPARE, "same"),
                         Same("input 2", "output 0", EVAL), Accepts("input 2", {F32, I8, I16}, EVAL)),
    # zeros_like.cc ZerosLikeEval.
    "ZEROS_LIKE": _k("zeros_like.cc", Accepts("input 0", {I64, I32, I8, F32}, EVAL)),
}

#: Builtin ops deliberately not in the table, and why.
LEFT_OUT: dict[str, str] = {
    "SOFTMAX": "checked by coverage._PREPARE_CHECKS",
    "LOGISTIC": "checked by coverage._PREPARE_CHECKS",
    "CONCATENATION": "checked by coverage._PREPARE_CHECKS",
    "DEQUANTIZE": "checked by coverage._PREPARE_CHECKS",
    "ASSIGN_VARIABLE": "resource-variable op: its types are the variable's, set at run time",
    "READ_VARIABLE": "resource-variable op: only a debug check (TFLITE_DCHECK) on the handle",
    "VAR_HANDLE": "resource-variable op: no type check",
    "CALL_ONCE": "control flow: no type check of its own",
    "WHILE": "control flow: no type check of its own",
    "LOGICAL_AND": "logical_common.cc reads bools without checking the type",
    "LOGICAL_OR": "logical_common.cc reads bools without checking the type",
    "SQUEEZE": "squeeze.cc refuses only STRING, which TFLM cannot size anyway (coverage.tflm_refusals)",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "rules over some 20 internal tensors and the cell state: not encoded",
}


def _names(dtypes) -> str:
    names = sorted(dtypes)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _dtype(graph: Graph, op, ref: str) -> str | None:
    """The type of the tensor ``ref`` names (``"input 1 (filter)"``), or None where it is absent."""
    m = _REF.match(ref)
    if m is None:
        return None
    indices = op.inputs if m[1] == "input" else op.outputs
    k = int(m[2])
    if not isinstance(indices, (tuple, list)) or k >= len(indices):
        return None
    t = indices[k]
    if not isinstance(t, int) or not 0 <= t < len(graph.tensors):
        return None
    dtype = getattr(graph.tensors[t], "dtype", None)
    return dtype if isinstance(dtype, str) else None


def op_dtype_refusal(graph: Graph, op) -> str | None:
    """The first type rule of ``op``'s TFLM kernel that ``graph`` breaks, as a reason, or None."""
    kernel = KERNEL_DTYPES.get(getattr(op, "kind", None)) if isinstance(getattr(op, "kind", None), str) else None
    if kernel is None:
        return None
    for stage in (PREPARE, EVAL):  # every op's Prepare runs (AllocateTensors) before any Eval
        for rule in kernel.rules:
            if rule.stage != stage:
                continue
            reason = rule.violation(graph, op)
            if reason:
                return f"{reason} ({kernel.source}: fails in {stage}, so {_FAILS[stage]} fails)"
    return None


def dtype_refusals(graph: Graph) -> list[str]:
    """``"op #i KIND: <reason>"`` (``"subgraph k op #i ..."`` outside the main graph) for every op
    whose tensor types its TFLM reference kernel refuses. Never raises."""
    out = []
    try:
        subgraphs = list(getattr(graph, "subgraphs", None) or [])
    except Exception:  # noqa: BLE001 - a mutated model must not crash verify
        subgraphs = []
    for k, sub in enumerate([graph, *subgraphs]):
        for i, op in enumerate(getattr(sub, "ops", None) or []):
            try:
                reason = op_dtype_refusal(sub, op)
            except Exception:  # noqa: BLE001 - defensive: the table must never take verify down
                reason = None
            if reason:
                out.append(f"{f'subgraph {k} ' if k else ''}op #{i} {op.kind}: {reason}")
    return out
