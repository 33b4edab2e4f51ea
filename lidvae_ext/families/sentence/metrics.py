"""Collapse metrics of sentence VAEs: AU, KL, MI, −ELBO, IWAE NLL, perplexity, latent R².

AU, KL and MI are those of :mod:`lidvae_ext.core.metrics` (MI against the aggregate
posterior of the whole evaluation set). The IWAE bound is estimated with k
samples per sentence, the k·B sentence copies decoded in chunks of at most
``max_tokens`` padded positions. Perplexity is exp(Σ_x NLL(x) / Σ_x n(x)) with
n(x) the number of predicted tokens (the words and ``</s>``, not ``<s>``).
``latent_r2`` is the held-out R² of a least-squares linear map (with
intercept) from posterior means to known generating latents.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor

from ...core import metrics
from ...data.text.vocab import PAD_ID


def predicted_tokens(x: Tensor) -> Tensor:
    """Number of predicted tokens per sentence: words + ``</s>``."""
    return (x != PAD_ID).sum(1) - 1


@torch.no_grad()
def iwae_log_likelihood(model: Any, x: Tensor, num_samples: int = 100, batch_size: int = 64,
                        max_tokens: int = 1 << 15, generator: torch.Generator | None = None) -> Tensor:
    """(N,) float64 IWAE estimates log (1/k) Σ_i p(x, z_i)/q(z_i|x) per sentence."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    return metrics.iwae_log_likelihood(model, x, num_samples, batch_size=batch_size, max_elements=max_tokens,
                                       generator=generator)


def perplexity(nll: Tensor, x: Tensor) -> float:
    """exp(Σ NLL / Σ predicted tokens) for per-sentence NLLs (nats) of the rows of ``x``."""
    if nll.shape != (x.shape[0],):
        raise ValueError(f"nll must have shape ({x.shape[0]},), got {tuple(nll.shape)}")
    return float(math.exp(float(nll.double().sum()) / float(predicted_tokens(x).sum())))


def linear_r2(train_features: Tensor, train_targets: Tensor, test_features: Tensor, test_targets: Tensor) -> float:
    """Held-out R² (averaged over target dimensions) of least squares with an intercept."""
    if train_features.shape[0] != train_targets.shape[0] or test_features.shape[0] != test_targets.shape[0]:
        raise ValueError("features and targets must have the same number of rows")
    if test_features.shape[0] < 2:
        raise ValueError("R² needs at least 2 held-out rows")

    def design(f: Tensor) -> Tensor:
        f = f.double()
        return torch.cat([f, torch.ones(f.shape[0], 1, dtype=f.dtype)], 1)

    coef = torch.linalg.lstsq(design(train_features), train_targets.double(), driver="gelsd").solution
    pred = design(test_features) @ coef
    y = test_targets.double()
    ss_res = (y - pred).square().sum(0)
    ss_tot = (y - y.mean(0)).square().sum(0)
    return float((1.0 - ss_res / ss_tot).mean())


@torch.no_grad()
def evaluate_text(model: Any, x: Tensor, *, au_threshold: float = 0.01, iwae_samples: int = 100,
                  batch_size: int = 64, max_tokens: int = 1 << 15, seed: int = 0,
                  latents: Tensor | None = None, fit_x: Tensor | None = None,
                  fit_latents: Tensor | None = None) -> dict[str, Any]:
    """All metrics of a sentence VAE on held-out sentences ``x`` (N, T).

    Parameters
    ----------
    latents : Tensor, optional
        True latents of the rows of ``x``; with ``fit_x``/``fit_latents``
        (training sentences and their latents) adds ``latent_r2``: the linear
        map is fitted on the training posterior means and scored on ``x``.

    Returns
    -------
    dict
        ``active_units``, ``latent_dim``, ``au_variance``, ``kl``, ``kl_per_dim``,
        ``mutual_info``, ``neg_elbo``, ``iwae_nll``, ``ppl``, ``elbo_ppl``
        (perplexity from −ELBO), ``tokens``, ``num_examples``, ``iwae_samples``,
        ``eval_seconds`` and, when latents are given, ``latent_r2``.
    """
    start = time.perf_counter()
    was = model.training
    model.eval()
    try:
        gen = torch.Generator().manual_seed(int(seed))
        mean, logvar = metrics.encode_dataset(model, x, 1024)
        au, au_var = metrics.active_units(mean, au_threshold)
        kl, kl_dim = metrics.kl_to_prior(mean, logvar)
        mi = metrics.mutual_information(mean, logvar, 1, generator=gen)
        nelbo = metrics.negative_elbo(model, x, 256, 1, generator=gen)
        nll = -iwae_log_likelihood(model, x, iwae_samples, batch_size, max_tokens, generator=gen)
        tokens = int(predicted_tokens(x).sum())
        out: dict[str, Any] = {
            "active_units": au, "latent_dim": int(mean.shape[1]), "au_variance": [float(v) for v in au_var],
            "au_threshold": float(au_threshold), "kl": kl, "kl_per_dim": [float(v) for v in kl_dim],
            "mutual_info": mi, "neg_elbo": nelbo, "iwae_nll": float(nll.mean()), "ppl": perplexity(nll, x),
            "elbo_ppl": float(math.exp(nelbo * x.shape[0] / tokens)), "tokens": tokens,
            "iwae_samples": int(iwae_samples), "num_examples": int(x.shape[0]),
        }
        if latents is not None and fit_x is not None and fit_latents is not None:
            fit_mean, _ = metrics.encode_dataset(model, fit_x, 1024)
            out["latent_r2"] = linear_r2(fit_mean, fit_latents, mean, latents)
    finally:
        model.train(was)
    out["eval_seconds"] = time.perf_counter() - start
    return out
