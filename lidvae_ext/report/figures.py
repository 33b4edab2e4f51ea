"""The figures of a comparison that every family with image data shares (matplotlib, Agg)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..core.plotting import image_grid, pyplot, save_figure
from . import readable

def plot_kl_per_dim(report: dict[str, dict[str, Any]], path: str | os.PathLike, threshold: float | None = None) -> Path:
    """Grouped bars of KL(q(z_d|x) ‖ p(z_d)) per latent dimension, one colour per model.

    Dimensions are sorted by each model's own KL (descending) so collapsed
    dimensions line up on the right.
    """
    plt = pyplot()
    names = list(report)
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 2.2 * len(names) + 0.6), squeeze=False, sharey=True)
    for ax, name in zip(axes[:, 0], names):
        m = report[name]
        kl_dim = m["kl_per_dim"]
        order = sorted(range(len(kl_dim)), key=lambda i: -kl_dim[i])
        kl = [kl_dim[i] for i in order]
        au = m["active_units"]
        var = m.get("au_variance")
        thr = m.get("au_threshold", 0.01) if threshold is None else threshold
        colors = ["tab:blue" if var is None or var[i] >= thr else "tab:gray" for i in order]
        ax.bar(range(1, len(kl) + 1), kl, color=colors)
        ax.set_title(f"{name}: {au}/{report[name]['latent_dim']} active units, KL {report[name]['kl']:.1f} nats",
                     fontsize=10)
        ax.set_ylabel("KL (nats)")
        ax.set_xlim(0.3, len(kl) + 0.7)
    axes[-1, 0].set_xlabel("latent dimension (sorted by KL; grey = inactive)")
    return save_figure(fig, path)


def plot_diagnostics(report: dict[str, dict[str, Any]], path: str | os.PathLike) -> Path | None:
    """Per-dimension expected Fisher information and exact-posterior vs q spread, one row per model.

    Dimensions are sorted by the model's KL per dimension (descending), as in
    ``kl_per_dim.png``. Returns None when no model has ``diagnostics``.
    """
    names = [n for n, m in report.items() if m.get("diagnostics")]
    if not names:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(len(names), 2, figsize=(12, 2.4 * len(names) + 0.6), squeeze=False)
    for row, name in enumerate(names):
        m, d = report[name], report[name]["diagnostics"]
        order = sorted(range(len(m["kl_per_dim"])), key=lambda i: -m["kl_per_dim"][i])
        xs = range(1, len(order) + 1)
        ax = axes[row, 0]
        ax.semilogy(xs, [max(d["fisher"][i], 1e-12) for i in order], "o-", ms=3, label="Fisher F_kk")
        ax.semilogy(xs, [max(d["sensitivity"][i], 1e-12) for i in order], "s--", ms=3, label="E‖∂η/∂z_k‖²")
        ax.set_title(f"{name}: decoder sensitivity per dimension", fontsize=10)
        ax.legend(fontsize=8)
        ax = axes[row, 1]
        ax.plot(xs, [d["exact_var"][i] for i in order], "o-", ms=3, label="exact E_x Var[z_k|x] (SNIS)")
        ax.plot(xs, [d["q_var"][i] for i in order], "s--", ms=3, label="q: E_x σ²_k")
        ax.plot(xs, [d["exact_mean_var"][i] for i in order], "^-", ms=3, label="exact Var_x E[z_k|x]")
        ax.plot(xs, [d["q_mean_var"][i] for i in order], "v--", ms=3, label="q: Var_x μ_k")
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_title(f"{name}: posterior spread (ESS mean {d['ess_mean']:.0f} of {d['num_samples']})", fontsize=10)
        ax.legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("latent dimension (sorted by KL)")
    return save_figure(fig, path)


def _as_images(x: Tensor, shape: tuple[int, int] | None) -> Tensor:
    x = x.detach().cpu().float()
    if shape is not None:
        return x.reshape(x.shape[0], *shape).numpy()
    return x.reshape(x.shape[0], 1, -1).numpy()  # a 1-pixel-high strip per example


def plot_reconstructions(originals: Tensor, recons: dict[str, Tensor], shape: tuple[int, int] | None,
                         path: str | os.PathLike) -> Path:
    """First row: held-out inputs; one row of reconstructions E[x | z = E_q[z|x]] per model."""
    plt = pyplot()
    rows = [("data", originals)] + list(recons.items())
    n = originals.shape[0]
    fig, axes = plt.subplots(len(rows), n, figsize=(0.8 * n + 1.2, 0.9 * len(rows) + 0.3), squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        imgs = _as_images(imgs, shape)
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(imgs[c], cmap="gray", vmin=0.0, vmax=1.0, aspect="auto" if shape is None else "equal")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    return save_figure(fig, path)


def plot_samples(samples: dict[str, Tensor], shape: tuple[int, int] | None, path: str | os.PathLike) -> Path:
    """A grid of E[x|z], z ~ N(0, I), per model (side by side)."""
    plt = pyplot()
    names = list(samples)
    n = next(iter(samples.values())).shape[0]
    side = int(math.ceil(math.sqrt(n)))
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        imgs = _as_images(samples[name], shape)
        h, w = imgs.shape[1:]
        cells = np.ones((side * side, h, w), dtype=np.float32)  # blank cells after the n samples
        cells[:n] = imgs
        ax.imshow(image_grid(cells.reshape(side, side, h, w)), cmap="gray", vmin=0.0, vmax=1.0, aspect="equal" if shape is not None else "auto")
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    return save_figure(fig, path)


def plot_training_curves(histories: dict[str, list[dict[str, float]]], path: str | os.PathLike) -> Path:
    """Training −ELBO, KL and held-out active units per epoch."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for name, hist in histories.items():
        ep = [h["epoch"] for h in hist]
        axes[0].plot(ep, [h["loss"] for h in hist], label=name)
        axes[1].plot(ep, [h["kl"] for h in hist], label=name)
        if hist and "au" in hist[0]:
            axes[2].plot(ep, [h.get("au", float("nan")) for h in hist], label=name)
    for ax, title in zip(axes, ("training −ELBO (nats)", "training KL (nats)", "active units (held out)")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=8)
    return save_figure(fig, path)


@torch.no_grad()
def write_figures(models: dict[str, Any], test_x: Tensor, report: dict[str, dict[str, Any]],
                  shape: tuple[int, int] | None, out_dir: str | os.PathLike, seed: int = 0,
                  histories: dict[str, list[dict[str, float]]] | None = None,
                  n_recon: int = 10, n_samples: int = 36) -> list[Path]:
    """The shared comparison figures into ``out_dir``; returns their paths (a family adds its own:
    :meth:`lidvae_ext.families.base.Family.figures`)."""
    out = Path(out_dir)
    paths = [plot_kl_per_dim(report, out / "kl_per_dim.png")]
    for extra in (readable.plot_collapse_profile(report, out / "collapse_profile.png"),
                  readable.plot_traversals(models, test_x, report, shape, out / "traversals.png", example=0)):
        if extra is not None:
            paths.append(extra)
    diag = plot_diagnostics(report, out / "diagnostics.png")
    if diag is not None:
        paths.append(diag)
    x = test_x[:n_recon]
    recons, samples = {}, {}
    for name, model in models.items():
        model.eval()
        recons[name] = model.reconstruct(x.to(next(model.parameters()).device))
        samples[name] = model.sample(n_samples, generator=torch.Generator().manual_seed(seed))
    paths.append(plot_reconstructions(x, recons, shape, out / "reconstructions.png"))
    paths.append(plot_samples(samples, shape, out / "samples.png"))
    if histories:
        paths.append(plot_training_curves(histories, out / "training_curves.png"))
    return paths
