"""Posterior-collapse metrics on a held-out set, computed in bounded-memory batches.

* active units  AU = #{d : Var_x(E_q[z_d|x]) ≥ threshold}       (Burda et al. 2016)
* KL(q(z|x) ‖ p(z)), total and per latent dimension, averaged over x
* mutual information I_q(x; z) = E_x E_{q(z|x)}[log q(z|x) − log q(z)], where
  q(z) = (1/N) Σ_n q(z|x_n) is the aggregate posterior over the *whole*
  evaluation set (log q(z) by a batched logsumexp over all N Gaussians)
* negative ELBO and the IWAE bound −log (1/k) Σ_i p(x, z_i)/q(z_i|x) with k
  importance samples (an upper bound on the NLL that tightens as k grows)

These are the pieces every family shares (a family's ``evaluate`` composes them:
:mod:`lidvae_ext.families.gaussian.metrics`, :mod:`lidvae_ext.families.sentence.metrics`).
All functions take a model with ``encode(x) -> (mean, logvar)`` and
``log_likelihood(x, z)`` (see :class:`lidvae_ext.core.model.LatentVariableModel`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .gaussian import diag_gaussian_log_prob, gaussian_kl_per_dim, standard_normal_log_prob

LOG_2PI = math.log(2.0 * math.pi)


def batches(n: int, batch_size: int):
    """Slices of ``range(n)`` of at most ``batch_size`` rows (``ValueError`` if it is not positive)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the first parameter (CPU for a model without parameters)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@torch.no_grad()
def encode_dataset(model: Any, x: Tensor, batch_size: int = 1024) -> tuple[Tensor, Tensor]:
    """Posterior parameters ``(mean, logvar)`` (N, K) for every row of ``x``."""
    device = model_device(model)
    means, logvars = [], []
    for sl in batches(x.shape[0], batch_size):
        m, lv = model.encode(x[sl].to(device))
        means.append(m.cpu())
        logvars.append(lv.cpu())
    return torch.cat(means), torch.cat(logvars)


def active_units(mean: Tensor, threshold: float = 0.01) -> tuple[int, Tensor]:
    """Number of active units and the per-dimension variances Var_x(E_q[z_d|x]).

    Parameters
    ----------
    mean : Tensor
        (N, K) posterior means, one row per held-out example.
    threshold : float, default 0.01
        A dimension is active when the variance of its posterior mean across
        the data is at least ``threshold``.
    """
    if mean.shape[0] < 2:
        raise ValueError("active units need at least 2 examples")
    var = mean.double().var(dim=0, unbiased=True)
    return int((var >= threshold).sum()), var


def active_units_at(variances: list[float], thresholds: tuple[float, ...]) -> dict[str, int]:
    """Active-unit counts #{d : Var_x(E_q[z_d|x]) ≥ t} for each threshold t (keys formatted ``%g``)."""
    return {f"{t:g}": int(sum(v >= t for v in variances)) for t in thresholds}


def kl_to_prior(mean: Tensor, logvar: Tensor) -> tuple[float, Tensor]:
    """Average KL(q(z|x) ‖ N(0, I)): total (float) and per dimension (K,)."""
    per_dim = gaussian_kl_per_dim(mean.double(), logvar.double()).mean(0)
    return float(per_dim.sum()), per_dim


def log_aggregate_posterior(z: Tensor, mean: Tensor, logvar: Tensor, chunk: int = 4096) -> Tensor:
    """log q(z) = log (1/N) Σ_n N(z; μ_n, diag σ²_n) for each row of ``z``.

    The (M × N) table of log densities is formed by matrix products
    (‖z−μ‖²/σ² expanded), ``chunk`` rows of z at a time, in float64; memory is
    O(chunk · N), never O(M · N · K).

    Parameters
    ----------
    z : Tensor
        (M, K) points.
    mean, logvar : Tensor
        (N, K) parameters of the N mixture components (the whole eval set).
    """
    z, mean, logvar = z.double(), mean.double(), logvar.double()
    n, k = mean.shape
    prec = torch.exp(-logvar)  # (N, K)
    # log N(z; μ, σ²) = −½[Σ z²/σ² − 2 z·(μ/σ²) + Σ μ²/σ² + Σ log σ² + K log 2π]
    const = (mean.square() * prec).sum(1) + logvar.sum(1) + k * LOG_2PI  # (N,)
    out = []
    for sl in batches(z.shape[0], chunk):
        zc = z[sl]
        quad = zc.square() @ prec.t() - 2.0 * zc @ (mean * prec).t() + const  # (m, N)
        out.append(torch.logsumexp(-0.5 * quad, dim=1) - math.log(n))
    return torch.cat(out) if out else z.new_zeros(0)


def mutual_information(mean: Tensor, logvar: Tensor, num_samples: int = 1,
                       generator: torch.Generator | None = None, chunk: int = 4096) -> float:
    """Monte-Carlo I_q(x; z) under the empirical data distribution of the N rows.

    For each x_n, ``num_samples`` draws z ~ q(z|x_n) are scored by
    ``log q(z|x_n) − log q(z)`` with q(z) the aggregate posterior over all N
    rows. The estimate is exactly 0 when every q(z|x_n) is the same and at most
    log N.
    """
    mean, logvar = mean.double(), logvar.double()
    total, count = 0.0, 0
    for _ in range(num_samples):
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        z = mean + torch.exp(0.5 * logvar) * eps
        log_q_cond = diag_gaussian_log_prob(z, mean, logvar)
        log_q_agg = log_aggregate_posterior(z, mean, logvar, chunk)
        total += float((log_q_cond - log_q_agg).sum())
        count += z.shape[0]
    return total / count


def mutual_information_per_dim(mean: Tensor, logvar: Tensor, generator: torch.Generator | None = None,
                               max_elements: int = 2 ** 22) -> Tensor:
    """Per-dimension I_q(x; z_d) (K,), one draw z_d ~ q(z_d|x_n) per row, in float64.

    As :func:`mutual_information` for each coordinate alone: ``log q(z_d|x_n) −
    log (1/N) Σ_m q(z_d|x_m)``, averaged over the N rows. A dimension whose
    q(z_d|x) is the same for every x scores 0; at most log N.
    """
    mean, logvar = mean.double(), logvar.double()
    n, k = mean.shape
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
    prec = torch.exp(-logvar)  # (N, K)
    log_cond = -0.5 * ((z - mean).square() * prec + logvar + LOG_2PI)  # (N, K)
    total = torch.zeros(k, dtype=mean.dtype)
    for sl in batches(n, max(1, max_elements // max(1, n * k))):
        d2 = (z[sl, None, :] - mean[None]).square() * prec[None]  # (b, N, K)
        log_agg = torch.logsumexp(-0.5 * (d2 + logvar[None] + LOG_2PI), dim=1) - math.log(n)
        total += (log_cond[sl] - log_agg).sum(0)
    return total / n


@torch.no_grad()
def negative_elbo(model: Any, x: Tensor, batch_size: int = 512, num_samples: int = 1,
                  generator: torch.Generator | None = None) -> float:
    """Average −ELBO = E_x[E_q[−log p(x|z)] + KL(q(z|x) ‖ p(z))] (β = 1)."""
    device = model_device(model)
    total = 0.0
    for sl in batches(x.shape[0], batch_size):
        xb = x[sl].to(device)
        mean, logvar = model.encode(xb)
        kl = gaussian_kl_per_dim(mean, logvar).sum(-1)
        eps = torch.randn((num_samples, *mean.shape), generator=generator, dtype=mean.dtype).to(device)
        z = mean + torch.exp(0.5 * logvar) * eps
        rec = -model.log_likelihood(xb, z).mean(0)
        total += float((rec + kl).double().sum())
    return total / x.shape[0]


@torch.no_grad()
def iwae_log_likelihood(model: Any, x: Tensor, num_samples: int = 100, batch_size: int = 256,
                        sample_chunk: int | None = None, max_elements: int = 2 ** 22,
                        generator: torch.Generator | None = None) -> Tensor:
    """Per-example IWAE estimate log (1/k) Σ_i p(x, z_i)/q(z_i|x), z_i ~ q(z|x).

    Memory is bounded: ``batch_size`` examples at a time, and their k samples
    in chunks of ``sample_chunk`` (default: as many as keep the decoder output
    under ``max_elements`` numbers). Only the (B, k) log-weights are kept.

    Returns
    -------
    Tensor
        (N,) float64 log-likelihood estimates (lower bounds in expectation).
    """
    def encode(xb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mean, logvar = model.encode(xb)
        return mean, logvar, torch.exp(0.5 * logvar)

    def log_weights(xb: Tensor, posterior: tuple[Tensor, Tensor, Tensor], s: int) -> Tensor:
        mean, logvar, std = posterior
        eps = torch.randn((s, *mean.shape), generator=generator, dtype=mean.dtype).to(mean.device)
        z = mean + std * eps  # (s, B, K)
        return model.log_likelihood(xb, z) + standard_normal_log_prob(z) - diag_gaussian_log_prob(z, mean, logvar)

    return importance_log_likelihood(model, x, num_samples, batch_size, encode, log_weights, max_elements,
                                     sample_chunk)


def importance_log_likelihood(model: Any, x: Tensor, num_samples: int, batch_size: int,
                              encode: Callable[[Tensor], Any], log_weights: Callable[[Tensor, Any, int], Tensor],
                              max_elements: int = 2 ** 22, sample_chunk: int | None = None) -> Tensor:
    """The IWAE scaffolding every family shares: log (1/k) Σ_i w_i per row of ``x``, in bounded memory.

    ``batch_size`` rows at a time are encoded once (``encode(xb)``); their k = ``num_samples``
    log-weights come from ``log_weights(xb, encoded, s)`` in chunks of s samples ((s, B) each;
    ``sample_chunk``, or as many as keep the decoder output under ``max_elements`` numbers).
    Only the (k, B) log-weights are kept, in float64 on the CPU.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    device = model_device(model)
    out = []
    for sl in batches(x.shape[0], batch_size):
        xb = x[sl].to(device)
        b, d = xb.shape
        chunk = sample_chunk or max(1, max_elements // max(1, b * d))
        encoded = encode(xb)
        log_w = [log_weights(xb, encoded, min(chunk, num_samples - start)).double().cpu()
                 for start in range(0, num_samples, chunk)]
        out.append(torch.logsumexp(torch.cat(log_w, dim=0), dim=0) - math.log(num_samples))  # over the k samples
    return torch.cat(out)


def iwae_nll(model: Any, x: Tensor, num_samples: int = 100, **kwargs: Any) -> float:
    """Average IWAE negative log-likelihood (nats per example); see :func:`iwae_log_likelihood`."""
    return float(-iwae_log_likelihood(model, x, num_samples, **kwargs).mean())
