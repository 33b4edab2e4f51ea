"""``synthetic-text``: sentences from a random LSTM language model driven by a Gaussian latent.

Ground truth for the collapse question: every sentence is generated from its
own latent z* ~ N(0, I_k) (k = 4 by default), which is kept, so one can ask
whether a trained VAE's posterior means predict z*.

The generator (all weights drawn from ``torch.Generator(seed)``, float64, so
the corpus is a pure function of the seed and the sizes):

* (h_0, c_0) = (tanh(W_h z*), W_c z*);
* h_t, c_t = LSTMCell([E w_{t-1}; z*], (h_{t-1}, c_{t-1}));
* p(w_t | ·) = softmax(s_o · W_o h_t + s_z · U z* + b), b a Zipf-like unigram bias;
* the sentence ends after token t with probability σ(a + v·h_t + r·z*) for
  ``min_len ≤ t < max_len`` and surely at ``max_len``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .vocab import SPECIALS, Vocabulary, pad_sequences


BLOCK = 1024  # sentences per random stream


@dataclass
class SyntheticTextConfig:
    """Sizes and scales of the generator (defaults: the documented ``synthetic-text``)."""

    vocab_size: int = 1000
    latent_dim: int = 4
    embed_dim: int = 32
    hidden: int = 64
    min_len: int = 5
    max_len: int = 20
    word_scale: float = 2.0
    latent_scale: float = 1.5
    zipf: float = 1.0
    stop_bias: float = -2.0


def _generator_weights(cfg: SyntheticTextConfig, gen: torch.Generator) -> dict[str, Tensor]:
    def randn(*shape: int, scale: float = 1.0) -> Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * scale

    nw, k, e, h = cfg.vocab_size - len(SPECIALS), cfg.latent_dim, cfg.embed_dim, cfg.hidden
    ranks = torch.randperm(nw, generator=gen).double() + 1.0
    return {
        "E": randn(nw + 1, e),  # row nw: the <s> embedding
        "W_h": randn(h, k, scale=1 / math.sqrt(k)), "W_c": randn(h, k, scale=1 / math.sqrt(k)),
        "W_ih": randn(4 * h, e + k, scale=1.5 / math.sqrt(e + k)), "W_hh": randn(4 * h, h, scale=1.5 / math.sqrt(h)),
        "b": randn(4 * h, scale=0.1),
        "W_o": randn(nw, h, scale=cfg.word_scale / math.sqrt(h)), "U": randn(nw, k, scale=cfg.latent_scale / math.sqrt(k)),
        "unigram": -cfg.zipf * ranks.log(),
        "v": randn(h, scale=1 / math.sqrt(h)), "r": randn(k, scale=0.3),
    }


def generate_synthetic_text(n: int, seed: int = 0, config: SyntheticTextConfig | None = None
                            ) -> tuple[Tensor, Tensor, Vocabulary]:
    """Sample ``n`` sentences (the first ``m`` of them are the same for every ``n ≥ m``).

    Returns
    -------
    tokens : Tensor
        (n, max_len + 2) int64 rows ``<s> w… </s> <pad>…``.
    latents : Tensor
        (n, latent_dim) float32, the z* of each sentence.
    vocab : Vocabulary
        ``<pad> <s> </s> <unk> w0 w1 …`` (``<unk>`` never occurs).
    """
    cfg = config or SyntheticTextConfig()
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    if cfg.vocab_size < len(SPECIALS) + 2:
        raise ValueError(f"vocab_size must be at least {len(SPECIALS) + 2}, got {cfg.vocab_size}")
    if not 1 <= cfg.min_len <= cfg.max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {cfg.min_len}, {cfg.max_len}")
    w = _generator_weights(cfg, torch.Generator().manual_seed(int(seed)))
    nw, hdim = cfg.vocab_size - len(SPECIALS), cfg.hidden
    all_z, sentences = [], []
    for block, start in enumerate(range(0, n, BLOCK)):
        # each block of BLOCK sentences has its own stream: the first n sentences do not depend on n
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + 7 + block)
        b = BLOCK
        z = torch.randn(b, cfg.latent_dim, generator=gen, dtype=torch.float64)
        h, c = torch.tanh(z @ w["W_h"].t()), z @ w["W_c"].t()
        prev = torch.full((b,), nw, dtype=torch.long)
        bias_z = z @ w["U"].t() + w["unigram"]  # (b, nw)
        words = torch.zeros(b, cfg.max_len, dtype=torch.long)
        lengths = torch.full((b,), cfg.max_len, dtype=torch.long)
        alive = torch.ones(b, dtype=torch.bool)
        for t in range(cfg.max_len):
            gates = torch.cat([w["E"][prev], z], 1) @ w["W_ih"].t() + h @ w["W_hh"].t() + w["b"]
            i, f, g, o = gates.split(hdim, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            logits = h @ w["W_o"].t() + bias_z  # Gumbel-max sampling from softmax(logits)
            u = torch.rand(logits.shape, generator=gen, dtype=torch.float64).clamp_(min=1e-300)
            tok = (logits - (-u.log()).log()).argmax(1)
            words[:, t] = tok
            stop_p = torch.sigmoid(cfg.stop_bias + h @ w["v"] + z @ w["r"])
            stop = torch.rand(b, generator=gen, dtype=torch.float64) < stop_p
            ending = alive & stop & (t + 1 >= cfg.min_len)
            lengths[ending] = t + 1
            alive &= ~ending
            prev = tok
        all_z.append(z.float())
        for row, length in zip(words.tolist(), lengths.tolist()):
            sentences.append([tok + len(SPECIALS) for tok in row[:length]])
    vocab = Vocabulary([*SPECIALS, *(f"w{i}" for i in range(nw))])
    sentences, all_z = sentences[:n], [torch.cat(all_z)[:n]]
    tokens = pad_sequences(sentences, len(vocab))
    if tokens.shape[1] < cfg.max_len + 2:  # fixed width, whatever the longest sample
        tokens = torch.nn.functional.pad(tokens, (0, cfg.max_len + 2 - tokens.shape[1]))
    return tokens, torch.cat(all_z), vocab
