"""User arrays as data: ``.npy`` (N × D or N × H × W) and ``.npz`` files, read without unpickling."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from .dataset import Dataset, as_tensor, split_indices

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
        tr, te = split_indices(full.shape[0], test_fraction, seed)
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
    return Dataset(str(path), as_tensor(train), as_tensor(test), image_shape, info=info)


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


