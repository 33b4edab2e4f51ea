"""Figures for the classical-collapse demos (matplotlib, Agg canvas).

The figures are drawn on a bare :class:`matplotlib.figure.Figure` attached to
an Agg canvas, so nothing here touches pyplot's global state or needs a
display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _new_figure(width: float, height: float) -> Any:
    """A pyplot-free figure with an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _normal_pdf(t: np.ndarray, mean: float, sd: float) -> np.ndarray:
    """Density of ``N(mean, sd^2)`` at ``t``."""
    return np.exp(-0.5 * ((t - mean) / sd) ** 2) / (sd * np.sqrt(2.0 * np.pi))


def plot_ppca(plot: dict[str, Any], path: str | Path) -> Path:
    """Three panels: likelihood surface, posterior vs prior, noise sweep.

    Parameters
    ----------
    plot : dict
        ``DemoResult.plot`` from :func:`~lidvae_ext.classical.demos.run_ppca_demo`.
    path : str or Path
        Output PNG file.
    """
    surf, ml, sweep = plot["surface"], plot["surface_ml"], plot["noise_sweep"]
    fig = _new_figure(14.0, 4.2)
    ax1, ax2, ax3 = fig.subplots(1, 3)
    M = len(surf["post_mean"])

    levels = np.linspace(-40.0, 0.0, 21)
    cs = ax1.contourf(surf["a"], surf["b"], np.clip(surf["loglik"].T, -40.0, 0.0),
                      levels=levels, cmap="viridis")
    fig.colorbar(cs, ax=ax1, label="log p(x|z) - max (clipped at -40)")
    ax1.set_xlabel(f"z'{M - 1} (weakest identified direction)")
    ax1.set_ylabel(f"z'{M} (null direction of W)")
    ax1.set_title("likelihood of one x (ML fit, N -> inf)")

    t = np.linspace(-4.0, 4.0, 801)
    ax2.plot(t, _normal_pdf(t, 0.0, 1.0), "k-", lw=4, alpha=0.3, label="prior N(0,1)")
    for j in range(M):
        ax2.plot(t, _normal_pdf(t, surf["post_mean"][j], surf["post_sd"][j]),
                 label=f"p(z'{j + 1}|x), N->inf, var={surf['post_sd'][j] ** 2:.3f}")
    ax2.plot(t, _normal_pdf(t, ml["post_mean"][-1], ml["post_sd"][-1]), ":",
             label=f"p(z'{M}|x), finite-N ML, var={ml['post_sd'][-1] ** 2:.3f}")
    ax2.set_ylim(0.0, 1.6)
    ax2.set_xlabel("latent coordinate (principal basis)")
    ax2.set_title("exact posterior vs prior, same x")
    ax2.legend(fontsize=7)

    ax3.loglog(sweep["sigma"], sweep["kl_mean"], "o", label="mean KL over data")
    ax3.loglog(sweep["sigma"], sweep["kl_analytic"], "-", label="I(x;z), closed form")
    ax3.set_xlabel("noise sd sigma (W fixed)")
    ax3.set_ylabel("KL(p(z|x) || p(z))")
    ax3.set_title("noise flattens the likelihood")
    ax3.legend(fontsize=8)
    return _save(fig, path)


def plot_gmm(plot: dict[str, Any], path: str | Path) -> Path:
    """Per case (columns): data, log-likelihood in theta, posterior vs prior.

    Parameters
    ----------
    plot : dict
        ``DemoResult.plot`` from :func:`~lidvae_ext.classical.demos.run_gmm_demo`.
    path : str or Path
        Output PNG file.
    """
    cases, theta_true = plot["cases"], plot["theta_true"]
    fig = _new_figure(13.0, 9.0)
    axes = fig.subplots(3, len(cases), squeeze=False)
    for col, case in enumerate(cases):
        post = case["post"]
        ax_data, ax_lik, ax_post = axes[:, col]
        ax_data.hist(case["x"], bins=40, color="0.6")
        ax_data.set_title(case["name"])
        ax_data.set_xlabel("x")
        ax_lik.plot(post.theta, post.log_lik - post.log_lik.max())
        ax_lik.set_ylim(-30.0, 1.0)
        ax_lik.set_xlabel("theta")
        ax_lik.set_ylabel("log p(x|theta) - max")
        ax_post.plot(post.theta, post.prior, "k--", lw=2, label="prior Beta(5,5)")
        ax_post.plot(post.theta, post.post, label="posterior")
        ax_post.axvline(theta_true, color="r", lw=1, label="true theta")
        ax_post.set_xlabel("theta")
        ax_post.set_ylabel("density")
        ax_post.legend(fontsize=8)
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
