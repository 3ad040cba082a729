"""Does a model fit a board? The check behind ``moofa verify`` and ``moofa-deploy``.

SRAM fits when ``arena (head + tail) + the board's reserved RAM <= the arena region`` (the
largest contiguous SRAM block the arena can live in); flash fits when
``model bytes + reserved flash <= flash`` (:mod:`toolchain.boards.budget`). Keys follow the JSON
contract in ``docs/ARCHITECTURE.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from toolchain.boards.budget import Budget
from toolchain.errors import InputError
from toolchain.files import read_input_bytes
from toolchain.ir.graph import Graph
from toolchain.memory.coverage import Exactness, exactness, tflm_refusals, unmodelled_ops
from toolchain.memory.estimate import ArenaEstimate, estimate_arena, estimate_for_target
from toolchain.memory.persistent import resource_variable_count
from toolchain.tflite.reader import parse_model

MEASURED_ON = "tflite-micro host interpreter (64-bit, reference kernels)"


@dataclass
class TargetResult:
    target: object  # toolchain.boards.targets.Target
    estimate: ArenaEstimate
    model_bytes: int
    exactness: Exactness
    measurement: object | None = None  # what TFLM recorded on this board's build (--measure)
    measured_on: str = ""  # which build that was
    not_measured_because: str = ""  # with --measure, when this board's build cannot be run here
    refusals: list[str] = field(default_factory=list)  # why this board's kernel library would refuse the model

    @property
    def measured_exceeds_prediction(self) -> bool:
        return self.measurement is not None and self.measurement.arena_total_bytes > self.estimate.arena_bytes

    @property
    def budget(self) -> Budget:
        return Budget.for_target(self.target)

    @property
    def sram_used_bytes(self) -> int:
        return self.estimate.arena_bytes + self.target.reserved_ram_bytes

    @property
    def flash_used_bytes(self) -> int:
        return self.model_bytes + self.target.reserved_flash_bytes

    @property
    def sram_fits(self) -> bool:
        return self.budget.sram_fits(self.estimate.arena_bytes)

    @property
    def flash_fits(self) -> bool:
        return self.budget.flash_fits(self.model_bytes)

    @property
    def fits(self) -> bool:
        return self.sram_fits and self.flash_fits and not self.refusals

    def sram_dict(self) -> dict:
        return self.budget.sram_block(self.estimate.to_dict())

    def flash_dict(self) -> dict:
        return self.budget.flash_block(self.model_bytes)


@dataclass
class Verification:
    model: str
    graph: Graph
    results: list[TargetResult]
    measured: object | None = None  # toolchain.runtime.tflm.Measurement
    notes: list[str] = field(default_factory=list)
    host_estimate: ArenaEstimate | None = None  # the prediction for the build --measure runs
    refusals: list[str] = field(default_factory=list)  # why TFLM's Prepare would fail on this model

    @property
    def runs_on_tflm(self) -> bool:
        return not self.refusals

    @property
    def unmodelled_ops(self) -> tuple[str, ...]:
        return self.results[0].exactness.unmodelled_ops if self.results else ()

    @property
    def measured_exceeds_prediction(self) -> bool:
        """TFLM needed more arena than predicted for a build it ran: the model cannot stand behind its figures."""
        host = self.measured is not None and self.host_estimate is not None and \
            self.measured.arena_total_bytes > self.host_estimate.arena_bytes
        return host or any(r.measured_exceeds_prediction for r in self.results)

    @property
    def fits(self) -> bool:
        """Every target fits, and TFLM would run the model at all."""
        return self.runs_on_tflm and all(r.fits for r in self.results)

    @property
    def agrees(self) -> bool:
        """Predicted and measured arena agree for the host build (True when not measured)."""
        if self.measured is None:
            return True
        return all(
            self.measured.agrees_with(r.estimate)
            for r in self.results
            if r.target.pointer_bytes == 8 and r.target.kernel_library == "reference"
        )

    def to_dict(self) -> dict:
        targets = []
        for r in self.results:
            entry = {"target": r.target.name, "fits": r.fits and self.runs_on_tflm, **r.exactness.to_dict(),
                     "tflm_refuses": r.refusals,
                     "sram": r.sram_dict(), "flash": r.flash_dict()}
            if r.measurement is not None:
                entry["measured"] = {
                    "arena_head_bytes": r.measurement.arena_head_bytes,
                    "arena_tail_bytes": r.measurement.arena_tail_bytes,
                    "measured_on": r.measured_on,
                    "agrees": r.measurement.agrees_with(r.estimate),
                }
            elif r.not_measured_because:
                entry["measured"] = None
                entry["not_measured_because"] = r.not_measured_because
            targets.append(entry)
        out = {
            "model": self.model,
            "ops": len(self.graph.ops),
            "op_kinds": self.graph.op_kinds,
            "offline_plan": self.graph.offline_offsets is not None,
            "fits": self.fits,
            "runs_on_tflm": self.runs_on_tflm,
            "tflm_refuses": self.refusals,
            "targets": targets,
        }
        if self.measured is not None:
            out["measured_exceeds_prediction"] = self.measured_exceeds_prediction
        if self.notes:
            out["notes"] = self.notes
        return out


def verify_model(path: str | Path, targets: list, measure: bool = False, on_boards: bool = False,
                 tflm_src=None, progress=None) -> Verification:
    """Predict (and with ``measure``, measure) the memory of the model at ``path`` on each target.

    ``measure`` runs the host interpreter (64-bit, reference kernels), which measures the ``host``
    board; with ``on_boards`` too, every other board is measured on its own build where it can
    be emulated (TFLM built for its Cortex-M core and kernel library, in QEMU:
    :mod:`toolchain.runtime.cortexm`), and the others say why not."""
    path = Path(path)
    data = read_input_bytes(path)
    graph = parse_model(data, str(path), control_flow=True)
    results = [TargetResult(t, estimate_for_target(graph, t), len(data), exactness(graph, t.pointer_bytes, t.kernel_library, t.core),
                            refusals=tflm_refusals(graph, t.kernel_library)) for t in targets]
    notes = []
    unmodelled = unmodelled_ops(graph)
    if graph.subgraphs:
        notes.append(f"control flow: the model has {len(graph.subgraphs) + 1} subgraphs, planned in one arena as TFLM "
                     "plans them")
    variables = resource_variable_count(graph)
    if variables:
        notes.append(f"resource variables: the figures include the {variables} the interpreter must be given "
                     f"(MicroResourceVariables::Create(allocator, {variables}), as moofa's firmware does); without "
                     "them VAR_HANDLE fails")
    if unmodelled:
        notes.append(f"approximate: the memory model does not cover {', '.join(unmodelled)} exactly (`moofa ops`); "
                     "the tail uses a generous default for unmeasured kinds, the head may be low")
    measured = host = None
    if measure:
        from toolchain.runtime.tflm import measure as tflm_measure

        measured = tflm_measure(path)
        host = estimate_arena(graph, 8, "reference")  # the build the tflite-micro package runs
        for r in results:
            _measure_target(r, path, measured, on_boards, tflm_src, progress)
    return Verification(str(path), graph, results, measured, notes, host, tflm_refusals(graph))


def format_table(v: Verification) -> str:
    """The human-readable report of ``moofa verify``."""

    def kib(n: int) -> str:
        return f"{n / 1024:,.1f}"

    lines = [f"{v.model}: {len(v.graph.ops)} ops ({', '.join(v.graph.op_kinds)})"]
    if v.graph.offline_offsets is not None:
        lines.append("  carries an offline arena plan (OfflineMemoryAllocation); predictions use it")
    rows = [("target", "figures", "arena", "head", "tail", "reserved", "SRAM used", "of", "flash used", "of", "result")]
    for r in v.results:
        short = [x for x, ok in (("SRAM", r.sram_fits), ("flash", r.flash_fits)) if not ok]
        e = r.estimate
        verdict = "fits" if r.fits else (f"WILL NOT RUN ({r.target.kernel_library})" if r.refusals
                                         else f"DOES NOT FIT ({', '.join(short)})")
        rows.append(
            (
                r.target.name,
                "exact" if r.exactness.exact else "approx" + ("*" if r.exactness.unmodelled_ops else ""),
                kib(e.arena_bytes),
                kib(e.arena_head_bytes),
                kib(e.arena_tail_bytes),
                kib(r.target.reserved_ram_bytes),
                kib(r.sram_used_bytes),
                kib(r.target.arena_region_bytes),
                kib(r.flash_used_bytes),
                kib(r.target.flash_bytes),
                verdict if v.runs_on_tflm else "WILL NOT RUN ON TFLM",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for k, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])] + [c.rjust(w) for c, w in zip(row[2:-1], widths[2:-1])] + [row[-1]]
        lines.append("  " + "  ".join(cells))
        if k == 0:
            lines.append("  " + " " * (widths[0] + widths[1] + 2) + "  (KiB)")
    for r in v.results:
        if r.measurement is not None:
            m, e = r.measurement, r.estimate
            verdict = "exact match" if m.agrees_with(e) else (
                f"MISMATCH (head {m.arena_head_bytes - e.arena_head_bytes:+,} B, tail {m.arena_tail_bytes - e.arena_tail_bytes:+,} B)")
            lines.append(f"  {r.target.name}: measured on {r.measured_on}: head {m.arena_head_bytes:,} B, tail "
                         f"{m.arena_tail_bytes:,} B; predicted {e.arena_head_bytes:,} B and {e.arena_tail_bytes:,} B -> {verdict}")
        elif r.not_measured_because:
            lines.append(f"  {r.target.name}: not measured: {r.not_measured_because}")
    for refusal in v.refusals:
        lines.append(f"  will not run on TFLM: {refusal}")
    for r in v.results:
        for refusal in r.refusals:
            lines.append(f"  will not run on {r.target.name} ({r.target.kernel_library}): {refusal}")
    builds = sorted({reason for r in v.results for reason in r.exactness.build_reasons})
    if builds:
        lines.append("  approx: the figures are measured exact on the host build and on ARMv7E-M Cortex-M builds "
                     "(reference, CMSIS-NN); not here:")
        lines += [f"    - {reason}" for reason in builds]
    if v.unmodelled_ops:
        lines.append(f"  approx*: ops not modelled exactly: {', '.join(v.unmodelled_ops)}")
    for note in v.notes:
        if not note.startswith("approximate:"):
            lines.append(f"  note: {note}")
    return "\n".join(lines)


def junit_xml(v: Verification) -> str:
    """A JUnit report (one test case per target) for CI systems that collect them."""
    from xml.sax.saxutils import escape, quoteattr

    cases = []
    for r in v.results:
        name = quoteattr(f"fits {r.target.name}")
        body = ""
        if not v.runs_on_tflm or r.refusals:
            msg = "will not run on TFLM: " + "; ".join(v.refusals + r.refusals)
            body = f"<failure message={quoteattr(msg)}>{escape(msg)}</failure>"
        elif not r.fits:
            msg = (
                f"SRAM {r.sram_used_bytes} of {r.target.arena_region_bytes} B, "
                f"flash {r.flash_used_bytes} of {r.target.flash_bytes} B"
            )
            body = f"<failure message={quoteattr(msg)}>{escape(msg)}</failure>"
        exact = r.exactness
        body += (f'<properties><property name="exact" value="{str(exact.exact).lower()}"/>'
                 f'<property name="unmodelled_ops" value={quoteattr(",".join(exact.unmodelled_ops))}/></properties>')
        if not exact.exact:
            body += f"<system-out>{escape('approximate: ' + '; '.join(exact.reasons))}</system-out>"
        cases.append(f'  <testcase classname="moofa.verify" name={name}>{body}</testcase>')
    failures = sum(not (r.fits and v.runs_on_tflm) for r in v.results)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f"<testsuite name={quoteattr('moofa verify ' + v.model)} tests=\"{len(v.results)}\" failures=\"{failures}\">\n"
        + "\n".join(cases)
        + "\n</testsuite>\n"
    )


def _measure_target(r: TargetResult, path: Path, host_measurement, on_boards: bool, tflm_src, progress) -> None:
    """Give ``r`` the measurement of its own build, or the reason there is none."""
    t = r.target
    if t.pointer_bytes == 8 and t.kernel_library == "reference":
        r.measurement, r.measured_on = host_measurement, MEASURED_ON
        return
    if not on_boards:
        r.not_measured_because = "measured on the host build only (the deploy's check)"
        return
    from toolchain.runtime import cortexm

    if cortexm.emulated_core(t) is None:
        r.not_measured_because = cortexm.not_measurable_reason(t)
        return
    if r.refusals:
        try:
            cortexm.measure_for_target(path, t, tflm_src, progress)
        except InputError as e:
            if "AllocateTensors failed" in str(e):
                r.not_measured_because = f"TFLM refuses it on this board's build, as predicted ({r.refusals[0]})"
                return
            raise
        r.not_measured_because = "predicted to be refused, yet the board's build ran it: the refusal check is wrong"
        return
    r.measurement = cortexm.measure_for_target(path, t, tflm_src, progress)
    r.measured_on = r.measurement.measured_on
