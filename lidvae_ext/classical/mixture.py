"""Two-component Gaussian mixture with the mixing weight as the latent.

Data ``x_1..x_n`` are i.i.d. from ``theta N(mu1, s^2) + (1 - theta) N(mu2, s^2)``
and the latent is the global weight ``theta ~ Beta(a, b)``. The exact
posterior ``p(theta | x)`` is one-dimensional, so it is computed on a fine
midpoint grid over ``(0, 1)``. For a smooth prior that vanishes at both ends
(``a, b > 1``) the midpoint rule is accurate far beyond the grid spacing, so
grid quantities are "exact" to rounding error.

When ``mu1 == mu2`` the two components coincide: ``p(x | theta)`` does not
depend on ``theta`` at all (non-identifiable), and the posterior equals the
prior. As the components separate, each point reveals its component and the
posterior concentrates near the true weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MixtureCase",
    "DEFAULT_CASES",
    "sample_mixture",
    "log_beta_pdf",
    "theta_grid",
    "mixture_log_lik",
    "GridPosterior",
    "grid_posterior",
]


@dataclass(frozen=True)
class MixtureCase:
    """A data-generating setting for the mixture demo.

    Parameters
    ----------
    name : str
        Short label.
    mu1, mu2 : float
        Component means (``mu1`` carries weight ``theta``).
    s : float
        Common component standard deviation.
    """

    name: str
    mu1: float
    mu2: float
    s: float = 1.0


DEFAULT_CASES: tuple[MixtureCase, ...] = (
    MixtureCase("one-cluster", 0.0, 0.0),
    MixtureCase("overlapping", 0.0, 1.0),
    MixtureCase("separated", 0.0, 6.0),
)


def sample_mixture(
    n: int, theta: float, mu1: float, mu2: float, s: float, rng: np.random.Generator
) -> np.ndarray:
    """Draw ``n`` points from ``theta N(mu1, s^2) + (1 - theta) N(mu2, s^2)``."""
    first = rng.random(n) < theta
    return np.where(first, mu1, mu2) + s * rng.standard_normal(n)


def log_beta_pdf(theta: np.ndarray, a: float, b: float) -> np.ndarray:
    """Log density of ``Beta(a, b)`` at ``theta`` in ``(0, 1)``."""
    theta = np.asarray(theta, dtype=float)
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    return log_norm + (a - 1.0) * np.log(theta) + (b - 1.0) * np.log1p(-theta)


def theta_grid(n_grid: int) -> tuple[np.ndarray, float]:
    """Midpoints ``(k + 1/2) / K`` of a uniform partition of (0, 1) and the spacing."""
    h = 1.0 / n_grid
    return (np.arange(n_grid) + 0.5) * h, h


def _component_log_densities(x: np.ndarray, mu1: float, mu2: float, s: float) -> np.ndarray:
    """``log N(x_i; mu_k, s^2)`` as an array of shape (n, 2)."""
    x = np.asarray(x, dtype=float).reshape(-1, 1)
    mus = np.array([[mu1, mu2]], dtype=float)
    return -0.5 * ((x - mus) / s) ** 2 - math.log(s) - 0.5 * math.log(2.0 * math.pi)


def mixture_log_lik(
    x: np.ndarray,
    theta: np.ndarray,
    mu1: float,
    mu2: float,
    s: float,
    per_point: bool = False,
) -> np.ndarray:
    """Log likelihood of the data as a function of the weight.

    Parameters
    ----------
    x : ndarray of shape (n,)
        Observations.
    theta : ndarray of shape (K,)
        Mixing weights in (0, 1).
    mu1, mu2, s : float
        Component parameters.
    per_point : bool
        If true return ``log p(x_i | theta_k)`` of shape (n, K); otherwise the
        sum over points, shape (K,).
    """
    comp = _component_log_densities(x, mu1, mu2, s)
    theta = np.asarray(theta, dtype=float).reshape(1, -1)
    ll = np.logaddexp(np.log(theta) + comp[:, :1], np.log1p(-theta) + comp[:, 1:])
    return ll if per_point else ll.sum(axis=0)


@dataclass(frozen=True)
class GridPosterior:
    """Exact posterior over ``theta`` on a midpoint grid.

    Attributes
    ----------
    theta : ndarray of shape (K,)
        Grid midpoints.
    h : float
        Grid spacing (quadrature weight).
    log_prior : ndarray of shape (K,)
        Prior log density.
    log_lik : ndarray of shape (K,)
        ``log p(x | theta)`` summed over the data.
    log_post : ndarray of shape (K,)
        Normalised posterior log density.
    """

    theta: np.ndarray
    h: float
    log_prior: np.ndarray
    log_lik: np.ndarray
    log_post: np.ndarray

    @property
    def prior(self) -> np.ndarray:
        """Prior density on the grid."""
        return np.exp(self.log_prior)

    @property
    def post(self) -> np.ndarray:
        """Posterior density on the grid."""
        return np.exp(self.log_post)

    def mean(self) -> float:
        """Posterior mean of ``theta``."""
        return float(np.sum(self.h * self.post * self.theta))

    def sd(self) -> float:
        """Posterior standard deviation of ``theta``."""
        m = self.mean()
        return float(np.sqrt(np.sum(self.h * self.post * (self.theta - m) ** 2)))

    def mass_within(self, center: float, radius: float, prior: bool = False) -> float:
        """Posterior (or prior) probability of ``|theta - center| <= radius``."""
        dens = self.prior if prior else self.post
        inside = np.abs(self.theta - center) <= radius
        return float(np.sum(self.h * dens[inside]))

    def kl_to_prior(self) -> float:
        """``KL(p(theta | x) || p(theta))`` by the grid rule."""
        post = self.post
        return float(np.sum(self.h * post * (self.log_post - self.log_prior)))

    def max_abs_diff(self) -> float:
        """``max_theta |p(theta | x) - p(theta)|`` over the grid."""
        return float(np.max(np.abs(self.post - self.prior)))


def grid_posterior(
    x: np.ndarray,
    mu1: float,
    mu2: float,
    s: float,
    a: float = 5.0,
    b: float = 5.0,
    n_grid: int = 4000,
) -> GridPosterior:
    """Exact posterior ``p(theta | x)`` under a ``Beta(a, b)`` prior.

    Parameters
    ----------
    x : ndarray of shape (n,)
        Observations.
    mu1, mu2, s : float
        Known component parameters.
    a, b : float
        Prior shape parameters.
    n_grid : int
        Number of midpoint-grid cells on (0, 1).
    """
    theta, h = theta_grid(n_grid)
    log_prior = log_beta_pdf(theta, a, b)
    log_lik = mixture_log_lik(x, theta, mu1, mu2, s)
    joint = log_prior + log_lik
    peak = joint.max()
    log_evidence = peak + math.log(h * float(np.sum(np.exp(joint - peak))))
    return GridPosterior(theta, h, log_prior, log_lik, joint - log_evidence)
