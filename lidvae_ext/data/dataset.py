"""The image/array :class:`Dataset` (a seeded train/test split of flattened rows) and its splits."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor


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


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ``(train, test)`` row indices of ``n`` rows, ``round(test_fraction · n)`` (≥ 1) of them test."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(n * test_fraction)))
    return perm[n_test:], perm[:n_test]


def subset_indices(n: int, size: int | None, seed: int) -> np.ndarray | None:
    """Sorted seeded ``size`` of ``n`` row indices (None: keep all, when ``size`` is None or ≥ n)."""
    if size is None or size >= n:
        return None
    if size < 1:
        raise ValueError(f"subset size must be positive, got {size}")
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def as_tensor(a: np.ndarray) -> Tensor:
    """A contiguous float32 tensor of ``a``."""
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


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
