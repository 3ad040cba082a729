"""Supernet checkpoints: one file with the weights, the solved layout and the training state.

A checkpoint is a ``torch.save`` dict loaded with ``weights_only=True`` (no pickled code runs):
``format``, ``meta_json`` (the metadata, JSON), ``model`` (the state dict), ``rng_torch``, and while
training ``optimizer`` and ``teacher``. The metadata stores the layout *as solved*
(:meth:`moofa.arch.layouts.Layout.to_dict`): a checkpoint loads as the network it was trained as,
whatever the solver in :mod:`moofa.arch.balance` says today, and its sizes are checked before a
module is built. Writes are atomic (:func:`toolchain.files.atomic_output`).

``python -m moofa.train.checkpoint --store-layout CKPT`` upgrades a checkpoint made before layouts
were stored: it solves the layout its metadata names, refuses unless every weight's shape matches
that layout's supernet, and writes the layout into the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from toolchain.errors import InputError
from toolchain.files import atomic_output, check_input_file

CHECKPOINT_FORMAT = "moofa-supernet/1"


def weights_digest(model) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def save_checkpoint(path: Path, model, meta: dict, optimizer=None, extra: dict | None = None) -> None:
    """Write atomically: a crash leaves the previous checkpoint intact."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "meta_json": json.dumps(meta),
        "model": contiguous_state(model.state_dict()),
        "rng_torch": torch.get_rng_state(),
    }
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    state.update(extra or {})
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def contiguous_state(state: dict) -> dict:
    """Weights in the default memory order, whatever order training used."""
    return {k: v.contiguous() for k, v in state.items()}


def load_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """(state, meta) of a checkpoint, loaded without executing pickled code."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such checkpoint")
    check_input_file(path, "a moofa checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- a damaged file raises any of a dozen types
        first = (str(e).splitlines() or [""])[0][:120]
        raise InputError(f"{path}: not a moofa checkpoint ({type(e).__name__}: {first})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not a moofa supernet checkpoint (format {state.get('format') if isinstance(state, dict) else '?'})")
    try:
        meta = json.loads(state["meta_json"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{path}: checkpoint metadata is missing or not JSON") from None
    if not isinstance(meta, dict) or not isinstance(state.get("model"), dict):
        raise InputError(f"{path}: checkpoint has no metadata object or no weights")
    return state, meta


def load_weights(net, state: dict, path) -> None:
    """``state["model"]`` into ``net``, or a one-line error when the weights do not fit its layout."""
    try:
        net.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        first = (str(e).splitlines() or [""])[0][:160]
        raise InputError(f"{path}: the weights do not match the stored layout ({first})") from None


def stored_layout(meta: dict):
    """The layout a checkpoint was trained with, exactly as stored (sizes checked first)."""
    from moofa.arch.layouts import Layout

    lay = meta.get("layout")
    if not isinstance(lay, dict) or "stages" not in lay:
        raise InputError("checkpoint stores no solved layout (made before layouts were stored): run "
                         "`python -m moofa.train.checkpoint --store-layout CKPT` to add it")
    return Layout.from_dict(lay)


def build_supernet(meta: dict):
    """The supernet a checkpoint's metadata describes (weights not loaded)."""
    from moofa.nn.supernet import Supernet

    dropout = meta.get("dropout", 0.1)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise InputError(f"checkpoint: dropout {dropout!r} is outside [0, 1)")
    return Supernet(stored_layout(meta), dropout=dropout)


def store_layout(path: Path) -> dict:
    """Write the solved layout into a checkpoint that lacks it (see the module docstring)."""
    from moofa.arch.catalog import get_layout
    from moofa.nn.supernet import Supernet

    state, meta = load_checkpoint(path)
    lay = meta.get("layout") or {}
    if "stages" in lay:
        return lay
    layout = get_layout(lay["name"], resolution=lay["resolution"], in_channels=lay["in_channels"],
                        num_classes=lay["num_classes"], memory=lay.get("memory"))
    expected = {k: tuple(v.shape) for k, v in Supernet(layout).state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state["model"].items()}
    if expected != found:
        raise InputError(f"{path}: today's solver gives another {lay['name']} layout than this checkpoint was trained with")
    meta["layout"] = layout.to_dict()
    state["meta_json"] = json.dumps(meta)
    with atomic_output(path) as tmp:
        torch.save(state, tmp)
    return meta["layout"]


if __name__ == "__main__":  # python -m moofa.train.checkpoint --store-layout CKPT [CKPT ...]
    import sys

    args = sys.argv[1:]
    if not args or args[0] != "--store-layout" or len(args) < 2:
        sys.exit("usage: python -m moofa.train.checkpoint --store-layout CKPT [CKPT ...]")
    for name in args[1:]:
        stored = store_layout(Path(name))
        print(f"{name}: layout {stored['name']} widths {stored['widths']} stored")
