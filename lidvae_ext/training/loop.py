"""The training loop: Adam on the negative (β-)ELBO, one epoch at a time.

The loop (:func:`train`) is made of named parts: resuming and saving
(:class:`Checkpointer`), early stopping (:mod:`.early_stopping`), divergence
checks (:func:`finite_parameters`), data parallelism (:mod:`.distributed`) and the
progress bar (:mod:`.progress`).

Multi-process training follows ``torchrun`` conventions: every rank draws the
same global batch order and takes its slice of each global batch, and the
per-rank loss is normalized so that the DDP-averaged gradient equals the
gradient of the mean loss over the global batch. Only rank 0 writes
checkpoints and shows progress.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    CheckpointError,
    check_resume,
    load_checkpoint,
    load_training_state,
    save_checkpoint,
)
from ..errors import TrainingDiverged
from .config import TrainConfig, TrainResult
from .distributed import DistInfo, barrier, current_dist, wrap_data_parallel
from .early_stopping import EarlyStopping, validation_loss
from .progress import Progress


@torch.no_grad()
def finite_parameters(model: nn.Module) -> bool:
    """Whether every parameter is finite (a finite loss can still be followed by a step to NaN weights)."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.is_floating_point())


@torch.no_grad()
def held_out_active_units(model: nn.Module, x: Tensor, threshold: float) -> int:
    """#{d : Var_x(E_q[z_d|x]) ≥ threshold} on prepared ``x`` (the progress bar's and history's ``au``)."""
    was = model.training
    model.eval()
    try:
        mean = torch.cat([model.encode(x[i:i + 2048])[0] for i in range(0, x.shape[0], 2048)])
    finally:
        model.train(was)
    return int((mean.double().var(0) >= threshold).sum()) if mean.shape[0] > 1 else 0


class Checkpointer:
    """Where a run's ``checkpoint.pt`` goes, what it holds, and the epoch it last saved.

    ``saved_epoch`` is the epoch of the last checkpoint this run wrote (or resumed
    from): after a divergence, the file on disk is that one.
    """

    def __init__(self, out_dir: str | os.PathLike | None, info: DistInfo) -> None:
        self.path = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None
        self.info = info
        self.saved_epoch: int | None = None

    def resumable(self, resume: bool) -> bool:
        """Whether to continue from the checkpoint on disk."""
        return resume and self.path is not None and self.path.is_file()

    def save(self, epoch: int, state: dict[str, Any]) -> None:
        """Record ``epoch`` as saved; rank 0 writes ``state`` atomically."""
        if self.path is None:
            return
        self.saved_epoch = epoch
        if self.info.is_main:
            save_checkpoint(self.path, {"format": CHECKPOINT_FORMAT, **state})

    def diverged(self, epoch: int, loss: float | None, what: str) -> TrainingDiverged:
        """The error for a divergence in 0-based ``epoch``: nothing is saved from here on."""
        return TrainingDiverged(epoch + 1, loss, self.path if self.saved_epoch is not None else None,
                                self.saved_epoch, what)


@dataclasses.dataclass
class _RunState:
    """What a run carries from epoch to epoch (and into its checkpoint)."""

    start_epoch: int = 0
    seconds: float = 0.0
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    resumed_from: int | None = None


def _check_arguments(config: TrainConfig, stop_x: Tensor | None) -> None:
    if config.epochs < 0 or config.batch_size < 1:
        raise ValueError(f"epochs must be >= 0 and batch_size >= 1, got {config.epochs}, {config.batch_size}")
    EarlyStopping.check_patience(config.early_stopping)
    if config.early_stopping is not None and (stop_x is None or stop_x.shape[0] < 1):
        raise ValueError("early_stopping needs validation data (stop_x) with at least one row")


def _resume(ckpt: Checkpointer, model: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig,
            extra_state: dict[str, Any] | None, stopping: EarlyStopping | None) -> _RunState:
    """Load the checkpoint on disk into ``model``/``optimizer``/``stopping``; the state to continue from."""
    path = ckpt.path
    state = load_checkpoint(path)
    check_resume(state, path, model.config, dataclasses.asdict(config), (extra_state or {}).get("data"))
    load_training_state(state, path, model, optimizer)
    run = _RunState(int(state["epoch"]), float(state["seconds"]), list(state.get("history", [])), int(state["epoch"]))
    ckpt.saved_epoch = run.start_epoch
    if stopping is not None:
        if "early_stopping" not in state:
            raise CheckpointError(path, "cannot resume with --early-stopping: this run was trained "
                                        "without it (resume without --early-stopping, or start a new run)")
        stopping.load(state["early_stopping"])
    return run


def _run_epoch(net: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer, train_x: Tensor,
               config: TrainConfig, epoch: int, info: DistInfo, ckpt: Checkpointer) -> tuple[float, float]:
    """One pass over ``train_x`` (seeded by ``config.seed`` and ``epoch``); the mean reconstruction and KL terms."""
    device = next(model.parameters()).device
    n = train_x.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 1_000_003 + epoch))
    torch.manual_seed((config.seed * 1_000_003 + epoch) * 4099 + info.rank)  # noise / binarization
    sums = torch.zeros(3, dtype=torch.float64)
    for start in range(0, n, config.batch_size):
        idx = order[start:start + config.batch_size]
        shard = idx.tensor_split(info.world_size)[info.rank]
        xb = train_x[shard].to(device, non_blocking=True)
        try:
            out = net(xb, normalizer=idx.numel() / info.world_size)
        except RuntimeError:  # e.g. the fused ICNN kernels refuse non-finite weights
            if finite_parameters(model):
                raise
            raise ckpt.diverged(epoch, None, "weights") from None
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        if config.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        sums += torch.tensor([float(out["rec"]) * xb.shape[0], float(out["kl"]) * xb.shape[0], xb.shape[0]],
                             dtype=torch.float64)
    if info.world_size > 1:
        dist.all_reduce(sums)
    return float(sums[0] / sums[2]), float(sums[1] / sums[2])


def train(model: nn.Module, train_x: Tensor, config: TrainConfig, out_dir: str | os.PathLike | None = None,
          *, val_x: Tensor | None = None, stop_x: Tensor | None = None, resume: bool = False,
          extra_state: dict[str, Any] | None = None,
          on_epoch: Callable[[dict[str, float]], None] | None = None) -> TrainResult:
    """Train ``model`` with Adam on the negative (β-)ELBO.

    Parameters
    ----------
    model : LatentVariableModel
        Trained in place (wrapped in DDP when a process group is initialized).
    train_x : Tensor
        (N, D) training data.
    config : TrainConfig
    out_dir : path, optional
        Where ``checkpoint.pt`` goes (atomically, every ``checkpoint_every``
        epochs and at the end). None: no checkpoints.
    val_x : Tensor, optional
        Held-out data for the active-unit count shown on the progress bar.
    stop_x : Tensor, optional
        Validation data (carved from the training split, never the test set)
        for early stopping; required when ``config.early_stopping`` is set.
    resume : bool
        Continue from ``out_dir/checkpoint.pt`` if it exists. Batch order and
        noise are seeded per epoch, so an interrupted-and-resumed run follows
        the same trajectory as an uninterrupted one. A checkpoint written
        with another model config, other training settings (all but
        ``epochs``, ``checkpoint_every``, ``progress``, ``desc``,
        ``au_threshold``) or other ``extra_state["data"]`` (but ``data_dir``)
        raises :class:`~lidvae_ext.errors.CheckpointError` listing them.
    extra_state : dict, optional
        Stored in the checkpoint (e.g. the data description); tensors and
        plain values only (``TypeError`` otherwise).
    on_epoch : callable, optional
        Called with each epoch's history record.

    Returns
    -------
    TrainResult

    Raises
    ------
    TrainingDiverged
        A non-finite epoch loss or non-finite weights; the checkpoint on disk
        is then the last good one (``exc.checkpoint``, ``exc.checkpoint_epoch``).
    CheckpointError
        ``resume`` from an unusable or mismatched checkpoint.
    """
    _check_arguments(config, stop_x)
    info = current_dist()
    ckpt = Checkpointer(out_dir, info)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    stopping = EarlyStopping(config.early_stopping) if config.early_stopping is not None else None
    run = _RunState()
    if ckpt.resumable(resume):
        run = _resume(ckpt, model, optimizer, config, extra_state, stopping)
    net = wrap_data_parallel(model, info.world_size)
    device = next(model.parameters()).device
    val_prepared = None if val_x is None else model.likelihood.fixed_targets(val_x, config.seed).to(device)
    stop_prepared = None if stopping is None else model.likelihood.fixed_targets(stop_x, config.seed + 1).to(device)

    def save(epoch: int) -> None:
        ckpt.save(epoch, {"model_config": model.config, "model_state": model.state_dict(),
                          "optimizer_state": optimizer.state_dict(), "epoch": epoch, "seconds": run.seconds,
                          "history": run.history, "train_config": dataclasses.asdict(config), **(extra_state or {}),
                          **({"early_stopping": stopping.state()} if stopping is not None else {})})

    progress = Progress(config.progress and info.is_main, config.epochs, run.start_epoch, config.desc)
    model.train()
    try:
        already_stopped = stopping is not None and stopping.stopped is not None
        for epoch in range(run.start_epoch, run.start_epoch if already_stopped else config.epochs):
            t0 = time.perf_counter()
            rec, kl = _run_epoch(net, model, optimizer, train_x, config, epoch, info, ckpt)
            if not math.isfinite(rec + kl) or not finite_parameters(model):
                raise ckpt.diverged(epoch, rec + kl, "weights" if math.isfinite(rec + kl) else "loss")
            run.seconds += time.perf_counter() - t0
            record = {"epoch": epoch + 1, "loss": rec + kl, "rec": rec, "kl": kl, "seconds": run.seconds}
            if val_prepared is not None and info.is_main:
                record["au"] = held_out_active_units(model, val_prepared, config.au_threshold)
            if stopping is not None:
                # every rank scores the same validation set, so all ranks take the same decision
                record["val_loss"] = validation_loss(model, stop_prepared, config.seed)
                stopping.update(record["val_loss"], epoch + 1, model)
            run.history.append(record)
            last = epoch + 1 == config.epochs or (stopping is not None and stopping.stopped is not None)
            if stopping is not None and last:
                stopping.stopped = epoch + 1
                model.load_state_dict(stopping.best_state)  # the best epoch's weights, before the final checkpoint
            if (epoch + 1) % max(1, config.checkpoint_every) == 0 or last:
                save(epoch + 1)
            progress.epoch_done(record, model.latent_dim)
            if on_epoch is not None:
                on_epoch(record)
            if stopping is not None and stopping.stopped is not None:
                break
    finally:
        progress.close()
    if run.start_epoch >= config.epochs and ckpt.path is not None and not ckpt.path.is_file():
        save(run.start_epoch)
    barrier()
    stopped = None if stopping is None else stopping.stopped
    done = stopped if stopped is not None else max(run.start_epoch, config.epochs)
    return TrainResult(done, run.seconds, run.history, ckpt.path, run.resumed_from,
                       best_epoch=stopping.best_epoch if stopping is not None else None, stopped_epoch=stopped)
