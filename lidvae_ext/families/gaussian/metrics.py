"""The Gaussian-prior family's held-out metrics: :func:`evaluate` (AU, KL, MI, −ELBO, IWAE NLL).

The formulas are the shared ones of :mod:`lidvae_ext.core.metrics`; this module
composes them, with one seeded random stream, into the metrics of a report.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from ...core.metrics import (
    active_units,
    encode_dataset,
    iwae_nll,
    kl_to_prior,
    mutual_information,
    mutual_information_per_dim,
    negative_elbo,
)


def evaluate(model: Any, x: Tensor, *, au_threshold: float = 0.01, iwae_samples: int = 100,
             mi_samples: int = 1, elbo_samples: int = 1, batch_size: int = 256, seed: int = 0,
             prepare_targets: bool = True, labels: Tensor | None = None) -> dict[str, Any]:
    """All collapse metrics of ``model`` on the held-out set ``x`` (N, D).

    Parameters
    ----------
    model : LatentVariableModel
    x : Tensor
        Held-out data. When ``prepare_targets`` and the likelihood defines
        ``fixed_targets`` (dynamic binarization), it is binarized once with ``seed``.
    au_threshold : float
        Active-unit threshold on Var_x(E_q[z_d|x]).
    iwae_samples, mi_samples, elbo_samples : int
        Monte-Carlo sample counts.
    batch_size : int
        Examples per batch.
    seed : int
        Seed of every Monte-Carlo draw (results are reproducible).
    labels : Tensor, optional
        (N,) class labels: unused by a Gaussian-prior model (accepted so that every family's
        ``evaluate`` takes the same arguments; the mixture family scores its clusters with them).

    Returns
    -------
    dict
        ``active_units``, ``latent_dim``, ``au_variance`` (K), ``kl``, ``kl_per_dim`` (K),
        ``mutual_info``, ``mi_per_dim`` (K), ``neg_elbo``, ``iwae_nll``, ``iwae_samples``, ``num_examples``,
        ``eval_seconds``.
    """
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        lik = getattr(model, "likelihood", None)
        if prepare_targets and lik is not None and hasattr(lik, "fixed_targets"):
            x = lik.fixed_targets(x, seed)
        gen = torch.Generator().manual_seed(int(seed))
        mean, logvar = encode_dataset(model, x, batch_size)
        au, au_var = active_units(mean, au_threshold)
        kl, kl_dim = kl_to_prior(mean, logvar)
        mi = mutual_information(mean, logvar, mi_samples, generator=gen)
        nelbo = negative_elbo(model, x, batch_size, elbo_samples, generator=gen)
        nll = iwae_nll(model, x, iwae_samples, batch_size=batch_size, generator=gen)
        # its own stream, so that the other metrics' draws are those they always were
        mi_dim = mutual_information_per_dim(mean, logvar, torch.Generator().manual_seed(int(seed) + 1))
    finally:
        model.train(was_training)
    return {
        "active_units": au,
        "latent_dim": int(mean.shape[1]),
        "au_variance": [float(v) for v in au_var],
        "au_threshold": float(au_threshold),
        "kl": kl,
        "kl_per_dim": [float(v) for v in kl_dim],
        "mutual_info": mi,
        "mi_per_dim": [float(v) for v in mi_dim],
        "neg_elbo": nelbo,
        "iwae_nll": nll,
        "iwae_samples": int(iwae_samples),
        "num_examples": int(x.shape[0]),
        "eval_seconds": time.perf_counter() - start,
    }
