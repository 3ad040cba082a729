"""Measure a model's arena on the build a board runs: TFLM for a Cortex-M core, in QEMU.

The host interpreter (:mod:`toolchain.runtime.tflm`) is TFLM's 64-bit build with reference
kernels; no board runs it. This module builds TFLM from source for a Cortex-M core and kernel
library (TFLM's own Makefile, target ``cortex_m_qemu``, ``BUILD_TYPE=release_with_logs`` so that
``PrintAllocations()`` stays in), links moofa's runner (``qemu_runner/runner.cc``: the host package's
interpreter set-up, every op registered, one invoke) with a vector table and a linker script for
QEMU's MPS2 boards, and runs it in ``qemu-system-arm`` with semihosting. The runner prints TFLM's
own allocation report, which :func:`toolchain.runtime.tflm.parse_report` reads as for the host.

Builds are made on first use and cached outside the work tree, in
``$MOOFA_CACHE_DIR/tflm/<commit>-<core>-<kernels>/`` (default ``~/.cache/moofa``); the TFLM source
comes from ``--tflm-src DIR`` / ``$MOOFA_TFLM_SRC``, or the project's pinned archive when it is on
this machine. docs/BENCHMARKS.md has the build and run times.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from toolchain.errors import InputError
from toolchain.memory.scratch import KERNEL_LIBRARIES
from toolchain.runtime.runner import run
from toolchain.runtime.tflm import Measurement, parse_report

#: The tflite-micro commit the builds are made from (and every measurement names).
TFLM_COMMIT = "90b983c2"
TFLM_SRC_ENV = "MOOFA_TFLM_SRC"
CACHE_ENV = "MOOFA_CACHE_DIR"
_ARCHIVE = f"tflm-src-{TFLM_COMMIT}.tar.xz"
_HERE = Path(__file__).resolve().parent / "qemu_runner"


@dataclass(frozen=True)
class EmulatedCore:
    """A core TFLM is built for and the QEMU board that runs it (its PSRAM holds model and arena)."""

    name: str  # TFLM's TARGET_ARCH and gcc's -mcpu
    machine: str  # qemu-system-arm -M
    psram_base: int


#: QEMU's MPS2 boards: AN386 is a Cortex-M4, AN500 a Cortex-M7 (both with a 16 MiB PSRAM).
EMULATED = {
    "cortex-m4": EmulatedCore("cortex-m4", "mps2-an386", 0x21000000),
    "cortex-m7": EmulatedCore("cortex-m7", "mps2-an500", 0x60000000),
}
#: A board file's ``core`` -> the emulated core whose build it runs (same ISA and struct sizes;
#: the float ABI does not change TFLM's allocations).
BOARD_CORES = {"cortex-m4": "cortex-m4", "cortex-m4f": "cortex-m4", "cortex-m7": "cortex-m7"}


def emulated_core(target) -> EmulatedCore | None:
    """The emulated core for a board, or None (the reason is :func:`not_measurable_reason`)."""
    core = BOARD_CORES.get(target.core)
    if core is None or target.kernel_library not in ("reference", "cmsis-nn"):
        return None
    return EMULATED[core]


def not_measurable_reason(target) -> str:
    if target.kernel_library not in ("reference", "cmsis-nn"):
        return f"{target.name} runs {target.kernel_library} kernels on {target.core}, which QEMU cannot emulate here"
    return f"no QEMU board emulates {target.name}'s {target.core} here (cortex-m4 and cortex-m7 are emulated)"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "moofa")


# --- the TFLM source ----------------------------------------------------------------------------
def _shared_archive() -> Path | None:
    repo = Path(__file__).resolve().parents[2]
    candidate = repo.parent / "shared" / "third_party" / _ARCHIVE
    return candidate if candidate.is_file() else None


def tflm_source(explicit: str | Path | None = None) -> Path:
    """The tflite-micro tree to build: ``explicit``, ``$MOOFA_TFLM_SRC``, or the pinned archive
    unpacked into the cache. One line on how to get it when there is none."""
    given = explicit or os.environ.get(TFLM_SRC_ENV)
    if given:
        root = Path(given)
        if not (root / "tensorflow/lite/micro/tools/make/Makefile").is_file():
            raise InputError(f"{root}: not a tflite-micro source tree (no tensorflow/lite/micro/tools/make/Makefile)")
        return root
    unpacked = cache_root() / "tflm" / TFLM_COMMIT / "tflite-micro"
    if (unpacked / "tensorflow/lite/micro/tools/make/Makefile").is_file():
        return unpacked
    archive = _shared_archive()
    if archive is None:
        raise InputError(
            f"no TFLM source: clone https://github.com/tensorflow/tflite-micro at {TFLM_COMMIT}, run its Makefile once "
            f"with network access (it downloads its third-party code), and pass --tflm-src DIR or set {TFLM_SRC_ENV}")
    staging = unpacked.parent / f".unpack-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(staging, filter="data")
    os.replace(staging / "tflite-micro", unpacked)
    shutil.rmtree(staging, ignore_errors=True)
    return unpacked


# --- builds -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Build:
    """A runner ELF for one core and kernel library, and what made it."""

    core: EmulatedCore
    kernel_library: str
    elf: Path
    src: Path | None = None  # the tflite-micro tree it was built from
    commit: str = TFLM_COMMIT

    @property
    def name(self) -> str:
        lib = self.kernel_library
        return f"TFLM {self.commit} {self.core.name} {lib} (32-bit, arm-none-eabi-gcc, QEMU {self.core.machine})"


def _make_args(src: Path, core: EmulatedCore, kernel_library: str) -> list[str]:
    args = ["make", "-f", "tensorflow/lite/micro/tools/make/Makefile", "TARGET=cortex_m_qemu", f"TARGET_ARCH={core.name}",
            "BUILD_TYPE=release_with_logs"]
    kernel_dir = KERNEL_LIBRARIES[kernel_library].optimized_kernel_dir
    if kernel_dir:
        args.append(f"OPTIMIZED_KERNEL_DIR={kernel_dir}")
    return args


def _gen_dir(src: Path, core: EmulatedCore, kernel_library: str) -> Path:
    kernel_dir = KERNEL_LIBRARIES[kernel_library].optimized_kernel_dir
    return src / "gen" / f"cortex_m_qemu_{core.name}_release_with_logs{'_' + kernel_dir if kernel_dir else ''}_gcc"


def _tool_env() -> dict[str, str]:
    env = dict(os.environ)
    # TFLM's Makefile runs Python scripts that need numpy and Pillow: this interpreter has both.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def _check_tools() -> None:
    for tool, package in (("arm-none-eabi-g++", "gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib"),
                          ("qemu-system-arm", "qemu-system-arm"), ("make", "make")):
        if shutil.which(tool) is None:
            raise InputError(f"measuring on a Cortex-M build needs {tool} (Debian: apt-get install {package})")


def _build_dir(core: EmulatedCore, kernel_library: str) -> Path:
    return cache_root() / "tflm" / f"{TFLM_COMMIT}-{core.name}-{kernel_library}"


def _runner_elf(core: EmulatedCore, kernel_library: str) -> Path:
    return _build_dir(core, kernel_library) / f"runner-{_runner_digest()}.elf"  # a changed runner relinks


def is_built(core: EmulatedCore, kernel_library: str) -> bool:
    """Whether the runner for ``core`` and ``kernel_library`` is cached (no build would run)."""
    return _runner_elf(core, kernel_library).is_file()


def build(core: EmulatedCore, kernel_library: str, tflm_src: str | Path | None = None, progress=None) -> Build:
    """The cached runner for ``core`` and ``kernel_library``, built first when it is not there
    (TFLM's library, several minutes on two cores; then the runner, seconds)."""
    import fcntl

    _check_tools()
    out, elf = _build_dir(core, kernel_library), _runner_elf(core, kernel_library)
    if elf.is_file():
        return Build(core, kernel_library, elf, _recorded_source(out))
    out.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per build; the others wait and reuse it
        if elf.is_file():
            return Build(core, kernel_library, elf, _recorded_source(out))
        src = tflm_source(tflm_src)
        (out / "source.txt").write_text(str(src) + "\n")
        say = progress or (lambda msg: None)
        lib = _gen_dir(src, core, kernel_library) / "lib" / "libtensorflow-microlite.a"
        if lib.is_file() and not _archive_members(lib):
            lib.unlink()  # an interrupted build's empty archive: make would call it up to date
        if not lib.is_file():
            say(f"building TFLM {TFLM_COMMIT} for {core.name} with {kernel_library} kernels (first use; several minutes, "
                f"cached in {out.parent})")
            t = time.monotonic()
            jobs = str(max(1, os.cpu_count() or 1))
            r = run([*_make_args(src, core, kernel_library), "microlite", f"-j{jobs}"], what="TFLM's Makefile",
                    timeout_s=3600, cwd=src, env=_tool_env())
            if r.returncode != 0 or not lib.is_file():
                raise InputError(f"building TFLM for {core.name}/{kernel_library} failed: {r.reason()}")
            say(f"built TFLM for {core.name}/{kernel_library} in {time.monotonic() - t:.0f} s")
        _link_runner(src, core, kernel_library, out)
    return Build(core, kernel_library, elf, src)


def _recorded_source(out: Path) -> Path | None:
    recorded = out / "source.txt"
    if recorded.is_file():
        src = Path(recorded.read_text().strip())
        if (src / "tensorflow/lite/micro/tools/make/Makefile").is_file():
            return src
    return None


def _runner_digest() -> str:
    import hashlib

    h = hashlib.sha256()
    for name in ("runner.cc", "startup.c", "mps2.ld"):
        h.update((_HERE / name).read_bytes())
    return h.hexdigest()[:12]


def _archive_members(lib: Path) -> int:
    r = run(["arm-none-eabi-ar", "t", str(lib)], what="arm-none-eabi-ar", timeout_s=60)
    return len(r.stdout.split()) if r.returncode == 0 else 0


def _compile_flags(src: Path, core: EmulatedCore, kernel_library: str) -> list[str]:
    """The flags TFLM's Makefile compiles its own sources with (read from ``make -n`` once, then
    kept beside the build), so that the runner sees the same struct layouts as the library."""
    import json

    cached = _build_dir(core, kernel_library) / "compile_flags.json"
    if cached.is_file():
        try:
            data = json.loads(cached.read_text())
            if data.get("src") == str(src):
                return data["flags"]
        except (OSError, ValueError, KeyError):
            pass
    flags = _make_flags(src, core, kernel_library)
    cached.parent.mkdir(parents=True, exist_ok=True)
    from toolchain.files import write_atomically

    write_atomically(cached, json.dumps({"src": str(src), "flags": flags}))
    return flags


def _make_flags(src: Path, core: EmulatedCore, kernel_library: str) -> list[str]:
    obj = _gen_dir(src, core, kernel_library) / "obj" / "core" / "tensorflow" / "lite" / "micro" / "micro_interpreter.o"
    r = run([*_make_args(src, core, kernel_library), "-n", "-B", str(obj.relative_to(src))], what="TFLM's Makefile (-n)",
            timeout_s=300, cwd=src, env=_tool_env())
    line = next((ln for ln in r.stdout.splitlines() if "g++" in ln and "micro_interpreter.cc" in ln), None)
    if line is None:
        raise InputError(f"could not read TFLM's compile flags: {r.reason()}")
    words = line.split()
    keep, skip_next = [], False
    for w in words:
        if skip_next:
            skip_next = False
            continue
        if w == "-o":
            skip_next = True
            continue
        if w.endswith("g++") or w.endswith(".cc") or w == "-c":
            continue
        keep.append(f"-I{src / w[2:]}" if w.startswith("-I") and not os.path.isabs(w[2:]) else w)
    return keep


QEMU_TIMEOUT_S = 120  # a model that faults or loops is stopped, not waited on

_ADD_METHOD = re.compile(r"TfLiteStatus (Add\w+)\(([^()]*(?:\([^()]*\)[^()]*)*)\)\s*\{")


def op_registrations(header_text: str) -> list[str]:
    """Every ``MicroMutableOpResolver::Add*()`` that takes no argument (or only defaulted ones)."""
    calls = []
    for name, params in _ADD_METHOD.findall(header_text):
        if name in ("AddBuiltin", "AddCustom", "AddEthosU"):
            continue
        if params.strip() and "=" not in params:
            continue
        calls.append(name)
    return calls


def link_program(b: Build, sources: list[Path], out_elf: Path, defines: list[str] = (), includes: list[Path] = ()) -> Path:
    """Compile ``sources`` (C++) with TFLM's own flags for ``b``'s build, add the start-up and the
    MPS2 linker script, and link them with that build's TFLM library into ``out_elf``."""
    return _compile_and_link(b.src or tflm_source(), b.core, b.kernel_library, sources, out_elf, defines, includes)


def _compile_and_link(src: Path, core: EmulatedCore, kernel_library: str, sources: list[Path], out_elf: Path,
                      defines=(), includes=()) -> Path:
    from concurrent.futures import ThreadPoolExecutor

    lib = _gen_dir(src, core, kernel_library) / "lib" / "libtensorflow-microlite.a"
    flags = _compile_flags(src, core, kernel_library)
    arch = [f"-mcpu={core.name}", "-mthumb", "-mfloat-abi=soft"]
    work = out_elf.parent.resolve()

    def compile_one(source: Path) -> str:
        source = Path(source).resolve()
        obj = work / (source.stem + ".o")
        r = run(["arm-none-eabi-g++", *flags, *defines, *(f"-I{i}" for i in includes), "-c", str(source), "-o", str(obj)],
                what=f"compiling {source.name}", timeout_s=900, cwd=src)
        if r.returncode != 0:
            raise InputError(f"compiling {source.name} for {core.name} failed: {r.reason()}")
        return str(obj)

    with ThreadPoolExecutor(max_workers=max(1, min(len(sources), os.cpu_count() or 1))) as pool:  # one compiler per core
        objects = list(pool.map(compile_one, sources))
    startup = work / "moofa_startup.o"
    r = run(["arm-none-eabi-gcc", *arch, "-O2", "-c", str(_HERE / "startup.c"), "-o", str(startup)], what="compiling the start-up",
            timeout_s=120)
    if r.returncode != 0:
        raise InputError(f"compiling the start-up failed: {r.reason()}")
    r = run(["arm-none-eabi-g++", *arch, "--specs=rdimon.specs", "-Wl,--gc-sections", "-T", str(_HERE / "mps2.ld"), *objects,
             str(startup), str(lib), "-lm", "-o", str(out_elf)], what="linking", timeout_s=600)
    if r.returncode != 0:
        raise InputError(f"linking for {core.name} failed: {r.reason()}")
    return out_elf


def run_elf(b: Build, elf: Path, work: Path, timeout_s: float = QEMU_TIMEOUT_S, what: str = ""):
    """Run ``elf`` on ``b``'s QEMU board with ``work`` as the semihosting folder; the finished child."""
    return run(["qemu-system-arm", "-M", b.core.machine, "-display", "none", "-monitor", "none", "-serial", "none",
                "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)],
               what=f"{what}QEMU ({b.core.machine})", timeout_s=timeout_s, cwd=work)


def _link_runner(src: Path, core: EmulatedCore, kernel_library: str, out: Path) -> None:
    """The measurement runner: every op the resolver offers registered (from TFLM's header)."""
    calls = op_registrations((src / "tensorflow/lite/micro/micro_mutable_op_resolver.h").read_text())
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "moofa_ops.inc").write_text("".join(f"  resolver.{c}();\n" for c in calls))
    defines = [f"-DMOOFA_PSRAM_BASE=0x{core.psram_base:08x}u", f"-DMOOFA_OP_COUNT={len(calls)}"]
    elf = _compile_and_link(src, core, kernel_library, [_HERE / "runner.cc"], work / "runner.elf", defines, [work])
    os.replace(elf, _runner_elf(core, kernel_library))


# --- running ------------------------------------------------------------------------------------
@dataclass
class BoardMeasurement(Measurement):
    """The arena firmware gets on a Cortex-M build: the head and the per-kind breakdown from TFLM's
    recording allocator, the tail as a plain ``MicroAllocator`` (what firmware links) uses it.

    The recording allocator's own objects are larger than the plain allocator's, so its tail is
    larger by that plus alignment; ``recording_tail_bytes`` keeps its figure."""

    arena_used_bytes: int = 0  # MicroInterpreter::arena_used_bytes() of the plain allocator
    recording_tail_bytes: int = 0
    min_arena_bytes: int = 0  # the smallest arena (16-byte steps) AllocateTensors succeeds in
    outputs: list = field(default_factory=list)  # bytes of each output tensor
    measured_on: str = ""

    def to_dict(self) -> dict:
        return {**super().to_dict(), "arena_used_bytes": self.arena_used_bytes,
                "recording_tail_bytes": self.recording_tail_bytes, "min_arena_bytes": self.min_arena_bytes,
                "measured_on": self.measured_on}


def run_on_qemu(b: Build, model_path: str | Path, inputs: bytes | None = None, timeout_s: float = QEMU_TIMEOUT_S) -> BoardMeasurement:
    """Run ``model_path`` once on build ``b`` in QEMU and return TFLM's figures for it."""
    import tempfile

    model_path = Path(model_path)
    with tempfile.TemporaryDirectory(prefix="moofa-qemu-") as tmp:
        work = Path(tmp)
        shutil.copyfile(model_path, work / "moofa-model.tflite")
        if inputs is not None:
            (work / "moofa-inputs.bin").write_bytes(inputs)
        r = run_elf(b, b.elf, work, timeout_s, what=f"{model_path}: ")
    text = r.stdout + r.stderr
    if "moofa-runner: allocate failed" in text:
        raise InputError(f"{model_path}: TFLM's AllocateTensors failed on {b.name}: {r.reason()}")
    report = parse_report(text)
    if r.returncode != 0 or report is None or "moofa-runner: done" not in text:
        raise InputError(f"{model_path}: the {b.core.name}/{b.kernel_library} runner could not run this model: {r.reason()}")
    firmware = re.search(r"moofa-firmware-arena-used (\d+)", text)
    if firmware is None:
        raise InputError(f"{model_path}: the {b.core.name}/{b.kernel_library} runner reported no firmware arena: {r.reason()}")
    used = int(firmware.group(1))
    minimum = re.search(r"moofa-firmware-min-arena (\d+)", text)
    outputs = [bytes.fromhex(h) for _, _, h in re.findall(r"moofa-output (\d+) (\d+) ([0-9a-f]*)", text)]
    head = report.arena_head_bytes
    return BoardMeasurement(head, used - head, used, report.tail_by_kind, arena_used_bytes=used,
                            recording_tail_bytes=report.arena_tail_bytes, outputs=outputs, measured_on=b.name,
                            min_arena_bytes=int(minimum.group(1)) if minimum else 0)


def measure_for_target(model_path: str | Path, target, tflm_src=None, progress=None) -> BoardMeasurement:
    """Measure ``model_path`` on the build ``target`` runs (an InputError names why when it cannot)."""
    core = emulated_core(target)
    if core is None:
        raise InputError(not_measurable_reason(target))
    return run_on_qemu(build(core, target.kernel_library, tflm_src, progress), model_path)
