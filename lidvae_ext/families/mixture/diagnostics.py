"""The exact posterior of the cluster y, against q(y|x): has y collapsed in the model, or only in q?

The per-dimension diagnostics (:mod:`lidvae_ext.diagnostics`) ask of each z_k whether the
decoder sees it and whether the exact posterior p(z|x) spreads less than the prior. This
module asks the same of the discrete latent of a mixture-prior model: with the uniform
p(y) and the model's own p(z|y),

    p(y|x) = E_{p(z|x)} [ p(y|z) ],   p(y|z) = N(z; μ_y, σ_y²) / Σ_k N(z; μ_k, σ_k²),

estimated by self-normalized importance sampling with the exact mixture q(z|x) =
Σ_k q(k|x) q(z|x,k) as proposal (drawn ancestrally, as the IWAE bound does; with the
volume-preserving flow log q(f(z₀)|x) = log q(z₀|x)): weights w_i ∝ p(x|z_i) p(z_i) /
q(z_i|x), p(y|x) ≈ Σ_i w̃_i p(y|z_i). It converges to the model's exact posterior over y as
the sample count grows (trust it where the ESS is not tiny).

Read together:

* ``y_exact_kl_uniform`` = E_x KL(p(y|x) ‖ Unif) small (≈ 0): the *model* cannot tell the
  clusters apart from x — y is not identifiable in the model (its components overlap in
  z, or the decoder does not separate them); no encoder could recover it.
* ``y_exact_kl_uniform`` large but ``y_q_kl_uniform`` small, with a large ``y_gap_kl`` =
  E_x KL(p(y|x) ‖ q(y|x)): the model knows the cluster but q(y|x) does not report it — a
  collapse of the inference network only.
* ``y_exact_mi`` / ``y_q_mi``: the mutual information I(x; y) under the exact posterior
  and under q (H(usage) − E_x H(posterior)), at most log C; ``y_agreement``: the share of
  rows whose most probable cluster is the same under both.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ...core.gaussian import diag_gaussian_log_prob
from .metrics import active_clusters, entropy, importance_draws


def _log_cluster_given_z(model: Any, z: Tensor) -> Tensor:
    """log p(y|z) for z (..., K): (..., C), under the uniform p(y) and the model's p(z|y)."""
    mu, lv = model.prior_params()
    comp = diag_gaussian_log_prob(z.unsqueeze(-2), mu, lv)  # (..., C)
    return comp - torch.logsumexp(comp, dim=-1, keepdim=True)


@torch.no_grad()
def exact_cluster_posterior(model: Any, x: Tensor, num_samples: int = 1000, seed: int = 0, batch_size: int = 64,
                            max_elements: int = 2 ** 22) -> tuple[Tensor, Tensor, Tensor]:
    """Per row: the SNIS estimate of p(y|x), q(y|x), and the effective sample size.

    Parameters
    ----------
    model : MixtureVAE
        Any model with ``encode_mixture``, ``prior_params``, ``log_prior``, ``log_likelihood``
        and ``transform``.
    x : Tensor
        (N, D) prepared (e.g. binarized) rows.
    num_samples : int
        Importance samples per row (≥ 2).
    seed : int
        Seed of the draws.

    Returns
    -------
    tuple of Tensor
        p (N, C), q (N, C) and ESS (N,), float64 on the CPU.
    """
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2, got {num_samples}")
    if x.dim() != 2 or x.shape[0] < 1:
        raise ValueError(f"x must have shape (N, D) with N >= 1, got {tuple(x.shape)}")
    was = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        gen = torch.Generator().manual_seed(int(seed))
        exact_rows, q_rows, ess_rows = [], [], []
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size].to(device)
            log_qy, mean, logvar = model.encode_mixture(xb)  # (B, C), (C, B, K)
            mean_b, logvar_b = mean.transpose(0, 1), logvar.transpose(0, 1)  # (B, C, K)
            chunk = max(1, max_elements // max(1, xb.shape[0] * xb.shape[1]))
            log_w_parts, log_py_parts = [], []
            for s0 in range(0, num_samples, chunk):
                s = min(chunk, num_samples - s0)
                z, log_w = importance_draws(model, xb, log_qy, mean_b, logvar_b, s, gen)  # (s, B, K), (s, B)
                log_w_parts.append(log_w.double().cpu())
                log_py_parts.append(_log_cluster_given_z(model, z).double().cpu())  # (s, B, C)
            log_w, log_py = torch.cat(log_w_parts), torch.cat(log_py_parts)
            w = torch.softmax(log_w, dim=0)  # (S, B)
            exact_rows.append((w.unsqueeze(-1) * log_py.exp()).sum(0))  # (B, C)
            q_rows.append(log_qy.double().exp().cpu())
            ess_rows.append(1.0 / w.square().sum(0))
    finally:
        model.train(was)
    return torch.cat(exact_rows), torch.cat(q_rows), torch.cat(ess_rows)


def summarize_cluster_posterior(p: Tensor, q: Tensor) -> dict[str, Any]:
    """The comparison of the exact p(y|x) and q(y|x), rows (N, C) each (see the module docstring)."""
    if p.shape != q.shape or p.dim() != 2:
        raise ValueError(f"p and q must be (N, C) of one shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    p, q = p.double(), q.double()
    clusters = p.shape[1]
    log_c = math.log(clusters)
    tiny = 1e-300
    gap = (p * (p.clamp_min(tiny).log() - q.clamp_min(tiny).log())).sum(-1)
    p_usage, q_usage = p.mean(0), q.mean(0)
    return {
        "y_exact_kl_uniform": float((log_c - entropy(p)).mean()),
        "y_q_kl_uniform": float((log_c - entropy(q)).mean()),
        "y_gap_kl": float(gap.mean()),
        "y_exact_mi": float(entropy(p_usage) - entropy(p).mean()),
        "y_q_mi": float(entropy(q_usage) - entropy(q).mean()),
        "y_agreement": float((p.argmax(-1) == q.argmax(-1)).double().mean()),
        "y_exact_active_clusters": active_clusters(p_usage, clusters),
        "y_q_active_clusters": active_clusters(q_usage, clusters),
        "y_exact_usage": p_usage.tolist(),
        "y_q_usage": q_usage.tolist(),
    }


def cluster_posterior(model: Any, x: Tensor, num_samples: int = 1000, seed: int = 0,
                      batch_size: int = 64) -> dict[str, Any]:
    """:func:`exact_cluster_posterior` on held-out ``x``, summarized (see the module docstring).

    Returns
    -------
    dict
        ``y_exact_kl_uniform``, ``y_q_kl_uniform``, ``y_gap_kl``, ``y_exact_mi``, ``y_q_mi``,
        ``y_agreement``, ``y_exact_active_clusters``, ``y_q_active_clusters``, ``y_exact_usage``
        and ``y_q_usage`` (lists of C), ``y_ess_mean``, ``y_ess_min``, ``y_num_samples``.
    """
    p, q, ess = exact_cluster_posterior(model, x, num_samples, seed, batch_size)
    out = summarize_cluster_posterior(p, q)
    out.update(y_ess_mean=float(ess.mean()), y_ess_min=float(ess.min()), y_num_samples=int(num_samples))
    return out
