"""The house rules, held by tests: ``toolchain`` never imports ``moofa`` (in its source and at run
time), no module imports another's private names, and the wheel works without the source tree
(board database and firmware templates ship as package data)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("moofa", "toolchain")


def _modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def _dotted(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path):
    """(module, names) of every import statement in ``path``, at any depth."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, tuple(a.name for a in node.names)


def test_toolchain_source_never_imports_moofa():
    offenders = [f"{_dotted(p)} imports {mod}" for p in _modules("toolchain") for mod, _ in _imports(p)
                 if mod == "moofa" or mod.startswith("moofa.")]
    # Child processes get their code as strings: those must not reach into moofa either.
    offenders += [f"{_dotted(p)} (child code)" for p in _modules("toolchain")
                  if "from moofa" in p.read_text() or "import moofa" in p.read_text()]
    assert not offenders, offenders


def test_toolchain_at_run_time_loads_no_moofa_module():
    mods = [_dotted(p) for p in _modules("toolchain")]
    code = ("import importlib, sys\n"
            f"for m in {mods!r}:\n    importlib.import_module(m)\n"
            "bad = sorted(m for m in sys.modules if m == 'moofa' or m.startswith('moofa.'))\n"
            "print(len(sys.modules)); sys.exit(', '.join(bad) if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for package in PACKAGES:
        for path in _modules(package):
            for mod, names in _imports(path):
                if mod.split(".")[0] in PACKAGES and mod != _dotted(path):
                    offenders += [f"{_dotted(path)}: from {mod} import {n}" for n in names if n.startswith("_")]
    assert not offenders, offenders


def test_every_package_folder_is_listed_for_the_wheel():
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {_dotted(p.parent) for package in PACKAGES for p in (REPO / package).rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)


@pytest.mark.slow
def test_wheel_installs_and_runs_without_the_source_tree(tmp_path, corpus):
    """Build the wheel, install it (no dependencies: they come from this environment's
    site-packages through a path file, without the editable install's finder) in a fresh venv,
    and run the commands from a folder that is not the checkout."""
    dist = tmp_path / "dist"
    # Built from a copy: setuptools keeps a build/ folder beside the sources and reuses it.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", ".cache", "build", "*.egg-info", "__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(source)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(dist.glob("moofa-*.whl"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "moofa-test-deps.pth").write_text("\n".join(deps) + "\n")
    r = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MOOFA_TARGETS_DIR")}

    def run(*args):
        return subprocess.run([str(env_dir / "bin" / args[0]), *args[1:]], capture_output=True, text=True, cwd=work,
                              env=env, timeout=600)

    where = run("python", "-c", "import toolchain, moofa; print(toolchain.__file__); print(moofa.__file__)")
    assert where.returncode == 0 and all(line.startswith(str(env_dir)) for line in where.stdout.split()), where
    r = run("moofa", "targets")
    assert r.returncode == 0 and "nucleo-f746zg" in r.stdout, r.stderr
    model = corpus["mobilenet_v1_025_96_int8"] if "mobilenet_v1_025_96_int8" in corpus else next(iter(corpus.values()))
    r = run("moofa", "verify", str(model), "--target", "nucleo-f746zg", "--json")
    assert r.returncode in (0, 1) and '"targets"' in r.stdout, r.stderr
    small = min(corpus.values(), key=lambda p: p.stat().st_size)
    r = run("moofa-deploy", "--model", str(small), "--target", "nucleo-f746zg", "--out", "out", "--samples", "4")
    assert r.returncode == 0, r.stderr[-2000:]
    out = work / "out"
    assert {"model.tflite", "model_data.cc", "model_config.h", "main.cc", "report.md"} <= {p.name for p in out.iterdir()}
