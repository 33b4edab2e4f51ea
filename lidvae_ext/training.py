"""Training loop, model specs and (optional) data-parallel training (checkpoint files: :mod:`.checkpoint`).

Multi-process training follows ``torchrun`` conventions: when ``WORLD_SIZE`` > 1
in the environment, :func:`init_distributed` joins a ``gloo`` (CPU) or ``nccl``
(CUDA) process group, every rank draws the same global batch order and takes
its slice of each global batch, and the per-rank loss is normalized so that
the DDP-averaged gradient equals the gradient of the mean loss over the global
batch. Only rank 0 writes checkpoints and shows progress.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .checkpoint import (  # re-exported: checkpoint I/O lived here before lidvae_ext.checkpoint
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    CheckpointError,
    check_resume,
    load_checkpoint,
    load_training_state,
    model_from_checkpoint,
    save_checkpoint,
)
from .errors import TrainingDiverged
from .models import LIDVAE, VAE, LatentVariableModel
from .nn import BETA_MODES, fit_beta


# ----------------------------------------------------------------------------- model specs
LID_MODELS = ("lidvae", "lidgmvae")  # models with the Brenier-map decoder (take -alpha, -learned, -fixed)
MIXTURE_MODELS = ("gmvae", "lidgmvae")  # mixture-prior models (take --clusters)


@dataclass
class ModelSpec:
    """A named model variant, e.g. ``vae``, ``lidvae``, ``lidvae-alpha0.1``, ``betavae0.5``.

    Grammar: ``base[-modifier]*`` with base ``vae``, ``lidvae`` or ``betavae<w>``
    (a VAE with KL weight w), or the mixture-prior ``gmvae``, ``lidgmvae``,
    ``betagmvae<w>`` (:mod:`lidvae_ext.models.mixture`), and modifiers ``alpha<a>``
    (strong convexity), ``kl<w>`` (KL weight), ``fixed``/``learned``/``pca``/``random``
    (the β map of the LID models; see :class:`lidvae_ext.LIDDecoder`) and ``flow``
    (mixture models: the volume-preserving flow on q(z|x,y)).
    """

    name: str
    model: str
    kl_weight: float = 1.0
    strong_convexity: float | None = None
    beta: str | None = None
    flow: bool = False

    @classmethod
    def parse(cls, text: str) -> "ModelSpec":
        name = text.strip()
        parts = name.lower().split("-")
        base, mods = parts[0], parts[1:]
        number = r"(\d+(?:\.\d*)?(?:e[-+]?\d+)?|\.\d+)"
        m = re.fullmatch(r"beta(vae|gmvae)" + number, base)
        if m:
            spec = cls(name, m.group(1), kl_weight=float(m.group(2)))
        elif base in ("vae", "lidvae", "gmvae", "lidgmvae"):
            spec = cls(name, base)
        else:
            raise ValueError(f"unknown model {text!r}: expected vae, lidvae, betavae<w>, gmvae, lidgmvae or "
                             "betagmvae<w> with optional -alpha<a>, -kl<w>, -fixed, -learned, -pca, -random")
        for mod in mods:
            if (m := re.fullmatch(r"alpha" + number, mod)) and spec.model in LID_MODELS:
                spec.strong_convexity = float(m.group(1))
            elif m := re.fullmatch(r"kl" + number, mod):
                spec.kl_weight = float(m.group(1))
            elif mod in BETA_MODES and spec.model in LID_MODELS:
                spec.beta = mod
            elif mod == "flow" and spec.model in MIXTURE_MODELS:
                spec.flow = True
            else:
                raise ValueError(f"bad modifier {mod!r} in model {text!r} (alpha/{'/'.join(BETA_MODES)} are "
                                 "for the LID models only, flow for the mixture models)")
        return spec


def parse_spec_list(text: str, parse: Callable[[str], Any]) -> list[Any]:
    """Comma-separated model specs read by ``parse`` (e.g. ``ModelSpec.parse``); names must be unique."""
    specs = [parse(t) for t in text.split(",") if t.strip()]
    names = [s.name for s in specs]
    if not specs or len(set(names)) != len(names):
        raise ValueError(f"--models needs distinct, non-empty names, got {text!r}")
    return specs


def parse_model_list(text: str) -> list[ModelSpec]:
    """Comma-separated image-model specs; names must be unique."""
    return parse_spec_list(text, ModelSpec.parse)


@dataclass
class ModelOptions:
    """Architecture options shared by every model of a run — the single source of the defaults.

    Defaults: MLPs 256×2, ICNN width 128, L = 2, strong convexity α = 0.5 and
    β = ``"pca"``: a fixed embedding on the training split's top-K principal
    directions (fitted by :func:`lidvae_ext.nn.fit_beta` in
    :func:`lid_decoder_options`). β = [I; 0] (``"fixed"``) puts the decoder's
    guaranteed sensitivity on the first K data coordinates — on 28×28 images
    the always-0 top rows, where it carries no likelihood information — and
    loses active units at convergence (docs/results.md, issue #9).
    ``clusters`` is C of the mixture-prior models; their LID decoder takes the
    same ICNN/α/β options as the LIDVAE's (:func:`lid_decoder_options`).
    """

    latent_dim: int = 32
    encoder_hidden: tuple[int, ...] = (256, 256)
    decoder_hidden: tuple[int, ...] = (256, 256)
    icnn_hidden: int = 128
    icnn_layers: int = 2
    strong_convexity: float = 0.5
    beta: str = "pca"
    backend: str = "auto"
    likelihood: str = "bernoulli"
    binarize: bool = False
    gaussian_std: float = 0.1
    learn_std: bool = False
    activation: str = "relu"
    clusters: int = 10  # C of the mixture-prior models (gmvae, lidgmvae)
    flow: bool = False  # mixture models: volume-preserving flow after q(z|x,y) (also the -flow model modifier)


def build_from_spec(spec: ModelSpec, data_dim: int, opts: ModelOptions,
                    train_x: Tensor | None = None) -> LatentVariableModel:
    """Instantiate the model a :class:`ModelSpec` names, with the run's options.

    ``train_x`` (the training split, N×D) is needed by a data-dependent β
    (``"pca"``): :func:`lidvae_ext.nn.fit_beta` fits it there, and only there.
    """
    common = dict(data_dim=data_dim, latent_dim=opts.latent_dim, encoder_hidden=tuple(opts.encoder_hidden),
                  likelihood=opts.likelihood, kl_weight=spec.kl_weight, binarize=opts.binarize,
                  gaussian_std=opts.gaussian_std, learn_std=opts.learn_std, activation=opts.activation)
    if spec.model == "vae":
        return VAE(decoder_hidden=tuple(opts.decoder_hidden), **common)
    if spec.model in MIXTURE_MODELS:
        from .models.mixture import build_mixture_from_spec

        lid = lid_decoder_options(opts, train_x, spec.strong_convexity, spec.beta) if spec.model in LID_MODELS else {}
        return build_mixture_from_spec(spec.model, opts, lid, flow=spec.flow or opts.flow, **common)
    return LIDVAE(**lid_decoder_options(opts, train_x, spec.strong_convexity, spec.beta), **common)


def lid_decoder_options(opts: ModelOptions, train_x: Tensor | None = None, strong_convexity: float | None = None,
                        beta: str | None = None) -> dict[str, Any]:
    """Keyword arguments of the LIDVAE decoder (``icnn_hidden``, ``icnn_layers``, ``strong_convexity``,
    ``beta``, ``backend``, ``beta_basis``) from the run's options — the one place the LIDVAE
    decoder defaults are resolved (any model with a :class:`lidvae_ext.LIDDecoder` should use it).

    ``strong_convexity``/``beta`` override the options (a model name's modifiers);
    a data-dependent β (``"pca"``) is fitted on ``train_x`` (the training split) by
    :func:`lidvae_ext.nn.fit_beta`.
    """
    alpha = opts.strong_convexity if strong_convexity is None else strong_convexity
    beta = beta or opts.beta
    return dict(icnn_hidden=opts.icnn_hidden, icnn_layers=opts.icnn_layers, strong_convexity=alpha, beta=beta,
                backend=opts.backend, beta_basis=fit_beta(beta, train_x, opts.latent_dim))


# ----------------------------------------------------------------------------- distributed
@dataclass
class DistInfo:
    """Rank/world of this process (world 1 = single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment variables, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    return DistInfo(rank, world, local)


def current_dist() -> DistInfo:
    """The process group's rank/world (single process if none is initialized)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def default_num_threads(world_size: int = 1) -> int:
    """All usable cores, shared evenly between the processes of this machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = os.cpu_count() or 1
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    return max(1, cores // max(1, local_world))


# ----------------------------------------------------------------------------- training
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


def _unwrap(model: nn.Module) -> LatentVariableModel:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model  # type: ignore


@torch.no_grad()
def _finite_parameters(model: nn.Module) -> bool:
    """Whether every parameter is finite (a finite loss can still be followed by a step to NaN weights)."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.is_floating_point())


@torch.no_grad()
def validation_loss(model: LatentVariableModel, x: Tensor, seed: int = 0, batch_size: int = 1024) -> float:
    """−ELBO (β = 1, one sample, noise seeded by ``seed``) of ``model`` on prepared ``x``: the early-stopping score."""
    was = model.training
    model.eval()
    try:
        gen = torch.Generator().manual_seed(int(seed))
        total = 0.0
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size]
            if hasattr(model, "noise_shape"):  # mixture models: one draw per component, (C, B, K)
                shape, p = model.noise_shape(xb.shape[0]), next(model.parameters())
                eps = torch.randn(shape, generator=gen, dtype=p.dtype).to(p.device)
            else:
                mean, _ = model.encode(xb)
                eps = torch.randn(mean.shape, generator=gen, dtype=mean.dtype).to(mean.device)
            terms = model.loss_terms(xb, eps)
            total += float((terms["rec"] + terms["kl"]).double().sum())
    finally:
        model.train(was)
    return total / max(1, x.shape[0])


def _cpu_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@torch.no_grad()
def _active_units(model: LatentVariableModel, x: Tensor, threshold: float) -> int:
    was = model.training
    model.eval()
    try:
        mean = torch.cat([model.encode(x[i:i + 2048])[0] for i in range(0, x.shape[0], 2048)])
    finally:
        model.train(was)
    return int((mean.double().var(0) >= threshold).sum()) if mean.shape[0] > 1 else 0


def train(model: LatentVariableModel, train_x: Tensor, config: TrainConfig, out_dir: str | os.PathLike | None = None,
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
    if config.epochs < 0 or config.batch_size < 1:
        raise ValueError(f"epochs must be >= 0 and batch_size >= 1, got {config.epochs}, {config.batch_size}")
    patience = config.early_stopping
    if patience is not None and (not isinstance(patience, int) or isinstance(patience, bool) or patience < 1):
        raise ValueError(f"early_stopping (patience) must be a positive integer or None, got {patience!r}")
    if patience is not None and (stop_x is None or stop_x.shape[0] < 1):
        raise ValueError("early_stopping needs validation data (stop_x) with at least one row")
    info = current_dist()
    device = next(model.parameters()).device
    ckpt_path = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    start_epoch, seconds, history, resumed_from = 0, 0.0, [], None
    saved_epoch: int | None = None  # epoch of the last checkpoint this run wrote (or resumed from)
    best_loss, best_epoch, stale, stopped, best_state = math.inf, 0, 0, None, None
    if resume and ckpt_path is not None and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path)
        check_resume(state, ckpt_path, model.config, dataclasses.asdict(config), (extra_state or {}).get("data"))
        load_training_state(state, ckpt_path, model, optimizer)
        start_epoch, seconds = int(state["epoch"]), float(state["seconds"])
        history, resumed_from = list(state.get("history", [])), start_epoch
        saved_epoch = start_epoch
        if patience is not None:
            if "early_stopping" not in state:
                raise CheckpointError(ckpt_path, "cannot resume with --early-stopping: this run was trained "
                                                 "without it (resume without --early-stopping, or start a new run)")
            es = state["early_stopping"]
            best_loss, best_epoch = float(es["best_loss"]), int(es["best_epoch"])
            stale, stopped = int(es["stale"]), es["stopped"]
            best_state = es["best_state"]
    net: nn.Module = model
    if info.world_size > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    val_prepared = None
    if val_x is not None:
        val_prepared = model.likelihood.fixed_targets(val_x, config.seed).to(device)
    stop_prepared = None
    if patience is not None:
        stop_prepared = model.likelihood.fixed_targets(stop_x, config.seed + 1).to(device)

    def checkpoint(epoch: int) -> None:
        nonlocal saved_epoch
        if ckpt_path is None:
            return
        saved_epoch = epoch
        if not info.is_main:
            return
        es = {}
        if patience is not None:
            es = {"early_stopping": {"patience": patience, "best_loss": best_loss, "best_epoch": best_epoch,
                                     "stale": stale, "stopped": stopped, "best_state": best_state}}
        save_checkpoint(ckpt_path, {
            "format": CHECKPOINT_FORMAT, "model_config": model.config, "model_state": model.state_dict(),
            "optimizer_state": optimizer.state_dict(), "epoch": epoch, "seconds": seconds,
            "history": history, "train_config": dataclasses.asdict(config), **(extra_state or {}), **es,
        })

    def diverged(epoch: int, loss: float | None, what: str) -> TrainingDiverged:
        # nothing is saved from here on: the checkpoint on disk stays the last good one
        return TrainingDiverged(epoch + 1, loss, ckpt_path if saved_epoch is not None else None, saved_epoch, what)

    n = train_x.shape[0]
    bar = None
    if config.progress and info.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs, initial=min(start_epoch, config.epochs), desc=config.desc,
                   unit="epoch", dynamic_ncols=True)
    model.train()
    try:
        for epoch in range(start_epoch, config.epochs if stopped is None else start_epoch):
            t0 = time.perf_counter()
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
                    if _finite_parameters(model):
                        raise
                    raise diverged(epoch, None, "weights") from None
                optimizer.zero_grad(set_to_none=True)
                out["loss"].backward()
                if config.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                sums += torch.tensor([float(out["rec"]) * xb.shape[0], float(out["kl"]) * xb.shape[0], xb.shape[0]],
                                     dtype=torch.float64)
            if info.world_size > 1:
                dist.all_reduce(sums)
            rec, kl = float(sums[0] / sums[2]), float(sums[1] / sums[2])
            if not math.isfinite(rec + kl) or not _finite_parameters(model):
                raise diverged(epoch, rec + kl, "weights" if math.isfinite(rec + kl) else "loss")
            seconds += time.perf_counter() - t0
            record = {"epoch": epoch + 1, "loss": rec + kl, "rec": rec, "kl": kl, "seconds": seconds}
            if val_prepared is not None and info.is_main:
                record["au"] = _active_units(model, val_prepared, config.au_threshold)
            if stop_prepared is not None:
                # every rank scores the same validation set, so all ranks take the same decision
                vloss = validation_loss(model, stop_prepared, config.seed)
                record["val_loss"] = vloss
                if vloss < best_loss:
                    best_loss, best_epoch, stale, best_state = vloss, epoch + 1, 0, _cpu_state(model)
                else:
                    stale += 1
                if stale >= patience:
                    stopped = epoch + 1
            history.append(record)
            last = epoch + 1 == config.epochs or stopped is not None
            if stopped is not None or (last and patience is not None):
                stopped = epoch + 1
                model.load_state_dict(best_state)  # the best epoch's weights, restored before the final checkpoint
            if (epoch + 1) % max(1, config.checkpoint_every) == 0 or last:
                checkpoint(epoch + 1)
            if bar is not None:
                bar.update(1)
                post = {"loss": f"{record['loss']:.2f}", "KL": f"{kl:.2f}"}
                if "au" in record:
                    post["AU"] = f"{record['au']}/{model.latent_dim}"
                bar.set_postfix(post, refresh=False)
            if on_epoch is not None:
                on_epoch(record)
            if stopped is not None:
                break
    finally:
        if bar is not None:
            bar.close()
    if start_epoch >= config.epochs and ckpt_path is not None and not ckpt_path.is_file():
        checkpoint(start_epoch)
    barrier()
    done = stopped if stopped is not None else max(start_epoch, config.epochs)
    return TrainResult(done, seconds, history, ckpt_path, resumed_from,
                       best_epoch=best_epoch if patience is not None else None, stopped_epoch=stopped)
