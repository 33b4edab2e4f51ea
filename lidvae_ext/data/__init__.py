"""Data, all local (nothing here touches the network): images (:mod:`.images`: digits,
Fashion-MNIST), user arrays (:mod:`.arrays`: .npy/.npz) and sentences (:mod:`.text`:
synthetic, WordNet, a text file).
"""

from __future__ import annotations

import torch

from .arrays import load_array
from .dataset import Dataset, subset_indices, validation_split
from .images import FASHION_MNIST_DIR, FASHION_MNIST_FILES, load_digits, load_fashion_mnist, read_idx

BUILTIN = ("digits", "fashion-mnist")


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
        idx = subset_indices(getattr(ds, part).shape[0], size, s)
        if idx is not None:
            t = torch.from_numpy(idx)
            setattr(ds, part, getattr(ds, part)[t])
            labels = getattr(ds, f"{part}_labels")
            if labels is not None:
                setattr(ds, f"{part}_labels", labels[t])
    ds.info.update({"train_size": int(ds.train.shape[0]), "test_size": int(ds.test.shape[0])})
    return ds


__all__ = ["BUILTIN", "Dataset", "FASHION_MNIST_DIR", "FASHION_MNIST_FILES", "load_array", "load_dataset",
           "load_digits", "load_fashion_mnist", "read_idx", "validation_split"]
