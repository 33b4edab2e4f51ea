"""What a model family is: the interface :mod:`lidvae_ext.runner` and :mod:`lidvae_ext.cli` use.

A family is one package under :mod:`lidvae_ext.families` (its models, metrics,
figures and options) and one :class:`Family` object, registered in
:data:`lidvae_ext.families.FAMILIES`. The runner never asks what a model *is*;
it asks the model's family to build, rebuild, evaluate and draw it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..core.spec import ModelSpec, SpecGrammar

# an extra column of the comparison table: (header, cell of one model's metrics)
Column = tuple[str, Any]


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one object per family
class Family:
    """One model family.

    Attributes
    ----------
    name : str
        ``"gaussian"``, ``"mixture"``, ``"sentence"``.
    grammar : SpecGrammar
        The model names it accepts (its bases are the ``model.config["model"]`` kinds it rebuilds).
    data_kind : {"images", "text"}
        The data its models take: rows of D values in [0, 1] or padded token ids
        (:mod:`lidvae_ext.runner.datakinds` loads them).
    default_models : str
        What ``compare`` trains for this family when ``--models`` is not given.
    cli_defaults : dict
        Defaults of the shared CLI options that differ for this family's runs
        (``epochs``, ``batch_size``, ``grad_clip``, ``eval_batch_size``, ``diagnostics``).
    supports_diagnostics : bool
        Whether :func:`lidvae_ext.diagnostics.diagnose` (decoder sensitivity, SNIS posterior) applies.
    """

    name: str
    grammar: SpecGrammar
    data_kind: str
    default_models: str
    cli_defaults: dict[str, Any] = field(default_factory=dict)
    supports_diagnostics: bool = True

    def latent_diagnostics(self, model: nn.Module, x: Any, posterior_samples: int, seed: int) -> dict[str, Any]:
        """Diagnostics of the family's latents beyond z on prepared held-out rows ``x`` (the
        ``extra`` of :func:`lidvae_ext.diagnostics.diagnose`); none by default."""
        return {}

    # -- models -------------------------------------------------------------------------------
    def parse(self, text: str) -> ModelSpec:
        """The :class:`ModelSpec` of a model name of this family."""
        return self.grammar.parse(text)

    def build(self, spec: ModelSpec, ds: Any, options: Any, fit_x: Any) -> nn.Module:
        """A new model for ``spec`` on dataset ``ds`` with the run's ``options`` (a data-dependent β
        is fitted on ``fit_x``, the rows the model trains on)."""
        raise NotImplementedError

    def rebuild(self, config: dict[str, Any], backend: str | None = None) -> nn.Module:
        """The model a checkpoint's ``model_config`` describes (``backend`` overrides a LID model's)."""
        raise NotImplementedError

    # -- metrics and report ---------------------------------------------------------------------
    def evaluate(self, model: nn.Module, ds: Any, eval_opts: Any) -> dict[str, Any]:
        """Held-out metrics of ``model`` on ``ds``'s test split."""
        raise NotImplementedError

    def run_fields(self, spec: ModelSpec, model: nn.Module) -> dict[str, Any]:
        """What a report records of a trained model besides its metrics (α, β, ...)."""
        return {"kl_weight": model.kl_weight, "strong_convexity": model.config.get("strong_convexity"),
                "beta": model.config.get("beta")}

    def model_fields(self, model: nn.Module) -> dict[str, Any]:
        """Fields recorded after the shared ones of a trained model (the mixture family: ``flow``)."""
        return {}

    def log_line(self, name: str, m: dict[str, Any]) -> str:
        """One line on stderr after a model is evaluated."""
        return (f"[{name}] AU {m['active_units']}/{m['latent_dim']}, KL {m['kl']:.2f}, MI {m['mutual_info']:.2f}, "
                f"IWAE NLL {m['iwae_nll']:.2f} (train {m['seconds']:.1f}s, eval {m['eval_seconds']:.1f}s)")

    def table_columns(self) -> list[Column]:
        """Extra columns of the comparison table for this family's models."""
        return []

    def figures(self, models: dict[str, nn.Module], ds: Any, results: dict[str, dict[str, Any]], out: Path,
                seed: int) -> list[Path]:
        """Figures of this family's models of a comparison beyond the shared ones; their paths."""
        return []

    def sections(self, models: dict[str, nn.Module], ds: Any, results: dict[str, dict[str, Any]], out: Path,
                 seed: int) -> list[tuple[str, list[str]]]:
        """Sections (heading, lines) of ``report.md`` beyond the shared ones; may write files into ``out``."""
        return []
