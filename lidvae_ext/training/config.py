"""What a training run is told (:class:`TrainConfig`) and what it reports (:class:`TrainResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainConfig:
    """Optimization settings (defaults: the reference digits setup).

    ``early_stopping`` = patience P: stop when the validation −ELBO has not
    improved for P epochs and restore the best epoch's weights (``epochs`` is
    then the maximum). ``val_fraction`` is the share of the training split
    held out for it (see :func:`lidvae_ext.data.validation_split`).
    """

    epochs: int = 150
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    au_threshold: float = 0.01
    checkpoint_every: int = 1
    grad_clip: float | None = None
    progress: bool = True
    desc: str = "train"
    early_stopping: int | None = None
    val_fraction: float = 0.1


@dataclass
class TrainResult:
    """What :func:`train` did: epochs completed, wall time, per-epoch history."""

    epochs: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None
    resumed_from: int | None = None
    best_epoch: int | None = None
    stopped_epoch: int | None = None
