"""Diagonal-Gaussian posterior terms shared by every family: log densities, KL to N(0, I), ELBO terms.

q(z|x) = N(μ(x), diag σ²(x)) and the N(0, I) prior appear in all three families
(the mixture family's q(z|x,y) too, per component); these are their formulas.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


def gaussian_kl_per_dim(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) elementwise: ½(μ² + σ² − 1 − log σ²)."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar)


def diag_gaussian_log_prob(z: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; μ, diag σ²), summed over the last dimension."""
    return -0.5 * ((z - mean).square() * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I), summed over the last dimension."""
    return -0.5 * (z.square() + LOG_2PI).sum(-1)


def gaussian_elbo_terms(model: Any, x: Tensor, eps: Tensor | None = None) -> dict[str, Tensor]:
    """Per-example negative-ELBO terms of a model with a diagonal-Gaussian q(z|x) and N(0, I) prior.

    ``model`` provides ``encode(x) -> (mean, logvar)``, ``log_likelihood(x, z)`` and
    ``kl_weight``; one reparameterized z = μ + σ·eps (eps drawn when omitted). Returns
    ``rec`` = −log p(x|z), ``kl_per_dim``, ``kl``, ``loss`` = rec + kl_weight·kl, ``mean``, ``logvar``.
    """
    mean, logvar = model.encode(x)
    if eps is None:
        eps = torch.randn_like(mean)
    z = mean + torch.exp(0.5 * logvar) * eps
    rec = -model.log_likelihood(x, z)
    kl_per_dim = gaussian_kl_per_dim(mean, logvar)
    kl = kl_per_dim.sum(-1)
    return {"rec": rec, "kl": kl, "kl_per_dim": kl_per_dim, "loss": rec + model.kl_weight * kl,
            "mean": mean, "logvar": logvar}


def elbo_batch_outputs(terms: dict[str, Tensor], batch_size: int, normalizer: float | None = None) -> dict[str, Tensor]:
    """A training step's ``loss`` = Σ_batch terms["loss"] / normalizer (default: the batch size)
    and the detached batch means ``rec``, ``kl``, ``neg_elbo`` of per-example ELBO terms."""
    norm = float(batch_size if normalizer is None else normalizer)
    with torch.no_grad():
        rec, kl = terms["rec"].mean(), terms["kl"].mean()
    return {"loss": terms["loss"].sum() / norm, "rec": rec, "kl": kl, "neg_elbo": rec + kl}
