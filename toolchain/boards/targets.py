"""The board database: one TOML file per board under ``targets/``, parsed and validated.

A board file states what the fit verifier, the NAS search and firmware codegen need to know
about a board: the memory it has, how much of it the tensor arena may use, the pointer width
of its TFLM build and the kernel library it links. Every figure carries a ``[sources]``
entry naming the document it comes from, or how an estimate was made.

The budgets the rest of the toolchain checks against are::

    sram_budget_bytes  = arena_region_bytes - reserved_ram_bytes
    flash_budget_bytes = flash_bytes - reserved_flash_bytes

``arena_region_bytes`` is the largest contiguous SRAM region the arena can live in (a TFLM
arena is one buffer), and ``reserved_ram_bytes`` is what the firmware needs besides the arena
inside that same region (stack, heap, runtime objects, I/O buffers).

Any malformed file raises :class:`~toolchain.errors.InputError` with one line that names the
file, the key and the problem.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain.boards.budget import Budget
from toolchain.errors import InputError
from toolchain.memory.scratch import KERNEL_LIBRARIES
from toolchain.resources import shipped_dir

#: Environment variable that points the database at another folder of board files.
TARGETS_DIR_ENV = "MOOFA_TARGETS_DIR"

_DEFAULT_TARGETS_DIR = shipped_dir("targets")


def targets_dir() -> Path:
    """The folder the board database is read from: ``$MOOFA_TARGETS_DIR`` or ``<repo>/targets``.

    Read on every call, so setting the variable after import takes effect.
    """
    override = os.environ.get(TARGETS_DIR_ENV)
    return Path(override).expanduser() if override else _DEFAULT_TARGETS_DIR


#: The board database folder as it was when this module was imported (see :func:`targets_dir`).
TARGETS_DIR: Path = targets_dir()

SCHEMA_VERSION = 1

CORES = (
    "cortex-m0plus",
    "cortex-m4",
    "cortex-m4f",
    "cortex-m7",
    "cortex-m33",
    "xtensa-lx7",
    "x86-64",
)
POINTER_BYTES = (4, 8)

# Cores whose name fixes whether there is an FPU; the others (m7, m33, lx7, x86-64) come
# with or without one depending on the part, so the file's `fpu` is taken as stated.
_CORE_FPU = {"cortex-m0plus": False, "cortex-m4": False, "cortex-m4f": True}
# Pointer width of a TFLM build for each core: 64-bit only on the x86-64 host build.
_CORE_POINTER_BYTES = {core: 4 for core in CORES} | {"x86-64": 8}

_DEFAULT_ARENA_MARGIN = 1.0
_MAX_ARENA_MARGIN = 10.0

_NAME_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")  # lowercase kebab-case
_ALIAS_RE = re.compile(r"^[a-z0-9]+(?:[-_.][a-z0-9]+)*$")

# key -> kind of value; the order is the order of Target's fields and of to_dict().
_REQUIRED_KEYS: dict[str, str] = {
    "schema": "schema",
    "name": "name",
    "display_name": "text",
    "aliases": "aliases",
    "mcu": "text",
    "core": "core",
    "fpu": "bool",
    "clock_hz": "positive_int",
    "sram_bytes": "positive_int",
    "arena_region_bytes": "positive_int",
    "flash_bytes": "positive_int",
    "reserved_ram_bytes": "non_negative_int",
    "reserved_flash_bytes": "non_negative_int",
    "pointer_bytes": "pointer_bytes",
    "kernel_library": "kernel_library",
    "sources": "sources",
}
_OPTIONAL_KEYS: dict[str, str] = {"arena_margin": "margin"}

#: Figures that must each have a `[sources]` entry.
SOURCED_KEYS = (
    "mcu",
    "core",
    "clock_hz",
    "sram_bytes",
    "arena_region_bytes",
    "flash_bytes",
    "reserved_ram_bytes",
    "reserved_flash_bytes",
    "kernel_library",
)
#: Figures that may have a `[sources]` entry.
_OPTIONALLY_SOURCED_KEYS = ("display_name", "fpu", "pointer_bytes", "arena_margin")


@dataclass(frozen=True)
class Target:
    """One board, as read from its TOML file. See the module docstring for the budgets."""

    name: str
    display_name: str
    aliases: tuple[str, ...]
    mcu: str
    core: str
    fpu: bool
    clock_hz: int
    sram_bytes: int
    arena_region_bytes: int
    flash_bytes: int
    reserved_ram_bytes: int
    reserved_flash_bytes: int
    pointer_bytes: int
    kernel_library: str
    arena_margin: float = _DEFAULT_ARENA_MARGIN
    sources: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    path: Path | None = field(default=None, compare=False)

    @property
    def sram_budget_bytes(self) -> int:
        """SRAM the tensor arena may use: the arena region less what the firmware reserves."""
        return Budget.for_target(self).arena_bytes

    @property
    def flash_budget_bytes(self) -> int:
        """Flash the model may use: all flash less the runtime, kernels and application."""
        return Budget.for_target(self).model_bytes

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view, for ``moofa targets --json``."""
        return {
            "name": self.name,
            "display_name": self.display_name,
            "aliases": list(self.aliases),
            "mcu": self.mcu,
            "core": self.core,
            "fpu": self.fpu,
            "clock_hz": self.clock_hz,
            "sram_bytes": self.sram_bytes,
            "arena_region_bytes": self.arena_region_bytes,
            "flash_bytes": self.flash_bytes,
            "reserved_ram_bytes": self.reserved_ram_bytes,
            "reserved_flash_bytes": self.reserved_flash_bytes,
            "sram_budget_bytes": self.sram_budget_bytes,
            "flash_budget_bytes": self.flash_budget_bytes,
            "pointer_bytes": self.pointer_bytes,
            "kernel_library": self.kernel_library,
            "arena_margin": self.arena_margin,
            "sources": dict(self.sources),
            "path": str(self.path) if self.path is not None else None,
        }


# --------------------------------------------------------------------------- messages


def _display_path(path: Path) -> str:
    """The path as a user would type it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def _show(value: Any) -> str:
    """A value as it would look in TOML, on one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return " ".join(repr(value).split())


class _FileErrors:
    """Builds the one-line messages for one file."""

    def __init__(self, path: Path):
        self.where = _display_path(path)

    def file(self, problem: str) -> InputError:
        return InputError(f"{self.where}: {problem}")

    def key(self, key: str, problem: str) -> InputError:
        return InputError(f"{self.where}: key '{key}': {problem}")


# --------------------------------------------------------------------------- parsing


def _check_value(err: _FileErrors, key: str, kind: str, value: Any) -> Any:
    """Check one value against its kind; return it normalised (aliases as a tuple)."""
    if kind == "schema":
        if isinstance(value, bool) or not isinstance(value, int):
            raise err.key(key, f"expected the integer {SCHEMA_VERSION}, got {_show(value)}")
        if value != SCHEMA_VERSION:
            raise err.key(
                key, f"unsupported schema {value}; this version of moofa reads schema "
                f"{SCHEMA_VERSION}"
            )
        return value
    if kind in ("text", "name"):
        if not isinstance(value, str) or not value.strip():
            raise err.key(key, f"expected a non-empty string, got {_show(value)}")
        if kind == "name" and not _NAME_RE.match(value):
            raise err.key(
                key, f"expected a lowercase kebab-case board name (e.g. \"nucleo-f746zg\"), "
                f"got {_show(value)}"
            )
        return value
    if kind == "aliases":
        if not isinstance(value, list):
            raise err.key(key, f"expected an array of strings, got {_show(value)}")
        seen: set[str] = set()
        for alias in value:
            if not isinstance(alias, str) or not _ALIAS_RE.match(alias):
                raise err.key(
                    key, f"expected lowercase aliases of letters, digits and - _ . "
                    f"(e.g. \"f746\"), got {_show(alias)}"
                )
            if alias.endswith(".toml"):
                raise err.key(key, f"alias {_show(alias)} would be read as a file path")
            if alias in seen:
                raise err.key(key, f"alias {_show(alias)} is listed twice")
            seen.add(alias)
        return tuple(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise err.key(key, f"expected true or false, got {_show(value)}")
        return value
    if kind in ("positive_int", "non_negative_int"):
        if isinstance(value, bool) or not isinstance(value, int):
            wanted = "a positive" if kind == "positive_int" else "a non-negative"
            raise err.key(key, f"expected {wanted} integer, got {_show(value)}")
        if kind == "positive_int" and value <= 0:
            raise err.key(key, f"expected a positive integer, got {_show(value)}")
        if kind == "non_negative_int" and value < 0:
            raise err.key(key, f"expected a non-negative integer, got {_show(value)}")
        return value
    if kind == "pointer_bytes":
        if isinstance(value, bool) or not isinstance(value, int) or value not in POINTER_BYTES:
            raise err.key(key, f"expected 4 or 8, got {_show(value)}")
        return value
    if kind == "core":
        if value not in CORES:
            raise err.key(key, f"expected one of {', '.join(CORES)}; got {_show(value)}")
        return value
    if kind == "kernel_library":
        if value not in KERNEL_LIBRARIES:
            raise err.key(
                key, f"expected one of {', '.join(KERNEL_LIBRARIES)}; got {_show(value)}"
            )
        return value
    if kind == "margin":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise err.key(key, f"expected a number from 1.0 to {_MAX_ARENA_MARGIN}, "
                          f"got {_show(value)}")
        if not math.isfinite(value) or not 1.0 <= value <= _MAX_ARENA_MARGIN:
            raise err.key(key, f"expected a number from 1.0 to {_MAX_ARENA_MARGIN}, "
                          f"got {_show(value)}")
        return float(value)
    if kind == "sources":
        if not isinstance(value, dict):
            raise err.key(key, f"expected a [sources] table, got {_show(value)}")
        return value
    raise AssertionError(f"unknown value kind {kind!r}")  # a bug in the tables above


def _check_sources(err: _FileErrors, sources: dict[str, Any], present: set[str]) -> dict:
    known = set(SOURCED_KEYS) | set(_OPTIONALLY_SOURCED_KEYS)
    for key, text in sources.items():
        if key not in known:
            raise err.key(
                f"sources.{key}", "a source for a key that has none to document "
                f"(documented keys: {', '.join(SOURCED_KEYS + _OPTIONALLY_SOURCED_KEYS)})"
            )
        if key not in present:
            raise err.key(f"sources.{key}", f"a source for '{key}', which the file does not set")
        if not isinstance(text, str) or not text.strip():
            raise err.key(
                f"sources.{key}", f"expected a non-empty string naming the document, "
                f"got {_show(text)}"
            )
    for key in SOURCED_KEYS:
        if key not in sources:
            raise err.key(
                key, f"no [sources] entry; add sources.{key} naming the document and section "
                "(or how the estimate was made)"
            )
    return dict(sources)


def _parse(path: Path, data: dict[str, Any]) -> Target:
    err = _FileErrors(path)
    all_keys = _REQUIRED_KEYS | _OPTIONAL_KEYS
    for key in data:
        if key not in all_keys:
            close = difflib.get_close_matches(key, list(all_keys), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise err.key(key, f"unknown key{hint}")
    for key in _REQUIRED_KEYS:
        if key not in data:
            raise err.key(key, "missing (required)")

    values = {key: _check_value(err, key, kind, data[key])
              for key, kind in all_keys.items() if key in data}
    values["sources"] = _check_sources(err, values["sources"], set(data) - {"sources"})

    if values["arena_region_bytes"] > values["sram_bytes"]:
        raise err.key(
            "arena_region_bytes", f"{values['arena_region_bytes']} is larger than "
            f"sram_bytes = {values['sram_bytes']}; the arena region is part of the SRAM"
        )
    if values["reserved_ram_bytes"] >= values["arena_region_bytes"]:
        raise err.key(
            "reserved_ram_bytes", f"{values['reserved_ram_bytes']} leaves no room for an arena "
            f"in arena_region_bytes = {values['arena_region_bytes']}"
        )
    if values["reserved_flash_bytes"] >= values["flash_bytes"]:
        raise err.key(
            "reserved_flash_bytes", f"{values['reserved_flash_bytes']} leaves no room for a "
            f"model in flash_bytes = {values['flash_bytes']}"
        )
    core = values["core"]
    if core in _CORE_FPU and values["fpu"] != _CORE_FPU[core]:
        raise err.key("fpu", f"{_show(values['fpu'])} contradicts core = {_show(core)}")
    if values["pointer_bytes"] != _CORE_POINTER_BYTES[core]:
        raise err.key(
            "pointer_bytes", f"{values['pointer_bytes']} contradicts core = {_show(core)}, "
            f"whose TFLM build has {_CORE_POINTER_BYTES[core]}-byte pointers"
        )
    if values["name"] in values["aliases"]:
        raise err.key("aliases", f"alias {_show(values['name'])} repeats the board name")

    del values["schema"]
    return Target(**values, path=path)


def load_target_file(path: str | os.PathLike[str]) -> Target:
    """Parse and validate one board file; raise :class:`InputError` on any problem."""
    path = Path(path)
    err = _FileErrors(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise err.file("no such target file") from None
    except IsADirectoryError:
        raise err.file("is a folder, not a target .toml file") from None
    except OSError as exc:
        raise err.file(f"cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise err.file(f"not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise err.file(f"invalid TOML: {' '.join(str(exc).split())}") from None
    return _parse(path, data)


# --------------------------------------------------------------------------- database

_cache: dict[Path, tuple[tuple, list[Target]]] = {}


def _stamp(files: list[Path]) -> tuple:
    stamp = []
    for file in files:
        try:
            st = file.stat()
        except OSError:
            return ()  # vanished mid-listing: do not cache
        stamp.append((file.name, st.st_mtime_ns, st.st_size))
    return tuple(stamp)


def all_targets(directory: str | os.PathLike[str] | None = None) -> list[Target]:
    """Every board in the database (``targets/*.toml``), sorted by name.

    Also checks the database as a whole: each file is named after its board, and no name or
    alias is claimed by two boards. Results are cached until a file changes.
    """
    folder = Path(directory) if directory is not None else targets_dir()
    if not folder.is_dir():
        raise InputError(f"{_display_path(folder)}: board database folder not found "
                         f"(set {TARGETS_DIR_ENV} to the folder of board .toml files)")
    files = sorted(folder.glob("*.toml"))
    stamp = _stamp(files)
    cached = _cache.get(folder.resolve())
    if cached is not None and stamp and cached[0] == stamp:
        return list(cached[1])

    targets = [load_target_file(file) for file in files]
    owner: dict[str, Target] = {}  # name or alias -> the board that claims it
    for target in targets:
        err = _FileErrors(target.path)
        if target.path.stem != target.name:
            raise err.key("name", f"{_show(target.name)} must match the file name "
                          f"({_show(target.path.stem)}.toml)")
        for key, label in [("name", target.name)] + [("aliases", a) for a in target.aliases]:
            other = owner.get(label)
            if other is not None:
                raise err.key(key, f"{_show(label)} is already the name or an alias of board "
                              f"'{other.name}' ({_display_path(other.path)})")
            owner[label] = target
    targets.sort(key=lambda t: t.name)
    if stamp:
        _cache[folder.resolve()] = (stamp, targets)
    return list(targets)


def _looks_like_path(spec: str) -> bool:
    return spec.lower().endswith(".toml") or "/" in spec or os.sep in spec


def resolve_target(spec: str) -> Target:
    """A board by name, by alias (case-insensitive), or by a path to a board .toml file."""
    spec = spec.strip()
    if not spec:
        raise InputError("no board given; pass a board name (see `moofa targets`) "
                         "or a path to a .toml file")
    if _looks_like_path(spec):
        return load_target_file(Path(spec).expanduser())

    targets = all_targets()
    by_label: dict[str, Target] = {}
    for target in targets:
        by_label[target.name] = target
        for alias in target.aliases:
            by_label[alias] = target
    found = by_label.get(spec.lower())
    if found is not None:
        return found
    if Path(spec).is_file():  # a board file without the .toml suffix
        return load_target_file(Path(spec))

    names = ", ".join(t.name for t in targets)
    close = difflib.get_close_matches(spec.lower(), list(by_label), n=1, cutoff=0.6)
    hint = f"did you mean '{by_label[close[0]].name}'? " if close else ""
    raise InputError(f"unknown board '{spec}'; {hint}known boards: {names} "
                     "(or pass a path to a .toml file)")


def resolve_targets(spec: str) -> list[Target]:
    """A comma-separated list of boards (names, aliases or paths), in order, without repeats."""
    parts = [part.strip() for part in spec.split(",")]
    if not any(parts):
        raise InputError("no board given; pass a board name (see `moofa targets`) "
                         "or a path to a .toml file")
    if not all(parts):
        raise InputError(f"empty entry in the board list '{spec}'")
    result: list[Target] = []
    seen: set[tuple[str, str]] = set()
    for part in parts:
        target = resolve_target(part)
        identity = (target.name, str(target.path.resolve()) if target.path else "")
        if identity not in seen:
            seen.add(identity)
            result.append(target)
    return result
