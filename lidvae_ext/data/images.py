"""Image datasets, all local: scikit-learn's bundled digits and Fashion-MNIST from Debian's idx files.

Each loader returns a :class:`~lidvae_ext.data.dataset.Dataset` with float32
train/test tensors of shape (N, D), values in [0, 1], split with a fixed seed.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from .dataset import Dataset, as_tensor, split_indices, subset_indices

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


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


def load_digits(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled 8×8 digits (1797 images), scaled from 0..16 to [0, 1]."""
    from sklearn.datasets import load_digits as _sk_digits

    bunch = _sk_digits()
    x = bunch.data.astype(np.float32) / 16.0
    y = bunch.target.astype(np.int64)
    tr, te = split_indices(x.shape[0], test_fraction, seed)
    return Dataset("digits", as_tensor(x[tr]), as_tensor(x[te]), (8, 8),
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
        idx = subset_indices(imgs.shape[0], size, s)
        if idx is not None:
            imgs, labels = imgs[idx], labels[idx]
        out[part] = (as_tensor(imgs.reshape(imgs.shape[0], -1).astype(np.float32) / 255.0),
                     torch.from_numpy(labels.astype(np.int64)))
    return Dataset("fashion-mnist", out["train"][0], out["test"][0], (int(shape[0]), int(shape[1])),
                   out["train"][1], out["test"][1], {"data_dir": str(root), "seed": seed})


