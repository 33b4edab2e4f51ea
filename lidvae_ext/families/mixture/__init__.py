"""The mixture-prior family: GMVAE vs LIDGMVAE on images (p(z) = Σ_y (1/C) N(μ_y, σ_y²)).

Two latents can collapse here: the continuous z and the cluster y. Models in
:mod:`.models` (with the optional volume-preserving flow of :mod:`.flow`), their
metrics for both latents in :mod:`.metrics`, their figures in :mod:`.figures`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ...core.likelihoods import build_likelihood
from ...core.options import ModelOptions, image_model_kwargs, lid_decoder_options
from ...core.spec import ModelSpec, SpecGrammar
from ..base import Column, Family
from .figures import plot_cluster_traversals, write_mixture_figures
from .diagnostics import cluster_posterior
from .metrics import evaluate_mixture
from .models import GMVAE, LIDGMVAE, MixtureVAE, build_mixture_from_spec, build_mixture_model


def _clusters_cell(m: dict[str, Any]) -> str:
    return f"{m['active_clusters']}/{m['clusters']}" if "clusters" in m else "–"


def _accuracy_cell(m: dict[str, Any]) -> str:
    acc = m.get("cluster_accuracy")
    return "–" if "clusters" not in m or acc is None else f"{acc:.3f}"


class MixtureFamily(Family):
    """GMVAE / LIDGMVAE / β-GMVAE (``-flow``: with the flow on q(z|x,y)) on image rows."""

    def build(self, spec: ModelSpec, ds: Any, options: ModelOptions, fit_x: Tensor | None) -> nn.Module:
        """See :meth:`lidvae_ext.families.base.Family.build`."""
        return build_mixture(spec, ds.dim, options, fit_x)

    def latent_diagnostics(self, model: nn.Module, x: Any, posterior_samples: int, seed: int) -> dict[str, Any]:
        """The exact posterior of the cluster y against q(y|x) (:mod:`.diagnostics`)."""
        return cluster_posterior(model, x, posterior_samples, seed=seed)

    def rebuild(self, config: dict[str, Any], backend: str | None = None) -> nn.Module:
        """See :meth:`lidvae_ext.families.base.Family.rebuild`."""
        cfg = dict(config)
        kind, lik = cfg.pop("model"), build_likelihood(cfg.pop("likelihood"))
        return build_mixture_model(kind, cfg, lik, backend)

    def evaluate(self, model: nn.Module, ds: Any, eval_opts: Any) -> dict[str, Any]:
        """See :meth:`lidvae_ext.families.base.Family.evaluate`."""
        return evaluate_mixture(model, ds.test, labels=ds.test_labels, au_threshold=eval_opts.au_threshold,
                                iwae_samples=eval_opts.iwae_samples, mi_samples=eval_opts.mi_samples,
                                batch_size=eval_opts.batch_size, seed=eval_opts.seed)

    def model_fields(self, model: nn.Module) -> dict[str, Any]:
        """``flow``: whether q(z|x,y) is followed by the volume-preserving flow."""
        return {"flow": model.flow is not None}

    def table_columns(self) -> list[Column]:
        """Active clusters and cluster accuracy."""
        return [("active clusters", _clusters_cell), ("cluster accuracy", _accuracy_cell)]

    def figures(self, models: dict[str, nn.Module], ds: Any, results: dict[str, dict[str, Any]], out: Path,
                seed: int) -> list[Path]:
        """Within-cluster traversals, samples per cluster and the cluster usage."""
        test_x = next(iter(models.values())).likelihood.fixed_targets(ds.test, 0)
        paths = []
        traversals = plot_cluster_traversals(models, test_x, ds.image_shape, out / "cluster_traversals.png")
        if traversals is not None:
            paths.append(traversals)
        return paths + write_mixture_figures(models, results, ds.image_shape, out, seed=seed)


# The LIDGMVAE's β when the run names none: at convergence on digits (3 seeds) β = random kept every
# unit within clusters with clusters as good as the GMVAE's; β = pca let z take over y (docs/results.md).
MIXTURE_DEFAULT_BETA = "random"


def build_mixture(spec: ModelSpec, data_dim: int, opts: ModelOptions, train_x: Tensor | None = None) -> MixtureVAE:
    """The GMVAE or LIDGMVAE ``spec`` names, with the run's options (the LID decoder's as the LIDVAE's)."""
    lid = (lid_decoder_options(opts, train_x, spec.strong_convexity, spec.beta, default_beta=MIXTURE_DEFAULT_BETA)
           if spec.model == "lidgmvae" else {})
    return build_mixture_from_spec(spec.model, opts, lid, flow=spec.flow or opts.flow,
                                   **image_model_kwargs(spec, data_dim, opts))


FAMILY = MixtureFamily(
    name="mixture",
    grammar=SpecGrammar(bases=("gmvae", "lidgmvae"), beta_bases=("gmvae",), lid_bases=("lidgmvae",),
                        flow_bases=("gmvae", "lidgmvae")),
    data_kind="images",
    default_models="gmvae,lidgmvae",
)

__all__ = ["FAMILY", "GMVAE", "LIDGMVAE", "MixtureFamily", "MixtureVAE", "build_mixture", "evaluate_mixture"]
