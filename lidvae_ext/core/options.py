"""The options of the image models (Gaussian and mixture families) and the LID decoder they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..nn import fit_beta


@dataclass
class ModelOptions:
    """Architecture options shared by every model of a run — the single source of the defaults.

    Defaults: MLPs 256×2, ICNN width 128, L = 2, strong convexity α = 0.5 and
    β = None, the family's own default (``default_beta`` of :func:`lid_decoder_options`):
    ``"pca"`` for the Gaussian family, a fixed embedding on the training split's
    top-K principal directions (fitted by :func:`lidvae_ext.nn.fit_beta` in
    the one resolver, :func:`lid_decoder_options`); ``"random"`` for the mixture
    family, where the principal directions let z take over the clusters' job
    (docs/results.md, mixture models at convergence). β = [I; 0] (``"fixed"``) puts the decoder's
    guaranteed sensitivity on the first K data coordinates — on 28×28 images
    the always-0 top rows, where it carries no likelihood information — and
    loses active units at convergence (docs/results.md, issue #9).
    ``clusters`` is C of the mixture-prior models; their LID decoder takes the
    same ICNN/α/β options as the LIDVAE's (:func:`lid_decoder_options`).
    """

    latent_dim: int = 32
    encoder_hidden: tuple[int, ...] = (256, 256)
    decoder_hidden: tuple[int, ...] = (256, 256)
    icnn_hidden: int = 128
    icnn_layers: int = 2
    strong_convexity: float = 0.5
    beta: str | None = None  # None: the family's default (DEFAULT_BETA here, the mixture family its own)
    backend: str = "auto"
    likelihood: str = "bernoulli"
    binarize: bool = False
    gaussian_std: float = 0.1
    learn_std: bool = False
    activation: str = "relu"
    clusters: int = 10  # C of the mixture-prior models (gmvae, lidgmvae)
    flow: bool = False  # mixture models: volume-preserving flow after q(z|x,y) (also the -flow model modifier)


DEFAULT_BETA = "pca"  # the LID image models' β when neither the model name nor the options name one


def lid_decoder_options(opts: ModelOptions, train_x: Tensor | None = None, strong_convexity: float | None = None,
                        beta: str | None = None, default_beta: str = DEFAULT_BETA) -> dict[str, Any]:
    """Keyword arguments of the LIDVAE decoder (``icnn_hidden``, ``icnn_layers``, ``strong_convexity``,
    ``beta``, ``backend``, ``beta_basis``) from the run's options — the one place the LIDVAE
    decoder defaults are resolved (any model with a :class:`lidvae_ext.LIDDecoder` should use it).

    ``strong_convexity``/``beta`` override the options (a model name's modifiers);
    ``default_beta`` is the family's β when neither names one;
    a data-dependent β (``"pca"``, ``"within"`` with ``opts.clusters`` k-means centres) is fitted on
    ``train_x`` (the training split) by
    :func:`lidvae_ext.nn.fit_beta`.
    """
    alpha = opts.strong_convexity if strong_convexity is None else strong_convexity
    beta = beta or opts.beta or default_beta
    return dict(icnn_hidden=opts.icnn_hidden, icnn_layers=opts.icnn_layers, strong_convexity=alpha, beta=beta,
                backend=opts.backend, beta_basis=fit_beta(beta, train_x, opts.latent_dim, clusters=opts.clusters))


def image_model_kwargs(spec: Any, data_dim: int, opts: ModelOptions) -> dict[str, Any]:
    """The constructor arguments every image model (Gaussian and mixture families) takes from a run
    (``spec``: a :class:`~lidvae_ext.core.spec.ModelSpec`, for its KL weight)."""
    return dict(data_dim=data_dim, latent_dim=opts.latent_dim, encoder_hidden=tuple(opts.encoder_hidden),
                likelihood=opts.likelihood, kl_weight=spec.kl_weight, binarize=opts.binarize,
                gaussian_std=opts.gaussian_std, learn_std=opts.learn_std, activation=opts.activation)
