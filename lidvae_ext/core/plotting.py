"""The matplotlib set-up every figure of the reports shares (Agg backend, one save path) and the image
grids that the image figures of every family draw."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Lay out, write at the reports' resolution (110 dpi) and close ``fig``; returns the path."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return Path(path)


def image_grid(imgs: np.ndarray) -> np.ndarray:
    """(rows, cols, h, w) images → one (rows·(h+1)−1, cols·(w+1)−1) array with 1-pixel white gaps."""
    rows, cols, h, w = imgs.shape
    grid = np.ones((rows * (h + 1) - 1, cols * (w + 1) - 1), dtype=np.float32)
    for r in range(rows):
        for c in range(cols):
            grid[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = imgs[r, c]
    return grid


def sweep_panel(ax: Any, model: Any, start: Tensor, spread: Tensor, dims: list[int], steps: int,
                 shape: tuple[int, int], labels: list[str]) -> Tensor:
    """Draw one traversal grid on ``ax``: row i decodes ``start`` with z_dims[i] moved over
    ±2·spread[dims[i]] in ``steps`` steps; rows labelled ``labels``. Returns the offsets (in spreads)."""
    h, w = shape
    offsets = torch.linspace(-2.0, 2.0, steps, dtype=torch.float64)
    z = start.double().repeat(len(dims), steps, 1)  # (rows, steps, K)
    for i, d in enumerate(dims):
        z[i, :, d] += offsets * spread[d]
    imgs = model.likelihood.mean(model.decode(z.to(start.dtype))).cpu().float()
    imgs = imgs.reshape(len(dims), steps, h, w).numpy()
    ax.imshow(image_grid(imgs), cmap="gray", vmin=0.0, vmax=1.0, aspect="equal")
    ax.set_yticks([i * (h + 1) + h / 2 for i in range(len(dims))])
    ax.set_yticklabels(labels, fontsize=6)
    return offsets
