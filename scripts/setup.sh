#!/usr/bin/env bash
# Set up moofa on a fresh machine: system packages (when apt is there), a virtual environment in
# .venv with the pinned Python packages, and moofa itself in editable mode. Safe to run again:
# every step checks before it installs.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "setup: moofa needs Python 3.11 (tensorflow-cpu 2.21 + torch 2.14.1 pins); found $("$PY" --version)" >&2
    exit 2
fi

# System packages: the Fashion-MNIST data, the Arm compiler and C library (firmware checks, TFLM
# built for Cortex-M) and QEMU (runs those builds to measure the arena a board gets).
APT_PACKAGES="dataset-fashion-mnist gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib qemu-system-arm"
missing=""
for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "setup: installing Debian packages:$missing"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
        echo "setup: warning: could not install$missing (needs apt-get as root)." >&2
        echo "       Install them yourself, or point moofa at a Fashion-MNIST IDX folder with --data." >&2
    fi
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PY" -m venv .venv
fi
stamp=.venv/.moofa-lock-$(sha256sum requirements.lock requirements-nodeps.lock pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
    echo "setup: installing pinned packages (requirements.lock)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -r requirements.lock
    .venv/bin/python -m pip install -q --no-deps -r requirements-nodeps.lock
    .venv/bin/python -m pip install -q --no-deps -e .
    rm -f .venv/.moofa-lock-*
    touch "$stamp"
fi
echo "setup: ready (.venv/bin/moofa)"
