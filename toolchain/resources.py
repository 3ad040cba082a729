"""Where the files moofa ships beside its code are: the board database and the firmware templates.

In a source checkout they are the top-level folders ``targets/`` and ``firmware_templates/``; a
wheel carries the same folders as package data under ``toolchain/share/`` (``pyproject.toml`` maps
them). One function finds either, so nothing else in the code knows the difference.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(name: str) -> Path:
    """The shipped folder ``name`` (``"targets"`` or ``"firmware_templates"``)."""
    installed = _PACKAGE / "share" / name
    if installed.is_dir():
        return installed
    return _PACKAGE.parent / name
