"""What a run is told besides the model: its data (images or text) and its metrics settings.

Both data descriptions are recorded in checkpoints (``state["data"]``), so that
``evaluate`` reloads the data a model was trained on; :func:`data_options_from_record`
reads them back, refusing anything but the plain fields named here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..checkpoint import CheckpointError
from ..data import Dataset, load_dataset
from ..data.text import TextDataset, load_text_dataset


@dataclass
class DataOptions:
    """Image data to load: ``digits``, ``fashion-mnist`` or a ``.npy``/``.npz`` file."""

    name: str = "digits"
    data_dir: str | None = None
    train_size: int | None = None
    test_size: int | None = None
    seed: int = 0

    def load(self, likelihood: str = "bernoulli") -> Dataset:
        """The dataset (values must lie in [0, 1] for a Bernoulli likelihood)."""
        return load_dataset(self.name, self.data_dir, self.train_size, self.test_size, self.seed,
                            require_unit_interval=(likelihood == "bernoulli"))


@dataclass
class TextDataOptions(DataOptions):
    """Sentences to load: ``synthetic-text``, ``wordnet`` or a ``.txt`` file (one sentence per line);
    the fields of :class:`DataOptions` and the text's own."""

    name: str = "synthetic-text"
    val_size: int | None = None
    vocab_size: int | None = None
    min_count: int = 1
    max_len: int = 20
    glosses: bool = False

    def load(self, likelihood: str = "categorical") -> TextDataset:
        """The train/validation/test splits and the vocabulary."""
        return load_text_dataset(self.name, self.data_dir, self.train_size, self.val_size, self.test_size, self.seed,
                                 self.vocab_size, self.min_count, self.max_len, self.glosses)


@dataclass
class EvalOptions:
    """Metric settings."""

    iwae_samples: int = 100
    au_threshold: float = 0.01
    batch_size: int | None = 256  # None (evaluate): the default of the checkpoint's family
    mi_samples: int = 1
    seed: int = 0
    au_thresholds: tuple[float, ...] = (0.001, 0.01, 0.1)
    diagnostics: int = 0
    diagnostic_samples: int = 500


@dataclass
class RunResult:
    """Metrics (with ``seconds`` = training wall time) and where things were written."""

    metrics: dict[str, Any]
    out_dir: Path
    history: list[dict[str, float]] = field(default_factory=list)


def _field_types(cls: type) -> dict[str, tuple[type, ...]]:
    """The JSON types each field of a data-options class may hold in a checkpoint."""
    kinds = {"str": (str,), "int": (int,), "bool": (bool,), "str | None": (str, type(None)),
             "int | None": (int, type(None))}
    return {f.name: kinds[str(f.type)] for f in fields(cls)}


def data_options_from_record(cls: type, saved: dict[str, Any], path: Path | None) -> Any:
    """``cls(**saved)`` for a checkpoint's ``data`` record; ``CheckpointError`` naming a bad entry."""
    types = _field_types(cls)
    for key, value in saved.items():
        if key not in types:
            raise CheckpointError(path, f"malformed: 'data' has an unknown entry {key!r:.40} "
                                        f"(expected {', '.join(types)})")
        if not isinstance(value, types[key]) or (isinstance(value, bool) and bool not in types[key]):
            raise CheckpointError(path, f"malformed: 'data' entry {key!r} is {value!r:.60} "
                                        f"({type(value).__name__})")
    return cls(**saved)
