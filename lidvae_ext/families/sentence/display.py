"""What a person reads of a sentence VAE: reconstructions, samples and homotopies, decoded to words."""

from __future__ import annotations

from typing import Any

import torch

from ...data.text import TextDataset
from ...data.text.vocab import UNK_ID
from .models import SentenceVAE


def _text(vocab: Any, rows: torch.Tensor) -> list[str]:
    return [" ".join(vocab.decode(r)) for r in rows]


def token_rate(x: torch.Tensor, token_id: int) -> float:
    """Fraction of the words of id rows ``x`` (specials and padding excluded) that are ``token_id``."""
    words = x >= UNK_ID  # <unk> and the vocabulary's words; not <pad>, <s>, </s>
    return float((x[words] == token_id).sum()) / max(1, int(words.sum()))


def homotopy_ends(x: torch.Tensor, pool: int = 50) -> torch.Tensor:
    """Two test sentences to interpolate between: of the first ``pool`` rows, the two with the most
    known words (fewest ``<unk>``, then the longest; ties by order). The same pair for every model."""
    rows = x[:pool]
    known = ((rows > UNK_ID).sum(1) * 1000 - (rows == UNK_ID).sum(1)).tolist()
    best = sorted(range(len(known)), key=lambda i: (-known[i], i))[:2]
    return rows[best]


def decoded_examples(model: SentenceVAE, ds: TextDataset, show: torch.Tensor, seed: int,
                     max_len: int) -> dict[str, Any]:
    """What a person reads of a sentence VAE: reconstructions, samples, homotopies, without ``<unk>``.

    Returns ``lines`` (reconstructions and samples), ``homotopy`` (the greedy sentences along the line
    between the posterior means of :func:`homotopy_ends`, Bowman et al. 2016) and ``unk_rate_greedy``
    (how much of the *unrestricted* greedy reconstructions is ``<unk>``).
    """
    raw = model.reconstruct(show, max_len=max_len)
    recon = model.reconstruct(show, max_len=max_len, allow_unk=False)
    samples = model.sample(len(show), generator=torch.Generator().manual_seed(seed), max_len=max_len,
                           allow_unk=False)
    greedy = model.sample(len(show), generator=torch.Generator().manual_seed(seed), max_len=max_len, greedy=True,
                          allow_unk=False)
    lines = ["reconstructions (greedy from E_q[z|x]):"]
    lines += [f"  x: {a}\n  →  {b}" for a, b in zip(_text(ds.vocab, show), _text(ds.vocab, recon))]
    lines += ["samples z ~ N(0, I), sampled tokens:", *(f"  {s}" for s in _text(ds.vocab, samples)),
              "samples z ~ N(0, I), greedy tokens:", *(f"  {s}" for s in _text(ds.vocab, greedy))]
    homotopy = []
    if ds.test.shape[0] >= 2:
        pair = homotopy_ends(ds.test)
        path = model.homotopy(pair[:1], pair[1:2], steps=7, max_len=max_len, allow_unk=False)
        ends = _text(ds.vocab, pair)
        homotopy = [f"from: {ends[0]}", *(f"  t={t:.2f}  {s}" for t, s in
                                          zip(torch.linspace(0, 1, 7).tolist(), _text(ds.vocab, path))),
                    f"to:   {ends[1]}"]
    return {"lines": lines, "homotopy": homotopy, "unk_rate_greedy": token_rate(raw, UNK_ID)}


