"""Probabilistic PCA with exact posterior inference.

The model is ``x = W z + mu + eps`` with ``z ~ N(0, I_M)`` and
``eps ~ N(0, sigma^2 I_D)``. Everything here is closed form:

* marginal ``p(x) = N(mu, C)``, ``C = W W^T + sigma^2 I``;
* posterior ``p(z | x) = N(Mm^{-1} W^T (x - mu), sigma^2 Mm^{-1})`` with
  ``Mm = W^T W + sigma^2 I``;
* maximum-likelihood ``(W, sigma^2, mu)`` from the eigendecomposition of the
  sample covariance (Tipping & Bishop, 1999).

The likelihood ``p(x | z)`` depends on ``z`` only through ``W z``, so any
direction ``v`` with ``W v = 0`` is not identifiable, and along it the exact
posterior equals the prior. Because ``z`` has an isotropic prior, ``W`` is
only determined up to a rotation ``W R``; :func:`principal_basis` gives the
rotation-free coordinates (right singular vectors of ``W``) in which the
posterior factorises and the non-identified directions are explicit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "PPCA",
    "fit_ppca",
    "fit_ppca_from_moments",
    "principal_basis",
    "gaussian_kl_to_standard_normal",
    "direction_report",
    "mutual_information",
    "loglik_variance_exact",
    "noise_sweep",
]

_LOG_2PI = float(np.log(2.0 * np.pi))


@dataclass(frozen=True)
class PPCA:
    """A probabilistic PCA model with exact inference.

    Parameters
    ----------
    W : ndarray of shape (D, M)
        Loading matrix.
    sigma2 : float
        Isotropic observation noise variance ``sigma^2 > 0``.
    mu : ndarray of shape (D,)
        Data mean.
    """

    W: np.ndarray
    sigma2: float
    mu: np.ndarray

    def __post_init__(self) -> None:
        W = np.atleast_2d(np.asarray(self.W, dtype=float))
        mu = np.asarray(self.mu, dtype=float).reshape(-1)
        if mu.shape[0] != W.shape[0]:
            raise ValueError(f"mu has length {mu.shape[0]}, W has {W.shape[0]} rows")
        if not self.sigma2 > 0:
            raise ValueError(f"sigma2 must be positive, got {self.sigma2}")
        object.__setattr__(self, "W", W)
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "sigma2", float(self.sigma2))

    @classmethod
    def centered(cls, W: np.ndarray, sigma2: float) -> "PPCA":
        """Model with zero mean."""
        W = np.atleast_2d(np.asarray(W, dtype=float))
        return cls(W=W, sigma2=sigma2, mu=np.zeros(W.shape[0]))

    @property
    def data_dim(self) -> int:
        """Observed dimension ``D``."""
        return int(self.W.shape[0])

    @property
    def latent_dim(self) -> int:
        """Latent dimension ``M``."""
        return int(self.W.shape[1])

    def covariance(self) -> np.ndarray:
        """Marginal covariance ``C = W W^T + sigma^2 I`` of shape (D, D)."""
        return self.W @ self.W.T + self.sigma2 * np.eye(self.data_dim)

    def posterior(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact posterior ``p(z | x)`` for each row of ``X``.

        Parameters
        ----------
        X : ndarray of shape (N, D)

        Returns
        -------
        means : ndarray of shape (N, M)
            ``Mm^{-1} W^T (x - mu)`` per data point.
        cov : ndarray of shape (M, M)
            ``sigma^2 Mm^{-1}``; the same for every data point.
        """
        R = np.atleast_2d(X) - self.mu
        Mm = self.W.T @ self.W + self.sigma2 * np.eye(self.latent_dim)
        means = np.linalg.solve(Mm, self.W.T @ R.T).T
        cov = self.sigma2 * np.linalg.inv(Mm)
        return means, 0.5 * (cov + cov.T)

    def log_marginal(self, X: np.ndarray) -> np.ndarray:
        """Log evidence ``log p(x) = log N(x; mu, C)`` per row, shape (N,)."""
        R = np.atleast_2d(X) - self.mu
        L = np.linalg.cholesky(self.covariance())
        white = np.linalg.solve(L, R.T)
        logdet = 2.0 * np.sum(np.log(np.diag(L)))
        return -0.5 * (np.sum(white**2, axis=0) + logdet + self.data_dim * _LOG_2PI)

    def log_lik_given_z(self, X: np.ndarray, Z: np.ndarray) -> np.ndarray:
        """Log likelihood ``log p(x_n | z_s)`` for all pairs, shape (N, S).

        Parameters
        ----------
        X : ndarray of shape (N, D)
        Z : ndarray of shape (S, M)
        """
        R = np.atleast_2d(X) - self.mu
        WZ = np.atleast_2d(Z) @ self.W.T  # (S, D)
        sq = (
            np.sum(R**2, axis=1)[:, None]
            - 2.0 * R @ WZ.T
            + np.sum(WZ**2, axis=1)[None, :]
        )
        const = -0.5 * self.data_dim * (_LOG_2PI + np.log(self.sigma2))
        return const - 0.5 * sq / self.sigma2

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` pairs ``(x, z)`` from the joint; returns ``(X, Z)``."""
        Z = rng.standard_normal((n, self.latent_dim))
        E = rng.standard_normal((n, self.data_dim))
        X = self.mu + Z @ self.W.T + np.sqrt(self.sigma2) * E
        return X, Z


def _canonical_signs(vectors: np.ndarray) -> np.ndarray:
    """Flip columns so each one's largest-magnitude entry is positive."""
    idx = np.argmax(np.abs(vectors), axis=0)
    signs = np.sign(vectors[idx, np.arange(vectors.shape[1])])
    signs[signs == 0] = 1.0
    return vectors * signs


def fit_ppca_from_moments(mean: np.ndarray, cov: np.ndarray, latent_dim: int) -> PPCA:
    """Closed-form maximum-likelihood PPCA for given first and second moments.

    ``sigma^2`` is the mean of the ``D - M`` smallest eigenvalues of ``cov``
    and ``W = U_M (Lambda_M - sigma^2 I)^{1/2}`` (the rotation ``R`` of
    Tipping & Bishop is fixed to the identity, so the columns are orthogonal
    and ordered by norm). Passing the *population* covariance gives the
    infinite-data limit of the fit.

    Parameters
    ----------
    mean : ndarray of shape (D,)
    cov : ndarray of shape (D, D)
        Symmetric covariance (ML convention, divided by ``N``).
    latent_dim : int
        Model latent dimension ``M``, ``1 <= M < D``.
    """
    cov = np.asarray(cov, dtype=float)
    D = cov.shape[0]
    if not 1 <= latent_dim < D:
        raise ValueError(f"latent_dim must satisfy 1 <= M < D={D}, got {latent_dim}")
    evals, evecs = np.linalg.eigh(0.5 * (cov + cov.T))
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], _canonical_signs(evecs[:, order])
    sigma2 = float(np.mean(evals[latent_dim:]))
    if not sigma2 > 0:
        raise ValueError("discarded eigenvalues are not positive; covariance is singular")
    scale = np.sqrt(np.clip(evals[:latent_dim] - sigma2, 0.0, None))
    return PPCA(W=evecs[:, :latent_dim] * scale, sigma2=sigma2, mu=np.asarray(mean, float))


def fit_ppca(X: np.ndarray, latent_dim: int) -> PPCA:
    """Maximum-likelihood PPCA fit to data ``X`` of shape (N, D)."""
    X = np.asarray(X, dtype=float)
    mean = X.mean(axis=0)
    R = X - mean
    return fit_ppca_from_moments(mean, R.T @ R / X.shape[0], latent_dim)


def principal_basis(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation-invariant latent coordinates of a loading matrix.

    Returns
    -------
    s : ndarray of shape (M,)
        Singular values of ``W`` in decreasing order, zero-padded to ``M``:
        ``s_j = |W v_j|`` is how strongly direction ``j`` moves the data.
    V : ndarray of shape (M, M)
        Orthonormal columns ``v_j`` (right singular vectors). Columns with
        ``s_j = 0`` span the null space of ``W``: the non-identified latents.
    """
    W = np.atleast_2d(np.asarray(W, dtype=float))
    _, s, Vt = np.linalg.svd(W, full_matrices=True)
    M = W.shape[1]
    s_full = np.zeros(M)
    s_full[: s.shape[0]] = s
    return s_full, _canonical_signs(Vt.T)


def gaussian_kl_to_standard_normal(means: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """``KL(N(m_n, S) || N(0, I))`` for each row ``m_n``; returns shape (N,)."""
    means = np.atleast_2d(means)
    cov = np.atleast_2d(cov)
    _, logdet = np.linalg.slogdet(cov)
    return 0.5 * (np.trace(cov) + np.sum(means**2, axis=1) - cov.shape[0] - logdet)


def direction_report(model: PPCA, X: np.ndarray) -> dict[str, np.ndarray]:
    """Per-direction posterior summary in the principal basis of ``W``.

    In the basis ``z' = V^T z`` the prior is still ``N(0, I)`` and the
    posterior covariance is diagonal, ``sigma^2 / (s_j^2 + sigma^2)``, so each
    coordinate can be compared with its prior on its own.

    Returns
    -------
    dict
        ``singular_value`` (M,), ``mean_var`` (M,) variance over data of the
        posterior mean, ``post_var`` (M,) posterior variance, ``mean_abs_mean``
        (M,) average ``|E[z'_j | x]|``, ``kl`` (M,) data-averaged
        ``KL(p(z'_j|x) || N(0,1))``, ``basis`` (M, M) the matrix ``V``.
    """
    s, V = principal_basis(model.W)
    means, cov = model.posterior(X)
    rot_means = means @ V
    rot_var = np.diag(V.T @ cov @ V)
    kl = 0.5 * (rot_var + rot_means**2 - 1.0 - np.log(rot_var))
    return {
        "singular_value": s,
        "mean_var": rot_means.var(axis=0),
        "post_var": rot_var,
        "mean_abs_mean": np.abs(rot_means).mean(axis=0),
        "kl": kl.mean(axis=0),
        "basis": V,
    }


def mutual_information(W: np.ndarray, sigma2: float) -> float:
    """``I(x; z) = E_x KL(p(z|x) || p(z)) = 1/2 sum_j log(1 + s_j^2 / sigma^2)``."""
    s, _ = principal_basis(W)
    return float(0.5 * np.sum(np.log1p(s**2 / sigma2)))


def loglik_variance_exact(model: PPCA, X: np.ndarray) -> np.ndarray:
    """``Var_{z ~ N(0,I)} log p(x | z)`` in closed form, shape (N,).

    With ``r = x - mu`` and ``G = W^T W`` the variance is
    ``|W^T r|^2 / sigma^4 + tr(G^2) / (2 sigma^4)``; it is zero for every
    ``x`` iff ``W = 0``.
    """
    R = np.atleast_2d(X) - model.mu
    G = model.W.T @ model.W
    proj = np.sum((R @ model.W) ** 2, axis=1)
    return (proj + 0.5 * np.sum(G * G)) / model.sigma2**2


def noise_sweep(
    W: np.ndarray, sigmas: np.ndarray, n: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Posterior-to-prior distance as the noise level grows with ``W`` fixed.

    For every ``sigma`` the data are drawn from the model with that noise
    (common random numbers across ``sigma``), and the exact posterior is
    computed with the true parameters.

    Returns
    -------
    dict
        ``sigma``, ``kl_mean`` (data-averaged exact KL), ``kl_analytic``
        (the mutual information ``I(x; z)``), ``loglik_var`` (data-averaged
        ``Var_z log p(x|z)``) and ``post_var_min`` (smallest posterior
        variance over directions), each of shape (len(sigmas),).
    """
    W = np.atleast_2d(np.asarray(W, dtype=float))
    sigmas = np.asarray(sigmas, dtype=float)
    Z = rng.standard_normal((n, W.shape[1]))
    E = rng.standard_normal((n, W.shape[0]))
    out: dict[str, list[float]] = {k: [] for k in
                                   ("kl_mean", "kl_analytic", "loglik_var", "post_var_min")}
    for sigma in sigmas:
        model = PPCA.centered(W, sigma**2)
        X = Z @ W.T + sigma * E
        means, cov = model.posterior(X)
        out["kl_mean"].append(float(gaussian_kl_to_standard_normal(means, cov).mean()))
        out["kl_analytic"].append(mutual_information(W, sigma**2))
        out["loglik_var"].append(float(loglik_variance_exact(model, X).mean()))
        out["post_var_min"].append(float(np.linalg.eigvalsh(cov).min()))
    result = {k: np.asarray(v) for k, v in out.items()}
    result["sigma"] = sigmas
    return result
