"""Data-parallel training: 2-process gradients equal 1-process gradients on the whole batch."""

from __future__ import annotations

import os
import socket
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lidvae_ext.models import LIDVAE, VAE
from lidvae_ext.ops import fused_available

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make(kind: str):
    torch.manual_seed(0)
    if kind == "vae":
        return VAE(16, 3, (16,), (16,))
    backend = "fused" if kind == "lidvae-fused" else "reference"
    return LIDVAE(16, 3, encoder_hidden=(16,), icnn_hidden=8, strong_convexity=0.1, backend=backend)


KINDS = ("vae", "lidvae") + (("lidvae-fused",) if fused_available("cpu") else ())


def batch(b=11):
    g = torch.Generator().manual_seed(1)
    return torch.rand(b, 16, generator=g), torch.randn(b, 3, generator=g)


def _grad_worker(rank: int, world: int, port: int, path: str) -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        grads = {}
        for kind in KINDS:
            model = torch.nn.parallel.DistributedDataParallel(make(kind))
            x, eps = batch()
            idx = torch.arange(x.shape[0]).tensor_split(world)[rank]  # uneven shards: 6/5
            out = model(x[idx], eps=eps[idx], normalizer=x.shape[0] / world)
            out["loss"].backward()
            grads[kind] = {n: p.grad.clone() for n, p in model.module.named_parameters()}
            del model, out  # release the DDP reducer (and its gloo work) before teardown
        if rank == 0:
            torch.save(grads, path)
        # Tear down together: a rank destroying its gloo group while the other still talks to it
        # has been seen to abort the process (std::terminate in gloo's shutdown).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_process_gradients_equal_full_batch(tmp_path):
    path = str(tmp_path / "grads.pt")
    mp.spawn(_grad_worker, args=(2, free_port(), path), nprocs=2, join=True)
    all_grads = torch.load(path)
    for kind in KINDS:
        ddp_grads = all_grads[kind]
        model = make(kind)
        x, eps = batch()
        model(x, eps=eps)["loss"].backward()
        assert set(ddp_grads) == {n for n, _ in model.named_parameters()}
        for name, p in model.named_parameters():
            torch.testing.assert_close(ddp_grads[name], p.grad, rtol=1e-5, atol=1e-6, msg=f"{kind}: {name}")


def _cli_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    warnings.filterwarnings("ignore")
    from lidvae_ext import cli

    rc = cli.main(["train", "--model", "lidvae", "--epochs", "2", "--out", out, "--train-size", "120",
                   "--test-size", "40", "--encoder-hidden", "16", "--icnn-hidden", "8", "--latent-dim", "3",
                   "--iwae-samples", "3", "--batch-size", "32", "--no-progress", "--backend", "reference"])
    if rc != 0:
        raise SystemExit(rc)


def test_torchrun_style_cli_training(tmp_path):
    """``torchrun --nproc_per_node=2 -m lidvae_ext.cli train ...``, emulated with spawn + torchrun's env vars."""
    out = str(tmp_path / "ddp")
    mp.spawn(_cli_worker, args=(2, free_port(), out), nprocs=2, join=True)
    from lidvae_ext.training import load_checkpoint

    state = load_checkpoint(out)
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert all(torch.isfinite(v).all() for v in state["model_state"].values())
    assert (tmp_path / "ddp" / "metrics.json").is_file()
