"""The corpus itself: every model is a real TFLite file of the promised type that the real TFLM
interpreter runs, and every bad input is bad in the promised way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from corpus import (
    CORPUS,
    FLOAT_MODELS,
    INT8_MODELS,
    INT16_MODELS,
    TflmError,
    io_dtype,
    tflm_allocations,
)

TFLITE_IDENTIFIER = b"TFL3"  # flatbuffer file identifier, bytes 4:8 of every .tflite


def _litert_interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path))


def test_quantization_sets_partition_the_corpus():
    assert FLOAT_MODELS | INT16_MODELS | INT8_MODELS == set(CORPUS)
    assert not (FLOAT_MODELS & INT16_MODELS)
    assert len(INT8_MODELS) >= 8


def test_importing_corpus_does_not_import_tensorflow():
    code = "import sys, corpus; sys.exit('tensorflow' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_model_is_a_tflite_file_with_the_promised_io_types(corpus, name):
    path = corpus[name]
    assert path.name == f"{name}.tflite" and path.is_file()
    assert path.read_bytes()[4:8] == TFLITE_IDENTIFIER

    interpreter = _litert_interpreter(path)
    ios = interpreter.get_input_details() + interpreter.get_output_details()
    assert len(interpreter.get_input_details()) == 1
    for detail in ios:
        assert np.dtype(detail["dtype"]) == io_dtype(name), detail["name"]
        assert detail["shape"][0] == 1  # static batch of one, as on an MCU


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_tflm_runs_model(corpus, name):
    allocations = tflm_allocations(corpus[name])
    assert allocations["head"] > 0 and allocations["tail"] > 0
    assert allocations["head"] % 16 == 0  # TFLM aligns the arena to 16 bytes
    assert allocations["total"] == allocations["head"] + allocations["tail"]


def test_bad_inputs_are_bad_in_the_promised_way(corpus, bad_inputs):
    assert set(bad_inputs) == {"empty", "truncated", "random", "not_a_model", "tflm_cannot_run"}
    assert bad_inputs["empty"].stat().st_size == 0
    assert bad_inputs["random"].stat().st_size == 4096

    whole = corpus["resnet8"].read_bytes()
    assert whole.startswith(bad_inputs["truncated"].read_bytes())
    assert bad_inputs["truncated"].stat().st_size == len(whole) * 2 // 5

    not_a_model = bad_inputs["not_a_model"].read_bytes()
    assert not_a_model[4:8] != TFLITE_IDENTIFIER
    import flatbuffers  # a valid flatbuffer: its root table holds one readable string

    table = flatbuffers.table.Table(
        bytearray(not_a_model),
        flatbuffers.encode.Get(flatbuffers.packer.uoffset, bytearray(not_a_model), 0))
    assert table.String(table.Offset(4) + table.Pos) == b"this flatbuffer is not a TFLite model"

    for kind in ("empty", "truncated", "random", "not_a_model"):
        with pytest.raises(ValueError):
            _litert_interpreter(bad_inputs[kind])


def test_tflm_cannot_run_model_is_valid_tflite_that_tflm_rejects(bad_inputs):
    path = bad_inputs["tflm_cannot_run"]
    assert path.read_bytes()[4:8] == TFLITE_IDENTIFIER
    interpreter = _litert_interpreter(path)  # the full TFLite runtime loads and runs it
    interpreter.allocate_tensors()
    interpreter.invoke()
    with pytest.raises(TflmError, match="RFFT2D|allocate tensors"):
        tflm_allocations(path)
