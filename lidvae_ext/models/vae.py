"""VAE and latent-identifiable VAE (LIDVAE) with a shared encoder and likelihoods.

Both models are :class:`LatentVariableModel` instances: an encoder q(z|x), a
standard-normal prior p(z) = N(0, I), a decoder z ↦ η and a likelihood p(x|η).
They differ only in the decoder: an MLP for :class:`VAE`, the injective
Brenier-map :class:`lidvae_ext.LIDDecoder` for :class:`LIDVAE`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..nn import LIDDecoder
from .encoder import GaussianMLPEncoder, mlp
from .likelihoods import BernoulliLikelihood, GaussianLikelihood, Likelihood, build_likelihood

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


def elbo_batch_outputs(terms: dict[str, Tensor], batch_size: int, normalizer: float | None = None) -> dict[str, Tensor]:
    """A training step's ``loss`` = Σ_batch terms["loss"] / normalizer (default: the batch size)
    and the detached batch means ``rec``, ``kl``, ``neg_elbo`` of per-example ELBO terms."""
    norm = float(batch_size if normalizer is None else normalizer)
    with torch.no_grad():
        rec, kl = terms["rec"].mean(), terms["kl"].mean()
    return {"loss": terms["loss"].sum() / norm, "rec": rec, "kl": kl, "neg_elbo": rec + kl}


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


class VAE(LatentVariableModel):
    """Gaussian VAE with an MLP decoder (posterior collapse happens here).

    Parameters
    ----------
    data_dim, latent_dim : int
        D and K.
    encoder_hidden, decoder_hidden : sequence of int
        MLP widths.
    likelihood : {"bernoulli", "gaussian"} or Likelihood
    kl_weight : float
        β-VAE weight (1 = plain VAE).
    binarize, gaussian_std, learn_std
        Likelihood options when ``likelihood`` is a name.
    encoder : nn.Module, optional
        Custom encoder replacing the Gaussian MLP one.
    activation : str
        MLP nonlinearity.
    """

    def __init__(self, data_dim: int, latent_dim: int, encoder_hidden: Sequence[int] = (256, 256),
                 decoder_hidden: Sequence[int] = (256, 256), likelihood: str | Likelihood = "bernoulli",
                 kl_weight: float = 1.0, binarize: bool = False, gaussian_std: float = 0.1,
                 learn_std: bool = False, encoder: nn.Module | None = None, activation: str = "relu") -> None:
        lik = likelihood if isinstance(likelihood, Likelihood) else make_likelihood(
            likelihood, data_dim, binarize, gaussian_std, learn_std)
        enc = encoder if encoder is not None else GaussianMLPEncoder(data_dim, latent_dim, encoder_hidden, activation)
        super().__init__(enc, mlp(latent_dim, decoder_hidden, data_dim, activation), lik, latent_dim, kl_weight)
        self.config = {"model": "vae", "data_dim": data_dim, "latent_dim": latent_dim,
                       "encoder_hidden": list(encoder_hidden), "decoder_hidden": list(decoder_hidden),
                       "likelihood": lik.config(), "kl_weight": kl_weight, "activation": activation,
                       "custom_encoder": encoder is not None}


class LIDVAE(LatentVariableModel):
    """Latent-identifiable VAE: same encoder, injective Brenier-map decoder.

    Parameters
    ----------
    data_dim, latent_dim : int
        D and K (D ≥ K).
    encoder_hidden : sequence of int
        Encoder MLP widths.
    icnn_hidden, icnn_layers : int
        Width and depth L of both ICNNs of :class:`lidvae_ext.LIDDecoder`.
    strong_convexity : float, default 0.0
        α ≥ 0 for both ICNNs (α > 0: inverse-Lipschitz variant, Kinoshita et al. 2023).
    beta : {"fixed", "learned", "pca", "random"}
        β = [I; 0], a learned full-column-rank map, or a fixed orthonormal one
        (the training data's principal directions, ``beta_basis``, or a seeded
        random one); see :class:`lidvae_ext.LIDDecoder`.
    beta_basis : Tensor, optional
        The (D×K) basis of ``beta="pca"`` (:func:`lidvae_ext.nn.fit_beta`); when
        rebuilding from a checkpoint it comes with the state dict instead.
    backend : {"auto", "fused", "reference"}
        Brenier-map implementation.
    likelihood, kl_weight, binarize, gaussian_std, learn_std, encoder, activation
        As for :class:`VAE`.
    """

    def __init__(self, data_dim: int, latent_dim: int, encoder_hidden: Sequence[int] = (256, 256),
                 icnn_hidden: int = 128, icnn_layers: int = 2, strong_convexity: float = 0.0,
                 beta: str = "fixed", backend: str = "auto", likelihood: str | Likelihood = "bernoulli",
                 kl_weight: float = 1.0, binarize: bool = False, gaussian_std: float = 0.1,
                 learn_std: bool = False, encoder: nn.Module | None = None, activation: str = "relu",
                 beta_basis: Tensor | None = None) -> None:
        lik = likelihood if isinstance(likelihood, Likelihood) else make_likelihood(
            likelihood, data_dim, binarize, gaussian_std, learn_std)
        enc = encoder if encoder is not None else GaussianMLPEncoder(data_dim, latent_dim, encoder_hidden, activation)
        dec = make_lid_decoder(latent_dim, data_dim, icnn_hidden, icnn_layers, strong_convexity, beta, backend,
                               beta_basis)
        super().__init__(enc, dec, lik, latent_dim, kl_weight)
        self.config = {"model": "lidvae", "data_dim": data_dim, "latent_dim": latent_dim,
                       "encoder_hidden": list(encoder_hidden), "icnn_hidden": icnn_hidden,
                       "icnn_layers": icnn_layers, "strong_convexity": strong_convexity, "beta": beta,
                       "backend": backend, "likelihood": lik.config(), "kl_weight": kl_weight,
                       "activation": activation, "custom_encoder": encoder is not None}


def build_model(config: dict[str, Any], backend: str | None = None) -> LatentVariableModel:
    """Rebuild a :class:`VAE` or :class:`LIDVAE` from its ``config`` (e.g. from a checkpoint).

    Parameters
    ----------
    config : dict
        ``model.config``.
    backend : str, optional
        Override the LIDVAE backend (e.g. ``"auto"`` on a machine without the build).
    """
    cfg = dict(config)
    if cfg.pop("custom_encoder", False):
        raise ValueError("cannot rebuild a model that was created with a custom encoder")
    kind = cfg.pop("model")
    if kind in ("svae", "lidsvae"):  # sentence VAEs (lidvae_ext.models.sequence)
        from .sequence import build_sequence_model

        return build_sequence_model({"model": kind, **cfg}, backend=backend)
    lik = build_likelihood(cfg.pop("likelihood"))
    if kind == "vae":
        return VAE(likelihood=lik, **cfg)
    if kind == "lidvae":
        if backend is not None:
            cfg["backend"] = backend
        return LIDVAE(likelihood=lik, **cfg)
    if kind in ("gmvae", "lidgmvae"):
        from .mixture import build_mixture_model

        return build_mixture_model(kind, cfg, lik, backend)
    raise ValueError(f"unknown model kind {kind!r}")
