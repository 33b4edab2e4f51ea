"""The model families and their registry.

=========== ===================== ============ ===========================================
family      models                data         package
=========== ===================== ============ ===========================================
gaussian    vae, lidvae           images       :mod:`lidvae_ext.families.gaussian`
mixture     gmvae, lidgmvae       images       :mod:`lidvae_ext.families.mixture`
sentence    svae, lidsvae         text         :mod:`lidvae_ext.families.sentence`
=========== ===================== ============ ===========================================

A new family is a package beside these with a :class:`~.base.Family` object,
added to :data:`FAMILIES` (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..checkpoint import load_model
from ..core.options import ModelOptions
from ..core.spec import ModelSpec, parse_spec_list
from .base import Family
from .gaussian import FAMILY as GAUSSIAN
from .mixture import FAMILY as MIXTURE
from .sentence import FAMILY as SENTENCE

FAMILIES: tuple[Family, ...] = (GAUSSIAN, MIXTURE, SENTENCE)


def _all_bases() -> str:
    return "; ".join(f.grammar.describe() for f in FAMILIES)


def family_of_spec(text: str) -> Family:
    """The family whose grammar names the base of model name ``text``; ``ValueError`` if none does."""
    for family in FAMILIES:
        if family.grammar.knows(text):
            return family
    raise ValueError(f"unknown model {text.strip()!r}: expected {_all_bases()}")


def family_of_kind(kind: Any) -> Family:
    """The family that builds ``model.config["model"] == kind``; ``ValueError`` if none does."""
    for family in FAMILIES:
        if kind in family.grammar.bases:
            return family
    raise ValueError(f"unknown model kind {kind!r}")


def parse_spec(text: str) -> ModelSpec:
    """The :class:`~lidvae_ext.core.spec.ModelSpec` of any family's model name."""
    return family_of_spec(text).parse(text)


def parse_model_list(text: str) -> list[ModelSpec]:
    """Comma-separated model names of any families; names must be unique."""
    return parse_spec_list(text, parse_spec)


def build_model(config: dict[str, Any], backend: str | None = None) -> nn.Module:
    """Rebuild any family's model from its ``config`` (e.g. a checkpoint's ``model_config``).

    ``backend`` overrides a LID model's Brenier-map backend (e.g. ``"auto"`` where the build is missing).
    """
    cfg = dict(config)
    if cfg.pop("custom_encoder", False):
        raise ValueError("cannot rebuild a model that was created with a custom encoder")
    return family_of_kind(cfg.get("model")).rebuild(cfg, backend)


def build_from_spec(spec: ModelSpec, data_dim: int, opts: ModelOptions, train_x: Tensor | None = None) -> nn.Module:
    """An image model (Gaussian or mixture family) for ``spec`` on D = ``data_dim`` with the run's options.

    ``train_x`` (the rows the model trains on) is where a data-dependent β (``"pca"``) is fitted.
    """
    family = family_of_kind(spec.model)
    if family.data_kind != "images":
        raise ValueError(f"{spec.name!r} is a {family.name} model: it takes {family.data_kind}, not image rows")
    return family.build(spec, _Rows(data_dim), opts, train_x)


def model_from_checkpoint(state: Any, backend: str | None = None, *, source: Any = None) -> nn.Module:
    """The trained model of a checkpoint (a path or a :func:`~lidvae_ext.checkpoint.load_checkpoint` dict),
    rebuilt by its family; see :func:`lidvae_ext.checkpoint.load_model` for the checks and errors."""
    return load_model(state, build_model, backend, source=source)


class _Rows:
    """The one thing an image family's ``build`` reads of a dataset: its dimension D."""

    def __init__(self, dim: int) -> None:
        self.dim = dim


__all__ = ["FAMILIES", "Family", "GAUSSIAN", "MIXTURE", "SENTENCE", "build_from_spec", "build_model",
           "family_of_kind", "family_of_spec", "model_from_checkpoint", "parse_model_list", "parse_spec"]
