"""The board database (targets/*.toml) and its loader (toolchain/boards/targets.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolchain.boards import targets as tg
from toolchain.boards.targets import (
    SOURCED_KEYS,
    Target,
    all_targets,
    load_target_file,
    resolve_target,
    resolve_targets,
)
from toolchain.errors import InputError

REPO_TARGETS_DIR = Path(__file__).resolve().parents[1] / "targets"

# The real boards the database must ship (canonical names), besides the host target.
REQUIRED_BOARDS = [
    "nucleo-f746zg",
    "nucleo-h743zi2",
    "nucleo-f412zg",
    "nucleo-l4r5zi",
    "arduino-nano-33-ble-sense",
    "raspberry-pi-pico",
    "esp32-s3-devkitc-1",
    "sparkfun-edge",
    "blackpill-f411ce",
    "arduino-uno-r4",
]


@pytest.fixture(autouse=True)
def _default_database(monkeypatch):
    """Every test reads the shipped database unless it points elsewhere itself."""
    monkeypatch.delenv(tg.TARGETS_DIR_ENV, raising=False)


# --------------------------------------------------------------------------- helpers


def valid_board(board_name: str = "test-board", **changes) -> dict:
    """A well-formed board as a dict (``sources`` as a nested dict); ``changes`` override keys,
    and a value of ``None`` removes the key."""
    board = {
        "schema": 1,
        "name": board_name,
        "display_name": "Test Board",
        "aliases": [f"{board_name}-alias"],
        "mcu": "TESTMCU",
        "core": "cortex-m4f",
        "fpu": True,
        "clock_hz": 100_000_000,
        "sram_bytes": 262_144,
        "arena_region_bytes": 196_608,
        "flash_bytes": 1_048_576,
        "reserved_ram_bytes": 16_384,
        "reserved_flash_bytes": 131_072,
        "pointer_bytes": 4,
        "kernel_library": "cmsis-nn",
        "sources": {key: f"test source for {key}" for key in SOURCED_KEYS},
    }
    for key, value in changes.items():
        if value is None:
            board.pop(key, None)
        else:
            board[key] = value
    return board


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(value)


def to_toml(board: dict) -> str:
    lines = [f"{key} = {_toml_value(value)}" for key, value in board.items()
             if not isinstance(value, dict)]
    for key, value in board.items():
        if isinstance(value, dict):
            lines.append(f"\n[{key}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in value.items()]
    return "\n".join(lines) + "\n"


def write_board(folder: Path, board: dict, filename: str | None = None) -> Path:
    path = folder / (filename or f"{board.get('name', 'board')}.toml")
    path.write_text(to_toml(board), encoding="utf-8")
    return path


def assert_one_line_error(exc: InputError, path: Path, key: str | None) -> str:
    message = str(exc)
    assert "\n" not in message, message
    assert path.name in message, message
    if key is not None:
        assert f"'{key}'" in message, message
    return message


# --------------------------------------------------------------------------- shipped boards


def test_every_shipped_board_loads():
    boards = all_targets()
    names = [t.name for t in boards]
    assert names == sorted(names)
    for required in REQUIRED_BOARDS + ["host"]:
        assert required in names
    real = [t for t in boards if t.name != "host"]
    assert len(real) >= 10
    assert len(list(REPO_TARGETS_DIR.glob("*.toml"))) == len(boards)


@pytest.mark.parametrize("path", sorted(REPO_TARGETS_DIR.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_board_is_consistent(path):
    t = load_target_file(path)
    assert t.name == path.stem
    assert t.path == path
    assert 0 < t.arena_region_bytes <= t.sram_bytes
    assert 0 < t.sram_budget_bytes <= t.arena_region_bytes
    assert 0 < t.flash_budget_bytes <= t.flash_bytes
    assert t.sram_budget_bytes == t.arena_region_bytes - t.reserved_ram_bytes
    assert t.flash_budget_bytes == t.flash_bytes - t.reserved_flash_bytes
    for key in SOURCED_KEYS:
        assert t.sources[key].strip(), key
    assert t.arena_margin >= 1.0
    assert t.aliases and all(a == a.lower() for a in t.aliases)
    if t.core == "x86-64":
        assert t.pointer_bytes == 8
    else:
        assert t.pointer_bytes == 4
        assert t.reserved_ram_bytes > 0 and t.reserved_flash_bytes > 0


def test_host_target_matches_the_tflite_micro_package():
    host = resolve_target("host")
    assert host.core == "x86-64"
    assert host.pointer_bytes == 8
    assert host.kernel_library == "reference"
    assert host.reserved_ram_bytes == 0 and host.reserved_flash_bytes == 0
    assert host.sram_budget_bytes >= 1 << 30 and host.flash_budget_bytes >= 1 << 30


@pytest.mark.parametrize(
    "name, sram_bytes, flash_bytes",
    [
        ("nucleo-f746zg", 320 * 1024, 1024 * 1024),
        ("nucleo-f412zg", 256 * 1024, 1024 * 1024),
        ("nucleo-l4r5zi", 640 * 1024, 2048 * 1024),
        ("arduino-nano-33-ble-sense", 256 * 1024, 1024 * 1024),
        ("raspberry-pi-pico", 264 * 1024, 2048 * 1024),
        ("esp32-s3-devkitc-1", 512 * 1024, 8192 * 1024),
        ("sparkfun-edge", 384 * 1024, 1024 * 1024),
        ("blackpill-f411ce", 128 * 1024, 512 * 1024),
        ("arduino-uno-r4", 32 * 1024, 256 * 1024),
    ],
)
def test_datasheet_memory_sizes(name, sram_bytes, flash_bytes):
    t = resolve_target(name)
    assert (t.sram_bytes, t.flash_bytes) == (sram_bytes, flash_bytes)


def test_largest_contiguous_regions():
    assert resolve_target("nucleo-h743zi2").arena_region_bytes == 512 * 1024  # AXI SRAM
    assert resolve_target("raspberry-pi-pico").arena_region_bytes == 256 * 1024  # SRAM0-3
    esp = resolve_target("esp32-s3-devkitc-1")
    assert esp.arena_region_bytes < esp.sram_bytes
    assert esp.kernel_library == "esp-nn"


def test_names_and_aliases_are_unique():
    labels = []
    for t in all_targets():
        labels.append(t.name)
        labels.extend(t.aliases)
    assert len(labels) == len(set(labels))


def test_to_dict_is_json_and_complete():
    for t in all_targets():
        d = json.loads(json.dumps(t.to_dict()))
        assert d["name"] == t.name
        assert d["sram_budget_bytes"] == t.sram_budget_bytes
        assert d["flash_budget_bytes"] == t.flash_budget_bytes
        assert d["aliases"] == list(t.aliases)
        assert set(SOURCED_KEYS) <= set(d["sources"])
        assert Path(d["path"]) == t.path


# --------------------------------------------------------------------------- resolution


@pytest.mark.parametrize(
    "spec, name",
    [
        ("nucleo-f746zg", "nucleo-f746zg"),
        ("NUCLEO-F746ZG", "nucleo-f746zg"),
        ("f746", "nucleo-f746zg"),
        ("STM32F746", "nucleo-f746zg"),
        ("  h743 ", "nucleo-h743zi2"),
        ("pico", "raspberry-pi-pico"),
        ("RP2040", "raspberry-pi-pico"),
        ("nano33ble", "arduino-nano-33-ble-sense"),
        ("esp32s3", "esp32-s3-devkitc-1"),
        ("sparkfun_edge", "sparkfun-edge"),
        ("f411", "blackpill-f411ce"),
        ("uno-r4-wifi", "arduino-uno-r4"),
        ("x86_64", "host"),
    ],
)
def test_resolve_by_name_or_alias(spec, name):
    assert resolve_target(spec).name == name


def test_resolve_by_path(tmp_path, monkeypatch):
    shipped = REPO_TARGETS_DIR / "nucleo-f412zg.toml"
    assert resolve_target(str(shipped)).name == "nucleo-f412zg"

    custom = write_board(tmp_path, valid_board("my-board"))
    t = resolve_target(str(custom))
    assert t.name == "my-board" and t.path == custom

    monkeypatch.chdir(tmp_path)
    assert resolve_target("my-board.toml").name == "my-board"  # relative path
    assert resolve_target("./my-board.toml").name == "my-board"


def test_resolve_path_that_does_not_exist(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(InputError) as info:
        resolve_target(str(missing))
    assert "nope.toml" in str(info.value)
    assert "no such" in str(info.value)


def test_resolve_comma_list(tmp_path):
    custom = write_board(tmp_path, valid_board("my-board"))
    boards = resolve_targets(f"f746, pico,{custom},host")
    assert [t.name for t in boards] == ["nucleo-f746zg", "raspberry-pi-pico", "my-board", "host"]
    # the same board named twice (by name and by alias) is listed once
    assert [t.name for t in resolve_targets("pico,rp2040,raspberry-pi-pico")] == [
        "raspberry-pi-pico"
    ]
    assert [t.name for t in resolve_targets("host")] == ["host"]


@pytest.mark.parametrize("spec", ["", " ", ",", "f746,,pico", "f746,"])
def test_resolve_comma_list_with_empty_entries(spec):
    with pytest.raises(InputError):
        resolve_targets(spec)


def test_unknown_board_lists_known_boards():
    with pytest.raises(InputError) as info:
        resolve_target("xyz")
    message = str(info.value)
    assert "unknown board 'xyz'" in message
    assert "known boards:" in message
    for name in REQUIRED_BOARDS:
        assert name in message
    assert "path to a .toml file" in message
    assert "\n" not in message


def test_unknown_board_suggests_a_close_match():
    with pytest.raises(InputError) as info:
        resolve_target("nucleo-f764zg")
    assert "did you mean 'nucleo-f746zg'?" in str(info.value)


def test_unknown_board_in_a_list_names_it():
    with pytest.raises(InputError, match="unknown board 'bogus'"):
        resolve_targets("f746,bogus")


# --------------------------------------------------------------------------- malformed files


@pytest.mark.parametrize(
    "changes, key, fragment",
    [
        ({"flash_bytes": "1M"}, "flash_bytes", 'got "1M"'),
        ({"flash_bytes": 0}, "flash_bytes", "positive"),
        ({"sram_bytes": -5}, "sram_bytes", "positive"),
        ({"clock_hz": 0}, "clock_hz", "positive"),
        ({"arena_region_bytes": 1.5}, "arena_region_bytes", "integer"),
        ({"sram_bytes": True}, "sram_bytes", "got true"),  # bool is not an int
        ({"reserved_ram_bytes": -1}, "reserved_ram_bytes", "non-negative"),
        ({"reserved_flash_bytes": False}, "reserved_flash_bytes", "got false"),
        ({"fpu": 1}, "fpu", "true or false"),
        ({"fpu": "yes"}, "fpu", "true or false"),
        ({"name": ""}, "name", "non-empty"),
        ({"name": "Test_Board"}, "name", "kebab"),
        ({"name": 7}, "name", "string"),
        ({"display_name": ""}, "display_name", "non-empty"),
        ({"mcu": ["x"]}, "mcu", "string"),
        ({"aliases": "tb"}, "aliases", "array"),
        ({"aliases": ["Upper"]}, "aliases", "lowercase"),
        ({"aliases": ["a,b"]}, "aliases", "lowercase"),
        ({"aliases": ["dup", "dup"]}, "aliases", "twice"),
        ({"aliases": ["test-board"]}, "aliases", "repeats the board name"),
        ({"aliases": ["x.toml"]}, "aliases", "file path"),
        ({"core": "cortex-m3"}, "core", "cortex-m0plus"),
        ({"core": 4}, "core", "expected one of"),
        ({"kernel_library": "tinyengine"}, "kernel_library", "cmsis-nn"),
        ({"pointer_bytes": 2}, "pointer_bytes", "4 or 8"),
        ({"pointer_bytes": True}, "pointer_bytes", "4 or 8"),
        ({"pointer_bytes": 8}, "pointer_bytes", "contradicts core"),
        ({"core": "x86-64"}, "pointer_bytes", "contradicts core"),
        ({"core": "cortex-m0plus"}, "fpu", "contradicts core"),
        ({"core": "cortex-m4"}, "fpu", "contradicts core"),
        ({"arena_margin": 0.5}, "arena_margin", "1.0"),
        ({"arena_margin": "1.2"}, "arena_margin", "number"),
        ({"arena_margin": True}, "arena_margin", "number"),
        ({"arena_margin": float("inf")}, "arena_margin", "number"),
        ({"schema": 2}, "schema", "unsupported schema"),
        ({"schema": "1"}, "schema", "integer"),
        ({"arena_region_bytes": 300_000}, "arena_region_bytes", "larger than sram_bytes"),
        ({"reserved_ram_bytes": 196_608}, "reserved_ram_bytes", "no room"),
        ({"reserved_ram_bytes": 200_000}, "reserved_ram_bytes", "no room"),
        ({"reserved_flash_bytes": 1_048_576}, "reserved_flash_bytes", "no room"),
        ({"flash_size": 1}, "flash_size", "unknown key"),
        ({"flash_byte": 1}, "flash_byte", "did you mean 'flash_bytes'"),
        ({"sources": "datasheet"}, "sources", "table"),
    ],
)
def test_malformed_value(tmp_path, changes, key, fragment):
    path = write_board(tmp_path, valid_board(**changes), filename="bad.toml")
    with pytest.raises(InputError) as info:
        load_target_file(path)
    message = assert_one_line_error(info.value, path, key)
    assert fragment in message


@pytest.mark.parametrize(
    "key",
    ["schema", "name", "display_name", "aliases", "mcu", "core", "fpu", "clock_hz", "sram_bytes",
     "arena_region_bytes", "flash_bytes", "reserved_ram_bytes", "reserved_flash_bytes",
     "pointer_bytes", "kernel_library", "sources"],
)
def test_missing_key(tmp_path, key):
    path = write_board(tmp_path, valid_board(**{key: None}), filename="bad.toml")
    with pytest.raises(InputError) as info:
        load_target_file(path)
    assert "missing" in assert_one_line_error(info.value, path, key)


@pytest.mark.parametrize("key", SOURCED_KEYS)
def test_figure_without_source(tmp_path, key):
    board = valid_board()
    del board["sources"][key]
    path = write_board(tmp_path, board, filename="bad.toml")
    with pytest.raises(InputError) as info:
        load_target_file(path)
    assert "[sources]" in assert_one_line_error(info.value, path, key)


def test_bad_source_entries(tmp_path):
    cases = [
        ({"flash_size": "x"}, "sources.flash_size", "none to document"),
        ({"mcu": ""}, "sources.mcu", "non-empty"),
        ({"mcu": 3}, "sources.mcu", "non-empty"),
        ({"arena_margin": "x"}, "sources.arena_margin", "does not set"),
    ]
    for extra, key, fragment in cases:
        board = valid_board()
        board["sources"].update(extra)
        path = write_board(tmp_path, board, filename="bad.toml")
        with pytest.raises(InputError) as info:
            load_target_file(path)
        message = assert_one_line_error(info.value, path, key)
        assert fragment in message


def test_optional_fields(tmp_path):
    board = valid_board(arena_margin=1.25)
    board["sources"].update(arena_margin="measured slack", fpu="datasheet")
    t = load_target_file(write_board(tmp_path, board))
    assert t.arena_margin == 1.25
    t = load_target_file(write_board(tmp_path, valid_board(arena_margin=2)))
    assert t.arena_margin == 2.0 and isinstance(t.arena_margin, float)
    t = load_target_file(write_board(tmp_path, valid_board()))
    assert t.arena_margin == 1.0
    assert t.sram_budget_bytes == 196_608 - 16_384
    assert t.flash_budget_bytes == 1_048_576 - 131_072


def test_toml_syntax_error(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('schema = 1\nname = "broken\nflash_bytes = = 3\n', encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_target_file(path)
    message = assert_one_line_error(info.value, path, None)
    assert "invalid TOML" in message and "line" in message


def test_not_utf8(tmp_path):
    path = tmp_path / "binary.toml"
    path.write_bytes(b"name = \"\xff\xfe\"\n")
    with pytest.raises(InputError) as info:
        load_target_file(path)
    assert_one_line_error(info.value, path, None)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="no such target file"):
        load_target_file(tmp_path / "absent.toml")
    folder = tmp_path / "dir.toml"
    folder.mkdir()
    with pytest.raises(InputError, match="folder"):
        load_target_file(folder)


def test_error_message_names_path_relative_to_cwd(tmp_path, monkeypatch):
    (tmp_path / "targets").mkdir()
    path = write_board(tmp_path / "targets", valid_board(flash_bytes="1M"), filename="foo.toml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as info:
        load_target_file(path)
    assert str(info.value) == (
        "targets/foo.toml: key 'flash_bytes': expected a positive integer, got \"1M\""
    )


# --------------------------------------------------------------------------- the database


def test_database_override_by_environment(tmp_path, monkeypatch):
    write_board(tmp_path, valid_board("alpha-board"))
    write_board(tmp_path, valid_board("beta-board"))
    monkeypatch.setenv(tg.TARGETS_DIR_ENV, str(tmp_path))
    assert tg.targets_dir() == tmp_path
    assert [t.name for t in all_targets()] == ["alpha-board", "beta-board"]
    assert resolve_target("BETA-BOARD-ALIAS").name == "beta-board"
    with pytest.raises(InputError, match="known boards: alpha-board, beta-board"):
        resolve_target("f746")


def test_database_sees_edits(tmp_path):
    path = write_board(tmp_path, valid_board("alpha-board"))
    assert all_targets(tmp_path)[0].clock_hz == 100_000_000
    path.write_text(to_toml(valid_board("alpha-board", clock_hz=64_000_000)) + "\n# edited\n")
    assert all_targets(tmp_path)[0].clock_hz == 64_000_000


def test_database_folder_missing(tmp_path, monkeypatch):
    monkeypatch.setenv(tg.TARGETS_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="nowhere"):
        all_targets()


def test_database_alias_collision(tmp_path):
    write_board(tmp_path, valid_board("alpha-board", aliases=["shared"]))
    second = write_board(tmp_path, valid_board("beta-board", aliases=["shared"]))
    with pytest.raises(InputError) as info:
        all_targets(tmp_path)
    message = assert_one_line_error(info.value, second, "aliases")
    assert "'alpha-board'" in message and "alpha-board.toml" in message


def test_database_alias_collides_with_a_name(tmp_path):
    write_board(tmp_path, valid_board("alpha-board"))
    second = write_board(tmp_path, valid_board("beta-board", aliases=["alpha-board"]))
    with pytest.raises(InputError) as info:
        all_targets(tmp_path)
    assert "'alpha-board'" in assert_one_line_error(info.value, second, "aliases")


def test_database_name_collision(tmp_path):
    write_board(tmp_path, valid_board("alpha-board"))
    # A second file claiming the same name cannot also be named after it, so the file-name
    # rule fires; a name equal to another board's alias is caught by the collision rule.
    write_board(tmp_path, valid_board("beta-board", aliases=["gamma-board"]))
    third = write_board(tmp_path, valid_board("gamma-board", aliases=["g"]))
    with pytest.raises(InputError) as info:
        all_targets(tmp_path)
    assert "'beta-board'" in assert_one_line_error(info.value, third, "name")


def test_database_file_must_be_named_after_its_board(tmp_path):
    path = write_board(tmp_path, valid_board("alpha-board"), filename="other.toml")
    with pytest.raises(InputError) as info:
        all_targets(tmp_path)
    assert "file name" in assert_one_line_error(info.value, path, "name")
    # ...but a board file passed by path may be named anything
    assert resolve_target(str(path)).name == "alpha-board"


def test_database_reports_a_broken_file(tmp_path):
    write_board(tmp_path, valid_board("alpha-board"))
    bad = write_board(tmp_path, valid_board("beta-board", kernel_library="tinyengine"))
    with pytest.raises(InputError) as info:
        all_targets(tmp_path)
    assert_one_line_error(info.value, bad, "kernel_library")


def test_target_is_frozen():
    t = resolve_target("host")
    assert isinstance(t, Target)
    with pytest.raises(AttributeError):
        t.sram_bytes = 1  # type: ignore[misc]
    assert hash(t) == hash(resolve_target("x86-64"))
