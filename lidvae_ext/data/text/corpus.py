"""Text corpora for sentence VAEs: ``synthetic-text``, ``wordnet`` and a user's text file.

Everything is local and seeded; nothing is downloaded. :func:`load_text_dataset`
returns a :class:`TextDataset` of padded id tensors (see :mod:`.vocab`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .synthetic import SyntheticTextConfig, generate_synthetic_text
from .vocab import Vocabulary, pad_sequences, tokenize

TEXT_BUILTIN = ("synthetic-text", "wordnet")
WORDNET_DIR = Path("/usr/share/wordnet")  # where Debian's wordnet-base puts the database
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
SYNTHETIC_SIZES = (16000, 2000, 2000)
_QUOTED = re.compile(r'"([^"]+)"')


@dataclass
class TextDataset:
    """Train/validation/test splits of padded token ids and the vocabulary.

    Attributes
    ----------
    name : str
    vocab : Vocabulary
    train, val, test : Tensor
        (N, T) int64 rows ``<s> w… </s> <pad>…``.
    train_latents, val_latents, test_latents : Tensor, optional
        The generating latents (``synthetic-text`` only).
    """

    name: str
    vocab: Vocabulary
    train: Tensor
    val: Tensor
    test: Tensor
    train_latents: Tensor | None = None
    val_latents: Tensor | None = None
    test_latents: Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: the sizes of the splits, the vocabulary, the training words and the longest sentence."""
        tok = int(((self.train != 0).sum() - 2 * self.train.shape[0]))
        return (f"{self.name}: {self.train.shape[0]}/{self.val.shape[0]}/{self.test.shape[0]} sentences "
                f"(train/val/test), |V| = {len(self.vocab)}, {tok} train words, max length {self.train.shape[1] - 2}")


def is_text_data(name: str | None) -> bool:
    """True for ``synthetic-text``, ``wordnet`` and ``*.txt`` paths."""
    return name is not None and (name in TEXT_BUILTIN or str(name).lower().endswith(".txt"))


def _split(n: int, sizes: tuple[int | None, int | None, int | None], seed: int, fractions=(0.8, 0.1, 0.1)):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) + 7919))
    n_val = sizes[1] if sizes[1] is not None else max(1, int(round(fractions[1] * n)))
    n_test = sizes[2] if sizes[2] is not None else max(1, int(round(fractions[2] * n)))
    n_train = sizes[0] if sizes[0] is not None else n - n_val - n_test
    if min(n_train, n_val, n_test) < 1 or n_train + n_val + n_test > n:
        raise ValueError(f"cannot split {n} sentences into train/val/test = {n_train}/{n_val}/{n_test}")
    return order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:n_train + n_val + n_test]


def _from_sentences(name: str, sentences: list[list[str]], sizes, seed: int, vocab_size: int, min_count: int,
                    max_len: int, info: dict[str, Any]) -> TextDataset:
    kept = [s for s in sentences if 1 <= len(s) <= max_len]
    if len(kept) < 3:
        raise ValueError(f"{name}: only {len(kept)} sentences of 1..{max_len} tokens (of {len(sentences)}); "
                         "need at least 3 (one per split)")
    tr, va, te = _split(len(kept), sizes, seed)
    vocab = Vocabulary.build([kept[i] for i in tr.tolist()], max_size=vocab_size, min_count=min_count)

    def ids(idx: Tensor) -> Tensor:
        return pad_sequences([vocab.encode(kept[i]) for i in idx.tolist()], len(vocab))

    width = 2 + max(len(kept[i]) for i in range(len(kept)))
    out = [torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in (ids(tr), ids(va), ids(te))]
    info = {**info, "sentences_total": len(sentences), "sentences_kept": len(kept), "max_len": max_len}
    return TextDataset(name, vocab, *out, info=info)


def read_wordnet_examples(data_dir: str | os.PathLike | None = None, glosses: bool = False) -> list[str]:
    """The quoted example sentences (or, with ``glosses``, also the definitions) of WordNet's data files."""
    root = Path(data_dir) if data_dir is not None else WORDNET_DIR
    missing = [f for f in WORDNET_FILES if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"WordNet database not found: {', '.join(str(root / f) for f in missing)} missing. Install the "
            "Debian package wordnet-base (apt-get install -y wordnet-base) or pass --data-dir DIR with "
            f"the files {', '.join(WORDNET_FILES)}")
    out: list[str] = []
    for fname in WORDNET_FILES:
        with open(root / fname, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  ") or "|" not in line:  # license header / malformed
                    continue
                gloss = line.split("|", 1)[1].strip()
                if glosses:
                    definition = gloss.split('"', 1)[0].strip().rstrip(";").strip()
                    if definition:
                        out.append(definition)
                out.extend(e.strip() for e in _QUOTED.findall(gloss) if e.strip())
    if not out:
        raise ValueError(f"no example sentences found in the WordNet files under {root}")
    return out


def read_text_file(path: str | os.PathLike) -> list[str]:
    """Non-empty lines of a UTF-8 text file (one sentence per line)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"text file {p} does not exist")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"text file {p} is not valid UTF-8 (byte {exc.start}): expected one sentence per line") from exc
    lines = [ln.strip() for ln in lines if ln.strip()]
    if not lines:
        raise ValueError(f"text file {p} has no non-empty lines: expected one sentence per line")
    return lines


def load_text_dataset(name: str, data_dir: str | None = None, train_size: int | None = None,
                      val_size: int | None = None, test_size: int | None = None, seed: int = 0,
                      vocab_size: int | None = None, min_count: int = 1, max_len: int = 20,
                      glosses: bool = False) -> TextDataset:
    """Load ``synthetic-text``, ``wordnet`` or a ``.txt`` file.

    Parameters
    ----------
    name : str
        Dataset name or path of a text file (one sentence per line).
    data_dir : str, optional
        WordNet database directory (default: Debian's).
    train_size, val_size, test_size : int, optional
        Split sizes (synthetic default 16000/2000/2000; otherwise 80/10/10 %).
    seed : int
        Generator seed (synthetic) or split seed.
    vocab_size : int, optional
        Vocabulary size including the 4 specials (synthetic: the generator's,
        default 1000; others: most frequent training tokens, default 2000 for
        WordNet, all for files); rarer tokens become ``<unk>``.
    min_count : int
        Minimum training-set count of a vocabulary word.
    max_len : int
        Sentences with more tokens are dropped (synthetic: the generator's maximum).
    glosses : bool
        Also use the definitions of WordNet (about 117k more sentences).
    """
    if name == "synthetic-text":
        sizes = tuple(d if s is None else s for s, d in zip((train_size, val_size, test_size), SYNTHETIC_SIZES))
        if min(sizes) < 1:
            raise ValueError(f"synthetic-text split sizes must be positive, got {sizes}")
        cfg = SyntheticTextConfig(vocab_size=vocab_size or 1000, max_len=max_len)
        tokens, latents, vocab = generate_synthetic_text(sum(sizes), seed=seed, config=cfg)
        a, b = sizes[0], sizes[0] + sizes[1]
        return TextDataset(name, vocab, tokens[:a], tokens[a:b], tokens[b:], latents[:a], latents[a:b], latents[b:],
                           info={"generator": vars(cfg), "seed": seed, "max_len": max_len})
    sizes = (train_size, val_size, test_size)
    if name == "wordnet":
        sents = [tokenize(s) for s in read_wordnet_examples(data_dir, glosses)]
        return _from_sentences(name, sents, sizes, seed, vocab_size or 2000, min_count, max_len,
                               {"glosses": glosses})
    if str(name).lower().endswith(".txt"):
        sents = [tokenize(s) for s in read_text_file(name)]
        return _from_sentences(str(name), sents, sizes, seed, vocab_size, min_count, max_len, {})
    raise ValueError(f"unknown text data {name!r}: expected 'synthetic-text', 'wordnet' or a .txt file")
