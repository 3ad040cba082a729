"""Boot the generated firmware: ``main.cc`` and the model files, built for the board's core and
linked with that core's TFLM build, run in QEMU on real inputs.

What it proves, in one run: ``AllocateTensors`` succeeds with the generated ``kTensorArenaSize``,
``arena_used_bytes()`` is the predicted arena to the byte, and the classes the firmware prints
are the ones the host TFLM interpreter gives for the same inputs. ``main.cc`` is compiled with
``-DMOOFA_BOOT_CHECK``, which only swaps its blank placeholder input for the images in
``moofa-inputs.bin`` and ends the loop when they run out (firmware_templates/main.cc.j2).
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from toolchain.errors import InputError

# QEMU's MPS2 code memory (4 MiB) holds the program and the model.
MAX_MODEL_BYTES = 3 << 20


@dataclass(frozen=True)
class BootCheck:
    """What booting the firmware showed (``ran`` False: why not, in ``reason``)."""

    ran: bool
    reason: str = ""
    build: str = ""
    allocate_ok: bool = False
    arena_size_bytes: int = 0
    arena_used_bytes: int = 0
    predicted_arena_bytes: int = 0
    classes: list = field(default_factory=list)
    expected_classes: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Passed, or could not run here (then ``reason`` says so and the report shows it)."""
        return not self.ran or (self.allocate_ok and self.arena_used_bytes == self.predicted_arena_bytes
                                and self.classes == self.expected_classes)

    def to_dict(self) -> dict:
        return {"ran": self.ran, "reason": self.reason, "build": self.build, "allocate_ok": self.allocate_ok,
                "arena_size_bytes": self.arena_size_bytes, "arena_used_bytes": self.arena_used_bytes,
                "predicted_arena_bytes": self.predicted_arena_bytes, "images": len(self.expected_classes),
                "classes_match": self.classes == self.expected_classes, "ok": self.ok, "seconds": round(self.seconds, 2)}


BOOT_MODES = ("auto", "always", "never")


def boot_core(target, mode: str):
    """(the emulated core whose TFLM build runs ``target``'s firmware, "") when ``mode`` lets it
    run here, else (None, why not): ``always`` builds a missing build, ``auto`` only uses a
    cached one, ``never`` runs nothing."""
    from toolchain.runtime import cortexm

    if mode == "never":
        return None, "--boot never"
    core = cortexm.emulated_core(target)
    if core is None:
        return None, cortexm.not_measurable_reason(target)
    if mode == "auto" and not cortexm.is_built(core, target.kernel_library):
        return None, (f"TFLM for {core.name}/{target.kernel_library} is not built yet on this machine (several minutes, "
                      f"once): `moofa-deploy ... --boot always` or `moofa verify M --target {target.name} --measure`")
    return core, ""


def allocation_minimum(model_path: Path, target, mode: str) -> tuple[int, str]:
    """(smallest arena AllocateTensors succeeds in, the build that measured it) on ``target``'s
    own build when :func:`boot_core` lets it run; (0, "") otherwise."""
    from toolchain.runtime import cortexm

    core, _ = boot_core(target, mode)
    if core is None:
        return 0, ""
    m = cortexm.run_on_qemu(cortexm.build(core, target.kernel_library), model_path)
    return m.min_arena_bytes, m.measured_on


def boot_check(files: dict, target, inputs: bytes, expected_classes: list, predicted_arena_bytes: int,
               model_bytes: int, progress=None, mode: str = "always") -> BootCheck:
    """Build ``files`` (``main.cc``, ``model_data.cc`` and headers) for ``target``'s core, boot it
    in QEMU on ``inputs`` (the input tensors, one after another) and compare with the host.

    ``mode``: ``always`` builds the core's TFLM first when it is not cached (minutes, once);
    ``auto`` boots only when it is cached (and says how to build it otherwise); ``never`` skips."""
    from toolchain.runtime import cortexm

    core, why_not = boot_core(target, mode)
    if core is None:
        return BootCheck(False, why_not)
    if model_bytes > MAX_MODEL_BYTES:
        return BootCheck(False, f"the model ({model_bytes:,} B) is larger than QEMU's code memory holds with the program")
    t = time.perf_counter()
    b = cortexm.build(core, target.kernel_library, progress=progress)
    main, data = Path(files["main.cc"]).resolve(), Path(files["model_data.cc"]).resolve()
    with tempfile.TemporaryDirectory(prefix="moofa-boot-") as tmp:
        work = Path(tmp)
        elf = cortexm.link_program(b, [main, data], work / "firmware.elf", defines=["-DMOOFA_BOOT_CHECK"], includes=[main.parent])
        (work / "moofa-inputs.bin").write_bytes(inputs)
        r = cortexm.run_elf(b, elf, work)
    text = r.stdout + r.stderr
    used = re.search(r"arena used: (\d+) of (\d+) bytes", text)
    classes = [int(c) for c in re.findall(r"class (-?\d+) \(", text)]
    if used is None and "AllocateTensors failed" not in text:
        raise InputError(f"the {b.core.name} firmware did not boot in QEMU: {r.reason()}")
    return BootCheck(True, build=b.name, allocate_ok=used is not None, arena_size_bytes=int(used.group(2)) if used else 0,
                     arena_used_bytes=int(used.group(1)) if used else 0, predicted_arena_bytes=predicted_arena_bytes,
                     classes=classes, expected_classes=list(expected_classes), seconds=time.perf_counter() - t)
