"""Datasets for training and searching supernets: loading, the validation split, batches.

One door in::

    loaders = make_loaders("fashion-mnist", resolutions=(20, 24, 28), batch_size=128, seed=0)
    for epoch in range(epochs):
        loaders.set_epoch(epoch)                       # new shuffle, new resolution sequence
        for images, labels in loaders.train:           # float32 B×C×r×r, int64 B; one r per batch
            ...
    val_28 = loaders.eval_loader("val", resolution=28)                 # search, predictor
    calib = loaders.eval_loader("val", resolution=24, max_images=2000)  # BN recalibration
    final = loaders.eval_loader("test", resolution=28)                 # final report only

API:

- ``load_dataset(name="fashion-mnist", root=None) -> (DatasetInfo, train_ds, test_ds)``
- ``train_val_split(n, val_size, seed) -> (train_indices, val_indices)``, sorted int64
- ``make_loaders(name, root, batch_size=128, resolutions=None, val_size=5000, seed=0,
  distributed=False, *, rank=None, world_size=None, num_workers=0, pin_memory=False) -> Loaders``
  with ``train``, ``val``, ``test`` (DataLoaders), ``info``, ``train_indices``, ``val_indices``,
  ``set_epoch(epoch)`` and ``eval_loader(split, resolution, batch_size=None, max_images=None)``
- ``DatasetInfo(name, num_classes, in_channels, native_resolution, mean, std, class_names,
  crop_padding, hflip)``, ``to_json()`` for checkpoints
- ``read_idx(path, ndim=None)``, ``read_idx_header(path)``: checked IDX reading

What ``load_dataset(name, root)`` reads (``root=None`` only for Fashion-MNIST):

============================  ==============================================================
name                          files under ``root``
============================  ==============================================================
``fashion-mnist`` (default)   MNIST-format IDX: ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``
                              (``.gz`` or not); default root ``/usr/share/datasets/fashion-mnist``
                              (Debian package ``dataset-fashion-mnist``)
``mnist`` / ``idx``           any MNIST-format IDX folder (digits, letters: no horizontal flip)
``cifar10``                   CIFAR-10 python batches ``data_batch_1..5``, ``test_batch``
                              (or the ``cifar-10-batches-py`` folder above them)
``cifar100``                  CIFAR-100 python ``train``, ``test`` (or ``cifar-100-python``)
``imagefolder``, ``vww``,     torchvision ImageFolder trees ``root/train/<class>/*.jpg`` and
``imagenette``, ``imagenet``  ``root/val/<class>/*`` (``root/test`` if there is no ``val``)
============================  ==============================================================

A missing or malformed dataset raises :class:`toolchain.errors.InputError` with one line that
names the file and the fix. IDX files are checked for magic number (``00 00 08 NN``: unsigned
bytes, NN dimensions), dimensions, payload length, gzip integrity and label/image agreement.

**Pickles.** CIFAR's python batches are pickles, and a plain ``pickle.load`` of a hostile file runs
any code it names. They are read only from a folder the user names (nothing is downloaded or read
from a default location), and with a restricted unpickler that resolves only the globals the
format needs: NumPy's array reconstruction (``numpy.core.multiarray._reconstruct``, spelled
``numpy._core.multiarray`` by NumPy 2, with ``numpy.ndarray`` and ``numpy.dtype``; protocol 5's
``numpy._core.numeric._frombuffer``) and, for bytes pickled by Python 3 at protocols 0–2,
``_codecs.encode`` — replaced by a stand-in that only encodes a str as Latin-1. Any other global
(``os.system``, ``builtins.eval``, even ``collections.OrderedDict``) is refused before it is looked
up, with an :class:`~toolchain.errors.InputError` naming the file and the global, so nothing in the
file is called but those. What loads is then checked: a dict with bytes keys, ``data`` a uint8
N×3072 array with N ≥ 1, the labels a list of N ints within the dataset's classes.

**The split.** ``train_val_split(n, val_size, seed)`` carves a validation set out of the
training set (5,000 of Fashion-MNIST's 60,000 by default). It is used for BN recalibration,
the accuracy predictor and search; the test set is for final reporting only. The split is a pure
function of ``(n, val_size, seed)`` built on splitmix64 (Steele et al., OOPSLA 2014) in plain
integer arithmetic, not on NumPy's generators, so every process, rank, machine and NumPy version
computes the same indices; ``Loaders.train_indices`` / ``val_indices`` expose them.

**Batches.** A loader's sampler (:class:`BatchPlanner`) yields one :class:`BatchPlan` per step:
the images' indices, the batch's resolution and the batch's augmentation seed, all fixed by
``(seed, epoch, step)``; the resolution does not depend on the rank, so every rank of a
distributed run trains the same resolution at the same step (OFA's elastic resolution). The
loader's dataset (:class:`BatchMaker`) turns a plan into a finished batch, so a plan is the same
batch whether it is made in the main process or in a worker (``num_workers=0`` by default).

- IDX and CIFAR images live in memory as uint8 N×C×H×W tensors (47 MB for Fashion-MNIST's
  training set, 154 MB for CIFAR's); a batch is gathered, augmented as uint8, then converted to
  float, normalized and resized as a whole (bilinear, antialiased when shrinking).
- Training augmentation: IDX and CIFAR take a random crop after zero padding by
  ``native_resolution // 8`` pixels (CIFAR's customary 4 px at 32, 3 px at 28) and, except for
  MNIST-like characters, a horizontal flip; ImageFolder takes a RandomResizedCrop (scale
  0.08–1, ratio 3/4–4/3, torchvision's algorithm) straight to the batch's resolution, then a flip.
  Optional random erasing (``erase`` > 0) then fills one box per chosen image with noise, on the
  finished, normalized batch.
- Evaluation: IDX and CIFAR images are resized to the resolution; ImageFolder images are resized
  so that the shorter side is ``resolution / 0.875`` then center-cropped (the usual ImageNet
  crop fraction).
- Normalization: IDX and CIFAR use the mean and standard deviation of their own training file
  per channel (exact, from a byte histogram; Fashion-MNIST gives 0.2860 / 0.3530); ImageFolder
  uses ImageNet's (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225).

Speed: loading Fashion-MNIST takes about 0.6 s and a data-only epoch (429 batches of 128) about
0.9 s on the 2-core build machine with ``torch.set_num_threads(1)``; with torch's default two
threads on the same, busy machine the epoch took 8 s (thread contention on small tensors).
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import pickle
import struct
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from toolchain.errors import InputError

__all__ = [
    "FASHION_MNIST_DIR",
    "DATASET_NAMES",
    "DatasetInfo",
    "ImageTensorDataset",
    "BatchPlan",
    "BatchPlanner",
    "BatchMaker",
    "Loaders",
    "load_dataset",
    "train_val_split",
    "make_loaders",
    "read_idx",
    "read_idx_header",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

# ImageNet statistics (torchvision's reference training scripts), used for every ImageFolder tree:
# too many images to measure at load time, and close enough for natural photographs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Evaluation crop: resize the shorter side to resolution / EVAL_CROP_FRACTION, center-crop.
EVAL_CROP_FRACTION = 0.875

# Names a user may type -> canonical name. "mnist"/"idx" are any MNIST-format folder.
_ALIASES = {
    "fashion-mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist",
    "mnist": "mnist", "idx": "mnist",
    "cifar10": "cifar10", "cifar-10": "cifar10",
    "cifar100": "cifar100", "cifar-100": "cifar100",
    "imagefolder": "imagefolder", "image-folder": "imagefolder",
    "vww": "vww", "visual-wake-words": "vww", "visualwakewords": "vww",
    "imagenette": "imagenette", "imagenet": "imagenet",
}  # fmt: skip
DATASET_NAMES = ("fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder", "vww", "imagenette", "imagenet")

# Default (largest) training resolution of an ImageFolder dataset; the trees carry any size.
# ImageNet/Imagenette: OFA's 224. VWW: a microcontroller-sized input (mcunet-vww1 runs at 80).
_FOLDER_RESOLUTION = {"imagefolder": 224, "imagenette": 224, "imagenet": 224, "vww": 96}

_IDX_UBYTE = 0x08  # IDX type code for unsigned bytes, the only one MNIST-format files use


# --------------------------------------------------------------------------------------------
# Dataset description and in-memory images
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and an exporter must know about a dataset (store it with a checkpoint).

    ``crop_padding`` > 0: training takes a random crop after padding by that many pixels (IDX,
    CIFAR); 0: RandomResizedCrop (ImageFolder). ``hflip``: training flips images left-right.
    """

    name: str
    num_classes: int
    in_channels: int
    native_resolution: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    crop_padding: int = 0
    hflip: bool = True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ImageTensorDataset(Dataset):
    """Images held in memory as uint8 ``N×C×H×W`` with int64 ``targets``; item = (C×H×W uint8, int)."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, classes: Sequence[str]):
        assert images.dtype == torch.uint8 and images.dim() == 4, images.shape
        assert targets.dtype == torch.int64 and targets.shape == (images.shape[0],)
        self.images = images
        self.targets = targets
        self.classes = list(classes)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.targets[i])


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images scaled to [0, 1], exactly, from a
    histogram of byte values (no float copy of the whole set)."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):
        hist = torch.bincount(images[:, c].reshape(-1), minlength=256).numpy().astype(np.float64)
        count = hist.sum()
        mean = float((hist * levels).sum() / count)
        var = float((hist * (levels - mean) ** 2).sum() / count)
        means.append(round(mean, 4))
        stds.append(round(max(math.sqrt(var), 1e-4), 4))  # a constant image must not divide by 0
    return tuple(means), tuple(stds)


# --------------------------------------------------------------------------------------------
# IDX (MNIST format)
# --------------------------------------------------------------------------------------------


def _read_bytes(path: Path, limit: int | None = None) -> bytes:
    """The (decompressed, for ``.gz``) bytes of ``path``, all or the first ``limit``."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read() if limit is None else f.read(limit)
        with open(path, "rb") as f:
            return f.read() if limit is None else f.read(limit)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise InputError(
            f"`{path}` is a truncated or corrupt gzip file ({_one_line(e)}): reinstall or re-download it"
        ) from None
    except OSError as e:
        raise InputError(f"`{path}` cannot be read: {_one_line(e.strerror or e)}") from None


def _parse_idx_header(data: bytes, path: Path) -> tuple[tuple[int, ...], int]:
    """(shape, header length) from the start of an IDX file: magic ``00 00 08 NN``, then NN
    big-endian uint32 dimensions (LeCun et al., "THE MNIST DATABASE" file format)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise InputError(
            f"`{path}` is not an IDX file (magic {data[:4].hex() or 'missing'}, expected 000008NN): "
            "pass --data DIR with MNIST-format IDX files"
        )
    if data[2] != _IDX_UBYTE:
        raise InputError(
            f"`{path}` holds IDX type 0x{data[2]:02x}, not unsigned bytes (0x08): MNIST-format images "
            "and labels are bytes"
        )
    ndim = data[3]
    header_len = 4 + 4 * ndim
    if ndim == 0 or len(data) < header_len:
        raise InputError(f"`{path}` has a truncated IDX header ({ndim} dimensions): reinstall or re-download it")
    shape = struct.unpack(f">{ndim}I", data[4:header_len])
    return tuple(int(d) for d in shape), header_len


def read_idx_header(path: str | Path) -> tuple[int, ...]:
    """The shape an IDX file declares, reading only its header (cheap even for 60,000 images)."""
    path = Path(path)
    head = _read_bytes(path, limit=4)
    ndim = head[3] if len(head) == 4 else 0
    return _parse_idx_header(_read_bytes(path, limit=4 + 4 * ndim), path)[0]


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """The whole IDX file as a uint8 array, checked: magic, ``ndim`` if given, payload length."""
    path = Path(path)
    data = _read_bytes(path)
    shape, header_len = _parse_idx_header(data, path)
    if ndim is not None and len(shape) != ndim:
        what = "images (N×H×W)" if ndim == 3 else "labels (N)"
        raise InputError(f"`{path}` has {len(shape)} dimensions {shape}, expected {ndim} for {what}")
    expected = math.prod(shape)
    payload = len(data) - header_len
    if payload != expected:
        dims = "×".join(str(d) for d in shape)
        raise InputError(
            f"`{path}` holds {payload} data bytes but its header says {dims} = {expected}: "
            "the file is truncated or corrupt; reinstall or re-download it"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(shape).copy()


def _find_idx(root: Path, prefix: str, kind: str) -> Path:
    """``{prefix}-{kind}-ubyte`` (MNIST's names) or ``{prefix}-{kind with a dot}-ubyte``, gz or not."""
    stem_dash = f"{prefix}-{kind}-ubyte"
    stem_dot = f"{prefix}-{kind.replace('-', '.')}-ubyte"
    for stem in (stem_dash, stem_dot):
        for name in (stem + ".gz", stem):
            if (root / name).is_file():
                return root / name
    raise InputError(
        f"`{root}` has no `{stem_dash}[.gz]`: pass --data DIR with MNIST-format IDX files "
        "(train/t10k × images-idx3/labels-idx1)"
    )


def _idx_split(root: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images_path = _find_idx(root, prefix, "images-idx3")
    labels_path = _find_idx(root, prefix, "labels-idx1")
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise InputError(
            f"`{images_path}` holds {images.shape[0]} images but `{labels_path}` {labels.shape[0]} labels: "
            "the files do not belong together; reinstall or re-download them"
        )
    if images.shape[0] == 0:
        raise InputError(f"`{images_path}` holds no images")
    return images, labels


def _load_idx(root: Path, name: str) -> tuple[DatasetInfo, ImageTensorDataset, ImageTensorDataset]:
    if not root.is_dir():
        if name == "fashion-mnist" and root == FASHION_MNIST_DIR:
            raise InputError(
                f"`{root}` not found: install it with `apt-get install dataset-fashion-mnist` "
                "or pass --data DIR with MNIST-format IDX files"
            )
        raise InputError(f"`{root}` not found: pass --data DIR with MNIST-format IDX files")
    train_x, train_y = _idx_split(root, "train")
    test_x, test_y = _idx_split(root, "t10k")
    if test_x.shape[1:] != train_x.shape[1:]:
        raise InputError(
            f"`{root}`: test images are {test_x.shape[1]}×{test_x.shape[2]} but training images "
            f"{train_x.shape[1]}×{train_x.shape[2]}"
        )
    height, width = train_x.shape[1:]
    if height != width:
        raise InputError(f"`{root}`: images are {height}×{width}; moofa trains on square images")
    if name == "fashion-mnist":
        classes = FASHION_MNIST_CLASSES
    else:
        classes = tuple(str(c) for c in range(int(train_y.max()) + 1))
    for labels, split in ((train_y, "train"), (test_y, "t10k")):
        if int(labels.max()) >= len(classes):
            raise InputError(
                f"`{root}`: {split} label {int(labels.max())} is out of range for {len(classes)} classes"
                + (": use --dataset mnist for a folder of other IDX data" if name == "fashion-mnist" else "")
            )
    train, test = (
        ImageTensorDataset(torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y.astype(np.int64)), classes)
        for x, y in ((train_x, train_y), (test_x, test_y))
    )
    mean, std = _channel_stats(train.images)
    info = DatasetInfo(
        name=name,
        num_classes=len(classes),
        in_channels=1,
        native_resolution=height,
        mean=mean,
        std=std,
        class_names=classes,
        crop_padding=height // 8,
        hflip=name == "fashion-mnist",  # clothes are left-right symmetric; digits and letters are not
    )
    return info, train, test


# --------------------------------------------------------------------------------------------
# CIFAR python batches (pickles: see the module docstring)
# --------------------------------------------------------------------------------------------


class _RefusedGlobal(Exception):
    """Raised inside the unpickler when a pickle names something a CIFAR batch never contains."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


def _printable(text: str, limit: int = 80) -> str:
    """``text`` as one printable ASCII line of at most ``limit`` characters (names read from a file)."""
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _latin1_bytes(text: object, encoding: object = "utf-8", errors: object = "strict") -> bytes:
    """Stand-in for ``_codecs.encode``: Python 3 pickles ``bytes`` at protocols 0-2 as
    ``_codecs.encode(<str>, "latin1")``; that call, and no other, is let through."""
    if type(text) is not str or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise _RefusedGlobal(f"_codecs.encode with encoding {_printable(repr(encoding), 40)}")
    return text.encode("latin-1")


def _cifar_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR batch pickle may name, resolved here (not by importing what the
    file names). NumPy 1 pickles say ``numpy.core``, NumPy 2 ``numpy._core``: both map to the
    running NumPy's functions."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # NumPy < 1.26 has no numpy._core
        from numpy.core import multiarray, numeric
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_bytes,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct  # protocols 0-4
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol 5
    return allowed


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles CIFAR python batches and nothing else: see "Pickles" in the module docstring."""

    _allowed = _cifar_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _RefusedGlobal(_printable(f"{module}.{name}")) from None


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="bytes").load()
    except _RefusedGlobal as e:
        raise InputError(
            f"refusing to load `{path}`: it references {e.what}, which a CIFAR batch never contains"
        ) from None
    except OSError as e:
        raise InputError(f"`{path}` cannot be read: {_one_line(e.strerror or e)}") from None
    except Exception as e:  # a corrupt or truncated pickle raises any of a dozen types
        raise InputError(
            f"`{path}` is not a readable CIFAR python batch ({type(e).__name__}): re-extract the "
            "cifar-*-python.tar.gz archive"
        ) from None
    if type(obj) is not dict:
        raise InputError(f"`{path}` holds a {type(obj).__name__}, not a CIFAR batch dictionary")
    return obj


def _cifar_batch(path: Path, label_key: bytes, num_classes: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    key = label_key.decode()
    if b"data" not in batch or label_key not in batch:
        raise InputError(f"`{path}` has no `data` and `{key}` entries: is it a CIFAR python batch?")
    data = batch[b"data"]
    if type(data) is not np.ndarray or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        shape = getattr(data, "shape", type(data).__name__)
        dtype = getattr(data, "dtype", None)
        what = f"{dtype} {shape}" if dtype is not None and dtype != np.uint8 else f"{shape}"
        raise InputError(f"`{path}`: `data` is {what}, expected uint8 N×3072 (32×32 RGB, planar)")
    if data.shape[0] == 0:
        raise InputError(f"`{path}` holds no images: re-extract the cifar-*-python.tar.gz archive")
    labels = batch[label_key]
    if type(labels) is not list or any(type(v) is not int for v in labels):
        what = type(labels).__name__ if type(labels) is not list else "a list holding non-integers"
        raise InputError(f"`{path}`: `{key}` is {what}, expected a list of ints")
    if len(labels) != data.shape[0]:
        raise InputError(f"`{path}` holds {data.shape[0]} images but {len(labels)} labels")
    bad = next((v for v in labels if not 0 <= v < num_classes), None)
    if bad is not None:
        raise InputError(
            f"`{path}`: label {_printable(str(bad), 24)} in `{key}` is outside 0..{num_classes - 1}: is this {name}?"
        )
    if not data.flags.writeable:  # protocol 5 may give a read-only view of the pickle's bytes
        data = data.copy()
    return np.ascontiguousarray(data).reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _load_cifar(root: Path, name: str) -> tuple[DatasetInfo, ImageTensorDataset, ImageTensorDataset]:
    if name == "cifar10":
        inner, train_files, test_file = "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch"
        label_key, meta_file, names_key = b"labels", "batches.meta", b"label_names"
        archive = "cifar-10-python.tar.gz"
    else:
        inner, train_files, test_file = "cifar-100-python", ["train"], "test"
        label_key, meta_file, names_key = b"fine_labels", "meta", b"fine_label_names"
        archive = "cifar-100-python.tar.gz"
    if (root / inner).is_dir():
        root = root / inner
    missing = [f for f in train_files + [test_file] if not (root / f).is_file()]
    if not root.is_dir() or missing:
        what = "not found" if not root.is_dir() else f"has no {', '.join(missing)}"
        raise InputError(
            f"`{root}` {what}: extract {archive} (https://www.cs.toronto.edu/~kriz/cifar.html) and pass "
            "--data with the folder of its python batches"
        )
    num_classes = 10 if name == "cifar10" else 100
    parts = [_cifar_batch(root / f, label_key, num_classes, name) for f in train_files]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = _cifar_batch(root / test_file, label_key, num_classes, name)
    classes: tuple[str, ...] = CIFAR10_CLASSES if name == "cifar10" else tuple(str(c) for c in range(100))
    if (root / meta_file).is_file():
        names = _unpickle(root / meta_file).get(names_key)
        if isinstance(names, list) and len(names) == num_classes:
            classes = tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names)
    train = ImageTensorDataset(torch.from_numpy(train_x), torch.from_numpy(train_y), classes)
    test = ImageTensorDataset(torch.from_numpy(test_x), torch.from_numpy(test_y), classes)
    mean, std = _channel_stats(train.images)
    info = DatasetInfo(name, num_classes, 3, 32, mean, std, classes, crop_padding=32 // 8, hflip=True)
    return info, train, test


# --------------------------------------------------------------------------------------------
# ImageFolder trees (Visual Wake Words, Imagenette, ImageNet)
# --------------------------------------------------------------------------------------------


def _load_image_folder(root: Path, name: str):
    from torchvision.datasets import ImageFolder

    layout = "root/train/<class>/*.jpg and root/val/<class>/*.jpg (torchvision ImageFolder)"
    if not root.is_dir():
        raise InputError(f"`{root}` not found: pass --data DIR laid out as {layout}")
    eval_dir = root / "val" if (root / "val").is_dir() else root / "test"
    if not (root / "train").is_dir() or not eval_dir.is_dir():
        raise InputError(f"`{root}` has no train/ and val/ folders: lay it out as {layout}")
    trees = []
    for folder in (root / "train", eval_dir):
        try:
            trees.append(ImageFolder(str(folder)))
        except (FileNotFoundError, OSError) as e:
            raise InputError(f"`{folder}`: {_one_line(e)}") from None
    train, test = trees
    if train.classes != test.classes:
        only = sorted(set(train.classes) ^ set(test.classes))
        raise InputError(f"`{root}`: train/ and {eval_dir.name}/ have different classes ({', '.join(only[:5])}...)")
    info = DatasetInfo(
        name, len(train.classes), 3, _FOLDER_RESOLUTION[name], IMAGENET_MEAN, IMAGENET_STD,
        tuple(train.classes), crop_padding=0, hflip=True,
    )  # fmt: skip
    return info, train, test


def load_dataset(name: str = "fashion-mnist", root: str | Path | None = None):
    """``(DatasetInfo, train_ds, test_ds)`` for ``name`` read from ``root``.

    ``train_ds``/``test_ds`` are :class:`ImageTensorDataset` (IDX, CIFAR: uint8 in memory) or
    torchvision ``ImageFolder`` (PIL images decoded per item). Only Fashion-MNIST has a default
    root (the Debian package's folder). Raises :class:`InputError` with one line and the fix.
    """
    key = _ALIASES.get(name.strip().lower().replace("_", "-"))
    if key is None:
        raise InputError(f"unknown dataset `{name}`: choose one of {', '.join(DATASET_NAMES)}")
    if root is None:
        if key != "fashion-mnist":
            raise InputError(f"dataset `{key}` needs --data DIR (see `moofa.train.data` for the expected files)")
        root = FASHION_MNIST_DIR
    root = Path(root).expanduser()
    if key in ("fashion-mnist", "mnist"):
        return _load_idx(root, key)
    if key in ("cifar10", "cifar100"):
        return _load_cifar(root, key)
    return _load_image_folder(root, key)


# --------------------------------------------------------------------------------------------
# Deterministic splitting and shuffling: splitmix64 in plain integer arithmetic
# --------------------------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1
_GOLDEN64 = 0x9E3779B97F4A7C15  # splitmix64's increment (Steele, Lea, Flood, OOPSLA 2014)


def _splitmix64_mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's output function on a uint64 array (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _splitmix64_mix_int(z: int) -> int:
    """The same output function on one Python integer."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _hash_ints(*values: int) -> int:
    """One 64-bit key from a tuple of integers (seed, epoch, step, rank...), chained splitmix64."""
    state = 0
    for v in values:
        state = _splitmix64_mix_int(((state ^ (int(v) & _MASK64)) + _GOLDEN64) & _MASK64)
    return state


def _permutation(n: int, key: int) -> np.ndarray:
    """A permutation of ``range(n)``: indices sorted by the first ``n`` outputs of splitmix64
    seeded with ``key`` (output i is mix(key + i·golden), i = 1..n)."""
    with np.errstate(over="ignore"):
        states = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(_GOLDEN64) + np.uint64(key & _MASK64)
        return np.argsort(_splitmix64_mix(states), kind="stable").astype(np.int64)


def train_val_split(n: int, val_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(train_indices, val_indices)``: a seeded random ``val_size`` of ``range(n)`` and the rest,
    both sorted int64, disjoint and covering ``range(n)``; the same everywhere for the same
    arguments (see the module docstring)."""
    if not 0 <= val_size < n:
        raise InputError(f"validation size {val_size} must be at least 0 and below the {n} training images")
    order = _permutation(n, seed)
    return np.sort(order[val_size:]), np.sort(order[:val_size])


# --------------------------------------------------------------------------------------------
# Batches: a plan per step, made into tensors by one function
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchPlan:
    """One batch: indices into the source dataset, its resolution, its augmentation seed."""

    indices: np.ndarray
    resolution: int
    seed: int


class BatchPlanner(Sampler):
    """Yields a :class:`BatchPlan` per step of an epoch.

    ``shuffle``: the order is a permutation keyed by ``(seed, epoch)``. ``world_size > 1``: all
    ranks shuffle alike, drop the remainder so that each holds as many images, and take every
    ``world_size``-th image from ``rank`` (``batch_size`` is per rank). A step's resolution is
    ``resolutions[hash(seed, epoch, step) % len]`` on every rank; its augmentation seed also
    hashes the rank.
    """

    def __init__(
        self,
        indices: np.ndarray,
        batch_size: int,
        resolutions: Sequence[int],
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.resolutions = tuple(int(r) for r in resolutions)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0
        self.start_step = 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select ``epoch``'s order; ``start_step`` skips its first steps (resuming mid-epoch)."""
        self.epoch = int(epoch)
        self.start_step = int(start_step)

    def _per_rank(self) -> int:
        return len(self.indices) // self.world_size if self.world_size > 1 else len(self.indices)

    def steps_per_epoch(self) -> int:
        n = self._per_rank()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __len__(self) -> int:
        return max(self.steps_per_epoch() - self.start_step, 0)

    def resolution_at(self, step: int) -> int:
        if len(self.resolutions) == 1:
            return self.resolutions[0]
        return self.resolutions[_hash_ints(self.seed, self.epoch, step) % len(self.resolutions)]

    def __iter__(self) -> Iterator[BatchPlan]:
        order = self.indices
        if self.shuffle:
            order = order[_permutation(len(order), _hash_ints(self.seed, self.epoch))]
        if self.world_size > 1:
            order = order[: self._per_rank() * self.world_size][self.rank :: self.world_size]
        for step in range(self.start_step, self.steps_per_epoch()):
            chunk = order[step * self.batch_size : (step + 1) * self.batch_size]
            yield BatchPlan(chunk, self.resolution_at(step), _hash_ints(self.seed, self.epoch, step, self.rank))


def _random_resized_crop_box(width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) as torchvision's ``RandomResizedCrop.get_params`` picks them (scale
    0.08–1, log-uniform ratio 3/4–4/3, ten tries, then a central crop), from our own generator."""
    area = width * height
    log_lo, log_hi = math.log(3 / 4), math.log(4 / 3)
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    ratio = width / height
    if ratio < 3 / 4:
        w, h = width, int(round(width / (3 / 4)))
    elif ratio > 4 / 3:
        h, w = height, int(round(height * 4 / 3))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


# Random erasing (Zhong et al., AAAI 2020): the box's area fraction and log-uniform aspect ratio,
# the ranges torchvision's RandomErasing defaults to.
ERASE_AREA = (0.02, 0.33)
ERASE_RATIO = (0.3, 1 / 0.3)


def random_erase(images: torch.Tensor, p: float, rng: np.random.Generator) -> torch.Tensor:
    """Random erasing on a normalized float batch, in place: each image, with probability ``p``,
    gets one box (area fraction :data:`ERASE_AREA`, aspect :data:`ERASE_RATIO`, ten tries to fit)
    filled with standard-normal noise: pixels of the normalized scale, as the paper fills them."""
    b, c, h, w = images.shape
    log_lo, log_hi = math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1])
    for i in np.flatnonzero(rng.random(b) < p):
        for _ in range(10):
            target = h * w * rng.uniform(*ERASE_AREA)
            aspect = math.exp(rng.uniform(log_lo, log_hi))
            eh, ew = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < eh < h and 0 < ew < w:
                top, left = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
                noise = rng.standard_normal((c, eh, ew), dtype=np.float32)
                images[i, :, top : top + eh, left : left + ew] = torch.from_numpy(noise)
                break
    return images


class BatchMaker(Dataset):
    """The loaders' dataset: ``maker[plan]`` is the finished batch ``(float32 B×C×r×r, int64 B)``.

    ``augment``: training augmentation (see the module docstring); else the evaluation transform.
    ``erase``: with ``augment``, the probability of :func:`random_erase` per image (0: never).
    """

    def __init__(self, source: Dataset, info: DatasetInfo, augment: bool, erase: float = 0.0):
        self.source = source
        self.info = info
        self.augment = augment
        self.erase = erase
        self._mean = torch.tensor(info.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self._std = torch.tensor(info.std, dtype=torch.float32).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, plan: BatchPlan) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng(plan.seed)
        if isinstance(self.source, ImageTensorDataset):
            images, labels = self._tensor_batch(plan, rng)
        else:
            images, labels = self._folder_batch(plan, rng)
        images = images.float().div_(255.0).sub_(self._mean).div_(self._std)
        if images.shape[-1] != plan.resolution or images.shape[-2] != plan.resolution:
            shrink = plan.resolution < images.shape[-1]
            images = F.interpolate(
                images, size=(plan.resolution, plan.resolution), mode="bilinear", align_corners=False, antialias=shrink
            )
        images = images.contiguous()
        if self.augment and self.erase > 0:
            random_erase(images, self.erase, rng)
        return images, labels

    def _tensor_batch(self, plan: BatchPlan, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(plan.indices, dtype=np.int64)
        images = self.source.images.numpy()[idx]  # uint8 B×C×H×W, a copy
        labels = self.source.targets[torch.from_numpy(idx)]
        b = images.shape[0]
        pad = self.info.crop_padding
        if self.augment and pad > 0:
            h, w = images.shape[2:]
            padded = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
            # windows[i, c, y, x] is the h×w crop of image i whose top-left corner is (y, x)
            windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(2, 3))
            top = rng.integers(0, 2 * pad + 1, size=b)
            left = rng.integers(0, 2 * pad + 1, size=b)
            images = windows[np.arange(b), :, top, left]  # B×C×h×w (advanced axes lead)
        if self.augment and self.info.hflip:
            flip = rng.random(b) < 0.5
            images[flip] = images[flip][..., ::-1]
        return torch.from_numpy(np.ascontiguousarray(images)), labels

    def _folder_batch(self, plan: BatchPlan, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        import torchvision.transforms.functional as TF

        r = plan.resolution
        images, labels = [], []
        for i in plan.indices:
            img, label = self.source[int(i)]
            if self.augment:
                top, left, h, w = _random_resized_crop_box(img.width, img.height, rng)
                img = TF.resized_crop(img, top, left, h, w, [r, r], antialias=True)
                if self.info.hflip and rng.random() < 0.5:
                    img = TF.hflip(img)
            else:
                img = TF.center_crop(TF.resize(img, int(round(r / EVAL_CROP_FRACTION)), antialias=True), [r, r])
            images.append(TF.pil_to_tensor(img))
            labels.append(label)
        return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


def _as_is(batch):
    """collate_fn: the dataset already returns a finished batch (module-level so workers can pickle it)."""
    return batch


def _loader(maker: BatchMaker, planner: BatchPlanner, num_workers: int, pin_memory: bool) -> DataLoader:
    # batch_size=None turns off PyTorch's automatic batching: each sampler item (a BatchPlan) is
    # passed to maker[plan] whole, in the main process or in a worker alike.
    # Its own generator: creating an iterator must not draw from torch's global RNG, or a run
    # resumed mid-epoch would see different dropout masks than one that never stopped. (Batches
    # are seeded by their BatchPlan, so this generator decides nothing.)
    return DataLoader(
        maker, batch_size=None, sampler=planner, collate_fn=_as_is, num_workers=num_workers, pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(0),
    )


def _eval_loader(source, info, indices, resolution, batch_size, num_workers, pin_memory) -> DataLoader:
    planner = BatchPlanner(indices, batch_size, (resolution,), shuffle=False, drop_last=False)
    return _loader(BatchMaker(source, info, augment=False), planner, num_workers, pin_memory)


@dataclass
class Loaders:
    """The loaders of one run. ``train``: augmented, shuffled per epoch (call ``set_epoch``), one
    resolution per batch drawn from ``resolutions``, sharded across ranks. ``val``: the carved-out
    validation images at ``max(resolutions)``; ``test``: final reporting only. Neither is sharded:
    every rank sees all of it. ``eval_loader`` gives either (or the training images, unaugmented)
    at another resolution, e.g. a subnet's."""

    train: DataLoader
    val: DataLoader
    test: DataLoader
    info: DatasetInfo
    train_indices: np.ndarray
    val_indices: np.ndarray
    resolutions: tuple[int, ...]
    batch_size: int
    num_workers: int = 0
    pin_memory: bool = False
    train_source: Dataset | None = field(default=None, repr=False)
    test_source: Dataset | None = field(default=None, repr=False)
    _held: dict = field(default_factory=dict, repr=False)

    def in_memory(self, split: str, resolution: int, max_images: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of :meth:`eval_loader` as two tensors, made once per split, resolution
        and count and kept (Fashion-MNIST's 5,000 validation images at 28x28: 16 MB), so that
        measuring many subnets prepares the images once."""
        key = (split, resolution, max_images)
        if key not in self._held:
            xs, ys = zip(*self.eval_loader(split, resolution, max_images=max_images))
            self._held[key] = (torch.cat(xs), torch.cat(ys))
        return self._held[key]

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.train.sampler.set_epoch(epoch, start_step)

    def eval_loader(
        self, split: str, resolution: int, batch_size: int | None = None, max_images: int | None = None
    ) -> DataLoader:
        """Unaugmented, unshuffled ``split`` ("val", "test" or "train") at ``resolution``; with
        ``max_images``, only the first that many of the split (the val split is already a random
        sample, so its first images are too: e.g. 2,000 for BN recalibration)."""
        if split == "test":
            source, indices = self.test_source, np.arange(len(self.test_source), dtype=np.int64)
        elif split in ("val", "train"):
            source, indices = self.train_source, self.val_indices if split == "val" else self.train_indices
        else:
            raise ValueError(f"split must be 'val', 'test' or 'train', not {split!r}")
        if max_images is not None:
            indices = indices[:max_images]
        batch_size = batch_size or self.batch_size
        return _eval_loader(source, self.info, indices, resolution, batch_size, self.num_workers, self.pin_memory)



def make_loaders(
    name: str = "fashion-mnist",
    root: str | Path | None = None,
    batch_size: int = 128,
    resolutions: Sequence[int] | None = None,
    val_size: int = 5000,
    seed: int = 0,
    distributed: bool = False,
    *,
    rank: int | None = None,
    world_size: int | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
    crop_padding: int | None = None,
    erase: float = 0.0,
) -> Loaders:
    """Load ``name`` and build its train/val/test loaders (see :class:`Loaders`).

    ``resolutions``: the elastic resolutions training samples per batch (default: the dataset's
    native one). ``crop_padding``: override the dataset's random-crop padding for training
    (0 = flip only; short schedules learn faster without crops). ``erase``: probability of
    random erasing per training image (:func:`random_erase`; 0 = none). ``distributed``: shard
    training across ``torch.distributed``'s ranks (``rank``/``world_size`` override it, e.g.
    for tests); ``batch_size`` is per rank.
    """
    info, train_ds, test_ds = load_dataset(name, root)
    resolutions = tuple(resolutions) if resolutions is not None else (info.native_resolution,)
    if not resolutions or any(isinstance(r, bool) or not isinstance(r, int) or r <= 0 for r in resolutions):
        raise InputError(f"resolutions {resolutions!r} must be positive integers")
    if batch_size <= 0:
        raise InputError(f"batch size {batch_size} must be positive")
    if distributed and (rank is None or world_size is None):
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("make_loaders(distributed=True) needs torch.distributed initialized first")
        rank = dist.get_rank() if rank is None else rank
        world_size = dist.get_world_size() if world_size is None else world_size
    rank, world_size = (rank or 0), (world_size or 1)

    train_indices, val_indices = train_val_split(len(train_ds), val_size, seed)
    if len(train_indices) // world_size < batch_size:
        raise InputError(
            f"batch size {batch_size} exceeds the {len(train_indices) // world_size} training images per rank: "
            "lower --batch-size or --val-size"
        )
    train_planner = BatchPlanner(train_indices, batch_size, resolutions, seed, True, True, rank, world_size)
    if crop_padding is not None and (isinstance(crop_padding, bool) or not isinstance(crop_padding, int) or crop_padding < 0):
        raise InputError(f"crop padding {crop_padding!r} must be a non-negative integer")
    train_info = info if crop_padding is None else dataclasses.replace(info, crop_padding=crop_padding)
    if isinstance(erase, bool) or not isinstance(erase, (int, float)) or not 0 <= erase <= 1:
        raise InputError(f"erase probability {erase!r} must be a number from 0 to 1")
    train = _loader(BatchMaker(train_ds, train_info, augment=True, erase=float(erase)), train_planner, num_workers, pin_memory)
    eval_res = max(resolutions)
    return Loaders(
        train=train,
        val=_eval_loader(train_ds, info, val_indices, eval_res, batch_size, num_workers, pin_memory),
        test=_eval_loader(test_ds, info, np.arange(len(test_ds)), eval_res, batch_size, num_workers, pin_memory),
        info=info,
        train_indices=train_indices,
        val_indices=val_indices,
        resolutions=resolutions,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=pin_memory,
        train_source=train_ds,
        test_source=test_ds,
    )
