"""The SRAM and flash budget arithmetic: what a model may use on a board, and the JSON it is reported in.

A TFLM arena is one buffer, so it must fit the board's largest contiguous SRAM region less what
the firmware needs besides it (stack, heap, runtime state); the model's bytes must fit the flash
less TFLM, the kernels and the application::

    SRAM fits   when  arena_head + arena_tail + reserved_ram    <= arena_region
    flash fits  when  model_bytes + reserved_flash              <= flash

A user may override either budget (``--sram-budget`` / ``--flash-budget`` in KiB): the override
replaces the part the model may use; the reserved bytes stay. Every command that checks a fit
(verify, search, deploy, the report) goes through :class:`Budget`, and every command that reports
one writes the blocks of :meth:`Budget.sram_block` / :meth:`Budget.flash_block` — the contract in
``docs/ARCHITECTURE.md``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    """The bytes a model may use on one board: ``arena_bytes`` of SRAM and ``model_bytes`` of flash."""

    reserved_ram_bytes: int
    reserved_flash_bytes: int
    arena_bytes: int
    model_bytes: int

    @classmethod
    def for_target(cls, target, sram_kb: float | None = None, flash_kb: float | None = None) -> "Budget":
        """The board's budgets, or ``sram_kb`` / ``flash_kb`` KiB where given."""
        arena = int(sram_kb * 1024) if sram_kb is not None else target.arena_region_bytes - target.reserved_ram_bytes
        model = int(flash_kb * 1024) if flash_kb is not None else target.flash_bytes - target.reserved_flash_bytes
        return cls(target.reserved_ram_bytes, target.reserved_flash_bytes, arena, model)

    def sram_fits(self, arena_bytes: int) -> bool:
        return arena_bytes <= self.arena_bytes

    def flash_fits(self, model_bytes: int) -> bool:
        return model_bytes <= self.model_bytes

    def sram_block(self, arena: dict) -> dict:
        """The ``sram`` block: ``arena`` (``arena_bytes``, head, tail, ...) plus budget, use and fit."""
        used = arena["arena_bytes"] + self.reserved_ram_bytes
        budget = self.arena_bytes + self.reserved_ram_bytes
        return {**arena, "reserved_bytes": self.reserved_ram_bytes, "budget_bytes": budget, "used_bytes": used,
                "headroom_bytes": budget - used, "fits": self.sram_fits(arena["arena_bytes"])}

    def flash_block(self, model_bytes: int) -> dict:
        """The ``flash`` block: the model's bytes plus budget, use and fit."""
        used = model_bytes + self.reserved_flash_bytes
        budget = self.model_bytes + self.reserved_flash_bytes
        return {"model_bytes": model_bytes, "reserved_bytes": self.reserved_flash_bytes, "budget_bytes": budget,
                "used_bytes": used, "headroom_bytes": budget - used, "fits": self.flash_fits(model_bytes)}
