"""Observation models p(x | η) where η is the decoder output.

Each likelihood maps decoder outputs (B, D) and data (B, D) to per-example
log-probabilities (B,), summed over the D dimensions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOG_2PI = math.log(2.0 * math.pi)


class Likelihood(nn.Module):
    """Base class: ``log_prob(x, params) -> (B,)`` plus helpers used by training/eval."""

    name = "base"

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:  # pragma: no cover - abstract
        """log p(x | η) per example, (B,) (or (..., B) for leading latent-sample axes of η)."""
        raise NotImplementedError

    def prepare(self, x: Tensor) -> Tensor:
        """Transform a training batch before use (e.g. dynamic binarization)."""
        return x

    def fixed_targets(self, x: Tensor, seed: int = 0) -> Tensor:
        """A deterministic version of :meth:`prepare` for evaluation sets."""
        return x

    def mean(self, params: Tensor) -> Tensor:
        """Mean of p(x | η), for reconstructions and samples."""
        raise NotImplementedError  # pragma: no cover - abstract

    def config(self) -> dict:
        """Constructor arguments (checkpointing)."""
        return {"kind": self.name}


class BernoulliLikelihood(Likelihood):
    """Bernoulli on logits: log p(x|η) = Σ_d x_d η_d − softplus(η_d).

    Parameters
    ----------
    binarize : bool, default False
        Dynamic binarization: each training batch of [0, 1] data is replaced
        by a fresh draw x' ~ Bernoulli(x). Evaluation sets are binarized once
        with a fixed seed (:meth:`fixed_targets`), so metrics are proper
        discrete log-likelihoods and comparable across models. Without it,
        [0, 1] values are used as soft targets (cross-entropy).
    """

    name = "bernoulli"

    def __init__(self, binarize: bool = False) -> None:
        super().__init__()
        self.binarize = bool(binarize)

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        """log p(x | η) per example, summed over the D coordinates."""
        return -F.binary_cross_entropy_with_logits(params, x.expand_as(params), reduction="none").sum(-1)

    def prepare(self, x: Tensor) -> Tensor:
        """Dynamic binarization of a training batch (x ~ Bernoulli(x)) when ``binarize``, else x."""
        return torch.bernoulli(x) if self.binarize else x

    def fixed_targets(self, x: Tensor, seed: int = 0) -> Tensor:
        """One seeded binarization of an evaluation set (the same targets every call), or x."""
        if not self.binarize:
            return x
        gen = torch.Generator(device=x.device).manual_seed(int(seed))
        return (torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) < x).to(x.dtype)

    def mean(self, params: Tensor) -> Tensor:
        """E[x | η]: sigmoid(η)."""
        return torch.sigmoid(params)

    def config(self) -> dict:
        """Constructor arguments, for checkpoints (:func:`build_likelihood` reads them back)."""
        return {"kind": self.name, "binarize": self.binarize}

    def extra_repr(self) -> str:
        return f"binarize={self.binarize}"


class GaussianLikelihood(Likelihood):
    """Diagonal Gaussian with mean η: log N(x; η, σ²I).

    Parameters
    ----------
    dim : int
        Data dimension D.
    std : float, default 0.1
        Fixed standard deviation, or the initial one when ``learn_std``.
    learn_std : bool, default False
        Learn a per-dimension σ (independent of z).
    min_std : float, default 1e-2
        Floor on a learned σ (avoids degenerate likelihoods on constant pixels).
    """

    name = "gaussian"

    def __init__(self, dim: int, std: float = 0.1, learn_std: bool = False, min_std: float = 1e-2) -> None:
        super().__init__()
        if std <= 0 or min_std < 0:
            raise ValueError(f"std must be > 0 and min_std >= 0, got {std}, {min_std}")
        self.dim, self.learn_std, self.min_std, self.init_std = int(dim), bool(learn_std), float(min_std), float(std)
        init = torch.full((self.dim,), math.log(max(std - min_std, 1e-6) if learn_std else std))
        if learn_std:
            self.log_std_raw = nn.Parameter(init)
        else:
            self.register_buffer("log_std_raw", init)

    def log_std(self) -> Tensor:
        """log σ of the Gaussian (a learned parameter with ``learn_std``)."""
        if self.learn_std:
            return torch.log(self.min_std + self.log_std_raw.exp())
        return self.log_std_raw

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        """log p(x | η) per example, summed over the D coordinates."""
        log_std = self.log_std()
        z = (x - params) * torch.exp(-log_std)
        return -(0.5 * z.square() + log_std + 0.5 * LOG_2PI).sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        """E[x | η]: η itself."""
        return params

    def config(self) -> dict:
        """Constructor arguments, for checkpoints (:func:`build_likelihood` reads them back)."""
        return {"kind": self.name, "dim": self.dim, "std": self.init_std,
                "learn_std": self.learn_std, "min_std": self.min_std}

    def extra_repr(self) -> str:
        return f"dim={self.dim}, learn_std={self.learn_std}"


def build_likelihood(config: dict) -> Likelihood:
    """Rebuild a likelihood from :meth:`Likelihood.config`."""
    cfg = dict(config)
    kind = cfg.pop("kind")
    if kind == "bernoulli":
        return BernoulliLikelihood(**cfg)
    if kind == "gaussian":
        return GaussianLikelihood(**cfg)
    raise ValueError(f"unknown likelihood kind {kind!r} (expected 'bernoulli' or 'gaussian')")
