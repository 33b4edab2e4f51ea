"""Early stopping: validation split, stop after PATIENCE stale epochs, best state restored, resume."""

from __future__ import annotations

import json

import pytest
import torch

from lidvae_ext import cli, training
from lidvae_ext.data.dataset import validation_split
from lidvae_ext.errors import CheckpointError
from lidvae_ext.families.gaussian.models import VAE
from lidvae_ext.training import TrainConfig
from lidvae_ext.checkpoint import load_checkpoint
from lidvae_ext.training import train

SCRIPT = [5.0, 4.0, 3.0, 3.5, 3.6, 3.7, 2.0, 1.0]  # best at epoch 3, then stale


def data(n=96, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, generator=g) @ torch.rand(3, d, generator=g) / 3).clamp(0, 1)


def make_model():
    torch.manual_seed(0)
    return VAE(12, 3, (16,), (16,), binarize=True)


def scripted(monkeypatch, start=0):
    calls = {"n": start}

    def fake(model, x, seed=0, batch_size=1024):
        calls["n"] += 1
        return SCRIPT[calls["n"] - 1]

    monkeypatch.setattr(training.loop, "validation_loss", fake)  # the name the loop calls
    return calls


def cfg(**kw):
    return TrainConfig(epochs=8, batch_size=32, lr=3e-3, progress=False, early_stopping=3, **kw)


def test_stops_after_patience_and_restores_best(monkeypatch, tmp_path):
    scripted(monkeypatch)
    model = make_model()
    snapshots = {}
    res = train(model, data(), cfg(), tmp_path, stop_x=data(20, seed=1),
                on_epoch=lambda r: snapshots.__setitem__(r["epoch"], {k: v.clone() for k, v in
                                                                      model.state_dict().items()}))
    assert res.best_epoch == 3 and res.stopped_epoch == 6 and res.epochs == 6 and len(res.history) == 6
    assert [h["val_loss"] for h in res.history] == SCRIPT[:6]
    torch.testing.assert_close(model.state_dict(), snapshots[3], rtol=0, atol=0)
    assert any((snapshots[5][k] != v).any() for k, v in snapshots[3].items())  # training did move on
    state = load_checkpoint(tmp_path)
    assert state["epoch"] == 6 and state["early_stopping"]["best_epoch"] == 3
    torch.testing.assert_close(state["model_state"], snapshots[3], rtol=0, atol=0)


def test_real_validation_loss_is_deterministic_and_used():
    model = make_model()
    x = model.likelihood.fixed_targets(data(20, seed=1), 0)
    a, b = training.validation_loss(model, x, 3), training.validation_loss(model, x, 3)
    assert a == b and a > 0
    res = train(model, data(), TrainConfig(epochs=3, batch_size=32, progress=False, early_stopping=50),
                stop_x=data(20, seed=1))
    assert res.best_epoch == min(range(1, 4), key=lambda e: res.history[e - 1]["val_loss"])
    assert res.stopped_epoch == 3  # the maximum reached: the best epoch is restored too


def test_resume_after_interrupt_matches_uninterrupted(monkeypatch, tmp_path):
    scripted(monkeypatch)
    full = make_model()
    train(full, data(), cfg(), tmp_path / "full", stop_x=data(20, seed=1))

    scripted(monkeypatch)
    part = make_model()

    def interrupt(rec):
        if rec["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(part, data(), cfg(), tmp_path / "part", stop_x=data(20, seed=1), on_epoch=interrupt)
    scripted(monkeypatch, start=2)
    resumed = make_model()
    res = train(resumed, data(), cfg(), tmp_path / "part", stop_x=data(20, seed=1), resume=True)
    assert res.resumed_from == 2 and res.best_epoch == 3 and res.stopped_epoch == 6
    torch.testing.assert_close(resumed.state_dict(), full.state_dict(), rtol=0, atol=0)
    # a stopped run resumes to a no-op that keeps the best state
    again = make_model()
    res = train(again, data(), cfg(), tmp_path / "part", stop_x=data(20, seed=1), resume=True)
    assert res.history == load_checkpoint(tmp_path / "part")["history"] and res.stopped_epoch == 6
    torch.testing.assert_close(again.state_dict(), full.state_dict(), rtol=0, atol=0)


def test_bad_early_stopping_arguments(tmp_path):
    with pytest.raises(ValueError, match="stop_x"):
        train(make_model(), data(), cfg())
    with pytest.raises(ValueError, match="patience"):
        train(make_model(), data(), TrainConfig(epochs=1, early_stopping=0, progress=False), stop_x=data(4))
    train(make_model(), data(), TrainConfig(epochs=1, batch_size=32, progress=False), tmp_path)
    # a run trained without early stopping cannot be resumed with it: the resume check names the setting
    with pytest.raises(CheckpointError, match="early_stopping: checkpoint None, this run 3"):
        train(make_model(), data(), cfg(), tmp_path, stop_x=data(4), resume=True)


def test_validation_split_is_seeded_and_disjoint():
    x = torch.arange(50.0)[:, None]
    fit, val = validation_split(x, 0.2, seed=3)
    assert val.shape[0] == 10 and fit.shape[0] == 40
    assert set(fit[:, 0].tolist()).isdisjoint(val[:, 0].tolist())
    assert torch.equal(validation_split(x, 0.2, seed=3)[1], val)
    assert not torch.equal(validation_split(x, 0.2, seed=4)[1], val)
    with pytest.raises(ValueError, match="val_fraction"):
        validation_split(x, 1.0)


TINY = ["--train-size", "150", "--test-size", "60", "--encoder-hidden", "32", "--decoder-hidden", "32",
        "--icnn-hidden", "16", "--latent-dim", "4", "--iwae-samples", "5", "--no-progress", "--threads", "1"]


def test_cli_compare_early_stopping_report(tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = cli.main(["compare", "--epochs", "2", "--early-stopping", "1", "--out", str(out), "--models",
                   "vae,lidvae-fixed", "--diagnostic-samples", "20", *TINY])
    assert rc == 0
    assert "AU≥0.001" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    for m in report.values():
        assert m["train_size"] == 135 and m["val_size"] == 15
        assert set(m["active_units_at"]) == {"0.001", "0.01", "0.1"}
        assert 1 <= m["best_epoch"] <= m["epochs"] <= 2
        assert len(m["diagnostics"]["fisher"]) == 4 and m["diagnostics"]["num_examples"] == 60
    assert report["lidvae-fixed"]["beta"] == "fixed" and report["vae"]["beta"] is None
    assert (out / "diagnostics.png").read_bytes()[:4] == b"\x89PNG"
    assert cli.main(["compare", "--early-stopping", "0", "--out", str(tmp_path / "x"), *TINY]) == 2
