"""Mixture-prior VAEs: GMVAE (MLP decoder) and LIDGMVAE (Brenier-map decoder).

The generative model has a discrete and a continuous latent,

    y ~ Cat(1/C),   z | y ~ N(μ_y, diag σ_y²),   x | z ~ likelihood(decoder(z)),

with learned prior means μ_y and scales σ_y = softplus(raw_y) + floor. The
decoder does not see y. Inference is amortized by

    q(y|x) = softmax(MLP_y(x)),   q(z|x, y) = N(m_y(x), diag s_y²(x)),  (m, log s²) = MLP_z([x, onehot y]).

The per-example ELBO sums y out exactly (one reparameterized z per component):

    ELBO(x) = Σ_k q(k|x) [E_{q(z|x,k)} log p(x|z) − KL(q(z|x,k) ‖ p(z|k))] − KL(q(y|x) ‖ Unif(C)),

with both KLs in closed form. ``kl_weight`` (β) multiplies both prior terms in
the training loss (β-GMVAE); metrics always use β = 1. Tensors with a
component axis are laid out component-first, (C, B, ·), so that decoder
outputs broadcast against the (B, D) data.

Optionally (``flow=True``) each Gaussian q(z|x,y) is followed by a
volume-preserving flow f (:class:`lidvae_ext.families.mixture.flow.VolumePreservingFlow`,
two additive couplings with alternating halves, shared by all x and y):
z = f(z₀), z₀ ~ N(m_y(x), s_y²(x)), and log q(z|x,y) = log N(z₀; m_y, s_y²)
exactly (log-det 0). KL(q(z|x,y) ‖ p(z|y)) then has no closed form; it is
−H(N(m_y, s_y²)) (closed form) − log p(f(z₀)|y) (the same reparameterized
draw), an unbiased single-sample estimate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.encoder import activation_class, mlp
from ...core.gaussian import diag_gaussian_log_prob
from ...core.likelihoods import Likelihood
from ...core.model import LatentVariableModel, make_lid_decoder, make_likelihood
from .flow import VolumePreservingFlow

PRIOR_STD_FLOOR = 1e-3
PRIOR_MEAN_RADIUS = 2.0
FLOW_HIDDEN = (256,)  # shift-network widths of each coupling of the optional flow
MOMENT_SAMPLES = 32  # common-random-number draws per component for E_q[z|x,y] under a flow
LOG_2PI = math.log(2.0 * math.pi)


def equal_norm_means(clusters: int, latent_dim: int, radius: float) -> Tensor:
    """Initial prior means: ``clusters`` random directions (orthonormal when C ≤ K), all of norm ``radius``.

    Equal norms matter: with i.i.d. Gaussian means, the component of smallest
    ‖μ_k‖ has the smallest KL for every x at initialization and takes all the
    mass (cluster collapse from step 0); near-identical means instead let
    KL(q(y|x) ‖ Unif) pull q(y|x) to uniform before the data can break the tie.
    """
    raw = torch.randn(latent_dim, clusters)
    if clusters <= latent_dim:
        dirs = torch.linalg.qr(raw).Q.t()  # (C, K), orthonormal rows
    else:
        dirs = raw.t() / raw.t().norm(dim=1, keepdim=True)
    return radius * dirs


def moment_noise(num_samples: int, latent_dim: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> Tensor:
    """The common random numbers of flow moments: (S, 1, 1, K) standard-normal draws in antithetic pairs ±ε.

    Seeded (the same for every call) and antithetic, so that Monte-Carlo means
    of f(m + s·ε) are exact for any f that is affine (the identity flow at
    initialization included) and x-independent dimensions get zero variance.
    """
    if num_samples < 2 or num_samples % 2:
        raise ValueError(f"num_samples must be an even number >= 2 for flow moments, got {num_samples}")
    half = torch.randn(num_samples // 2, 1, 1, latent_dim, generator=torch.Generator().manual_seed(0), dtype=dtype)
    return torch.cat([half, -half]).to(device)


def gaussian_log_prob_diag(z: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """log N(z_d; μ_d, σ_d²) elementwise (not summed)."""
    return -0.5 * ((z - mean).square() * torch.exp(-logvar) + logvar + LOG_2PI)


def _soft_clamp(logvar: Tensor, lo: float, hi: float) -> Tensor:
    """Identity in the middle of [lo, hi], saturating smoothly at the bounds (as the Gaussian encoder)."""
    return lo + (hi - lo) * torch.sigmoid((logvar - 0.5 * (lo + hi)) * 4.0 / (hi - lo))


def gaussian_kl_diag(mean: Tensor, logvar: Tensor, prior_mean: Tensor, prior_logvar: Tensor) -> Tensor:
    """KL(N(m, s²) ‖ N(μ, σ²)) elementwise: ½[log σ² − log s² + (s² + (m − μ)²)/σ² − 1]."""
    return 0.5 * (prior_logvar - logvar + (logvar.exp() + (mean - prior_mean).square()) * torch.exp(-prior_logvar)
                  - 1.0)


class ConditionalGaussianEncoder(nn.Module):
    """q(z|x, y) for every y at once: an MLP on [x, onehot(y)] returning (C, B, K) means and log-variances.

    The first layer is split as W·[x; e_y] = W_x·x + W_y[:, y], so x goes through
    it once per example rather than once per component; the result is exactly
    the MLP of the concatenation.
    """

    def __init__(self, in_dim: int, clusters: int, latent_dim: int, hidden: Sequence[int] = (256, 256),
                 activation: str = "relu", min_logvar: float = -12.0, max_logvar: float = 6.0) -> None:
        super().__init__()
        hidden = [int(h) for h in hidden]
        if not hidden:
            raise ValueError("the q(z|x,y) encoder needs at least one hidden layer")
        self.clusters, self.latent_dim = int(clusters), int(latent_dim)
        self.input = nn.Linear(in_dim, hidden[0])
        self.cluster_embedding = nn.Parameter(torch.empty(self.clusters, hidden[0]))
        bound = 1.0 / math.sqrt(in_dim + clusters)  # nn.Linear's init for the concatenated input width
        nn.init.uniform_(self.cluster_embedding, -bound, bound)
        with torch.no_grad():
            self.input.weight.uniform_(-bound, bound)
            self.input.bias.uniform_(-bound, bound)
        self.act = activation_class(activation)()
        self.rest = mlp(hidden[0], hidden[1:], 2 * latent_dim, activation)
        self.min_logvar, self.max_logvar = float(min_logvar), float(max_logvar)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, logvar)``, each (C, B, K)."""
        h = self.act(self.input(x).unsqueeze(0) + self.cluster_embedding.unsqueeze(1))  # (C, B, H)
        mean, logvar = self.rest(h).chunk(2, dim=-1)
        return mean, _soft_clamp(logvar, self.min_logvar, self.max_logvar)


class MixtureVAE(LatentVariableModel):
    """Mixture-of-Gaussians-prior VAE with y summed out exactly (see the module docstring).

    Parameters
    ----------
    decoder : nn.Module
        z ↦ likelihood parameters, (N, K) → (N, D).
    likelihood : Likelihood
    data_dim, latent_dim, clusters : int
        D, K and C.
    encoder_hidden : sequence of int
        Widths of both inference MLPs (q(y|x) and q(z|x,y)).
    kl_weight : float
        β on both prior terms of the training loss.
    activation : str
        MLP nonlinearity.
    prior_std_floor : float
        σ_y = softplus(raw_y) + floor.
    flow : bool
        Follow every q(z|x,y) by the volume-preserving flow (see the module docstring).
    flow_hidden : sequence of int
        Shift-network widths of the flow's couplings.
    """

    def __init__(self, decoder: nn.Module, likelihood: Likelihood, data_dim: int, latent_dim: int, clusters: int,
                 encoder_hidden: Sequence[int] = (256, 256), kl_weight: float = 1.0, activation: str = "relu",
                 prior_std_floor: float = PRIOR_STD_FLOOR, flow: bool = False,
                 flow_hidden: Sequence[int] = FLOW_HIDDEN) -> None:
        if int(clusters) < 1 or int(clusters) != clusters:
            raise ValueError(f"clusters must be a positive integer, got {clusters!r}")
        if data_dim < 1 or latent_dim < 1:
            raise ValueError(f"data_dim and latent_dim must be positive, got {data_dim}, {latent_dim}")
        if prior_std_floor <= 0:
            raise ValueError(f"prior_std_floor must be > 0, got {prior_std_floor}")
        z_encoder = ConditionalGaussianEncoder(data_dim, int(clusters), latent_dim, encoder_hidden, activation)
        super().__init__(z_encoder, decoder, likelihood, latent_dim, kl_weight)
        self.data_dim, self.clusters = int(data_dim), int(clusters)
        self.cluster_encoder = mlp(data_dim, encoder_hidden, self.clusters, activation)
        self.prior_std_floor = float(prior_std_floor)
        self.prior_mean = nn.Parameter(equal_norm_means(self.clusters, latent_dim, PRIOR_MEAN_RADIUS))
        init_raw = math.log(math.expm1(1.0 - self.prior_std_floor))  # σ_y = 1 at initialization
        self.prior_std_raw = nn.Parameter(torch.full((self.clusters, latent_dim), init_raw))
        self.flow = VolumePreservingFlow(latent_dim, flow_hidden, 2, activation) if flow else None

    # -- distributions ---------------------------------------------------------------------
    def prior_params(self) -> tuple[Tensor, Tensor]:
        """``(μ, log σ²)`` of p(z|y), each (C, K)."""
        std = F.softplus(self.prior_std_raw) + self.prior_std_floor
        return self.prior_mean, 2.0 * torch.log(std)

    def _check_x(self, x: Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.data_dim:
            raise ValueError(f"x must have shape (B, {self.data_dim}), got {tuple(x.shape)}")

    def encode_mixture(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(log q(y|x) (B, C), mean (C, B, K), logvar (C, B, K))`` of the posterior components."""
        self._check_x(x)
        log_qy = F.log_softmax(self.cluster_encoder(x), dim=-1)
        mean, logvar = self.encoder(x)
        return log_qy, mean, logvar

    def transform(self, z0: Tensor) -> Tensor:
        """z = f(z₀) with the flow, else z₀ (any leading shape, last dimension K)."""
        return z0 if self.flow is None else self.flow(z0)

    def noise_shape(self, batch: int) -> tuple[int, int, int]:
        """Shape (C, B, K) of the standard-normal ``eps`` that :meth:`loss_terms` takes."""
        return (self.clusters, int(batch), self.latent_dim)

    def draw_noise(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """The (C, B, K) standard-normal ``eps`` that :meth:`loss_terms` takes for batch ``x`` (one draw per
        component), drawn from ``generator`` on the CPU, then moved."""
        p = next(self.parameters())
        return torch.randn(self.noise_shape(x.shape[0]), generator=generator, dtype=p.dtype).to(p.device)

    def component_moments(self, x: Tensor, num_samples: int = MOMENT_SAMPLES) -> tuple[Tensor, Tensor, Tensor]:
        """``(log q(y|x) (B, C), E_q[z|x,y] (C, B, K), Var_q[z|x,y] (C, B, K))``.

        Without a flow these are exactly (m_y(x), s_y²(x)). With the flow they
        are Monte-Carlo moments of f(m + s·ε) over ``num_samples`` draws ε that
        are the same for every x and y (:func:`moment_noise`: seeded, antithetic):
        a dimension that does not depend on x gets exactly zero variance across
        x, so Monte-Carlo noise cannot make it look active.
        """
        log_qy, mean, logvar = self.encode_mixture(x)
        if self.flow is None:
            return log_qy, mean, logvar.exp()
        eps = moment_noise(num_samples, self.latent_dim, mean.dtype, mean.device)
        z = self.flow(mean + torch.exp(0.5 * logvar) * eps)  # (S, C, B, K)
        return log_qy, z.mean(0), z.var(0)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Moments of the marginal q(z|x) = Σ_k q(k|x) q(z|x,k): ``(E_q[z|x], log Var_q[z|x])``, each (B, K).

        The mean is what active units are measured on (with a flow, from the
        Monte-Carlo moments of :meth:`component_moments`). This is *not* a
        Gaussian posterior; the Gaussian-prior metrics must not be applied to it
        (the mixture family's metrics are :mod:`lidvae_ext.families.mixture.metrics`).
        """
        log_qy, mean, var_k = self.component_moments(x)
        w = log_qy.exp().t().unsqueeze(-1)  # (C, B, 1)
        post_mean = (w * mean).sum(0)
        second = (w * (var_k + mean.square())).sum(0)
        var = (second - post_mean.square()).clamp_min(torch.finfo(mean.dtype).tiny)
        return post_mean, var.log()

    def log_prior(self, z: Tensor) -> Tensor:
        """log p(z) = log Σ_k (1/C) N(z; μ_k, σ_k²) for z of shape (..., K)."""
        mu, lv = self.prior_params()
        comp = diag_gaussian_log_prob(z.unsqueeze(-2), mu, lv)  # (..., C)
        return torch.logsumexp(comp, dim=-1) - math.log(self.clusters)

    # -- training objective ---------------------------------------------------------------
    def loss_terms(self, x: Tensor, eps: Tensor | None = None) -> dict[str, Tensor]:
        """Per-example terms of the negative ELBO, y enumerated, one z per component.

        Parameters
        ----------
        x : Tensor
            (B, D) batch, already prepared.
        eps : Tensor, optional
            Standard-normal noise (C, B, K); drawn if omitted.

        Returns
        -------
        dict
            ``rec`` (B,) = Σ_k q(k|x)·(−log p(x|z_k)); ``kl_z`` (B,) = Σ_k q(k|x) KL(q(z|x,k) ‖ p(z|k));
            ``kl_z_per_dim`` (B, K); ``kl_y`` (B,) = KL(q(y|x) ‖ Unif); ``kl`` = kl_z + kl_y;
            ``loss`` = rec + kl_weight·kl; ``log_qy`` (B, C); ``mean``/``logvar`` (C, B, K) of the
            Gaussian q(z₀|x,k); ``z`` (C, B, K) the decoded latents (= f(z₀) with the flow). With the
            flow ``kl_z``/``kl_z_per_dim`` are the single-draw estimates of the module docstring.
        """
        log_qy, mean, logvar = self.encode_mixture(x)
        if eps is None:
            eps = torch.randn_like(mean)
        elif eps.shape != mean.shape:
            raise ValueError(f"eps must have shape (C, B, K) = {tuple(mean.shape)}, got {tuple(eps.shape)}")
        z0 = mean + torch.exp(0.5 * logvar) * eps  # (C, B, K)
        z = self.transform(z0)
        rec_k = -self.log_likelihood(x, z)  # (C, B)
        qy = log_qy.exp()
        mu, lv = self.prior_params()
        if self.flow is None:
            kl_dim_k = gaussian_kl_diag(mean, logvar, mu.unsqueeze(1), lv.unsqueeze(1))  # (C, B, K)
        else:  # log q(z|x,k) = log N(z0; m, s²) (log-det 0): −H(q0) in closed form, −log p(z|k) at the draw
            kl_dim_k = -0.5 * (logvar + LOG_2PI + 1.0) - gaussian_log_prob_diag(z, mu.unsqueeze(1), lv.unsqueeze(1))
        kl_z_per_dim = (qy.t().unsqueeze(-1) * kl_dim_k).sum(0)  # (B, K)
        kl_y = (qy * (log_qy + math.log(self.clusters))).sum(-1)
        rec = (qy * rec_k.t()).sum(-1)
        kl_z = kl_z_per_dim.sum(-1)
        kl = kl_z + kl_y
        return {"rec": rec, "kl": kl, "kl_z": kl_z, "kl_y": kl_y, "kl_z_per_dim": kl_z_per_dim,
                "loss": rec + self.kl_weight * kl, "log_qy": log_qy, "mean": mean, "logvar": logvar, "z": z}

    def forward(self, x: Tensor, eps: Tensor | None = None, normalizer: float | None = None) -> dict[str, Tensor]:
        """Scalar training loss; same contract as :meth:`LatentVariableModel.forward`.

        ``mean`` in the output is E_q[z|x] (B, K), the quantity active units are measured on
        (with the flow, Σ_k q(k|x) f(m_k(x)), the mixture of the component modes — a cheap
        training-time trace; the held-out metrics use :meth:`component_moments`).
        """
        self._check_x(x)
        return super().forward(x, eps, normalizer)

    @torch.no_grad()
    def _batch_summary(self, terms: dict[str, Tensor]) -> dict[str, Tensor]:
        """``kl_y`` (batch mean) and ``mean`` = E_q[z|x] (B, K) for :meth:`forward`."""
        w = terms["log_qy"].exp().t().unsqueeze(-1)
        return {"kl_y": terms["kl_y"].mean(), "mean": (w * self.transform(terms["mean"])).sum(0)}

    # -- generation -----------------------------------------------------------------------
    @torch.no_grad()
    def sample_per_cluster(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Means of p(x|z) for n draws z ~ p(z|y) of every cluster y: (C, n, D)."""
        mu, lv = self.prior_params()
        eps = torch.randn(self.clusters, n, self.latent_dim, generator=generator, dtype=mu.dtype).to(mu.device)
        z = mu.unsqueeze(1) + torch.exp(0.5 * lv).unsqueeze(1) * eps
        return self.likelihood.mean(self.decode(z))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Means of p(x|z) for n draws from the prior: y ~ Cat(1/C), z ~ p(z|y)."""
        mu, lv = self.prior_params()
        y = torch.randint(self.clusters, (n,), generator=generator).to(mu.device)
        eps = torch.randn(n, self.latent_dim, generator=generator, dtype=mu.dtype).to(mu.device)
        z = mu[y] + torch.exp(0.5 * lv[y]) * eps
        return self.likelihood.mean(self.decode(z))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Means of p(x | z = f(m_ŷ(x))) with ŷ = argmax_k q(k|x) (f = identity without a flow)."""
        log_qy, mean, _ = self.encode_mixture(x)
        y = log_qy.argmax(-1)
        z = self.transform(mean[y, torch.arange(x.shape[0], device=x.device)])
        return self.likelihood.mean(self.decode(z))


def _mixture_config(kind: str, data_dim: int, latent_dim: int, clusters: int, encoder_hidden: Sequence[int],
                    lik: Likelihood, kl_weight: float, activation: str, flow: bool,
                    flow_hidden: Sequence[int]) -> dict[str, Any]:
    cfg = {"model": kind, "data_dim": int(data_dim), "latent_dim": int(latent_dim), "clusters": int(clusters),
           "encoder_hidden": [int(h) for h in encoder_hidden], "likelihood": lik.config(),
           "kl_weight": float(kl_weight), "activation": activation}
    if flow:  # absent (= no flow) in the configs of flow-less models, as in checkpoints written before the flow
        cfg.update(flow=True, flow_hidden=[int(h) for h in flow_hidden])
    return cfg


class GMVAE(MixtureVAE):
    """Gaussian-mixture-prior VAE with an MLP decoder (the baseline; ``kl_weight`` 0.2 = the β-GMVAE).

    Parameters
    ----------
    data_dim, latent_dim, clusters : int
        D, K and C.
    encoder_hidden, decoder_hidden : sequence of int
        MLP widths.
    likelihood : {"bernoulli", "gaussian"} or Likelihood
    kl_weight, binarize, gaussian_std, learn_std, activation
        As for :class:`lidvae_ext.families.gaussian.models.VAE`.
    flow, flow_hidden
        The optional volume-preserving flow on q(z|x,y) (:class:`MixtureVAE`).
    """

    def __init__(self, data_dim: int, latent_dim: int, clusters: int = 10, encoder_hidden: Sequence[int] = (256, 256),
                 decoder_hidden: Sequence[int] = (256, 256), likelihood: str | Likelihood = "bernoulli",
                 kl_weight: float = 1.0, binarize: bool = False, gaussian_std: float = 0.1, learn_std: bool = False,
                 activation: str = "relu", flow: bool = False, flow_hidden: Sequence[int] = FLOW_HIDDEN) -> None:
        lik = likelihood if isinstance(likelihood, Likelihood) else make_likelihood(
            likelihood, data_dim, binarize, gaussian_std, learn_std)
        super().__init__(mlp(latent_dim, decoder_hidden, data_dim, activation), lik, data_dim, latent_dim, clusters,
                         encoder_hidden, kl_weight, activation, flow=flow, flow_hidden=flow_hidden)
        self.config = {**_mixture_config("gmvae", data_dim, latent_dim, clusters, encoder_hidden, lik, kl_weight,
                                         activation, flow, flow_hidden),
                       "decoder_hidden": [int(h) for h in decoder_hidden]}


class LIDGMVAE(MixtureVAE):
    """Latent-identifiable GMVAE: the mixture prior with the injective Brenier-map decoder.

    The decoder is :func:`lidvae_ext.core.model.make_lid_decoder` with the same
    options as :class:`lidvae_ext.families.LIDVAE` (ICNN width/depth, α, β, backend);
    ``flow``/``flow_hidden`` as for :class:`GMVAE`.
    """

    def __init__(self, data_dim: int, latent_dim: int, clusters: int = 10, encoder_hidden: Sequence[int] = (256, 256),
                 icnn_hidden: int = 128, icnn_layers: int = 2, strong_convexity: float = 0.0, beta: str = "fixed",
                 backend: str = "auto", likelihood: str | Likelihood = "bernoulli", kl_weight: float = 1.0,
                 binarize: bool = False, gaussian_std: float = 0.1, learn_std: bool = False,
                 activation: str = "relu", beta_basis: Tensor | None = None, flow: bool = False,
                 flow_hidden: Sequence[int] = FLOW_HIDDEN) -> None:
        lik = likelihood if isinstance(likelihood, Likelihood) else make_likelihood(
            likelihood, data_dim, binarize, gaussian_std, learn_std)
        dec = make_lid_decoder(latent_dim, data_dim, icnn_hidden, icnn_layers, strong_convexity, beta, backend,
                               beta_basis)
        super().__init__(dec, lik, data_dim, latent_dim, clusters, encoder_hidden, kl_weight, activation,
                         flow=flow, flow_hidden=flow_hidden)
        self.config = {**_mixture_config("lidgmvae", data_dim, latent_dim, clusters, encoder_hidden, lik, kl_weight,
                                         activation, flow, flow_hidden), "icnn_hidden": int(icnn_hidden), "icnn_layers": int(icnn_layers),
                       "strong_convexity": float(strong_convexity), "beta": beta, "backend": backend}


def build_mixture_model(kind: str, cfg: dict[str, Any], likelihood: Likelihood,
                        backend: str | None = None) -> MixtureVAE:
    """Rebuild a :class:`GMVAE` / :class:`LIDGMVAE` from its config (``model`` and ``likelihood`` popped)."""
    cfg = dict(cfg)
    if kind == "gmvae":
        return GMVAE(likelihood=likelihood, **cfg)
    if kind == "lidgmvae":
        if backend is not None:
            cfg["backend"] = backend
        return LIDGMVAE(likelihood=likelihood, **cfg)
    raise ValueError(f"unknown mixture model kind {kind!r} (expected 'gmvae' or 'lidgmvae')")


def build_mixture_from_spec(kind: str, opts: Any, lid_options: dict[str, Any], flow: bool = False,
                            **common: Any) -> MixtureVAE:
    """The mixture model a run's ``ModelSpec``/``ModelOptions`` name (called by ``training.build_from_spec``).

    Parameters
    ----------
    kind : {"gmvae", "lidgmvae"}
    opts : ModelOptions
        Supplies ``clusters`` and (GMVAE) ``decoder_hidden``.
    lid_options : dict
        ``training.lid_decoder_options`` — the same decoder options as the LIDVAE's.
    flow : bool
        The volume-preserving flow on q(z|x,y) (a ``-flow`` model name or ``ModelOptions.flow``).
    **common
        data_dim, latent_dim, encoder_hidden, likelihood, kl_weight, binarize, gaussian_std, learn_std, activation.
    """
    clusters = opts.clusters
    if isinstance(clusters, bool) or not isinstance(clusters, int) or clusters < 1:
        raise ValueError(f"clusters (--clusters) must be a positive integer, got {clusters!r}")
    if kind == "gmvae":
        return GMVAE(clusters=clusters, decoder_hidden=tuple(opts.decoder_hidden), flow=bool(flow), **common)
    if kind == "lidgmvae":
        return LIDGMVAE(clusters=clusters, flow=bool(flow), **lid_options, **common)
    raise ValueError(f"unknown mixture model kind {kind!r} (expected 'gmvae' or 'lidgmvae')")
