"""Held-out collapse metrics of mixture-prior VAEs (:class:`lidvae_ext.families.mixture.models.MixtureVAE`).

A mixture prior has two latents that can collapse: the continuous z and the
discrete cluster y. With q(z|x) = Σ_k q(k|x) N(m_k(x), s_k²(x)) the marginal
posterior and p(z) = Σ_k (1/C) N(μ_k, σ_k²) the marginal prior:

* continuous: active units on E_q[z|x] = Σ_k q(k|x) m_k(x) (Var_x ≥ threshold), and
  ``active_units_within_cluster`` on Σ_k q(k|x)(m_k(x) − μ_k) — the same count with the
  cluster's prior mean removed, so that a dimension which only moves with the cluster
  assignment (z collapsed onto p(z|y)) does not count;
  ``kl_z`` = E_x Σ_k q(k|x) KL(q(z|x,k) ‖ p(z|k)) (and per dimension);
  ``mutual_info`` = I_q(x; z) against the aggregate q(z) = (1/N) Σ_n q(z|x_n) of
  the whole evaluation set (N·C Gaussians);
* discrete: ``kl_y`` = E_x KL(q(y|x) ‖ Unif(C)); ``cluster_usage`` u_k = E_x q(k|x);
  ``active_clusters`` = #{k : u_k ≥ 1/(10C)}; ``cluster_entropy`` = H(u) (nats);
  ``mutual_info_y`` = I_q(x; y) = H(u) − E_x H(q(y|x)); ``cluster_accuracy`` with
  each cluster (argmax_k q(k|x)) mapped to its majority label, when labels exist;
* ``neg_elbo``: the exact-enumeration −ELBO (kl = kl_z + kl_y, one z per component);
  ``iwae_nll``: −log (1/k) Σ_i p(x|z_i) p(z_i) / q(z_i|x) with z_i ~ q(z|x) drawn
  ancestrally (y_i ~ q(y|x), z_i ~ q(z|x, y_i)) and both densities the exact
  mixtures — an unbiased estimate of p(x) inside the log, so a proper bound, and
  never looser in expectation than the −ELBO.

With the optional flow (``model.flow``; z = f(z₀), z₀ ~ N(m_k, s_k²), log-det 0):
E_q[z|x,k] comes from :meth:`MixtureVAE.component_moments` (common-random-number
Monte Carlo); ``kl_z`` is E[−H(N(m_k, s_k²)) − log p(f(z₀)|k)] estimated with the
same draws; MI(x; z) = MI(x; z₀) exactly (f is one bijection shared by every x);
the IWAE weights use log q(z|x) = log Σ_k q(k|x) N(z₀; m_k, s_k²).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor

from ...core.gaussian import diag_gaussian_log_prob
from ...core.metrics import batches, importance_log_likelihood, model_device
from .models import MOMENT_SAMPLES, gaussian_kl_diag, gaussian_log_prob_diag, moment_noise

LOG_2PI = math.log(2.0 * math.pi)


@torch.no_grad()
def encode_mixture_dataset(model: Any, x: Tensor, batch_size: int = 512) -> tuple[Tensor, Tensor, Tensor]:
    """``(log q(y|x) (N, C), mean (N, C, K), logvar (N, C, K))`` for every row of ``x`` (CPU)."""
    dev = model_device(model)
    lq, ms, lvs = [], [], []
    for sl in batches(x.shape[0], batch_size):
        log_qy, mean, logvar = model.encode_mixture(x[sl].to(dev))
        lq.append(log_qy.cpu())
        ms.append(mean.transpose(0, 1).cpu())
        lvs.append(logvar.transpose(0, 1).cpu())
    return torch.cat(lq), torch.cat(ms), torch.cat(lvs)


@torch.no_grad()
def component_moments_dataset(model: Any, x: Tensor, batch_size: int = 512,
                              num_samples: int = MOMENT_SAMPLES) -> tuple[Tensor, Tensor]:
    """``(E_q[z|x,k] (N, C, K), kl_z per dimension (K,) float64)`` for a model with a flow (CPU).

    The means are :meth:`MixtureVAE.component_moments`; the KL per dimension is
    E_x Σ_k q(k|x) E_{z₀}[−H_d(N(m_k, s_k²)) − log p(f(z₀)_d | k)] over the same
    ``num_samples`` common-random-number draws (:func:`~lidvae_ext.families.mixture.models.moment_noise`).
    """
    dev = model_device(model)
    mu, lv = (t.detach() for t in model.prior_params())
    eps = moment_noise(num_samples, model.latent_dim, mu.dtype, dev)
    means, kl_sum = [], torch.zeros(model.latent_dim, dtype=torch.float64)
    for sl in batches(x.shape[0], batch_size):
        log_qy, mean, logvar = model.encode_mixture(x[sl].to(dev))
        z = model.flow(mean + torch.exp(0.5 * logvar) * eps)  # (S, C, B, K)
        kl = (-0.5 * (logvar + LOG_2PI + 1.0) - gaussian_log_prob_diag(z, mu.unsqueeze(1), lv.unsqueeze(1))).mean(0)
        kl_sum += (log_qy.exp().t().unsqueeze(-1) * kl).sum((0, 1)).double().cpu()
        means.append(z.mean(0).transpose(0, 1).cpu())
    return torch.cat(means), kl_sum / x.shape[0]


def posterior_mean(log_qy: Tensor, mean: Tensor) -> Tensor:
    """E_q[z|x] = Σ_k q(k|x) m_k(x): (N, K) from (N, C) and (N, C, K)."""
    return (log_qy.exp().unsqueeze(-1) * mean).sum(1)


def cluster_usage(log_qy: Tensor) -> Tensor:
    """u_k = mean_x q(y=k|x), (C,) float64."""
    return log_qy.double().exp().mean(0)


def active_clusters(usage: Tensor, clusters: int | None = None) -> int:
    """#{k : u_k ≥ 1/(10C)} for the usage vector u (C,)."""
    c = int(usage.shape[0]) if clusters is None else int(clusters)
    if usage.dim() != 1 or usage.shape[0] != c or c < 1:
        raise ValueError(f"usage must be a (C,) vector with C = {c}, got shape {tuple(usage.shape)}")
    return int((usage >= 1.0 / (10.0 * c)).sum())


def entropy(p: Tensor) -> Tensor:
    """Shannon entropy (nats) along the last dimension, with 0·log 0 = 0."""
    p = p.double()
    return -(torch.where(p > 0, p * p.clamp_min(1e-300).log(), torch.zeros_like(p))).sum(-1)


def kl_to_uniform(log_qy: Tensor) -> Tensor:
    """KL(q(y|x) ‖ Unif(C)) per row, (N,)."""
    lq = log_qy.double()
    return (lq.exp() * (lq + math.log(lq.shape[-1]))).sum(-1)


def cluster_accuracy(assignments: Tensor, labels: Tensor) -> float:
    """Accuracy when each cluster is mapped to the majority label of its members.

    Parameters
    ----------
    assignments : Tensor
        (N,) integer cluster of each example (e.g. argmax_k q(k|x)).
    labels : Tensor
        (N,) integer class labels (≥ 0).
    """
    a, y = torch.as_tensor(assignments).long().reshape(-1), torch.as_tensor(labels).long().reshape(-1)
    if a.shape != y.shape or a.numel() == 0:
        raise ValueError(f"assignments and labels must be non-empty and of equal length, got {a.numel()} and "
                         f"{y.numel()}")
    if int(a.min()) < 0 or int(y.min()) < 0:
        raise ValueError("cluster assignments and labels must be non-negative integers")
    table = torch.zeros(int(a.max()) + 1, int(y.max()) + 1, dtype=torch.long)
    table.index_put_((a, y), torch.ones_like(a), accumulate=True)
    return float(table.max(1).values.sum()) / a.numel()


def mixture_kl_z(log_qy: Tensor, mean: Tensor, logvar: Tensor, prior_mean: Tensor,
                 prior_logvar: Tensor) -> Tensor:
    """E_x Σ_k q(k|x) KL(q(z_d|x,k) ‖ p(z_d|k)) per dimension, (K,) float64."""
    kl = gaussian_kl_diag(mean.double(), logvar.double(), prior_mean.double(), prior_logvar.double())  # (N, C, K)
    return (log_qy.double().exp().unsqueeze(-1) * kl).sum(1).mean(0)


def log_mixture_density(z: Tensor, log_w: Tensor, mean: Tensor, logvar: Tensor, chunk: int = 2048) -> Tensor:
    """log Σ_j w_j N(z; μ_j, diag σ_j²) for each row of ``z`` (M, K), float64, by batched matrix products.

    ``log_w`` (J,) need not be normalized; ``mean``/``logvar`` are (J, K). Memory O(chunk · J).
    """
    z, mean, logvar, log_w = z.double(), mean.double(), logvar.double(), log_w.double()
    k = mean.shape[1]
    prec = torch.exp(-logvar)
    const = (mean.square() * prec).sum(1) + logvar.sum(1) + k * LOG_2PI
    out = []
    for sl in batches(z.shape[0], chunk):
        zc = z[sl]
        quad = zc.square() @ prec.t() - 2.0 * zc @ (mean * prec).t() + const
        out.append(torch.logsumexp(log_w - 0.5 * quad, dim=1))
    return torch.cat(out) if out else z.new_zeros(0)


def sample_posterior(log_qy: Tensor, mean: Tensor, logvar: Tensor, num: int,
                      generator: torch.Generator | None) -> Tensor:
    """``num`` draws z ~ q(z|x) per row, ancestrally: (num, N, K). Inputs (N, C), (N, C, K) on one device."""
    n = log_qy.shape[0]
    y = torch.multinomial(log_qy.exp().float().cpu(), num, replacement=True, generator=generator).t()  # (num, N)
    y = y.to(mean.device)
    rows = torch.arange(n, device=mean.device).expand(num, n)
    eps = torch.randn((num, n, mean.shape[-1]), generator=generator, dtype=mean.dtype).to(mean.device)
    return mean[rows, y] + torch.exp(0.5 * logvar[rows, y]) * eps


def mixture_mutual_information(log_qy: Tensor, mean: Tensor, logvar: Tensor, num_samples: int = 1,
                               generator: torch.Generator | None = None) -> float:
    """Monte-Carlo I_q(x; z) = E_x E_{q(z|x)}[log q(z|x) − log q(z)], q(z) over all N·C components."""
    n, c, k = mean.shape
    flat_w = (log_qy.double() - math.log(n)).reshape(-1)
    flat_m, flat_lv = mean.reshape(-1, k), logvar.reshape(-1, k)
    total = 0.0
    for _ in range(num_samples):
        z = sample_posterior(log_qy, mean, logvar, 1, generator)[0]  # (N, K)
        comp = diag_gaussian_log_prob(z.double().unsqueeze(1), mean.double(), logvar.double())  # (N, C)
        log_cond = torch.logsumexp(log_qy.double() + comp, dim=1)
        log_agg = log_mixture_density(z, flat_w, flat_m, flat_lv)
        total += float((log_cond - log_agg).sum())
    return total / (num_samples * n)


@torch.no_grad()
def mixture_negative_elbo(model: Any, x: Tensor, batch_size: int = 512,
                          generator: torch.Generator | None = None) -> float:
    """Average exact-enumeration −ELBO (β = 1, one z per component)."""
    dev = model_device(model)
    total = 0.0
    for sl in batches(x.shape[0], batch_size):
        xb = x[sl].to(dev)
        shape = (model.clusters, xb.shape[0], model.latent_dim)
        eps = torch.randn(shape, generator=generator, dtype=next(model.parameters()).dtype).to(dev)
        terms = model.loss_terms(xb, eps)
        total += float((terms["rec"] + terms["kl"]).double().sum())
    return total / x.shape[0]


@torch.no_grad()
def importance_draws(model: Any, xb: Tensor, log_qy: Tensor, mean_b: Tensor, logvar_b: Tensor, num: int,
                     generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """``num`` draws z ~ q(z|x) per row and their log weights log p(x|z) + log p(z) − log q(z|x).

    Ancestral draws (:func:`sample_posterior`) with the exact mixture density
    log q(z|x) = log Σ_k q(k|x) N(z₀; m_k, s_k²) (with the flow z = f(z₀), log-det 0). Inputs
    (B, C), (B, C, K) and (B, C, K); returns z (num, B, K) and the log weights (num, B).
    """
    z0 = sample_posterior(log_qy, mean_b, logvar_b, num, generator)  # (num, B, K)
    comp = diag_gaussian_log_prob(z0.unsqueeze(2), mean_b, logvar_b)  # (num, B, C)
    log_q = torch.logsumexp(log_qy + comp, dim=-1)  # = log q(f(z0)|x): the flow's log-det is 0
    z = model.transform(z0)
    return z, model.log_likelihood(xb, z) + model.log_prior(z) - log_q


def mixture_iwae_log_likelihood(model: Any, x: Tensor, num_samples: int = 100, batch_size: int = 256,
                                max_elements: int = 2 ** 22, generator: torch.Generator | None = None) -> Tensor:
    """Per-example IWAE estimate log (1/k) Σ_i p(x|z_i) p(z_i)/q(z_i|x), z_i ~ q(z|x) (see module docstring).

    Returns
    -------
    Tensor
        (N,) float64 log-likelihood estimates (lower bounds in expectation).
    """
    def encode(xb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        log_qy, mean, logvar = model.encode_mixture(xb)  # (B, C), (C, B, K)
        return log_qy, mean.transpose(0, 1), logvar.transpose(0, 1)  # (B, C, K)

    def log_weights(xb: Tensor, posterior: tuple[Tensor, Tensor, Tensor], s: int) -> Tensor:
        return importance_draws(model, xb, *posterior, s, generator)[1]

    return importance_log_likelihood(model, x, num_samples, batch_size, encode, log_weights, max_elements)


def evaluate_mixture(model: Any, x: Tensor, *, labels: Tensor | None = None, au_threshold: float = 0.01,
                     iwae_samples: int = 100, mi_samples: int = 1, batch_size: int = 256, seed: int = 0,
                     prepare_targets: bool = True) -> dict[str, Any]:
    """All metrics of a mixture-prior model on the held-out set ``x`` (N, D); see the module docstring.

    Parameters
    ----------
    model : MixtureVAE
    x : Tensor
        Held-out data (binarized once with ``seed`` under dynamic binarization).
    labels : Tensor, optional
        (N,) class labels for ``cluster_accuracy`` (None: reported as None).
    au_threshold, iwae_samples, mi_samples, batch_size, seed
        As for :func:`lidvae_ext.families.gaussian.metrics.evaluate`.

    Returns
    -------
    dict
        The Gaussian-prior report fields (``active_units``, ``latent_dim``, ``au_variance``,
        ``kl`` (= kl_z + kl_y), ``kl_per_dim`` (of kl_z), ``mutual_info``, ``neg_elbo``,
        ``iwae_nll``, ...) plus ``kl_z``, ``kl_y``, ``clusters``, ``active_clusters``,
        ``cluster_usage``, ``cluster_entropy``, ``mutual_info_y``, ``cluster_accuracy``.
    """
    if labels is not None and labels.shape[0] != x.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} entries for {x.shape[0]} examples")
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        if prepare_targets:
            x = model.likelihood.fixed_targets(x, seed)
        gen = torch.Generator().manual_seed(int(seed))
        log_qy, mean, logvar = encode_mixture_dataset(model, x, batch_size)
        if x.shape[0] < 2:
            raise ValueError("mixture metrics need at least 2 examples")
        prior_mean, prior_logvar = (t.detach().cpu() for t in model.prior_params())
        if model.flow is None:
            z_mean = mean
            kl_dim = mixture_kl_z(log_qy, mean, logvar, prior_mean, prior_logvar)
        else:  # E_q[z|x,k] and KL_z by common-random-number Monte Carlo through the flow
            z_mean, kl_dim = component_moments_dataset(model, x, batch_size)
        au_var = posterior_mean(log_qy, z_mean).double().var(0)
        within_var = posterior_mean(log_qy, z_mean - prior_mean).double().var(0)
        kl_y = float(kl_to_uniform(log_qy).mean())
        usage = cluster_usage(log_qy)
        h_agg = float(entropy(usage))
        mi_y = h_agg - float(entropy(log_qy.double().exp()).mean())
        acc = None
        if labels is not None:
            acc = cluster_accuracy(log_qy.argmax(1), labels)
        mi = mixture_mutual_information(log_qy, mean, logvar, mi_samples, generator=gen)
        nelbo = mixture_negative_elbo(model, x, batch_size, generator=gen)
        nll = float(-mixture_iwae_log_likelihood(model, x, iwae_samples, batch_size, generator=gen).mean())
    finally:
        model.train(was_training)
    kl_z = float(kl_dim.sum())
    return {
        "active_units": int((au_var >= au_threshold).sum()),
        "active_units_within_cluster": int((within_var >= au_threshold).sum()),
        "latent_dim": int(mean.shape[2]),
        "au_variance": [float(v) for v in au_var],
        "au_threshold": float(au_threshold),
        "kl": kl_z + kl_y,
        "kl_z": kl_z,
        "kl_y": kl_y,
        "kl_per_dim": [float(v) for v in kl_dim],
        "mutual_info": mi,
        "mutual_info_y": mi_y,
        "clusters": int(model.clusters),
        "active_clusters": active_clusters(usage, model.clusters),
        "cluster_usage": [float(v) for v in usage],
        "cluster_entropy": h_agg,
        "cluster_accuracy": acc,
        "neg_elbo": nelbo,
        "iwae_nll": nll,
        "iwae_samples": int(iwae_samples),
        "num_examples": int(x.shape[0]),
        "eval_seconds": time.perf_counter() - start,
    }
