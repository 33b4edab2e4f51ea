"""Training loop, atomic checkpoints, Ctrl-C safety and exact resume."""

from __future__ import annotations

import math
import os

import pytest
import torch

from lidvae_ext import training
from lidvae_ext.checkpoint import CHECKPOINT_FORMAT
from lidvae_ext.families.gaussian.models import VAE
from lidvae_ext.training import TrainConfig
from lidvae_ext.checkpoint import load_checkpoint, save_checkpoint
from lidvae_ext.training import train


def data(n=96, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, generator=g) @ torch.rand(3, d, generator=g) / 3).clamp(0, 1)


def make_model():
    torch.manual_seed(0)
    return VAE(12, 3, (16,), (16,), binarize=True)


def cfg(epochs, **kw):
    return TrainConfig(epochs=epochs, batch_size=32, lr=3e-3, progress=False, **kw)


def test_training_reduces_loss_and_writes_checkpoint(tmp_path):
    model = make_model()
    res = train(model, data(), cfg(15), tmp_path, val_x=data(40, seed=1))
    assert res.epochs == 15 and len(res.history) == 15
    assert res.history[-1]["loss"] < res.history[0]["loss"] - 1.0
    assert all("au" in h for h in res.history)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 15 and state["model_config"] == model.config
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp files left


def test_resume_reproduces_uninterrupted_run(tmp_path):
    full = make_model()
    train(full, data(), cfg(4), tmp_path / "full")
    part = make_model()
    train(part, data(), cfg(2), tmp_path / "part")
    resumed = make_model()
    res = train(resumed, data(), cfg(4), tmp_path / "part", resume=True)
    assert res.resumed_from == 2 and res.epochs == 4 and len(res.history) == 4
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    # a finished run resumes to a no-op
    again = make_model()
    assert train(again, data(), cfg(4), tmp_path / "part", resume=True).resumed_from == 4
    torch.testing.assert_close(again.state_dict(), full.state_dict())


def test_resume_rejects_other_model(tmp_path):
    train(make_model(), data(), cfg(1), tmp_path)
    with pytest.raises(ValueError, match="different model"):
        train(VAE(12, 4, (16,), (16,)), data(), cfg(2), tmp_path, resume=True)


def test_ctrl_c_keeps_last_checkpoint(tmp_path):
    def interrupt(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(make_model(), data(), cfg(5), tmp_path, on_epoch=interrupt)
    assert load_checkpoint(tmp_path)["epoch"] == 2
    # and continuing gives the uninterrupted trajectory
    resumed = make_model()
    train(resumed, data(), cfg(3), tmp_path, resume=True)
    full = make_model()
    train(full, data(), cfg(3), None)
    torch.testing.assert_close(resumed.state_dict(), full.state_dict(), rtol=0, atol=0)


def test_interrupted_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "value": 1})
    real_save = torch.save

    def torn_save(obj, fh, *a, **k):
        fh.write(b"partial garbage")
        raise KeyboardInterrupt  # Ctrl-C in the middle of writing

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "value": 2})
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(path, weights_only=True)["value"] == 1  # the old file, whole (not a full checkpoint)
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


def test_default_threads_share_the_cores(monkeypatch):
    """All usable cores (the affinity mask, not the machine's count), split between the
    processes of this machine (LOCAL_WORLD_SIZE, else world_size), never below 1."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert training.default_num_threads() == 8
    assert training.default_num_threads(world_size=2) == 4
    assert training.default_num_threads(world_size=3) == 2
    assert training.default_num_threads(world_size=64) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun: 4 processes on this node
    assert training.default_num_threads(world_size=16) == 2


class _TableEncoder(torch.nn.Module):
    """A stand-in model whose posterior means are the rows of ``table`` (x holds row indices)."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def encode(self, x):
        mean = self.table[x[:, 0].long()]
        return mean, torch.zeros_like(mean)


def test_epoch_active_units_are_per_latent_dimension_and_count_the_threshold():
    """The per-epoch AU is #{d : Var over examples of E_q[z_d|x] ≥ t}: over the example axis (a count
    over the K = 3 dimensions, not the N = 5 rows), with a variance equal to t counted."""
    table = torch.tensor([[0.0, 2.0, 7.0], [1.0, 2.0, -7.0], [0.0, 2.0, 7.0], [1.0, 2.0, -7.0], [0.5, 2.0, 0.0]],
                         dtype=torch.float64)
    var = table.var(0)
    assert var.tolist() == [0.25, 0.0, 49.0]  # exact in binary
    x = torch.arange(5, dtype=torch.float64)[:, None]
    model = _TableEncoder(table)
    assert training.held_out_active_units(model, x, 0.1) == 2  # dims 0 and 2; column 1 is constant
    assert training.held_out_active_units(model, x, float(var[0])) == 2  # Var = t counts
    assert training.held_out_active_units(model, x, math.nextafter(float(var[0]), 1.0)) == 1
    assert training.held_out_active_units(model, x, 100.0) == 0 and float(var[2]) < 100.0


def test_history_active_units_match_the_metric_on_the_trained_model(tmp_path):
    """Each epoch's recorded AU equals metrics.active_units of that epoch's model on the same held-out data."""
    from lidvae_ext.core import metrics

    model = make_model()
    val = data(40, seed=1)
    seen = []

    def record(rec):
        prepared = model.likelihood.fixed_targets(val, 0)
        was = model.training
        model.eval()
        with torch.no_grad():
            mean = model.encode(prepared)[0]
        model.train(was)
        seen.append((rec["au"], metrics.active_units(mean, 0.002)[0]))

    train(model, data(), cfg(3, au_threshold=0.002), None, val_x=val, on_epoch=record)
    assert len(seen) == 3 and all(a == b for a, b in seen), seen
