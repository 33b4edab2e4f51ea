"""Datasets: scikit-learn digits, Fashion-MNIST (local idx files) and user arrays.

Everything is local: no function here touches the network. Each loader returns
a :class:`Dataset` with float32 train/test tensors of shape (N, D) and values
in [0, 1] (user arrays are checked, not rescaled), split with a fixed seed.
"""

from __future__ import annotations

import gzip
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
BUILTIN = ("digits", "fashion-mnist")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


@dataclass
class Dataset:
    """A train/test split of flattened data.

    Attributes
    ----------
    name : str
        Dataset name (or file path).
    train, test : Tensor
        (N, D) float32.
    image_shape : tuple of int, optional
        (H, W) when rows are images (used for figures).
    train_labels, test_labels : Tensor, optional
        Class labels when known.
    """

    name: str
    train: Tensor
    test: Tensor
    image_shape: tuple[int, int] | None = None
    train_labels: Tensor | None = None
    test_labels: Tensor | None = None
    info: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        """Data dimension D."""
        return int(self.train.shape[1])


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed), as used by (Fashion-)MNIST.

    The header is two zero bytes, a type code, the number of dimensions n,
    then n big-endian uint32 sizes, followed by the data in C order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX data type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    count = int(np.prod(shape)) if shape else 0
    if len(raw) - header != count * dtype.itemsize:
        raise ValueError(f"{path}: IDX payload has {len(raw) - header} bytes, header says "
                         f"{count * dtype.itemsize} for shape {shape}")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)


def _split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(n * test_fraction)))
    return perm[n_test:], perm[:n_test]


def _subset(n: int, size: int | None, seed: int) -> np.ndarray | None:
    if size is None or size >= n:
        return None
    if size < 1:
        raise ValueError(f"subset size must be positive, got {size}")
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def _tensor(a: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def load_digits(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled 8×8 digits (1797 images), scaled from 0..16 to [0, 1]."""
    from sklearn.datasets import load_digits as _sk_digits

    bunch = _sk_digits()
    x = bunch.data.astype(np.float32) / 16.0
    y = bunch.target.astype(np.int64)
    tr, te = _split(x.shape[0], test_fraction, seed)
    return Dataset("digits", _tensor(x[tr]), _tensor(x[te]), (8, 8),
                   torch.from_numpy(y[tr]), torch.from_numpy(y[te]), {"seed": seed})


def load_fashion_mnist(data_dir: str | os.PathLike | None = None, train_size: int | None = None,
                       test_size: int | None = None, seed: int = 0) -> Dataset:
    """Fashion-MNIST (60k train / 10k test, 28×28) from local gzip IDX files, scaled to [0, 1].

    Parameters
    ----------
    data_dir : path, optional
        Directory with ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``; default
        ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
    train_size, test_size : int, optional
        Seeded random subsets of the official splits.
    seed : int
        Seed of the subsets.
    """
    root = Path(data_dir) if data_dir is not None else FASHION_MNIST_DIR
    missing = [f for f in FASHION_MNIST_FILES.values() if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {root} (missing: {', '.join(missing)}). Install the Debian "
            f"package with `apt-get install dataset-fashion-mnist` (files go to {FASHION_MNIST_DIR}), "
            "or pass --data-dir pointing at a directory with the four gzip IDX files.")
    arrays = {k: read_idx(root / f) for k, f in FASHION_MNIST_FILES.items()}
    for part in ("train", "test"):
        imgs, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if imgs.ndim != 3 or labels.ndim != 1 or imgs.shape[0] != labels.shape[0]:
            raise ValueError(f"Fashion-MNIST {part}: images {imgs.shape} and labels {labels.shape} do not match")
    shape = tuple(arrays["train_images"].shape[1:])
    out = {}
    for part, size, s in (("train", train_size, seed), ("test", test_size, seed + 1)):
        imgs, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        idx = _subset(imgs.shape[0], size, s)
        if idx is not None:
            imgs, labels = imgs[idx], labels[idx]
        out[part] = (_tensor(imgs.reshape(imgs.shape[0], -1).astype(np.float32) / 255.0),
                     torch.from_numpy(labels.astype(np.int64)))
    return Dataset("fashion-mnist", out["train"][0], out["test"][0], (int(shape[0]), int(shape[1])),
                   out["train"][1], out["test"][1], {"data_dir": str(root), "seed": seed})


def load_array(path: str | os.PathLike, seed: int = 0, test_fraction: float = 0.2,
               require_unit_interval: bool = True) -> Dataset:
    """A user ``.npy`` (N × D, or N × H × W) or ``.npz`` file.

    An ``.npz`` with arrays ``train`` and ``test`` keeps that split; otherwise its
    array ``x`` (or its only array) is split with ``seed``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    if path.suffix not in _ARRAY_MAGIC:
        raise ValueError(f"{path}: unsupported data file (use .npy or .npz)")
    train = test = None
    try:
        train, test, full = _read_arrays(path)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _array_error(path, exc) from None
    if train is None:
        if full.ndim < 2 or full.shape[0] < 2:
            raise ValueError(f"{path}: expected an (N, D) array with N >= 2, got shape {full.shape}")
        tr, te = _split(full.shape[0], test_fraction, seed)
        train, test = full[tr], full[te]
    image_shape = tuple(int(s) for s in train.shape[1:]) if train.ndim == 3 else None
    flattened_from = tuple(int(s) for s in (full if full is not None else train).shape) if train.ndim > 2 else None
    train = train.reshape(train.shape[0], -1).astype(np.float32)
    test = test.reshape(test.shape[0], -1).astype(np.float32)
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"{path}: train and test dims differ ({train.shape[1]} vs {test.shape[1]})")
    for part, a in (("train", train), ("test", test)):
        if not np.isfinite(a).all():
            raise ValueError(f"{path}: {part} data contains non-finite values")
        if require_unit_interval and (a.min() < 0.0 or a.max() > 1.0):
            raise ValueError(f"{path}: {part} values must lie in [0, 1] for a Bernoulli likelihood "
                             f"(found [{a.min():.3g}, {a.max():.3g}]); rescale or use --likelihood gaussian")
    if image_shape is None:
        side = int(round(train.shape[1] ** 0.5))
        image_shape = (side, side) if side * side == train.shape[1] else None
    info: dict = {"seed": seed}
    if flattened_from is not None:
        info["flattened_from"] = flattened_from
    return Dataset(str(path), _tensor(train), _tensor(test), image_shape, info=info)


# The first bytes of each array format: a .npy file's magic string, a .npz file's zip header.
_ARRAY_MAGIC = {".npy": b"\x93NUMPY", ".npz": b"PK\x03\x04"}


def _read_arrays(path: Path) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """``(train, test, None)`` or ``(None, None, x)`` from a .npy/.npz file (never unpickles)."""
    magic = _ARRAY_MAGIC[path.suffix]
    with open(path, "rb") as fh:
        head = fh.read(len(magic))
    if head != magic:
        kind = "NumPy .npy array (no \\x93NUMPY header)" if path.suffix == ".npy" else \
            "NumPy .npz archive (no zip header)"
        raise ValueError(f"not a {kind}; save arrays with numpy.{'save' if path.suffix == '.npy' else 'savez'}")
    if path.suffix == ".npy":
        return None, None, np.load(path, allow_pickle=False)
    with np.load(path, allow_pickle=False) as z:
        keys = list(z.keys())
        if "train" in keys and "test" in keys:
            return z["train"], z["test"], None
        if "x" in keys or len(keys) == 1:
            return None, None, z["x" if "x" in keys else keys[0]]
    raise ValueError(f"expected arrays 'train' and 'test', or 'x', or a single array; got {keys}")


def _array_error(path: Path, exc: BaseException) -> ValueError:
    """A one-line error naming ``path`` for a data file NumPy cannot read."""
    text = " ".join(str(exc).split())
    if "allow_pickle" in text or "pickled" in text:
        text = ("it holds an object array (pickled Python objects), which lidvae_ext does not load; "
                "save numeric arrays")
    elif isinstance(exc, zipfile.BadZipFile):
        text = f"not a readable .npz archive ({text})"
    return ValueError(f"{path}: {text}")


def load_dataset(name: str, data_dir: str | None = None, train_size: int | None = None,
                 test_size: int | None = None, seed: int = 0, require_unit_interval: bool = True) -> Dataset:
    """Load ``"digits"``, ``"fashion-mnist"`` or a ``.npy``/``.npz`` path.

    ``train_size``/``test_size`` take seeded subsets (any dataset).
    """
    if name == "digits":
        ds = load_digits(seed=seed)
    elif name in ("fashion-mnist", "fashion_mnist", "fmnist"):
        ds = load_fashion_mnist(data_dir, train_size, test_size, seed)
        train_size = test_size = None
    elif name.endswith((".npy", ".npz")):
        ds = load_array(name, seed=seed, require_unit_interval=require_unit_interval)
    else:
        raise ValueError(f"unknown dataset {name!r}: use 'digits', 'fashion-mnist' or a .npy/.npz file")
    for part, size, s in (("train", train_size, seed), ("test", test_size, seed + 1)):
        idx = _subset(getattr(ds, part).shape[0], size, s)
        if idx is not None:
            t = torch.from_numpy(idx)
            setattr(ds, part, getattr(ds, part)[t])
            labels = getattr(ds, f"{part}_labels")
            if labels is not None:
                setattr(ds, f"{part}_labels", labels[t])
    ds.info.update({"train_size": int(ds.train.shape[0]), "test_size": int(ds.test.shape[0])})
    return ds


def validation_split(train: Tensor, fraction: float = 0.1, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Seeded split of a training set into ``(fit, validation)`` rows (for early stopping).

    The validation part holds ``round(fraction · N)`` rows (at least 1) and the
    fit part the rest (at least 1); the test split is never touched.
    """
    n = int(train.shape[0])
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction}")
    if n < 2:
        raise ValueError(f"a validation split needs at least 2 training rows, got {n}")
    perm = np.random.default_rng([int(seed), 0x5EED]).permutation(n)
    n_val = min(n - 1, max(1, int(round(n * fraction))))
    val, fit = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return train[torch.from_numpy(fit)], train[torch.from_numpy(val)]
