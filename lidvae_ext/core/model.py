"""The model layer every family builds on: :class:`LatentVariableModel` and its parts.

A :class:`LatentVariableModel` is an encoder q(z|x), a standard-normal prior,
a decoder z ↦ η and a likelihood p(x|η); :func:`make_likelihood` builds the
likelihood by name and :func:`make_lid_decoder` the Brenier-map decoder that
every latent-identifiable model (LIDVAE, LIDGMVAE) shares.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..nn import LIDDecoder
from .gaussian import elbo_batch_outputs, gaussian_elbo_terms, standard_normal_log_prob
from .likelihoods import BernoulliLikelihood, GaussianLikelihood, Likelihood


def make_likelihood(kind: str, dim: int, binarize: bool = False, std: float = 0.1,
                    learn_std: bool = False) -> Likelihood:
    """Likelihood by name: ``"bernoulli"`` or ``"gaussian"``."""
    if kind == "bernoulli":
        return BernoulliLikelihood(binarize=binarize)
    if kind == "gaussian":
        return GaussianLikelihood(dim, std=std, learn_std=learn_std)
    raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got {kind!r}")


def make_lid_decoder(latent_dim: int, data_dim: int, icnn_hidden: int = 128, icnn_layers: int = 2,
                     strong_convexity: float = 0.0, beta: str = "fixed", backend: str = "auto",
                     beta_basis: Tensor | None = None) -> LIDDecoder:
    """The Brenier-map decoder z ↦ ∇ψ₂(β·∇ψ₁(z)) every LID model builds (LIDVAE, LIDGMVAE).

    One constructor so that all latent-identifiable models share the same
    decoder options (ICNN width/depth, strong convexity α, β, backend);
    ``beta_basis`` is the fitted D×K embedding of a data-dependent β
    (``"pca"``, from :func:`lidvae_ext.nn.fit_beta`), else None.
    """
    return LIDDecoder(latent_dim, data_dim, hidden=icnn_hidden, num_layers=icnn_layers,
                      strong_convexity=strong_convexity, backend=backend, beta=beta, beta_basis=beta_basis)


class LatentVariableModel(nn.Module):
    """q(z|x) = N(μ(x), σ²(x)), p(z) = N(0, I), p(x|z) = likelihood(decoder(z)).

    Parameters
    ----------
    encoder : nn.Module
        ``encoder(x) -> (mean, logvar)``, each (B, K).
    decoder : nn.Module
        ``decoder(z) -> params``; maps (..., K) to (..., D).
    likelihood : Likelihood
        Observation model on the decoder output.
    latent_dim : int
        K.
    kl_weight : float, default 1.0
        β of the β-VAE objective ``E_q[−log p(x|z)] + β·KL`` (training loss only;
        metrics always use β = 1).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: Likelihood,
                 latent_dim: int, kl_weight: float = 1.0) -> None:
        super().__init__()
        if kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight}")
        self.encoder, self.decoder, self.likelihood = encoder, decoder, likelihood
        self.latent_dim = int(latent_dim)
        self.kl_weight = float(kl_weight)
        self.config: dict[str, Any] = {}

    # -- building blocks ------------------------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, logvar)`` of q(z|x)."""
        return self.encoder(x)

    def draw_noise(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """The standard-normal ``eps`` that :meth:`loss_terms` takes for batch ``x``, drawn from ``generator``
        (on the CPU, then moved: the draws do not depend on the device)."""
        mean, _ = self.encode(x)
        return torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)

    def log_prior(self, z: Tensor) -> Tensor:
        """log p(z) = log N(z; 0, I), summed over the last dimension (a mixture prior overrides it)."""
        return standard_normal_log_prob(z)

    def decode(self, z: Tensor) -> Tensor:
        """Likelihood parameters η for latents of any leading shape (..., K)."""
        flat = z.reshape(-1, z.shape[-1])
        out = self.decoder(flat)
        return out.reshape(*z.shape[:-1], out.shape[-1])

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z); ``z`` may carry extra leading sample dims broadcasting against x."""
        return self.likelihood.log_prob(x, self.decode(z))

    # -- training objective ---------------------------------------------------------------
    def loss_terms(self, x: Tensor, eps: Tensor | None = None) -> dict[str, Tensor]:
        """Per-example terms of the negative ELBO with one reparameterized sample.

        Parameters
        ----------
        x : Tensor
            (B, D) batch, already prepared (see :meth:`Likelihood.prepare`).
        eps : Tensor, optional
            Standard-normal noise (B, K); drawn if omitted.

        Returns
        -------
        dict
            ``rec`` (B,) = −log p(x|z), ``kl_per_dim`` (B, K), ``kl`` (B,),
            ``loss`` (B,) = rec + kl_weight·kl, ``mean`` and ``logvar`` of q.
        """
        return gaussian_elbo_terms(self, x, eps)

    def forward(self, x: Tensor, eps: Tensor | None = None, normalizer: float | None = None) -> dict[str, Tensor]:
        """Scalar training loss on a batch.

        In training mode the batch first goes through ``likelihood.prepare``
        (dynamic binarization). The loss is ``Σ_batch loss_terms / normalizer``
        (default: the batch size, i.e. the mean); data-parallel training passes
        ``global_batch / world_size`` so averaged gradients equal those of the
        global batch.

        Returns
        -------
        dict
            ``loss`` (scalar, differentiable), and detached batch means ``rec``,
            ``kl``, ``neg_elbo``, plus ``mean`` (B, K) of q for active-unit tracking.
        """
        if self.training:
            x = self.likelihood.prepare(x)
        terms = self.loss_terms(x, eps)
        return {**elbo_batch_outputs(terms, x.shape[0], normalizer), **self._batch_summary(terms)}

    def _batch_summary(self, terms: dict[str, Tensor]) -> dict[str, Tensor]:
        """The detached per-batch extras of :meth:`forward`: ``mean`` (B, K) of q."""
        return {"mean": terms["mean"].detach()}

    # -- generation -----------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Means of p(x|z) for n prior draws z ~ N(0, I)."""
        p = next(self.parameters())
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=p.dtype).to(p.device)
        return self.likelihood.mean(self.decode(z))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Means of p(x | z = E_q[z|x])."""
        mean, _ = self.encode(x)
        return self.likelihood.mean(self.decode(mean))


