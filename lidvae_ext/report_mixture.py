"""Report pieces of mixture-prior models: table columns, samples per cluster, cluster usage."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .plotting import pyplot, save_figure


def has_mixture(report: dict[str, dict[str, Any]]) -> bool:
    """Whether any model of a report is a mixture-prior model."""
    return any("clusters" in m for m in report.values())


def table_columns(m: dict[str, Any]) -> tuple[str, str]:
    """``(active clusters, cluster accuracy)`` cells of one model's row ('–' for Gaussian-prior models)."""
    if "clusters" not in m:
        return "–", "–"
    acc = m.get("cluster_accuracy")
    return f"{m['active_clusters']}/{m['clusters']}", "–" if acc is None else f"{acc:.3f}"


def _grid(imgs: np.ndarray) -> np.ndarray:
    """(rows, cols, h, w) images → one (rows·(h+1)−1, cols·(w+1)−1) array with 1-pixel white gaps."""
    rows, cols, h, w = imgs.shape
    grid = np.ones((rows * (h + 1) - 1, cols * (w + 1) - 1), dtype=np.float32)
    for r in range(rows):
        for c in range(cols):
            grid[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = imgs[r, c]
    return grid


def plot_cluster_samples(samples: dict[str, Tensor], shape: tuple[int, int] | None, path: str | os.PathLike,
                         usage: dict[str, list[float]] | None = None) -> Path:
    """Per model, one row of samples E[x|z], z ~ p(z|y), per cluster y; ``samples[name]`` is (C, n, D)."""
    plt = pyplot()
    names = list(samples)
    c_max = max(s.shape[0] for s in samples.values())
    n = next(iter(samples.values())).shape[1]
    fig, axes = plt.subplots(1, len(names), figsize=(0.45 * n * len(names) + 1.0, 0.45 * c_max + 0.9), squeeze=False)
    for ax, name in zip(axes[0], names):
        s = samples[name].detach().cpu().float()
        c = s.shape[0]
        h, w = shape if shape is not None else (1, s.shape[-1])
        ax.imshow(_grid(s.reshape(c, n, h, w).numpy()), cmap="gray", vmin=0.0, vmax=1.0,
                  aspect="equal" if shape is not None else "auto")
        ax.set_title(f"{name}: samples per cluster", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([r * (h + 1) + h / 2 for r in range(c)])
        labels = [f"y={r}" for r in range(c)]
        if usage and name in usage:
            labels = [f"y={r} ({100 * usage[name][r]:.0f}%)" for r in range(c)]
        ax.set_yticklabels(labels, fontsize=7)
    return save_figure(fig, path)


def plot_cluster_usage(report: dict[str, dict[str, Any]], path: str | os.PathLike) -> Path:
    """Bars of the aggregate usage E_x q(y=k|x) per cluster, one panel per mixture model."""
    plt = pyplot()
    names = [n for n, m in report.items() if "cluster_usage" in m]
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names) + 0.4, 2.8), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names):
        m = report[name]
        usage = m["cluster_usage"]
        c = len(usage)
        thr = 1.0 / (10.0 * c)
        ax.bar(range(c), usage, color=["tab:blue" if u >= thr else "tab:gray" for u in usage])
        ax.axhline(1.0 / c, color="k", lw=0.8, ls="--")
        ax.axhline(thr, color="tab:red", lw=0.8, ls=":")
        acc = m.get("cluster_accuracy")
        ax.set_title(f"{name}: {m['active_clusters']}/{c} active" + ("" if acc is None else f", acc {acc:.2f}"),
                     fontsize=9)
        ax.set_xlabel("cluster y")
        ax.set_xticks(range(c))
    axes[0, 0].set_ylabel("E_x q(y|x)")
    return save_figure(fig, path)


@torch.no_grad()
def write_mixture_figures(models: dict[str, Any], report: dict[str, dict[str, Any]], shape: tuple[int, int] | None,
                          out_dir: str | os.PathLike, seed: int = 0, n_per_cluster: int = 10) -> list[Path]:
    """``cluster_samples.png`` and ``cluster_usage.png`` for the mixture models of a comparison (none: [])."""
    mixtures = {n: m for n, m in models.items() if getattr(m, "is_mixture", False)}
    if not mixtures:
        return []
    out = Path(out_dir)
    samples = {}
    for name, model in mixtures.items():
        model.eval()
        samples[name] = model.sample_per_cluster(n_per_cluster, generator=torch.Generator().manual_seed(seed))
    usage = {n: report[n]["cluster_usage"] for n in mixtures if n in report and "cluster_usage" in report[n]}
    paths = [plot_cluster_samples(samples, shape, out / "cluster_samples.png", usage)]
    if usage:
        paths.append(plot_cluster_usage({n: report[n] for n in usage}, out / "cluster_usage.png"))
    return paths
