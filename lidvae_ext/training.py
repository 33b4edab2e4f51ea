"""Training loop, model specs, atomic checkpoints and (optional) data-parallel training.

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
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .models import LIDVAE, VAE, LatentVariableModel, build_model

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "lidvae_ext.checkpoint/1"


# ----------------------------------------------------------------------------- model specs
LID_MODELS = ("lidvae", "lidgmvae")  # models with the Brenier-map decoder (take -alpha, -learned, -fixed)
MIXTURE_MODELS = ("gmvae", "lidgmvae")  # mixture-prior models (take --clusters)


@dataclass
class ModelSpec:
    """A named model variant, e.g. ``vae``, ``lidvae``, ``lidvae-alpha0.1``, ``betavae0.5``.

    Grammar: ``base[-modifier]*`` with base ``vae``, ``lidvae`` or ``betavae<w>``
    (a VAE with KL weight w), or the mixture-prior ``gmvae``, ``lidgmvae``,
    ``betagmvae<w>`` (:mod:`lidvae_ext.models.mixture`), and modifiers ``alpha<a>`` (strong convexity),
    ``kl<w>`` (KL weight), ``learned``/``fixed`` (the β map of the LIDVAE).
    """

    name: str
    model: str
    kl_weight: float = 1.0
    strong_convexity: float | None = None
    beta: str | None = None

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
                             "betagmvae<w> with optional -alpha<a>, -kl<w>, -learned, -fixed")
        for mod in mods:
            if (m := re.fullmatch(r"alpha" + number, mod)) and spec.model in LID_MODELS:
                spec.strong_convexity = float(m.group(1))
            elif m := re.fullmatch(r"kl" + number, mod):
                spec.kl_weight = float(m.group(1))
            elif mod in ("learned", "fixed") and spec.model in LID_MODELS:
                spec.beta = mod
            else:
                raise ValueError(f"bad modifier {mod!r} in model {text!r} "
                                 "(alpha/learned/fixed are for the LID models only)")
        return spec


def parse_model_list(text: str) -> list[ModelSpec]:
    """Comma-separated specs; names must be unique."""
    specs = [ModelSpec.parse(t) for t in text.split(",") if t.strip()]
    names = [s.name for s in specs]
    if not specs or len(set(names)) != len(names):
        raise ValueError(f"--models needs distinct, non-empty names, got {text!r}")
    return specs


@dataclass
class ModelOptions:
    """Architecture options shared by every model of a run.

    Defaults: the reference setup (MLPs 256×2, ICNN width 128, L = 2, β = [I; 0])
    with strong convexity α = 0.5, chosen from the sweeps in docs/results.md
    (α = 0.5 keeps all 32 digits latents active at +1% IWAE NLL and 45/64
    Fashion-MNIST latents, where α = 0.1 keeps 25/64 and α = 0 fewer).
    ``clusters`` is C of the mixture-prior models; their LID decoder takes the
    same ICNN/α/β options as the LIDVAE's (:func:`lid_decoder_options`).
    """

    latent_dim: int = 32
    encoder_hidden: tuple[int, ...] = (256, 256)
    decoder_hidden: tuple[int, ...] = (256, 256)
    icnn_hidden: int = 128
    icnn_layers: int = 2
    strong_convexity: float = 0.5
    beta: str = "fixed"
    backend: str = "auto"
    likelihood: str = "bernoulli"
    binarize: bool = False
    gaussian_std: float = 0.1
    learn_std: bool = False
    activation: str = "relu"
    clusters: int = 10  # C of the mixture-prior models (gmvae, lidgmvae)


def lid_decoder_options(spec: ModelSpec, opts: ModelOptions) -> dict[str, Any]:
    """The Brenier-map decoder options of a LID model (LIDVAE and LIDGMVAE share them)."""
    alpha = opts.strong_convexity if spec.strong_convexity is None else spec.strong_convexity
    return dict(icnn_hidden=opts.icnn_hidden, icnn_layers=opts.icnn_layers, strong_convexity=alpha,
                beta=spec.beta or opts.beta, backend=opts.backend)


def build_from_spec(spec: ModelSpec, data_dim: int, opts: ModelOptions) -> LatentVariableModel:
    """Instantiate the model a :class:`ModelSpec` names, with the run's options."""
    common = dict(data_dim=data_dim, latent_dim=opts.latent_dim, encoder_hidden=tuple(opts.encoder_hidden),
                  likelihood=opts.likelihood, kl_weight=spec.kl_weight, binarize=opts.binarize,
                  gaussian_std=opts.gaussian_std, learn_std=opts.learn_std, activation=opts.activation)
    if spec.model == "vae":
        return VAE(decoder_hidden=tuple(opts.decoder_hidden), **common)
    if spec.model in MIXTURE_MODELS:
        from .models.mixture import build_mixture_from_spec

        return build_mixture_from_spec(spec.model, opts, lid_decoder_options(spec, opts), **common)
    return LIDVAE(**lid_decoder_options(spec, opts), **common)


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


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` atomically.

    The bytes go to a temporary file in the same directory, are flushed and
    fsync'ed, then ``os.replace`` renames it over ``path``: a crash or Ctrl-C
    at any moment leaves either the old or the new checkpoint, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by :func:`train` (tensors on CPU)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a lidvae_ext checkpoint")
    return state


def model_from_checkpoint(state: dict[str, Any], backend: str | None = None) -> LatentVariableModel:
    """Rebuild the model of a checkpoint and load its weights."""
    model = build_model(state["model_config"], backend=backend)
    model.load_state_dict(state["model_state"])
    return model


# ----------------------------------------------------------------------------- training
@dataclass
class TrainConfig:
    """Optimization settings (defaults: the reference digits setup)."""

    epochs: int = 150
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    au_threshold: float = 0.01
    checkpoint_every: int = 1
    grad_clip: float | None = None
    progress: bool = True
    desc: str = "train"


@dataclass
class TrainResult:
    """What :func:`train` did: epochs completed, wall time, per-epoch history."""

    epochs: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None
    resumed_from: int | None = None


def _unwrap(model: nn.Module) -> LatentVariableModel:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model  # type: ignore


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
          *, val_x: Tensor | None = None, resume: bool = False, extra_state: dict[str, Any] | None = None,
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
    resume : bool
        Continue from ``out_dir/checkpoint.pt`` if it exists. Batch order and
        noise are seeded per epoch, so an interrupted-and-resumed run follows
        the same trajectory as an uninterrupted one.
    extra_state : dict, optional
        Stored in the checkpoint (e.g. the data description).
    on_epoch : callable, optional
        Called with each epoch's history record.

    Returns
    -------
    TrainResult
    """
    if config.epochs < 0 or config.batch_size < 1:
        raise ValueError(f"epochs must be >= 0 and batch_size >= 1, got {config.epochs}, {config.batch_size}")
    info = current_dist()
    device = next(model.parameters()).device
    ckpt_path = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    start_epoch, seconds, history, resumed_from = 0, 0.0, [], None
    if resume and ckpt_path is not None and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path)
        if state["model_config"] != model.config:
            raise ValueError(f"cannot resume from {ckpt_path}: it holds a different model "
                             f"({state['model_config']} vs {model.config})")
        model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer_state"])
        start_epoch, seconds = int(state["epoch"]), float(state["seconds"])
        history, resumed_from = list(state.get("history", [])), start_epoch
    net: nn.Module = model
    if info.world_size > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    val_prepared = None
    if val_x is not None:
        val_prepared = model.likelihood.fixed_targets(val_x, config.seed).to(device)

    def checkpoint(epoch: int) -> None:
        if ckpt_path is None or not info.is_main:
            return
        save_checkpoint(ckpt_path, {
            "format": CHECKPOINT_FORMAT, "model_config": model.config, "model_state": model.state_dict(),
            "optimizer_state": optimizer.state_dict(), "epoch": epoch, "seconds": seconds,
            "history": history, "train_config": dataclasses.asdict(config), **(extra_state or {}),
        })

    n = train_x.shape[0]
    bar = None
    if config.progress and info.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs, initial=min(start_epoch, config.epochs), desc=config.desc,
                   unit="epoch", dynamic_ncols=True)
    model.train()
    try:
        for epoch in range(start_epoch, config.epochs):
            t0 = time.perf_counter()
            order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 1_000_003 + epoch))
            torch.manual_seed((config.seed * 1_000_003 + epoch) * 4099 + info.rank)  # noise / binarization
            sums = torch.zeros(3, dtype=torch.float64)
            for start in range(0, n, config.batch_size):
                idx = order[start:start + config.batch_size]
                shard = idx.tensor_split(info.world_size)[info.rank]
                xb = train_x[shard].to(device, non_blocking=True)
                out = net(xb, normalizer=idx.numel() / info.world_size)
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
            if not math.isfinite(rec + kl):
                raise FloatingPointError(f"training diverged at epoch {epoch + 1} (loss {rec + kl})")
            seconds += time.perf_counter() - t0
            record = {"epoch": epoch + 1, "loss": rec + kl, "rec": rec, "kl": kl, "seconds": seconds}
            if val_prepared is not None and info.is_main:
                record["au"] = _active_units(model, val_prepared, config.au_threshold)
            history.append(record)
            if (epoch + 1) % max(1, config.checkpoint_every) == 0 or epoch + 1 == config.epochs:
                checkpoint(epoch + 1)
            if bar is not None:
                bar.update(1)
                post = {"loss": f"{record['loss']:.2f}", "KL": f"{kl:.2f}"}
                if "au" in record:
                    post["AU"] = f"{record['au']}/{model.latent_dim}"
                bar.set_postfix(post, refresh=False)
            if on_epoch is not None:
                on_epoch(record)
    finally:
        if bar is not None:
            bar.close()
    if start_epoch >= config.epochs and ckpt_path is not None and not ckpt_path.is_file():
        checkpoint(start_epoch)
    barrier()
    return TrainResult(max(start_epoch, config.epochs), seconds, history, ckpt_path, resumed_from)
