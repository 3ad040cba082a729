"""The board database (`targets/*.toml`) and the SRAM/flash budget arithmetic."""
