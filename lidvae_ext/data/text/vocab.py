"""Vocabulary, tokenizer and padded token tensors for sentence VAEs.

A sentence of n words is stored as the row ``<s> w_1 … w_n </s> <pad> …`` of
a (N, T) ``int64`` tensor; ``<pad>`` is id 0, so lengths are
``(row != PAD).sum() - 2`` and every model masks on ``!= PAD``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

_TOKEN = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words (with clitics such as ``'s``) and single punctuation marks."""
    return _TOKEN.findall(text.lower())


class Vocabulary:
    """Token ↔ id map whose first four entries are ``<pad> <s> </s> <unk>``.

    Parameters
    ----------
    tokens : sequence of str
        All tokens in id order, the four specials first.
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        tokens = list(tokens)
        if tuple(tokens[:4]) != SPECIALS:
            raise ValueError(f"vocabulary must start with the specials {list(SPECIALS)}, got {tokens[:4]}")
        if len(set(tokens)) != len(tokens):
            dup = sorted(t for t, c in Counter(tokens).items() if c > 1)[:5]
            raise ValueError(f"vocabulary has duplicate tokens, e.g. {dup}")
        bad = [t for t in tokens if not isinstance(t, str) or not t or any(ch.isspace() for ch in t)]
        if bad:
            raise ValueError(f"vocabulary tokens must be non-empty strings without whitespace, got {bad[:5]}")
        self.itos = tokens
        self.stoi = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], max_size: int | None = None, min_count: int = 1) -> "Vocabulary":
        """Most frequent tokens first (ties alphabetically), at most ``max_size`` entries in all."""
        if max_size is not None and max_size < len(SPECIALS) + 1:
            raise ValueError(f"max_size must be at least {len(SPECIALS) + 1} (the specials and one word), "
                             f"got {max_size}")
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        counts = Counter(t for s in sentences for t in s if t not in SPECIALS)
        words = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        if max_size is not None:
            words = words[:max_size - len(SPECIALS)]
        if not words:
            raise ValueError("cannot build a vocabulary: no token occurs often enough "
                             f"(min_count={min_count}, {sum(counts.values())} tokens in all)")
        return cls([*SPECIALS, *words])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Ids of ``tokens`` (unknown ones → ``<unk>``), without ``<s>``/``</s>``."""
        return [self.stoi.get(t, UNK_ID) for t in tokens]

    def decode(self, ids: Iterable[int], strip: bool = True) -> list[str]:
        """Tokens of ``ids``; with ``strip`` stops at ``</s>`` and drops ``<s>``/``<pad>``."""
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.itos):
                raise ValueError(f"token id {i} out of range for a vocabulary of {len(self.itos)}")
            if strip and i == EOS_ID:
                break
            if strip and i in (PAD_ID, BOS_ID):
                continue
            out.append(self.itos[i])
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for checkpoints and JSON)."""
        return {"tokens": list(self.itos)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Vocabulary":
        """The vocabulary :meth:`to_dict` wrote (e.g. into a checkpoint); ``ValueError`` if it is malformed."""
        if not isinstance(d, dict) or not isinstance(d.get("tokens"), list):
            raise ValueError("a vocabulary dict must be {'tokens': [...]}")
        return cls(d["tokens"])


def pad_sequences(seqs: Sequence[Sequence[int]], vocab_size: int, max_len: int | None = None) -> Tensor:
    """(N, T) tensor of rows ``<s> ids </s> <pad>…`` with T = 2 + the longest sentence.

    Raises ``ValueError`` for empty sentences, ids outside ``[4, vocab_size)``
    other than ``<unk>``, or sentences longer than ``max_len``.
    """
    if not seqs:
        raise ValueError("no sentences")
    longest = max(len(s) for s in seqs)
    if max_len is not None and longest > max_len:
        raise ValueError(f"a sentence has {longest} tokens, more than max_len={max_len}")
    out = torch.full((len(seqs), longest + 2), PAD_ID, dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s) == 0:
            raise ValueError(f"sentence {i} is empty")
        row = torch.as_tensor(list(s), dtype=torch.long)
        if bool(((row < UNK_ID) | (row >= vocab_size)).any()):
            raise ValueError(f"sentence {i} has token ids outside [{UNK_ID}, {vocab_size}): {row.tolist()}")
        out[i, 0] = BOS_ID
        out[i, 1:len(s) + 1] = row
        out[i, len(s) + 1] = EOS_ID
    return out


def check_tokens(x: Tensor, vocab_size: int, name: str = "x") -> Tensor:
    """Validate a padded (B, T) id tensor: ``<s>`` first, one ``</s>``, then only padding."""
    if x.dim() != 2 or x.dtype != torch.long or x.shape[1] < 3:
        raise ValueError(f"{name} must be a (B, T >= 3) int64 tensor of token ids, got {tuple(x.shape)} {x.dtype}")
    if bool(((x < 0) | (x >= vocab_size)).any()):
        raise ValueError(f"{name} has token ids outside [0, {vocab_size}) (min {int(x.min())}, max {int(x.max())})")
    if bool((x[:, 0] != BOS_ID).any()):
        raise ValueError(f"every row of {name} must start with <s> (id {BOS_ID})")
    valid = x != PAD_ID
    lengths = valid.sum(1)
    if bool((valid.long().diff(dim=1) > 0).any()):
        raise ValueError(f"{name} has tokens after padding")
    last = x.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)
    if bool((last != EOS_ID).any()) or bool(((x == EOS_ID).sum(1) != 1).any()):
        raise ValueError(f"every row of {name} must end with exactly one </s> (id {EOS_ID}) before the padding")
    return lengths
