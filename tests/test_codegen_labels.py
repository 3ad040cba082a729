"""Labels in model_config.h: any label compiles and reads back byte for byte, and the labels
must match the model's classes. The graph is a one-op int8 classifier built by hand; headers
are compiled with arm-none-eabi-g++ (and the host g++, which also runs them) when present."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from toolchain.boards.targets import resolve_target
from toolchain.errors import InputError
from toolchain.firmware.codegen import c_string_literal, check_labels, render_firmware
from toolchain.ir.graph import Graph, Tensor
from toolchain.memory.estimate import estimate_for_target

ARM_GXX = shutil.which("arm-none-eabi-g++")
HOST_GXX = shutil.which("g++")

# Twelve labels for a twelve-class model, each one a way the old `"{{ label }}"` broke or bent.
NASTY_LABELS = [
    'say "yes"',  # a double quote (was silently turned into ')
    "back\\slash",
    "trailing\\",  # a trailing backslash escaped the closing quote
    "two\nlines",  # a newline ended the literal
    "trigraph ??= ??/ ??'",  # before C++17 (and with -trigraphs) ??= is #, ??/ a backslash
    "tab\there",
    "é",
    "日本",
    "cr\rlf\n",
    "\x1b[1m7",  # a control byte followed by digits: an escape must not swallow them
    "\x7fdel?",
    "ok",
]


def classifier_graph(classes: int = 12, output_shape: tuple[int, ...] | None = None) -> Graph:
    """int8 [1, 8] -> FULLY_CONNECTED -> int8 [1, classes] (or ``output_shape``)."""
    g = Graph(tensors=[], ops=[], inputs=[], outputs=[], name="labels-test")
    x = g.add_tensor(Tensor("input", (1, 8), "int8", quant_channels=1, scale=0.5, zero_point=-3))
    w = g.add_tensor(Tensor("weights", (classes, 8), "int8", is_constant=True, quant_channels=1, scale=0.01, zero_point=0))
    b = g.add_tensor(Tensor("bias", (classes,), "int32", is_constant=True, quant_channels=1, scale=0.005, zero_point=0))
    shape = output_shape if output_shape is not None else (1, classes)
    y = g.add_tensor(Tensor("logits", shape, "int8", quant_channels=1, scale=0.25, zero_point=1))
    g.add_op("FULLY_CONNECTED", (x, w, b), (y,))
    g.inputs, g.outputs = [x], [y]
    g.check()
    return g


def render(tmp_path: Path, labels, graph: Graph | None = None, model_name: str = "model.tflite") -> Path:
    graph = graph or classifier_graph()
    target = resolve_target("nucleo-f746zg")
    files = render_firmware(b"TFL3" + bytes(60), graph, target, estimate_for_target(graph, target), tmp_path / "fw", model_name, labels)
    return files["model_config.h"]


def probe_source(num_labels: int) -> str:
    """A program that includes model_config.h, checks kNumLabels at compile time and prints
    every label followed by a NUL byte."""
    return f"""#include "model_config.h"
#include <cstdio>
#include <cstring>

static_assert(kNumLabels == {num_labels}, "kNumLabels");
static_assert(sizeof(kLabels) / sizeof(kLabels[0]) == {max(num_labels, 1)}, "kLabels size");

int main() {{
  for (int i = 0; i < kNumLabels; ++i) {{
    std::fwrite(kLabels[i], 1, std::strlen(kLabels[i]), stdout);
    std::fputc('\\0', stdout);
  }}
  return 0;
}}
"""


def compile_probe(compiler: str, header: Path, num_labels: int, *flags: str, output: Path | None = None):
    probe = header.parent / "labels_probe.cc"
    probe.write_text(probe_source(num_labels))
    what = ["-o", str(output)] if output is not None else ["-fsyntax-only"]
    cmd = [compiler, *flags, "-Wall", "-Wextra", "-Werror", "-I", str(header.parent), str(probe), *what]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr}"


# --------------------------------------------------------------------------------------------
# c_string_literal
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "literal"),
    [
        ("yes", '"yes"'),
        ("", '""'),
        ('a"b', '"a\\"b"'),
        ("a\\b", '"a\\\\b"'),
        ("end\\", '"end\\\\"'),
        ("a\nb\rc\td", '"a\\nb\\rc\\td"'),
        ("??=", '"\\?\\?="'),
        ("what?", '"what\\?"'),
        ("é", '"\\303\\251"'),
        ("日本", '"\\346\\227\\245\\346\\234\\254"'),
        ("\x01" + "7", '"\\0017"'),  # three octal digits, then the digit 7 itself
        ("\x1bA", '"\\033A"'),
        ("\x7f", '"\\177"'),
        ("\x00", '"\\000"'),
        (b"\xff\x80", '"\\377\\200"'),
        ("it's /* not */ // a comment", "\"it's /* not */ // a comment\""),
    ],
)
def test_c_string_literal(text, literal):
    assert c_string_literal(text) == literal


def test_c_string_literal_gives_back_surrogate_escaped_bytes():
    name = b"caf\xe9".decode("utf-8", "surrogateescape")  # a Latin-1 folder name, as os.fsdecode gives it
    assert c_string_literal(name) == '"caf\\351"'


# --------------------------------------------------------------------------------------------
# model_config.h with hostile labels
# --------------------------------------------------------------------------------------------


def test_labels_are_literals_not_mangled(tmp_path):
    text = render(tmp_path, NASTY_LABELS).read_text()
    assert "kNumLabels = 12;" in text
    block = text[text.index("kLabels[12] = {") :]
    lines = [line.strip() for line in block.splitlines()[1:13]]
    assert lines == [c_string_literal(label) + "," for label in NASTY_LABELS]
    assert '"say \\"yes\\"",' in text  # the quote survives as a quote


@pytest.mark.skipif(ARM_GXX is None, reason="gcc-arm-none-eabi not installed (scripts/setup.sh installs it)")
@pytest.mark.parametrize("std", ["-std=c++17", "-std=c++11"])
def test_hostile_labels_compile_for_arm(tmp_path, std):
    header = render(tmp_path, NASTY_LABELS)
    flags = [std, "-mcpu=cortex-m7", "-mthumb"] + (["-trigraphs", "-Wtrigraphs"] if std == "-std=c++11" else [])
    compile_probe(ARM_GXX, header, len(NASTY_LABELS), *flags)


@pytest.mark.skipif(HOST_GXX is None, reason="no host g++")
@pytest.mark.parametrize("std", ["-std=c++17", "-std=c++11"])
def test_hostile_labels_round_trip_byte_exactly_on_the_host(tmp_path, std):
    header = render(tmp_path, NASTY_LABELS)
    program = tmp_path / "labels_probe"
    flags = [std] + (["-trigraphs", "-Wtrigraphs"] if std == "-std=c++11" else [])  # ISO C++11 reads trigraphs
    compile_probe(HOST_GXX, header, len(NASTY_LABELS), *flags, output=program)
    out = subprocess.run([str(program)], capture_output=True, timeout=60, check=True).stdout
    assert out.split(b"\0")[:-1] == [label.encode("utf-8") for label in NASTY_LABELS]


@pytest.mark.skipif(HOST_GXX is None and ARM_GXX is None, reason="no C++ compiler")
def test_no_labels_and_a_hostile_model_name_still_compile(tmp_path):
    header = render(tmp_path, None, model_name="evil\nint x = ;\\\n.tflite")
    text = header.read_text()
    assert "kNumLabels = 0;" in text and "evil\\x0aint x = ;\\\\x0a.tflite" in text.splitlines()[0]
    compile_probe(HOST_GXX or ARM_GXX, header, 0, "-std=c++17")


@pytest.mark.skipif(HOST_GXX is None, reason="no host g++")
def test_longest_labels_round_trip(tmp_path):
    labels = ["a" * 256, "é" * 128, "日" * 85 + "a", "?" * 256] + [str(i) for i in range(8)]
    header = render(tmp_path, labels)
    program = tmp_path / "labels_probe"
    compile_probe(HOST_GXX, header, 12, "-std=c++17", output=program)
    out = subprocess.run([str(program)], capture_output=True, timeout=60, check=True).stdout
    assert out.split(b"\0")[:-1] == [label.encode("utf-8") for label in labels]


# --------------------------------------------------------------------------------------------
# Labels that cannot be right
# --------------------------------------------------------------------------------------------


def assert_one_line(excinfo, *fragments: str) -> None:
    message = str(excinfo.value)
    assert message and "\n" not in message and message.strip() == message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize(("count", "words"), [(2, "2 labels"), (13, "13 labels"), (1, "1 label ")])
def test_label_count_must_match_the_model_outputs(tmp_path, count, words):
    labels = [f"class{i}" for i in range(count)]
    with pytest.raises(InputError) as excinfo:
        render(tmp_path, labels)
    assert_one_line(excinfo, "--labels: ", words, "for a model with 12 outputs")
    assert not (tmp_path / "fw").exists()  # nothing written


def test_class_count_is_the_last_dimension_of_the_first_output(tmp_path):
    graph = classifier_graph(classes=3, output_shape=(1, 1, 1, 3))
    assert "kNumLabels = 3;" in render(tmp_path, ["a", "b", "c"], graph).read_text()
    with pytest.raises(InputError) as excinfo:
        check_labels(["a", "b"], graph)
    assert_one_line(excinfo, "--labels: 2 labels for a model with 3 outputs")
    assert check_labels(None, graph) == [] and check_labels([], graph) == []


@pytest.mark.parametrize(
    ("bad", "fragments"),
    [
        ("", ("label 5 is empty",)),
        ("x" * 257, ("label 5 is 257 bytes", "at most 256")),
        ("日" * 86, ("label 5 is 258 bytes", "at most 256")),
        ("nul\0byte", ("label 5 contains a NUL",)),
        ("\ud800lone", ("label 5", "not valid Unicode")),
    ],
    ids=["empty", "257-bytes", "258-bytes-of-utf8", "nul", "lone-surrogate"],
)
def test_bad_labels_give_one_line_input_error(tmp_path, bad, fragments):
    labels = [f"class{i}" for i in range(12)]
    labels[4] = bad
    with pytest.raises(InputError) as excinfo:
        render(tmp_path, labels)
    assert_one_line(excinfo, "--labels: ", *fragments)


def test_the_old_quote_replacement_is_gone(tmp_path):
    text = render(tmp_path, ['"quoted"'] + [f"c{i}" for i in range(11)]).read_text()
    assert re.search(r'^\s*"\\"quoted\\"",$', text, re.M)
    assert "'quoted'" not in text
