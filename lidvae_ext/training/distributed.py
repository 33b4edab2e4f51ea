"""Data-parallel training with ``torchrun``: who this process is, joining the group, the DDP wrapper.

When ``WORLD_SIZE`` > 1 in the environment, :func:`init_distributed` joins a
``gloo`` (CPU) or ``nccl`` (CUDA) process group; the training loop then has every
rank draw the same global batch order and take its slice of each global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    """Rank/world of this process (world 1 = single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the process that writes files and shows progress)."""
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
    """Wait for every rank of the process group (no-op in a single process)."""
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


def wrap_data_parallel(model: nn.Module, world_size: int) -> nn.Module:
    """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` when ``world_size`` > 1, else itself."""
    if world_size <= 1:
        return model
    device = next(model.parameters()).device
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
