"""Model names: the grammar ``base[-modifier]*`` every family's models share.

A name such as ``lidvae-alpha0.1-pca`` or ``betagmvae0.5`` is parsed by the
:class:`SpecGrammar` of the family whose base it names (each family declares
its grammar; :func:`lidvae_ext.families.parse_spec` finds the family):

* base: one of ``grammar.bases``, or ``beta<base><w>`` for a β-VAE (KL weight w)
  of a base in ``grammar.beta_bases``;
* modifiers: ``alpha<a>`` (strong convexity; LID bases only), ``kl<w>`` (KL weight),
  ``fixed``/``learned``/``pca``/``random`` (the β map; LID bases only), ``flow``
  (the bases in ``grammar.flow_bases``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..nn import BETA_MODES

NUMBER = r"(\d+(?:\.\d*)?(?:e[-+]?\d+)?|\.\d+)"


@dataclass
class ModelSpec:
    """A named model variant, e.g. ``vae``, ``lidvae-alpha0.1``, ``betagmvae0.5``, ``lidsvae-fixed``.

    ``model`` is the base kind (``model.config["model"]``); the other fields are what
    the modifiers set (None: the run's option applies).
    """

    name: str
    model: str
    kl_weight: float = 1.0
    strong_convexity: float | None = None
    beta: str | None = None
    flow: bool = False


@dataclass(frozen=True)
class SpecGrammar:
    """The model names one family accepts."""

    bases: tuple[str, ...]
    beta_bases: tuple[str, ...] = ()
    lid_bases: tuple[str, ...] = ()
    flow_bases: tuple[str, ...] = ()

    def knows(self, text: str) -> bool:
        """Whether the base of ``text`` (before the first ``-``) is one of this grammar's."""
        base = text.strip().lower().split("-")[0]
        return base in self.bases or any(re.fullmatch(f"beta{b}{NUMBER}", base) for b in self.beta_bases)

    def describe(self) -> str:
        """The bases and modifiers, for error messages."""
        bases = list(self.bases) + [f"beta{b}<w>" for b in self.beta_bases]
        mods = ["-kl<w>"] + (["-alpha<a>", *(f"-{m}" for m in BETA_MODES)] if self.lid_bases else []) + \
            (["-flow"] if self.flow_bases else [])
        return f"{', '.join(bases)} with optional {', '.join(mods)}"

    def parse(self, text: str) -> ModelSpec:
        """The :class:`ModelSpec` of ``text``; ``ValueError`` naming the bad part."""
        name = text.strip()
        base, *mods = name.lower().split("-")
        beta_vae = next((m for b in self.beta_bases if (m := re.fullmatch(f"beta({b}){NUMBER}", base))), None)
        if beta_vae:
            spec = ModelSpec(name, beta_vae.group(1), kl_weight=float(beta_vae.group(2)))
        elif base in self.bases:
            spec = ModelSpec(name, base)
        else:
            raise ValueError(f"unknown model {text!r}: expected {self.describe()}")
        for mod in mods:
            if (m := re.fullmatch(r"alpha" + NUMBER, mod)) and spec.model in self.lid_bases:
                spec.strong_convexity = float(m.group(1))
            elif m := re.fullmatch(r"kl" + NUMBER, mod):
                spec.kl_weight = float(m.group(1))
            elif mod in BETA_MODES and spec.model in self.lid_bases:
                spec.beta = mod
            elif mod == "flow" and spec.model in self.flow_bases:
                spec.flow = True
            else:
                raise ValueError(f"bad modifier {mod!r} in model {text!r} (alpha/{'/'.join(BETA_MODES)} are "
                                 "for the LID models only, flow for the mixture models)")
        return spec


def parse_spec_list(text: str, parse: Callable[[str], Any]) -> list[Any]:
    """Comma-separated model specs read by ``parse``; names must be unique."""
    specs = [parse(t) for t in text.split(",") if t.strip()]
    names = [s.name for s in specs]
    if not specs or len(set(names)) != len(names):
        raise ValueError(f"--models needs distinct, non-empty names, got {text!r}")
    return specs
