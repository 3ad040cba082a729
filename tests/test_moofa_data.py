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


def test_crop_padding_override_gives_flip_only_training_batches(tmp_path):
    """crop_padding=0: every training image is the original or its mirror, never shifted."""
    from moofa.train.data import make_loaders

    arrays = make_idx_folder(tmp_path / "fm", gz=False)
    loaders = make_loaders("fashion-mnist", tmp_path / "fm", batch_size=8, val_size=16, crop_padding=0)
    assert loaders.train.dataset.info.crop_padding == 0 and loaders.info.crop_padding == 2
    plan = next(iter(loaders.train.sampler))
    x, _ = next(iter(loaders.train))
    info = loaders.info
    pixels = np.round((x[:, 0].numpy() * info.std[0] + info.mean[0]) * 255).astype(int)
    for got, i in zip(pixels, plan.indices):
        original = arrays["train_x"][i].astype(int)
        assert (got == original).all() or (got == original[:, ::-1]).all()
    with pytest.raises(InputError, match="crop padding"):
        make_loaders("fashion-mnist", tmp_path / "fm", batch_size=8, val_size=16, crop_padding=-1)


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
