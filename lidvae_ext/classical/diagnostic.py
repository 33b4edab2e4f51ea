"""Model-agnostic identifiability diagnostic.

For a data point ``x`` the exact posterior collapses, ``p(z | x) = p(z)``,
iff ``log p(x | z)`` is constant in ``z`` (prior-almost surely). The
diagnostic therefore reports, per data point,

* ``loglik_var``: ``Var_{z ~ p(z)} log p(x | z)`` (Monte Carlo over prior draws);
* ``kl``: ``KL(posterior || prior)``, either supplied by the caller (exact, or
  an approximate posterior's KL such as a VAE encoder's) or estimated;
* ``kl_is``: a self-normalised importance-sampling estimate of
  ``KL(p(z|x) || p(z))`` that reuses the same prior draws. With weights
  ``w_s ∝ p(x | z_s)`` it equals ``sum_s w_s log(S w_s)``, i.e. the KL of the
  weights to uniform, which is exactly zero when the log likelihood is
  constant over the draws.

The two quantities vanish together. The callables may return NumPy arrays or
PyTorch tensors, so the diagnostic works for a fitted neural decoder too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .mixture import grid_posterior, mixture_log_lik
from .ppca import PPCA, gaussian_kl_to_standard_normal

__all__ = [
    "DiagnosticResult",
    "identifiability_diagnostic",
    "directional_loglik_variance",
    "ppca_diagnostic",
    "ppca_direction_diagnostic",
    "gmm_diagnostic",
]

LogLik = Callable[[Any, Any], Any]
PriorSampler = Callable[[int, np.random.Generator], Any]


def _to_numpy(value: Any) -> np.ndarray:
    """Convert a NumPy array or a (possibly grad-tracking) torch tensor to float64."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


@dataclass(frozen=True)
class DiagnosticResult:
    """Per-data-point output of :func:`identifiability_diagnostic`.

    Attributes
    ----------
    loglik_var : ndarray of shape (N,)
        ``Var_{z ~ prior} log p(x_n | z)``.
    kl : ndarray of shape (N,)
        ``KL(posterior || prior)``: the supplied values, else ``kl_is``.
    kl_is : ndarray of shape (N,)
        Importance-sampling estimate of the exact posterior's KL.
    n_samples : int
        Number of prior draws.
    """

    loglik_var: np.ndarray
    kl: np.ndarray
    kl_is: np.ndarray
    n_samples: int

    def summary(self) -> dict[str, float]:
        """Data-averaged values, as plain floats."""
        return {
            "loglik_var_mean": float(self.loglik_var.mean()),
            "loglik_var_max": float(self.loglik_var.max()),
            "kl_mean": float(self.kl.mean()),
            "kl_is_mean": float(self.kl_is.mean()),
            "n_samples": int(self.n_samples),
        }


def _importance_kl(ll: np.ndarray) -> np.ndarray:
    """``sum_s w_s log(S w_s)`` with ``w = softmax(ll)`` along the last axis."""
    peak = ll.max(axis=-1, keepdims=True)
    shifted = ll - peak
    log_w = shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))
    return np.sum(np.exp(log_w) * (log_w + np.log(ll.shape[-1])), axis=-1)


def identifiability_diagnostic(
    log_lik: LogLik,
    x: Any,
    prior_sample: PriorSampler,
    n_samples: int = 2000,
    rng: np.random.Generator | None = None,
    posterior_kl: Callable[[Any], Any] | np.ndarray | None = None,
) -> DiagnosticResult:
    """Estimate how much each data point constrains the latent.

    Parameters
    ----------
    log_lik : callable
        ``log_lik(x, z)`` returns ``log p(x_n | z_s)`` of shape (N, S) for a
        batch ``x`` of N data points and ``z`` of S latent draws.
    x : array-like
        Batch of N data points (anything ``log_lik`` accepts).
    prior_sample : callable
        ``prior_sample(S, rng)`` returns S draws from the prior.
    n_samples : int
        Number of prior draws S.
    rng : numpy.random.Generator, optional
        Source of randomness (default: a fresh ``default_rng(0)``).
    posterior_kl : callable or ndarray, optional
        ``KL(posterior || prior)`` per data point, or a callable ``f(x)``
        returning it. Without it the importance estimate is used.

    Returns
    -------
    DiagnosticResult
    """
    rng = np.random.default_rng(0) if rng is None else rng
    z = prior_sample(n_samples, rng)
    ll = _to_numpy(log_lik(x, z))
    if ll.ndim != 2 or ll.shape[1] != n_samples:
        raise ValueError(f"log_lik must return shape (N, {n_samples}), got {ll.shape}")
    kl_is = _importance_kl(ll)
    if posterior_kl is None:
        kl = kl_is
    else:
        kl = _to_numpy(posterior_kl(x) if callable(posterior_kl) else posterior_kl)
        kl = np.broadcast_to(kl.reshape(-1), kl_is.shape).copy()
    return DiagnosticResult(ll.var(axis=1), kl, kl_is, n_samples)


def directional_loglik_variance(
    log_lik: LogLik,
    x: Any,
    direction: np.ndarray,
    z_base: np.ndarray | None = None,
    n_samples: int = 2000,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """``Var_t log p(x | z_base + t v)`` with ``t ~ N(0, 1)``, per data point.

    This probes a single latent direction ``v`` (normalised here) under an
    isotropic standard-normal prior, whose marginal along ``v`` is ``N(0, 1)``.
    The component of ``z_base`` along ``v`` is removed first.

    Returns
    -------
    ndarray of shape (N,)
    """
    rng = np.random.default_rng(0) if rng is None else rng
    v = np.asarray(direction, dtype=float).reshape(-1)
    v = v / np.linalg.norm(v)
    base = np.zeros_like(v) if z_base is None else np.asarray(z_base, float).reshape(-1)
    base = base - (base @ v) * v
    t = rng.standard_normal(n_samples)
    z = base[None, :] + t[:, None] * v[None, :]
    return _to_numpy(log_lik(x, z)).var(axis=1)


def ppca_diagnostic(
    model: PPCA, X: np.ndarray, n_samples: int = 2000, rng: np.random.Generator | None = None
) -> DiagnosticResult:
    """:func:`identifiability_diagnostic` for PPCA, with the exact posterior KL."""

    def prior(n: int, g: np.random.Generator) -> np.ndarray:
        return g.standard_normal((n, model.latent_dim))

    def exact_kl(batch: np.ndarray) -> np.ndarray:
        return gaussian_kl_to_standard_normal(*model.posterior(batch))

    return identifiability_diagnostic(
        model.log_lik_given_z, X, prior, n_samples, rng, posterior_kl=exact_kl
    )


def ppca_direction_diagnostic(
    model: PPCA,
    X: np.ndarray,
    basis: np.ndarray,
    n_samples: int = 2000,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Data-averaged directional log-likelihood variance for each column of ``basis``.

    Returns
    -------
    ndarray of shape (M,)
    """
    rng = np.random.default_rng(0) if rng is None else rng
    return np.array([
        directional_loglik_variance(model.log_lik_given_z, X, basis[:, j],
                                    n_samples=n_samples, rng=rng).mean()
        for j in range(basis.shape[1])
    ])


def gmm_diagnostic(
    x: np.ndarray,
    mu1: float,
    mu2: float,
    s: float,
    a: float = 5.0,
    b: float = 5.0,
    n_samples: int = 4000,
    rng: np.random.Generator | None = None,
    n_grid: int = 4000,
) -> tuple[DiagnosticResult, np.ndarray]:
    """Diagnostic for the mixture weight.

    The latent ``theta`` is shared by all points, so the "data point" of the
    diagnostic is the whole data set (N = 1), with the exact grid KL.

    Returns
    -------
    result : DiagnosticResult
        Data-set level diagnostic (arrays of length 1).
    pointwise_var : ndarray of shape (n,)
        ``Var_{theta ~ prior} log p(x_i | theta)`` for every single point,
        computed from the same prior draws.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    data = np.asarray(x, dtype=float).reshape(1, -1)
    draws = np.clip(rng.beta(a, b, size=n_samples), 1e-12, 1.0 - 1e-12)

    def prior(n: int, _rng: np.random.Generator) -> np.ndarray:
        return draws[:n]

    def log_lik(batch: np.ndarray, theta: np.ndarray) -> np.ndarray:
        return np.stack([mixture_log_lik(row, theta, mu1, mu2, s) for row in batch])

    def exact_kl(batch: np.ndarray) -> np.ndarray:
        return np.array([grid_posterior(row, mu1, mu2, s, a, b, n_grid).kl_to_prior()
                         for row in batch])

    result = identifiability_diagnostic(log_lik, data, prior, n_samples, rng, exact_kl)
    pointwise = mixture_log_lik(data[0], draws, mu1, mu2, s, per_point=True)
    return result, pointwise.var(axis=1)
