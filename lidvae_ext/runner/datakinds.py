"""The two kinds of data the families take — image rows and sentences — and what the runner does
differently for each: load, carve the early-stopping split, draw the shared figures, describe the run.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data import validation_split
from ..data.text import is_text_data
from ..report import figures as report_figures
from ..report import readable
from ..training import TrainConfig
from .options import DataOptions, TextDataOptions


class ImageData:
    """Rows of D values in [0, 1] (digits, Fashion-MNIST, user arrays)."""

    name = "images"
    options_class = DataOptions

    @staticmethod
    def load(data: DataOptions, likelihood: str, log: Any) -> Any:
        """The dataset for a model with ``likelihood`` (a Bernoulli one needs values in [0, 1]); logs a
        one-line notice when array rows were flattened (e.g. (N, 8, 8) -> (N, 64))."""
        ds = data.load(likelihood)
        shape = ds.info.get("flattened_from")
        if shape is not None:
            log(f"note: {ds.name} holds an array of shape {tuple(shape)}; each row is flattened to "
                f"{ds.dim} values (D = {ds.dim})")
        return ds

    @staticmethod
    def describe(ds: Any) -> str:
        """One line: the data's name and sizes."""
        return f"{ds.name}: {ds.train.shape[0]} train / {ds.test.shape[0]} test, D={ds.dim}"

    @staticmethod
    def fit_and_stop(ds: Any, cfg: TrainConfig) -> tuple[Tensor, Tensor | None]:
        """The rows to train on and the early-stopping rows (carved from the training split)."""
        if cfg.early_stopping is None:
            return ds.train, None
        return validation_split(ds.train, cfg.val_fraction, cfg.seed)

    @staticmethod
    def check_model(ds: Any, model: nn.Module, path: Path) -> None:
        """``ValueError`` when the rows do not have the dimension the model of ``path`` takes."""
        data_dim = model.config.get("data_dim")
        if data_dim is not None and ds.dim != data_dim:
            raise ValueError(f"data {ds.name!r} has dimension {ds.dim}, the model of {path} needs {data_dim}")

    @staticmethod
    def checkpoint_extra(ds: Any) -> dict[str, Any]:
        """What a checkpoint records of the data beyond its options: nothing for images."""
        return {}

    @staticmethod
    @torch.no_grad()
    def shared_figures(models: dict[str, nn.Module], ds: Any, results: dict[str, dict[str, Any]],
                       histories: dict[str, list[dict[str, float]]], out: Path, seed: int) -> list[Path]:
        """The figures every image model gets (:func:`lidvae_ext.report.figures.write_figures`)."""
        first = next(iter(models.values()))
        test_x = first.likelihood.fixed_targets(ds.test, 0)  # binarized like the metrics' targets
        return report_figures.write_figures(models, test_x, results, ds.image_shape, out, seed=seed,
                                            histories=histories)

    @staticmethod
    def meta(ds: Any) -> dict[str, Any]:
        """The data part of a report's settings."""
        return {"data": ds.name, "train_size": int(ds.train.shape[0]), "test_size": int(ds.test.shape[0])}


class TextData:
    """Sentences as padded token ids (synthetic-text, WordNet, a text file)."""

    name = "text"
    options_class = TextDataOptions

    @staticmethod
    def load(data: TextDataOptions, likelihood: str, log: Any) -> Any:
        """The sentences (``likelihood`` is the categorical one of every sentence model)."""
        return data.load(likelihood)

    @staticmethod
    def describe(ds: Any) -> str:
        """One line: the data's name, sizes and vocabulary."""
        return ds.summary()

    @staticmethod
    def fit_and_stop(ds: Any, cfg: TrainConfig) -> tuple[Tensor, Tensor | None]:
        """The training sentences and, for early stopping, the validation split the data comes with."""
        return ds.train, (ds.val if cfg.early_stopping is not None else None)

    @staticmethod
    def check_model(ds: Any, model: nn.Module, path: Path) -> None:
        """``ValueError`` when the vocabulary is not the size the model of ``path`` takes."""
        if len(ds.vocab) != model.config.get("vocab_size", len(ds.vocab)):
            raise ValueError(f"data {ds.name!r} has a vocabulary of {len(ds.vocab)} words, the model of {path} "
                             f"needs {model.config['vocab_size']}")

    @staticmethod
    def checkpoint_extra(ds: Any) -> dict[str, Any]:
        """The vocabulary, so that evaluation can check it gets the same one."""
        return {"vocab": ds.vocab.to_dict()}

    @staticmethod
    def shared_figures(models: dict[str, nn.Module], ds: Any, results: dict[str, dict[str, Any]],
                       histories: dict[str, list[dict[str, float]]], out: Path, seed: int) -> list[Path]:
        """The collapse profile, KL per dimension and training curves."""
        paths = [readable.plot_collapse_profile(results, out / "collapse_profile.png"),
                 report_figures.plot_kl_per_dim(results, out / "kl_per_dim.png"),
                 report_figures.plot_training_curves(histories, out / "training_curves.png")]
        return [p for p in paths if p is not None]

    @staticmethod
    def meta(ds: Any) -> dict[str, Any]:
        """The data part of a report's settings."""
        return {"data": ds.name, "sizes": [int(ds.train.shape[0]), int(ds.val.shape[0]), int(ds.test.shape[0])],
                "vocab_size": len(ds.vocab)}


DATA_KINDS = {"images": ImageData, "text": TextData}


def data_kind_of_name(name: str | None) -> str:
    """``"text"`` for text data names (synthetic-text, wordnet, ``*.txt``), else ``"images"``."""
    return "text" if is_text_data(name) else "images"


def options_dict(options: Any) -> dict[str, Any]:
    """A dataclass of options as a plain dict (for checkpoints and reports)."""
    return asdict(options)
