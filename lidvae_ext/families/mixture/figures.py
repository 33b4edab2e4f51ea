"""Report pieces of mixture-prior models: table columns, samples per cluster, cluster usage."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...core.plotting import image_grid, pyplot, save_figure, sweep_panel

# a within-cluster dimension counts as used when the variance of E_q[z_d|x, c] across the cluster's inputs
# reaches this (the reports' active-unit threshold)
WITHIN_THRESHOLD = 0.01


def has_mixture(report: dict[str, dict[str, Any]]) -> bool:
    """Whether any model of a report is a mixture-prior model."""
    return any("clusters" in m for m in report.values())


def table_columns(m: dict[str, Any]) -> tuple[str, str]:
    """``(active clusters, cluster accuracy)`` cells of one model's row ('–' for Gaussian-prior models)."""
    if "clusters" not in m:
        return "–", "–"
    acc = m.get("cluster_accuracy")
    return f"{m['active_clusters']}/{m['clusters']}", "–" if acc is None else f"{acc:.3f}"


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
        ax.imshow(image_grid(s.reshape(c, n, h, w).numpy()), cmap="gray", vmin=0.0, vmax=1.0,
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
    """``cluster_samples.png`` and ``cluster_usage.png`` for the mixture models of a comparison (``models``;
    none: [])."""
    mixtures = models
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


@torch.no_grad()
def plot_cluster_traversals(models: dict[str, Any], test_x: Tensor, shape: tuple[int, int] | None,
                            path: str | os.PathLike, clusters: int = 3, top: int = 8, bottom: int = 4,
                            steps: int = 7) -> Path | None:
    """Traversals *within* mixture components: one panel per (model, cluster), for the ``clusters``
    most used components of each mixture-prior model (``models``: the mixture models of a comparison).

    A panel starts from E_q[z|x, y=c] of the first held-out input assigned to c (argmax q(y|x))
    and sweeps each z_d over ±2 std of that component's within-cluster spread. Rows: the ``top``
    dimensions with the largest within-cluster variance of E_q[z_d|x, c] and the ``bottom``
    smallest, labelled active when that variance is ≥ 0.01.
    """
    mixtures = models
    if shape is None or not mixtures:
        return None
    plt = pyplot()
    rows = top + bottom
    panels = [(name, c) for name, model in mixtures.items() for c in range(min(clusters, model.clusters))]
    fig, axes = plt.subplots(len(mixtures), max(1, len(panels) // len(mixtures)),
                             figsize=(3.4 * (len(panels) // len(mixtures)), 0.42 * rows * len(mixtures) + 0.8),
                             squeeze=False)
    for r, (name, model) in enumerate(mixtures.items()):
        model.eval()
        device = next(model.parameters()).device
        log_qy, mean, var = model.component_moments(test_x.to(device))  # (B, C), (C, B, K), (C, B, K)
        assigned = log_qy.argmax(1).cpu()
        used = torch.bincount(assigned, minlength=model.clusters).argsort(descending=True)
        for col, c in enumerate(used[:clusters].tolist()):
            ax = axes[r, col]
            members = torch.nonzero(assigned == c).flatten()
            if len(members) < 2:
                ax.axis("off")
                continue
            m_c = mean[c, members.to(device)].double()
            within_var = m_c.var(0)
            spread = (within_var + var[c, members.to(device)].double().mean(0)).sqrt()
            order = within_var.argsort(descending=True).tolist()
            dims = order[:top] + order[-bottom:] if len(order) > rows else order
            labels = [f"z{d} var {float(within_var[d]):.3f} "
                      f"{'active' if within_var[d] >= WITHIN_THRESHOLD else 'INACTIVE'}" for d in dims]
            sweep_panel(ax, model, mean[c, members[0].to(device)], spread, dims, steps, shape, labels)
            ax.set_xticks([])
            ax.set_title(f"{name}, cluster {c} ({len(members)} inputs)", fontsize=9)
    return save_figure(fig, path)
