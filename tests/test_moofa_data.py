"""moofa.train.data: IDX / CIFAR / ImageFolder loading, the seeded validation split, per-batch
resolution and augmentation. Every dataset here is a few tiny files written into tmp_path;
only the header of the real Fashion-MNIST test set is read."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from moofa.train import data
from moofa.train.data import (
    BatchPlan,
    BatchPlanner,
    load_dataset,
    make_loaders,
    read_idx,
    read_idx_header,
    train_val_split,
)
from toolchain.errors import InputError

# --------------------------------------------------------------------------------------------
# Tiny datasets, written by hand from the format descriptions (not by moofa.train.data)
# --------------------------------------------------------------------------------------------


def idx_bytes(arr: np.ndarray, magic: bytes | None = None) -> bytes:
    """MNIST's IDX format: 00 00 08 NDIM, NDIM big-endian uint32 sizes, then the bytes."""
    head = magic if magic is not None else bytes([0, 0, 8, arr.ndim])
    return head + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def write(path: Path, payload: bytes, gz: bool) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def make_idx_folder(root: Path, n_train=64, n_test=16, size=16, gz=True, seed=1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "train_x": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "train_y": (np.arange(n_train) % 10).astype(np.uint8),
        "test_x": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "test_y": (np.arange(n_test) % 10).astype(np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    write(root / "train-images-idx3-ubyte", idx_bytes(arrays["train_x"]), gz)
    write(root / "train-labels-idx1-ubyte", idx_bytes(arrays["train_y"]), gz)
    write(root / "t10k-images-idx3-ubyte", idx_bytes(arrays["test_x"]), gz)
    write(root / "t10k-labels-idx1-ubyte", idx_bytes(arrays["test_y"]), gz)
    return arrays


def make_cifar10_folder(root: Path, per_batch=4) -> dict[str, np.ndarray]:
    """data_batch_1..5 and test_batch as the CIFAR python version has them: pickled dicts with
    bytes keys, ``data`` uint8 N×3072 (R plane, G plane, B plane), ``labels`` a list."""
    rng = np.random.default_rng(2)
    root.mkdir(parents=True)
    rows, labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, per_batch)]
        with open(root / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": x, b"labels": y}, f)
        rows.append(x)
        labels.append(y)
    names = [b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h", b"i", b"j"]
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names}, f)
    return {
        "train_x": np.concatenate(rows[:5]),
        "train_y": np.concatenate(labels[:5]),
        "test_x": rows[5],
        "test_y": np.array(labels[5]),
    }


def make_image_folder(root: Path, splits=("train", "val"), per_class=3) -> None:
    from PIL import Image

    rng = np.random.default_rng(3)
    for split in splits:
        for cls in ("cat", "dog"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)  # 40 wide, 30 high
                Image.fromarray(pixels).save(folder / f"{i}.png")


def assert_one_line_input_error(excinfo, *fragments: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message and message.strip() == message and message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


# --------------------------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_idx_folder_loads_images_labels_and_stats(tmp_path, gz):
    arrays = make_idx_folder(tmp_path / "fm", gz=gz)
    info, train, test = load_dataset("fashion-mnist", tmp_path / "fm")

    assert (info.name, info.num_classes, info.in_channels, info.native_resolution) == ("fashion-mnist", 10, 1, 16)
    assert info.class_names[0] == "T-shirt/top" and info.class_names[9] == "Ankle boot"
    assert train.images.dtype == torch.uint8 and train.images.shape == (64, 1, 16, 16)
    assert test.images.shape == (16, 1, 16, 16)
    assert train.targets.dtype == torch.int64
    np.testing.assert_array_equal(train.images[:, 0].numpy(), arrays["train_x"])
    np.testing.assert_array_equal(test.targets.numpy(), arrays["test_y"])
    image, label = train[5]
    assert image.shape == (1, 16, 16) and label == 5
    # Normalization statistics of the training file, computed here the plain way.
    scaled = arrays["train_x"] / 255.0
    assert info.mean[0] == pytest.approx(scaled.mean(), abs=6e-5)
    assert info.std[0] == pytest.approx(scaled.std(), abs=6e-5)
    assert info.crop_padding == 2 and info.hflip  # 16 // 8; clothes flip


def _first_training_batch(loaders, arrays):
    """(pixels as 0-255 ints, the source image) for each image of the first training batch."""
    plan = next(iter(loaders.train.sampler))
    x, _ = next(iter(loaders.train))
    info = loaders.info
    pixels = np.round((x[:, 0].numpy() * info.std[0] + info.mean[0]) * 255).astype(int)
    return [(got, arrays["train_x"][i].astype(int)) for got, i in zip(pixels, plan.indices)]


def test_crop_padding_override_gives_flip_only_training_batches(tmp_path):
    """crop_padding=0: every training image is the original or its mirror, never shifted."""
    from moofa.train.data import make_loaders

    arrays = make_idx_folder(tmp_path / "fm", gz=False)
    loaders = make_loaders("fashion-mnist", tmp_path / "fm", batch_size=8, val_size=16, crop_padding=0)
    assert loaders.train.dataset.info.crop_padding == 0 and loaders.info.crop_padding == 2
    for got, original in _first_training_batch(loaders, arrays):
        assert (got == original).all() or (got == original[:, ::-1]).all()
    with pytest.raises(InputError, match="crop padding"):
        make_loaders("fashion-mnist", tmp_path / "fm", batch_size=8, val_size=16, crop_padding=-1)


def test_random_erasing_changes_one_box_per_image_and_only_in_training(tmp_path):
    """erase=1.0: every training image is the original or its mirror outside one box that covers
    2-33% of it; evaluation batches and erase=0 stay untouched; a bad probability is one line."""
    from moofa.train.data import make_loaders

    arrays = make_idx_folder(tmp_path / "fm", gz=False)
    loaders = make_loaders("fashion-mnist", tmp_path / "fm", batch_size=8, val_size=16, crop_padding=0, erase=1.0)
    for got, original in _first_training_batch(loaders, arrays):
        diff = min(((got != original), (got != original[:, ::-1])), key=lambda m: m.sum())
        rows, cols = np.flatnonzero(diff.any(axis=1)), np.flatnonzero(diff.any(axis=0))
        assert rows.size and cols.size, "an image was not erased"
        box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
        assert box <= 0.34 * diff.size  # one box of at most a third of the image holds every change
    plain = make_loaders("fashion-mnist", tmp_path / "fm", batch_size=8, val_size=16, crop_padding=0, erase=0.0)
    for got, original in _first_training_batch(plain, arrays):
        assert (got == original).all() or (got == original[:, ::-1]).all()
    xv, _ = next(iter(loaders.val))
    xp, _ = next(iter(plain.val))
    assert torch.equal(xv, xp)  # evaluation never erases
    for bad in (-0.1, 1.5, True, "half"):
        with pytest.raises(InputError, match="erase probability"):
            make_loaders("fashion-mnist", tmp_path / "fm", batch_size=8, val_size=16, erase=bad)


def test_generic_idx_folder_does_not_flip_characters(tmp_path):
    make_idx_folder(tmp_path / "digits", gz=False)
    info, _, _ = load_dataset("mnist", tmp_path / "digits")
    assert info.name == "mnist" and not info.hflip
    assert info.class_names == tuple(str(d) for d in range(10))


def test_real_fashion_mnist_test_set_header():
    path = data.FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz"
    if not path.is_file():
        pytest.skip(f"{path} absent: apt-get install dataset-fashion-mnist")
    assert read_idx_header(path) == (10000, 28, 28)
    assert read_idx_header(data.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz") == (10000,)


def test_read_idx_round_trip(tmp_path):
    arr = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    path = write(tmp_path / "x-idx3-ubyte", idx_bytes(arr), gz=True)
    np.testing.assert_array_equal(read_idx(path, ndim=3), arr)
    assert read_idx_header(path) == (2, 3, 5)


def _break_bad_magic(root):
    x = np.zeros((64, 16, 16), np.uint8)
    write(root / "train-images-idx3-ubyte", idx_bytes(x, magic=b"\x12\x34\x08\x03"), gz=True)
    return "train-images-idx3-ubyte.gz", "not an IDX file"


def _break_type_code(root):
    x = np.zeros((64, 16, 16), np.uint8)
    write(root / "train-images-idx3-ubyte", idx_bytes(x, magic=b"\x00\x00\x0d\x03"), gz=True)  # 0x0d: float
    return "train-images-idx3-ubyte.gz", "0x0d"


def _break_truncated_gzip(root):
    path = root / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    return "train-images-idx3-ubyte.gz", "truncated or corrupt gzip"


def _break_not_gzip(root):
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(b"this is not gzip at all")
    return "t10k-labels-idx1-ubyte.gz", "gzip"


def _break_count_mismatch(root):
    write(root / "train-labels-idx1-ubyte", idx_bytes(np.zeros(63, np.uint8)), gz=True)
    return "63 labels", "64 images"


def _break_short_payload(root):
    payload = idx_bytes(np.zeros((64, 16, 16), np.uint8))[:-16]  # header still says 64 images
    write(root / "train-images-idx3-ubyte", payload, gz=True)
    return "64×16×16 = 16384", "truncated"


def _break_wrong_dims(root):
    write(root / "train-images-idx3-ubyte", idx_bytes(np.zeros((64, 256), np.uint8)), gz=True)
    return "2 dimensions", "expected 3"


def _break_missing_file(root):
    (root / "t10k-images-idx3-ubyte.gz").unlink()
    return "t10k-images-idx3-ubyte[.gz]", "--data DIR"


def _break_label_range(root):
    write(root / "train-labels-idx1-ubyte", idx_bytes(np.full(64, 10, np.uint8)), gz=True)
    return "label 10", "10 classes"


@pytest.mark.parametrize(
    "breaker",
    [
        _break_bad_magic,
        _break_type_code,
        _break_truncated_gzip,
        _break_not_gzip,
        _break_count_mismatch,
        _break_short_payload,
        _break_wrong_dims,
        _break_missing_file,
        _break_label_range,
    ],
    ids=lambda f: f.__name__[len("_break_") :],
)
def test_malformed_idx_gives_one_line_input_error(tmp_path, breaker):
    root = tmp_path / "fm"
    make_idx_folder(root, gz=True)
    fragments = breaker(root)
    with pytest.raises(InputError) as excinfo:
        load_dataset("fashion-mnist", root)
    assert_one_line_input_error(excinfo, *fragments)


def test_missing_folders_name_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", tmp_path / "not-installed")
    with pytest.raises(InputError) as excinfo:
        load_dataset()
    assert_one_line_input_error(excinfo, "not-installed` not found", "apt-get install dataset-fashion-mnist", "--data DIR")
    with pytest.raises(InputError) as excinfo:
        load_dataset("mnist", tmp_path / "nope")
    assert_one_line_input_error(excinfo, "nope` not found", "--data DIR")
    with pytest.raises(InputError) as excinfo:
        load_dataset("cifar10")
    assert_one_line_input_error(excinfo, "needs --data DIR")
    with pytest.raises(InputError) as excinfo:
        load_dataset("svhn", tmp_path)
    assert_one_line_input_error(excinfo, "unknown dataset `svhn`", "cifar10")


# --------------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------------


def test_cifar10_batches_load_as_planar_rgb(tmp_path):
    arrays = make_cifar10_folder(tmp_path / "cifar-10-batches-py")
    info, train, test = load_dataset("cifar10", tmp_path)  # the folder above the batches works too

    assert (info.num_classes, info.in_channels, info.native_resolution, info.crop_padding) == (10, 3, 32, 4)
    assert info.class_names == tuple("abcdefghij")  # from batches.meta
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (4, 3, 32, 32)
    # Row 7 of the training set is image 3 of data_batch_2; its pixel (y=5, x=9) in channel G
    # is byte 1024 + 5*32 + 9 of the row.
    assert int(train.images[7, 1, 5, 9]) == int(arrays["train_x"][7, 1024 + 5 * 32 + 9])
    np.testing.assert_array_equal(train.targets.numpy(), arrays["train_y"])
    np.testing.assert_array_equal(test.targets.numpy(), arrays["test_y"])
    for c in range(3):
        plane = arrays["train_x"][:, c * 1024 : (c + 1) * 1024] / 255.0
        assert info.mean[c] == pytest.approx(plane.mean(), abs=6e-5)


def test_cifar10_batches_are_three_channel_at_each_resolution(tmp_path):
    make_cifar10_folder(tmp_path / "c10")
    loaders = make_loaders("cifar10", tmp_path / "c10", batch_size=4, resolutions=(24, 32), val_size=4, seed=2)
    shapes = {tuple(x.shape) for x, _ in loaders.train}
    assert shapes <= {(4, 3, 24, 24), (4, 3, 32, 32)} and len(loaders.train) == 4
    x, _ = next(iter(loaders.test))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32


def test_cifar100_train_test_files(tmp_path):
    root = tmp_path / "c100"
    root.mkdir()
    rng = np.random.default_rng(4)
    for name, n in (("train", 8), ("test", 3)):
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        with open(root / name, "wb") as f:
            pickle.dump({b"data": x, b"fine_labels": list(range(90, 90 + n)), b"coarse_labels": [0] * n}, f)
    info, train, test = load_dataset("cifar-100", root)
    assert info.num_classes == 100 and len(train) == 8 and len(test) == 3
    assert train.targets.tolist() == list(range(90, 98))


@pytest.mark.parametrize("damage", ["garbage", "shape", "labels", "missing"])
def test_malformed_cifar_gives_one_line_input_error(tmp_path, damage):
    root = tmp_path / "c10"
    make_cifar10_folder(root)
    if damage == "garbage":
        (root / "data_batch_3").write_bytes(b"\x80\x04garbage")
        fragments = ("data_batch_3", "not a readable CIFAR python batch")
    elif damage == "shape":
        with open(root / "data_batch_2", "wb") as f:
            pickle.dump({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}, f)
        fragments = ("data_batch_2", "N×3072")
    elif damage == "labels":
        with open(root / "test_batch", "wb") as f:
            pickle.dump({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 3}, f)
        fragments = ("test_batch", "4 images but 3 labels")
    else:
        (root / "data_batch_5").unlink()
        fragments = ("has no data_batch_5", "cifar-10-python.tar.gz")
    with pytest.raises(InputError) as excinfo:
        load_dataset("cifar10", root)
    assert_one_line_input_error(excinfo, *fragments)

# CIFAR batches come from a folder the user names, so they are read by a restricted unpickler:
# NumPy's array reconstruction and nothing else is resolved; any other global is refused before
# it is looked up, so a hostile batch runs nothing.


class _Py2Pickler(pickle._Pickler):
    """Writes pickles the way the real CIFAR files were made (Python 2 cPickle, protocol 2,
    NumPy 1): every str and bytes as a Python 2 string (BINSTRING), numpy.core global names."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        raw = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def py2_style_pickle(obj) -> bytes:
    import io

    out = io.BytesIO()
    _Py2Pickler(out, protocol=2).dump(obj)
    return out.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def real_format_batch(extra: dict | None = None, n=4, seed=5) -> dict:
    """A CIFAR-10 batch dict with everything the real files hold."""
    rng = np.random.default_rng(seed)
    batch = {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i:05d}.png".encode() for i in range(n)],
    }
    batch.update(extra or {})
    return batch


def batch_bytes(batch: dict, protocol) -> bytes:
    return py2_style_pickle(batch) if protocol == "py2" else pickle.dumps(batch, protocol=protocol)


def globals_named(payload: bytes) -> set[tuple[str, str]]:
    """The globals a pickle names, found by unpickling it with a find_class that records them."""
    import io

    seen = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            seen.add((module, name))
            return super().find_class(module, name)

    Recorder(io.BytesIO(payload), encoding="bytes").load()
    return seen


def test_cifar_pickles_name_only_numpy_reconstruction_globals():
    """What the restricted unpickler admits, checked against what real-format pickles name."""
    np_core = f"{np.ndarray.__reduce__(np.zeros(1))[0].__module__}"  # numpy._core.multiarray on NumPy 2
    expected_reconstruct = {("numpy", "ndarray"), ("numpy", "dtype"), (np_core, "_reconstruct")}
    batch = real_format_batch()
    assert globals_named(batch_bytes(batch, "py2")) == {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
    }  # fmt: skip
    assert globals_named(batch_bytes(batch, 2)) == expected_reconstruct | {("_codecs", "encode")}
    assert globals_named(batch_bytes(batch, 4)) == expected_reconstruct
    assert globals_named(batch_bytes(batch, 5)) == {("numpy", "dtype"), (np_core.replace("multiarray", "numeric"), "_frombuffer")}
    for proto in ("py2", 2, 4, 5):
        assert globals_named(batch_bytes(batch, proto)) <= set(data._CifarUnpickler._allowed)


@pytest.mark.parametrize("protocol", ["py2", 2, 4, 5], ids=lambda p: f"protocol-{p}")
def test_real_format_cifar_batches_load_the_same_arrays(tmp_path, protocol):
    root = tmp_path / "c10"
    root.mkdir()
    batches = {}
    for i, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        batches[name] = real_format_batch(seed=10 + i)
        (root / name).write_bytes(batch_bytes(batches[name], protocol))
    meta = {b"label_names": [b"plane", b"car", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"],
            b"num_cases_per_batch": 4, b"num_vis": 3072}  # fmt: skip
    (root / "batches.meta").write_bytes(batch_bytes(meta, protocol))

    # What the old loader (plain pickle.load) made of the same files: the same arrays.
    with open(root / "data_batch_2", "rb") as f:
        plain = pickle.load(f, encoding="bytes")
    np.testing.assert_array_equal(plain[b"data"], batches["data_batch_2"][b"data"])

    info, train, test = load_dataset("cifar10", root)
    assert info.class_names[:2] == ("plane", "car")
    expected_x = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    expected_y = np.concatenate([batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)])
    np.testing.assert_array_equal(train.images.numpy(), expected_x.reshape(-1, 3, 32, 32))
    np.testing.assert_array_equal(train.targets.numpy(), expected_y)
    np.testing.assert_array_equal(test.images.numpy(), batches["test_batch"][b"data"].reshape(-1, 3, 32, 32))
    assert test.images.numpy().flags.writeable


class _WritesMarker:
    """Unpickled by plain pickle, this opens (creates) ``path`` for writing."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class _RunsShell:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


class _Calls:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _write_cifar10_with(root: Path, victim: str, payload: bytes) -> None:
    make_cifar10_folder(root)
    (root / victim).write_bytes(payload)


@pytest.mark.parametrize("protocol", [2, 4], ids=lambda p: f"protocol-{p}")
def test_hostile_cifar_batch_is_refused_and_runs_nothing(tmp_path, protocol):
    root = tmp_path / "c10"
    marker = tmp_path / "opened-by-the-pickle"
    payload = pickle.dumps(real_format_batch({b"data": _WritesMarker(marker)}), protocol=protocol)
    # The payload is live: plain pickle.load creates the file it names (here a decoy).
    decoy = tmp_path / "decoy"
    live = pickle.dumps(real_format_batch({b"data": _WritesMarker(decoy)}), protocol=protocol)
    pickle.loads(live, encoding="bytes")[b"data"].close()
    assert decoy.exists()

    _write_cifar10_with(root, "data_batch_1", payload)
    with pytest.raises(InputError) as excinfo:
        load_dataset("cifar10", root)
    assert_one_line_input_error(
        excinfo, "refusing to load", "data_batch_1", "io.open", "which a CIFAR batch never contains"
    )
    assert not marker.exists()

    shell_marker = tmp_path / "touched-by-the-shell"
    shell = pickle.dumps(real_format_batch({b"labels": _RunsShell(f"touch '{shell_marker}'")}), protocol=protocol)
    (root / "data_batch_1").write_bytes(shell)
    with pytest.raises(InputError) as excinfo:
        load_dataset("cifar10", root)
    assert_one_line_input_error(excinfo, "refusing to load", "data_batch_1", "posix.system")
    assert not shell_marker.exists()


def _stack_global_with_newline() -> bytes:
    name, attr = b"evil", b"run\nnow"
    return (
        b"\x80\x04" + b"\x8c" + bytes([len(name)]) + name + b"\x8c" + bytes([len(attr)]) + attr
        + b"\x93" + b")" + b"R" + b"."
    )  # fmt: skip


@pytest.mark.parametrize(
    "case",
    ["eval", "ordered-dict", "numpy-scalar-labels", "codecs-other-encoding", "numpy-load", "newline-name"],
)
def test_cifar_batch_naming_other_globals_is_refused(tmp_path, case):
    import codecs
    import collections

    if case == "eval":
        payload, refused = pickle.dumps(real_format_batch({b"batch_label": _Calls(eval, "1 + 1")})), "builtins.eval"
    elif case == "ordered-dict":
        payload, refused = pickle.dumps(collections.OrderedDict(real_format_batch())), "collections.OrderedDict"
    elif case == "numpy-scalar-labels":
        batch = real_format_batch({b"labels": list(np.arange(4, dtype=np.int64) % 10)})
        payload, refused = pickle.dumps(batch), ".multiarray.scalar"
    elif case == "codecs-other-encoding":  # _codecs.encode is admitted for latin1 bytes only
        batch = real_format_batch({b"batch_label": _Calls(codecs.encode, "x", "rot13")})
        payload, refused = pickle.dumps(batch, protocol=2), "_codecs.encode with encoding 'rot13'"
    elif case == "numpy-load":  # NumPy, but not its array reconstruction
        payload, refused = pickle.dumps(real_format_batch({b"data": _Calls(np.load, "x.npy", None, True)})), "numpy.load"
    else:
        payload, refused = _stack_global_with_newline(), "evil.run\\nnow"
    root = tmp_path / "c10"
    _write_cifar10_with(root, "test_batch", payload)
    with pytest.raises(InputError) as excinfo:
        load_dataset("cifar10", root)
    assert_one_line_input_error(excinfo, "refusing to load", "test_batch", refused)


def test_cifar_meta_file_is_read_with_the_same_restriction(tmp_path):
    root = tmp_path / "c10"
    marker = tmp_path / "opened-by-meta"
    make_cifar10_folder(root)
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": _WritesMarker(marker)}))
    with pytest.raises(InputError) as excinfo:
        load_dataset("cifar10", root)
    assert_one_line_input_error(excinfo, "refusing to load", "batches.meta", "io.open")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", ["py2", 2, 4, 5], ids=lambda p: f"protocol-{p}")
@pytest.mark.parametrize("keep", [0.0, 0.02, 0.5, 0.99], ids=lambda k: f"keep-{k:g}")
def test_truncated_cifar_batch_gives_one_line_input_error(tmp_path, protocol, keep):
    root = tmp_path / "c10"
    whole = batch_bytes(real_format_batch(), protocol)
    _write_cifar10_with(root, "data_batch_4", whole[: int(len(whole) * keep)])
    with pytest.raises(InputError) as excinfo:
        load_dataset("cifar10", root)
    assert_one_line_input_error(excinfo, "data_batch_4", "not a readable CIFAR python batch", "re-extract")


def _structure_case(case):
    n = 4
    if case == "not-a-dict":
        return [np.zeros((n, 3072), np.uint8)], ("holds a list", "not a CIFAR batch dictionary")
    if case == "str-keys":
        return {"data": np.zeros((n, 3072), np.uint8), "labels": [0] * n}, ("no `data` and `labels` entries",)
    if case == "data-list":
        return real_format_batch({b"data": [[0] * 3072] * n}), ("`data` is list", "uint8 N×3072")
    if case == "data-float":
        return real_format_batch({b"data": np.zeros((n, 3072), np.float32)}), ("float32 (4, 3072)", "uint8 N×3072")
    if case == "data-3d":
        return real_format_batch({b"data": np.zeros((n, 3, 1024), np.uint8)}), ("(4, 3, 1024)",)
    if case == "no-images":
        return real_format_batch({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}), ("holds no images",)
    if case == "labels-bytes":
        return real_format_batch({b"labels": b"\x00\x01\x02\x03"}), ("`labels` is bytes", "list of ints")
    if case == "labels-float":
        return real_format_batch({b"labels": [0.0, 1.0, 2.0, 3.0]}), ("non-integers", "list of ints")
    if case == "labels-bool":
        return real_format_batch({b"labels": [True, False, True, False]}), ("non-integers",)
    if case == "labels-range":
        return real_format_batch({b"labels": [0, 1, 10, 2]}), ("label 10 in `labels`", "outside 0..9", "cifar10")
    if case == "labels-negative":
        return real_format_batch({b"labels": [0, -1, 1, 2]}), ("label -1", "outside 0..9")
    assert case == "labels-count"
    return real_format_batch({b"labels": [0] * 5}), ("4 images but 5 labels",)


@pytest.mark.parametrize(
    "case",
    ["not-a-dict", "str-keys", "data-list", "data-float", "data-3d", "no-images",
     "labels-bytes", "labels-float", "labels-bool", "labels-range", "labels-negative", "labels-count"],
)  # fmt: skip
def test_cifar_batch_structure_is_checked(tmp_path, case):
    obj, fragments = _structure_case(case)
    root = tmp_path / "c10"
    _write_cifar10_with(root, "data_batch_3", pickle.dumps(obj))
    with pytest.raises(InputError) as excinfo:
        load_dataset("cifar10", root)
    assert_one_line_input_error(excinfo, "data_batch_3", *fragments)


def test_cifar100_labels_are_checked_against_100_classes(tmp_path):
    root = tmp_path / "c100"
    root.mkdir()
    for name in ("train", "test"):
        batch = {b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [99, 100], b"coarse_labels": [0, 0]}
        (root / name).write_bytes(pickle.dumps(batch))
    with pytest.raises(InputError) as excinfo:
        load_dataset("cifar100", root)
    assert_one_line_input_error(excinfo, "train", "label 100 in `fine_labels`", "outside 0..99", "cifar100")


# --------------------------------------------------------------------------------------------
# ImageFolder
# --------------------------------------------------------------------------------------------


def test_image_folder_loads_and_batches(tmp_path):
    make_image_folder(tmp_path / "vww")
    loaders = make_loaders("vww", tmp_path / "vww", batch_size=2, resolutions=(16, 24), val_size=2, seed=0)
    info = loaders.info
    assert (info.num_classes, info.in_channels, info.class_names) == (2, 3, ("cat", "dog"))
    assert info.mean == data.IMAGENET_MEAN
    sizes = set()
    for images, labels in loaders.train:
        assert images.dtype == torch.float32 and images.shape[:2] == (2, 3)
        assert images.shape[2] == images.shape[3] in (16, 24)
        assert labels.dtype == torch.int64 and set(labels.tolist()) <= {0, 1}
        sizes.add(images.shape[2])
    assert len(loaders.train) == 2  # 6 images - 2 validation = 4 = 2 batches
    images, labels = next(iter(loaders.eval_loader("test", resolution=20)))
    assert images.shape == (2, 3, 20, 20)
    images, _ = next(iter(loaders.val))
    assert images.shape == (2, 3, 24, 24)  # max(resolutions)


def test_image_folder_without_val_gives_input_error(tmp_path):
    make_image_folder(tmp_path / "tree", splits=("train",))
    with pytest.raises(InputError) as excinfo:
        load_dataset("imagenette", tmp_path / "tree")
    assert_one_line_input_error(excinfo, "no train/ and val/", "ImageFolder")


# --------------------------------------------------------------------------------------------
# The validation split
# --------------------------------------------------------------------------------------------


def splitmix64_outputs(seed: int, count: int) -> list[int]:
    """Reference splitmix64 (Steele et al. 2014) written out in Python integers."""
    mask, state, out = (1 << 64) - 1, seed, []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out.append(z ^ (z >> 31))
    return out


def test_splitmix64_reference_values():
    # Published first outputs of splitmix64 seeded with 0 (e.g. the xoshiro authors' seeding code).
    assert splitmix64_outputs(0, 2) == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]


def test_split_is_disjoint_covering_sorted_and_deterministic():
    train, val = train_val_split(60000, 5000, seed=0)
    assert train.dtype == val.dtype == np.int64
    assert (len(train), len(val)) == (55000, 5000)
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(60000))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    again_train, again_val = train_val_split(60000, 5000, seed=0)
    np.testing.assert_array_equal(val, again_val)
    np.testing.assert_array_equal(train, again_train)
    other = train_val_split(60000, 5000, seed=1)[1]
    assert not np.array_equal(val, other)


def test_split_follows_splitmix64_so_any_process_recomputes_it():
    n, val_size, seed = 50, 7, 12345
    keys = splitmix64_outputs(seed, n)
    expected_val = sorted(sorted(range(n), key=lambda i: keys[i])[:val_size])
    assert train_val_split(n, val_size, seed)[1].tolist() == expected_val


def test_split_rejects_impossible_sizes():
    with pytest.raises(InputError):
        train_val_split(10, 10, 0)
    with pytest.raises(InputError):
        train_val_split(10, -1, 0)


# --------------------------------------------------------------------------------------------
# Batches: elastic resolution, augmentation, ranks
# --------------------------------------------------------------------------------------------


def test_resolution_is_one_per_batch_varies_and_repeats_with_the_seed(tmp_path):
    make_idx_folder(tmp_path / "fm", n_train=96, gz=False)
    kwargs = dict(batch_size=4, resolutions=(12, 16, 20, 24), val_size=16, seed=7)
    first = make_loaders("fashion-mnist", tmp_path / "fm", **kwargs)
    second = make_loaders("fashion-mnist", tmp_path / "fm", **kwargs)
    assert len(first.train) == 20

    batches_a = list(first.train)
    batches_b = list(second.train)
    sizes = [x.shape[-1] for x, _ in batches_a]
    for x, _ in batches_a:
        assert x.shape[0] == 4 and x.shape[1] == 1 and x.shape[2] == x.shape[3]  # one size per batch
    assert set(sizes) <= {12, 16, 20, 24} and len(set(sizes)) >= 3
    for (xa, ya), (xb, yb) in zip(batches_a, batches_b):  # same seed and epoch: same batches
        assert torch.equal(xa, xb) and torch.equal(ya, yb)

    first.set_epoch(1)
    sizes_epoch1 = [x.shape[-1] for x, _ in first.train]
    assert sizes_epoch1 != sizes
    assert sizes_epoch1 == [first.train.sampler.resolution_at(s) for s in range(20)]


def test_ranks_share_resolutions_and_split_the_images(tmp_path):
    make_idx_folder(tmp_path / "fm", n_train=96, gz=False)
    kwargs = dict(batch_size=4, resolutions=(12, 16, 20), val_size=16, seed=3, distributed=True, world_size=2)
    rank0 = make_loaders("fashion-mnist", tmp_path / "fm", rank=0, **kwargs)
    rank1 = make_loaders("fashion-mnist", tmp_path / "fm", rank=1, **kwargs)
    plans0, plans1 = list(rank0.train.sampler), list(rank1.train.sampler)
    assert len(plans0) == len(plans1) == 10  # 80 training images / 2 ranks / 4
    assert [p.resolution for p in plans0] == [p.resolution for p in plans1]
    seen0 = np.concatenate([p.indices for p in plans0])
    seen1 = np.concatenate([p.indices for p in plans1])
    assert np.intersect1d(seen0, seen1).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([seen0, seen1])), rank0.train_indices)
    np.testing.assert_array_equal(rank0.val_indices, rank1.val_indices)


def test_training_augmentation_is_a_padded_shift_or_flip_of_the_source(tmp_path):
    arrays = make_idx_folder(tmp_path / "fm", n_train=40, size=16, gz=False)
    loaders = make_loaders("fashion-mnist", tmp_path / "fm", batch_size=8, resolutions=(16,), val_size=8)
    mean, std = loaders.info.mean[0], loaders.info.std[0]
    pad = loaders.info.crop_padding
    maker = loaders.train.dataset
    flips = shifts = 0
    for plan in loaders.train.sampler:
        images, labels = maker[plan]
        for image, index, label in zip(images, plan.indices, labels):
            assert int(label) == arrays["train_y"][index]
            raw = np.round((image[0].numpy() * std + mean) * 255.0).astype(np.int64)
            padded = np.pad(arrays["train_x"][index].astype(np.int64), pad)
            candidates = [
                (dy, dx, flip)
                for dy in range(2 * pad + 1)
                for dx in range(2 * pad + 1)
                for flip in (False, True)
                if np.array_equal(raw, (lambda c: c[:, ::-1] if flip else c)(padded[dy : dy + 16, dx : dx + 16]))
            ]
            assert candidates, f"image {index} is no shifted/flipped crop of its source"
            flips += any(f for _, _, f in candidates)
            shifts += any((dy, dx) != (pad, pad) for dy, dx, _ in candidates)
    assert flips > 0 and shifts > 0


def test_eval_batches_are_the_normalized_source(tmp_path):
    arrays = make_idx_folder(tmp_path / "fm", n_train=40, size=16, gz=True)
    loaders = make_loaders("fashion-mnist", tmp_path / "fm", batch_size=8, resolutions=(12, 16), val_size=8)
    mean, std = loaders.info.mean[0], loaders.info.std[0]
    images, labels = next(iter(loaders.test))  # test set, max resolution 16 = native
    expected = (arrays["test_x"][:8] / 255.0 - mean) / std
    np.testing.assert_allclose(images[:, 0].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(labels.numpy(), arrays["test_y"][:8])
    val_images, _ = next(iter(loaders.val))
    first_val = loaders.val_indices[0]
    np.testing.assert_allclose(val_images[0, 0].numpy(), (arrays["train_x"][first_val] / 255.0 - mean) / std, atol=1e-5)
    small = loaders.eval_loader("val", resolution=8, batch_size=3, max_images=5)
    shapes = [tuple(x.shape) for x, _ in small]
    assert shapes == [(3, 1, 8, 8), (2, 1, 8, 8)]
    # A constant image stays constant through the resize: the resize keeps the value range.
    const = torch.full((1, 1, 16, 16), 200, dtype=torch.uint8)
    maker = data.BatchMaker(data.ImageTensorDataset(const, torch.zeros(1, dtype=torch.int64), ["x"]), loaders.info, False)
    out, _ = maker[BatchPlan(np.array([0]), 8, 0)]
    np.testing.assert_allclose(out.numpy(), (200 / 255.0 - mean) / std, atol=1e-5)


def test_worker_processes_make_the_same_batches(tmp_path):
    make_idx_folder(tmp_path / "fm", n_train=48, gz=False)
    kwargs = dict(batch_size=8, resolutions=(12, 16, 20), val_size=8, seed=5)
    in_process = list(make_loaders("fashion-mnist", tmp_path / "fm", **kwargs).train)
    in_worker = list(make_loaders("fashion-mnist", tmp_path / "fm", num_workers=1, **kwargs).train)
    assert len(in_process) == len(in_worker) == 5
    for (xa, ya), (xb, yb) in zip(in_process, in_worker):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_loader_arguments_are_checked(tmp_path):
    make_idx_folder(tmp_path / "fm", n_train=40, gz=False)
    with pytest.raises(InputError) as excinfo:
        make_loaders("fashion-mnist", tmp_path / "fm", batch_size=64, val_size=8)
    assert_one_line_input_error(excinfo, "batch size 64", "32 training images")
    with pytest.raises(InputError):
        make_loaders("fashion-mnist", tmp_path / "fm", batch_size=4, val_size=40)
    with pytest.raises(InputError):
        make_loaders("fashion-mnist", tmp_path / "fm", batch_size=4, val_size=8, resolutions=(16, 0))
    if not torch.distributed.is_initialized():
        with pytest.raises(RuntimeError):
            make_loaders("fashion-mnist", tmp_path / "fm", batch_size=4, val_size=8, distributed=True)


def test_planner_without_drop_last_keeps_the_tail():
    planner = BatchPlanner(np.arange(10), 4, (8,), shuffle=False, drop_last=False)
    assert [p.indices.tolist() for p in planner] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
