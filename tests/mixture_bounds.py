"""Shared check of the mixture-model IWAE against a known log-likelihood."""

from __future__ import annotations

import math

import torch

from lidvae_ext.families.mixture import metrics as mm


def assert_iwae_brackets_nll(model, x: torch.Tensor, nll: torch.Tensor,
                             gen: torch.Generator) -> dict[int, torch.Tensor]:
    """IWAE(k) NLL per row of ``x``: ≥ the true ``nll`` (a proper bound, within 4 standard errors),
    ≤ the −ELBO at k = 1, and tightening with k = 1, 10, 100. Returns the estimates by k."""
    n = x.shape[0]
    neg_elbo = torch.tensor([mm.mixture_negative_elbo(model, x[i:i + 1].repeat(2000, 1), generator=gen)
                             for i in range(n)], dtype=torch.float64)
    iw = {}
    for k in (1, 10, 100):
        reps = 200
        est = mm.mixture_iwae_log_likelihood(model, x.repeat(reps, 1), k, generator=gen).reshape(reps, n)
        iw[k] = -est.mean(0)
        assert (iw[k] >= nll - 4 * est.std(0) / math.sqrt(reps) - 1e-6).all(), (k, iw[k], nll)
    assert (iw[1] <= neg_elbo + 0.05).all(), (iw[1], neg_elbo)
    assert (iw[100] <= iw[10] + 1e-3).all() and (iw[10] <= iw[1] + 1e-3).all()
    return iw
