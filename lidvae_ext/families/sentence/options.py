"""The sentence family's model options and defaults (chosen by measurement: docs/results.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

# α = 1: the smallest of the measured α ∈ {0.5, 0.75, 1} that keeps ≥ 0.8·K units active on both
# synthetic-text and WordNet (docs/results.md, "Sentence VAEs"); α = 0.5 keeps 24/32 and 9/32,
# α = 0.75 32/32 and 23/32.
TEXT_STRONG_CONVEXITY = 1.0
# β = "pca": the principal directions of the one-hot training tokens, z's block on the top K (the most
# frequent tokens). With β = [I; 0] the z block moves the logits of tokens H … H+K-1 — arbitrary, mostly
# rare words — and most units collapse (docs/results.md, "Sentence VAEs").
TEXT_BETA = "pca"


@dataclass
class TextModelOptions:
    """Architecture shared by the models of a run (defaults sized for a 2-core CPU)."""

    latent_dim: int = 32
    embed_dim: int = 64
    hidden: int = 128
    dropout: float = 0.2
    icnn_hidden: int = 64
    icnn_layers: int = 2
    strong_convexity: float = TEXT_STRONG_CONVEXITY
    beta: str = TEXT_BETA
    backend: str = "auto"
    likelihood: ClassVar[str] = "categorical"  # tokens: a softmax over the vocabulary (not an option)


