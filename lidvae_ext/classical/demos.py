"""The PPCA and mixture demos: numbers, JSON-ready reports and printed tables.

Each ``run_*_demo`` returns a :class:`DemoResult` holding a JSON-serialisable
``report`` and the arrays the figure needs (``plot``); ``format_*_table``
renders the report as the short text table the CLI prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .diagnostic import gmm_diagnostic, ppca_diagnostic, ppca_direction_diagnostic
from .mixture import DEFAULT_CASES, grid_posterior, sample_mixture
from .ppca import (
    PPCA,
    direction_report,
    fit_ppca,
    fit_ppca_from_moments,
    noise_sweep,
    principal_basis,
)

__all__ = [
    "DemoResult",
    "run_ppca_demo",
    "run_gmm_demo",
    "format_ppca_table",
    "format_gmm_table",
    "to_jsonable",
]


@dataclass
class DemoResult:
    """Report (JSON-ready) plus arrays for plotting."""

    report: dict[str, Any]
    plot: dict[str, Any] = field(default_factory=dict)


def to_jsonable(obj: Any) -> Any:
    """Recursively convert NumPy scalars/arrays to plain Python values."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# --------------------------------------------------------------------------- PPCA


def _true_ppca(rng: np.random.Generator, D: int, scales: tuple[float, ...],
               latent_dim: int, sigma: float) -> PPCA:
    """Ground truth with ``len(scales)`` active latents, zero-padded to ``latent_dim``."""
    Q, _ = np.linalg.qr(rng.standard_normal((D, len(scales))))
    W = np.zeros((D, latent_dim))
    W[:, : len(scales)] = Q * np.asarray(scales)
    return PPCA(W=W, sigma2=sigma**2, mu=rng.standard_normal(D))


def _direction_rows(model: PPCA, X: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    """Per-direction report plus the directional log-likelihood variance."""
    rep = direction_report(model, X)
    rep["loglik_var"] = ppca_direction_diagnostic(model, X[:200], rep["basis"],
                                                  n_samples=2000, rng=rng)
    rep.pop("basis")
    return rep


def _sample_size_sweep(true: PPCA, sizes: tuple[int, ...], latent_dim: int,
                       rng: np.random.Generator) -> dict[str, list[Any]]:
    """Weakest fitted direction vs. sample size (last entry, ``n=None``: N -> inf)."""
    X, _ = true.sample(max(sizes), rng)
    fits = [fit_ppca(X[:n], latent_dim) for n in sizes]
    fits.append(fit_ppca_from_moments(true.mu, true.covariance(), latent_dim))
    out: dict[str, list[Any]] = {"n": [int(n) for n in sizes] + [None],  # None: N -> inf
                                 "s_min": [], "post_var": [], "kl": []}
    for model in fits:
        rep = direction_report(model, X[:5000])
        out["s_min"].append(float(rep["singular_value"][-1]))
        out["post_var"].append(float(rep["post_var"][-1]))
        out["kl"].append(float(rep["kl"][-1]))
    return out


def _ppca_surface(model: PPCA, x0: np.ndarray, n_grid: int = 121) -> dict[str, np.ndarray]:
    """``log p(x0 | z)`` over the two weakest principal directions of ``W``.

    Both axes span the prior range [-3, 3]; the remaining coordinates are held
    at their posterior mean.
    """
    _, V = principal_basis(model.W)
    mean, cov = model.posterior(x0[None, :])
    rot_mean = (mean @ V)[0]
    t = np.linspace(-3.0, 3.0, n_grid)
    A, B = np.meshgrid(t, t, indexing="ij")
    coords = np.tile(rot_mean, (A.size, 1))
    coords[:, -2], coords[:, -1] = A.ravel(), B.ravel()
    ll = model.log_lik_given_z(x0[None, :], coords @ V.T)[0].reshape(A.shape)
    return {"a": t, "b": t, "loglik": ll - ll.max(), "post_mean": rot_mean,
            "post_sd": np.sqrt(np.diag(V.T @ cov @ V))}


def run_ppca_demo(
    seed: int = 0,
    n: int = 5000,
    data_dim: int = 6,
    true_scales: tuple[float, ...] = (3.0, 1.5),
    latent_dim: int = 3,
    sigma: float = 0.5,
) -> DemoResult:
    """PPCA with more model latents than the data support.

    Parameters
    ----------
    seed : int
        Seed for all randomness.
    n : int
        Number of training points.
    data_dim : int
        Observed dimension ``D``.
    true_scales : tuple of float
        Column norms of the true loading matrix (its rank is ``len(true_scales)``).
    latent_dim : int
        Model latent dimension ``M > len(true_scales)``.
    sigma : float
        True noise standard deviation.
    """
    rng = np.random.default_rng(seed)
    true = _true_ppca(rng, data_dim, true_scales, latent_dim, sigma)
    X, _ = true.sample(n, rng)
    fit = fit_ppca(X, latent_dim)
    pop = fit_ppca_from_moments(true.mu, true.covariance(), latent_dim)
    C = true.covariance()
    cov_err = np.linalg.norm(fit.covariance() - C) / np.linalg.norm(C)
    sweep = noise_sweep(true.W, np.geomspace(0.05, 20.0, 12), 2000, rng)
    report = {
        "seed": seed, "n": n, "data_dim": data_dim, "true_latent_dim": len(true_scales),
        "model_latent_dim": latent_dim, "sigma_true": sigma,
        "sigma2_fit": fit.sigma2, "cov_rel_error": float(cov_err),
        "ml_fit": _direction_rows(fit, X, rng),
        "population_fit": _direction_rows(pop, X, rng),
        "sample_size_sweep": _sample_size_sweep(true, (500, 5000, 50000), latent_dim, rng),
        "diagnostic_ml_fit": ppca_diagnostic(fit, X[:200], rng=rng).summary(),
        "diagnostic_null_model": ppca_diagnostic(
            PPCA(np.zeros_like(fit.W), fit.sigma2, fit.mu), X[:200], rng=rng).summary(),
        "noise_sweep": sweep,
    }
    plot = {"surface": _ppca_surface(pop, X[0]), "surface_ml": _ppca_surface(fit, X[0]),
            "noise_sweep": sweep}
    return DemoResult(to_jsonable(report), plot)


def format_ppca_table(report: dict[str, Any]) -> str:
    """Render the PPCA report as a short text table."""
    r = report
    lines = [
        f"PPCA: D={r['data_dim']}, true latent dim K={r['true_latent_dim']}, "
        f"model latent dim M={r['model_latent_dim']}, N={r['n']}, seed={r['seed']}",
        f"ML fit: sigma^2 = {r['sigma2_fit']:.4f} (true {r['sigma_true'] ** 2:.4f}), "
        f"|C_fit - C_true|_F / |C_true|_F = {r['cov_rel_error']:.4f}",
        "",
        "per latent direction (principal basis of W, strongest first)",
        f"{'fit':<11}{'dir':<5}{'|W v|':>8}{'Var E[z|x]':>12}{'Var[z|x]':>11}"
        f"{'KL(post||pr)':>14}{'Var_t logp':>12}",
    ]
    M = r["model_latent_dim"]
    for label, key in (("ML fit", "ml_fit"), ("N -> inf", "population_fit")):
        d = r[key]
        for j in range(M):
            lines.append(
                f"{label if j == 0 else '':<11}{'z' + str(j + 1):<5}"
                f"{d['singular_value'][j]:>8.4f}{d['mean_var'][j]:>12.6f}"
                f"{d['post_var'][j]:>11.6f}{d['kl'][j]:>14.2e}{d['loglik_var'][j]:>12.3e}")
    s = r["sample_size_sweep"]
    lines += ["", "weakest direction vs N:  " + "  ".join(
        f"N={'inf' if n is None else n}: Var[z|x]={v:.4f}"
        for n, v in zip(s["n"], s["post_var"]))]
    lines += ["", "noise sweep (W fixed = true W, data redrawn at each sigma)",
              f"{'sigma':>8}{'E_x KL(post||prior)':>21}{'I(x;z) exact':>14}"
              f"{'E_x Var_z logp':>16}"]
    ns = r["noise_sweep"]
    for j in range(0, len(ns["sigma"]), 2):
        lines.append(f"{ns['sigma'][j]:>8.3f}{ns['kl_mean'][j]:>21.4f}"
                     f"{ns['kl_analytic'][j]:>14.4f}{ns['loglik_var'][j]:>16.3e}")
    dm, d0 = r["diagnostic_ml_fit"], r["diagnostic_null_model"]
    lines += ["", f"diagnostic (200 points, {dm['n_samples']} prior draws): "
              f"ML fit  Var_z logp={dm['loglik_var_mean']:.3e}  KL={dm['kl_mean']:.3f}; "
              f"W=0  Var_z logp={d0['loglik_var_mean']:.1e}  KL={d0['kl_mean']:.1e}"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- mixture


def run_gmm_demo(
    seed: int = 0,
    n: int = 1000,
    theta: float = 0.3,
    a: float = 5.0,
    b: float = 5.0,
    n_grid: int = 4000,
    radius: float = 0.05,
) -> DemoResult:
    """Exact posterior over the mixing weight for the three default cases.

    Parameters
    ----------
    seed : int
        Seed for all randomness.
    n : int
        Data points per case. The posterior sd of ``theta`` is at least about
        ``sqrt(theta (1 - theta) / n)`` (0.032 at n=200, 0.014 at n=1000), so
        the mass within +-0.05 of the truth exceeds 0.9 reliably only for
        n of order 1000.
    theta : float
        True weight of the first component.
    a, b : float
        ``Beta(a, b)`` prior.
    n_grid : int
        Grid cells on (0, 1).
    radius : float
        Half-width of the window around ``theta`` whose posterior mass is reported.
    """
    rng = np.random.default_rng(seed)
    cases, plot_cases = [], []
    for case in DEFAULT_CASES:
        x = sample_mixture(n, theta, case.mu1, case.mu2, case.s, rng)
        post = grid_posterior(x, case.mu1, case.mu2, case.s, a, b, n_grid)
        diag, pointwise = gmm_diagnostic(x, case.mu1, case.mu2, case.s, a, b,
                                         rng=rng, n_grid=n_grid)
        cases.append({
            "name": case.name, "mu1": case.mu1, "mu2": case.mu2, "s": case.s,
            "post_mean": post.mean(), "post_sd": post.sd(),
            "mass_near_true": post.mass_within(theta, radius),
            "kl": post.kl_to_prior(), "max_abs_post_minus_prior": post.max_abs_diff(),
            "loglik_var": float(diag.loglik_var[0]),
            "pointwise_loglik_var_mean": float(pointwise.mean()),
            "kl_is": float(diag.kl_is[0]),
        })
        plot_cases.append({"name": case.name, "x": x, "post": post})
    ref = plot_cases[0]["post"]
    report = {
        "seed": seed, "n": n, "theta_true": theta, "prior": [a, b], "n_grid": n_grid,
        "radius": radius,
        "prior_mean": float(np.sum(ref.h * ref.prior * ref.theta)),
        "prior_mass_near_true": ref.mass_within(theta, radius, prior=True),
        "cases": cases,
    }
    return DemoResult(to_jsonable(report), {"cases": plot_cases, "theta_true": theta})


def format_gmm_table(report: dict[str, Any]) -> str:
    """Render the mixture report as a short text table."""
    r = report
    a, b = r["prior"]
    lines = [
        f"Gaussian mixture weight: theta_true={r['theta_true']}, prior Beta({a:g},{b:g}), "
        f"n={r['n']} per case, grid={r['n_grid']}, seed={r['seed']}",
        f"prior: mean={r['prior_mean']:.3f}, "
        f"P(|theta-{r['theta_true']}|<={r['radius']})={r['prior_mass_near_true']:.3f}",
        "",
        f"{'case':<13}{'mu1,mu2':>9}{'Var_th logp':>13}{'KL(post||pr)':>14}"
        f"{'max|post-pr|':>14}{'E[th|x]':>9}{'sd':>8}{'P(near)':>9}",
    ]
    for c in r["cases"]:
        lines.append(
            f"{c['name']:<13}{c['mu1']:>4g},{c['mu2']:<4g}{c['loglik_var']:>13.3e}"
            f"{c['kl']:>14.3e}{c['max_abs_post_minus_prior']:>14.3e}"
            f"{c['post_mean']:>9.4f}{c['post_sd']:>8.4f}{c['mass_near_true']:>9.4f}")
    return "\n".join(lines)
