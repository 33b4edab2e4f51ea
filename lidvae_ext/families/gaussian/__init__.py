"""The Gaussian-prior family: VAE vs LIDVAE on images (p(z) = N(0, I)).

:class:`~.models.VAE` has an MLP decoder, :class:`~.models.LIDVAE` the Brenier-map
decoder; :func:`~.metrics.evaluate` gives their collapse metrics.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ...core.likelihoods import build_likelihood
from ...core.options import ModelOptions, image_model_kwargs, lid_decoder_options
from ...core.spec import ModelSpec, SpecGrammar
from ..base import Family
from .metrics import evaluate
from .models import LIDVAE, VAE


def evaluate_images(model: nn.Module, ds: Any, eval_opts: Any) -> dict[str, Any]:
    """:func:`evaluate` with a run's :class:`~lidvae_ext.runner.options.EvalOptions` on ``ds.test``."""
    return evaluate(model, ds.test, au_threshold=eval_opts.au_threshold, iwae_samples=eval_opts.iwae_samples,
                    mi_samples=eval_opts.mi_samples, batch_size=eval_opts.batch_size, seed=eval_opts.seed,
                    labels=ds.test_labels)


class GaussianFamily(Family):
    """VAE / LIDVAE / β-VAE on image rows."""

    def build(self, spec: ModelSpec, ds: Any, options: ModelOptions, fit_x: Tensor | None) -> nn.Module:
        """See :meth:`lidvae_ext.families.base.Family.build`."""
        return build_gaussian(spec, ds.dim, options, fit_x)

    def rebuild(self, config: dict[str, Any], backend: str | None = None) -> nn.Module:
        """See :meth:`lidvae_ext.families.base.Family.rebuild`."""
        cfg = dict(config)
        kind, lik = cfg.pop("model"), build_likelihood(cfg.pop("likelihood"))
        if kind == "lidvae" and backend is not None:
            cfg["backend"] = backend
        return {"vae": VAE, "lidvae": LIDVAE}[kind](likelihood=lik, **cfg)

    def evaluate(self, model: nn.Module, ds: Any, eval_opts: Any) -> dict[str, Any]:
        """See :meth:`lidvae_ext.families.base.Family.evaluate`."""
        return evaluate_images(model, ds, eval_opts)


def build_gaussian(spec: ModelSpec, data_dim: int, opts: ModelOptions, train_x: Tensor | None = None) -> nn.Module:
    """The VAE or LIDVAE ``spec`` names, with the run's options (a ``"pca"`` β is fitted on ``train_x``)."""
    common = image_model_kwargs(spec, data_dim, opts)
    if spec.model == "vae":
        return VAE(decoder_hidden=tuple(opts.decoder_hidden), **common)
    return LIDVAE(**lid_decoder_options(opts, train_x, spec.strong_convexity, spec.beta), **common)


FAMILY = GaussianFamily(
    name="gaussian",
    grammar=SpecGrammar(bases=("vae", "lidvae"), beta_bases=("vae",), lid_bases=("lidvae",)),
    data_kind="images",
    default_models="vae,lidvae",
)

__all__ = ["FAMILY", "GaussianFamily", "LIDVAE", "VAE", "build_gaussian", "evaluate", "evaluate_images"]
