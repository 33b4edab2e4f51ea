"""The fixed orthonormal β embeddings ('pca', 'random') of LIDDecoder: exactness, speed path, checkpoints."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lidvae_ext import ops, reference
from lidvae_ext.checkpoint import load_checkpoint
from lidvae_ext.core.options import ModelOptions
from lidvae_ext.families import build_from_spec, build_model, model_from_checkpoint, parse_spec
from lidvae_ext.families.gaussian.models import LIDVAE
from lidvae_ext.nn import (LIDDecoder, complete_orthonormal, fit_beta, kmeans, principal_directions,
                           random_orthonormal, within_cluster_directions)
from lidvae_ext.training import TrainConfig, train

needs_fused = pytest.mark.skipif(not ops.fused_available("cpu"), reason="compiled extension not built")


def _pca_basis(d, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(50, k, generator=g, dtype=torch.float64) @ torch.randn(k, d, generator=g, dtype=torch.float64)
    return fit_beta("pca", x + 0.01 * torch.randn(50, d, generator=g, dtype=torch.float64), k)


def _decoder(beta, k=3, d=9, backend="auto"):
    torch.manual_seed(0)
    dec = LIDDecoder(k, d, hidden=6, strong_convexity=0.3, beta=beta, backend=backend, beta_seed=4).double()
    basis = _pca_basis(d, k) if beta == "pca" else random_orthonormal(d, k, 4)
    dec.beta.set_basis(basis)  # in float64 (the float32 buffers of the constructor are rounded)
    return dec, basis


@pytest.mark.parametrize("d,k", [(9, 3), (12, 12), (40, 7)])
def test_complete_orthonormal_gives_orthogonal_q_with_beta_first(d, k):
    beta = random_orthonormal(d, k, seed=d)
    v, t, s = complete_orthonormal(beta)
    q = torch.eye(d, dtype=torch.float64) - v @ t @ v.t()
    torch.testing.assert_close(q.t() @ q, torch.eye(d, dtype=torch.float64), rtol=0, atol=1e-13)
    torch.testing.assert_close(q[:, :k] * s, beta, rtol=0, atol=1e-13)


def test_complete_orthonormal_rejects_non_orthonormal():
    with pytest.raises(ValueError, match="orthonormal"):
        complete_orthonormal(2.0 * random_orthonormal(6, 2))
    with pytest.raises(ValueError, match="D >= K"):
        complete_orthonormal(torch.zeros(2, 3))


@pytest.mark.parametrize("beta", ["pca", "random"])
@pytest.mark.parametrize("backend", ["reference"] + (["fused"] if ops.fused_available("cpu") else []))
def test_decoder_equals_dense_brenier_map_of_beta_u(beta, backend):
    """decoder(z) = ∇ψ₂(β u), u = ∇ψ₁(z), ψ₂(y) = ψ̃(Qᵀ y) with a dense Q built independently."""
    dec, basis = _decoder(beta, backend=backend)
    w = dec.beta.weight()
    torch.testing.assert_close(w, basis, rtol=0, atol=1e-13)  # the β the decoder uses is the given one
    torch.testing.assert_close(w.t() @ w, torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-13)
    a, tau = torch.geqrf(basis)
    q = torch.linalg.householder_product(torch.cat([a, torch.zeros(9, 6, dtype=a.dtype)], 1),
                                         torch.cat([tau, torch.zeros(6, dtype=tau.dtype)]))
    z = torch.randn(13, 3, dtype=torch.float64)
    u = reference.icnn_map(z, *dec.latent_map.icnn.weights(), *dec.latent_map.icnn.hyper())
    y = (u @ w.t()).requires_grad_()
    icnn = dec.data_map.icnn
    psi2 = reference.icnn_potential(y @ q, *icnn.weights(), *icnn.hyper())  # ψ̃(Qᵀy) row-wise
    dense, = torch.autograd.grad(psi2.sum(), y)
    torch.testing.assert_close(dec(z), dense, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("beta", ["pca", "random"])
@pytest.mark.parametrize("backend", ["reference"] + (["fused"] if ops.fused_available("cpu") else []))
def test_decoder_gradients_equal_the_dense_formulation(beta, backend):
    """∂Loss/∂z and ∂Loss/∂θ of the decoder equal those of ∇ψ̃(Qᵀ β u) with a dense Q (second order)."""
    dec, basis = _decoder(beta, backend=backend)
    a, tau = torch.geqrf(basis)
    q = torch.linalg.householder_product(torch.cat([a, torch.zeros(9, 6, dtype=a.dtype)], 1),
                                         torch.cat([tau, torch.zeros(6, dtype=tau.dtype)]))
    z = torch.randn(13, 3, dtype=torch.float64, requires_grad=True)
    target = torch.rand(13, 9, dtype=torch.float64)
    params = list(dec.latent_map.parameters()) + list(dec.data_map.parameters())

    def dense_decoder(z):
        u = reference.icnn_map(z, *dec.latent_map.icnn.weights(), *dec.latent_map.icnn.hyper())
        y = u @ basis.t()
        icnn = dec.data_map.icnn
        psi2 = reference.icnn_potential(y @ q, *icnn.weights(), *icnn.hyper())
        return torch.autograd.grad(psi2.sum(), y, create_graph=True)[0]

    grads = {}
    for name, fn in (("decoder", dec), ("dense", dense_decoder)):
        loss = ((fn(z) - target) ** 2).sum()
        grads[name] = torch.autograd.grad(loss, [z, *params])
    for got, want in zip(grads["decoder"], grads["dense"]):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)


@needs_fused
@pytest.mark.parametrize("beta", ["pca", "random"])
def test_fused_matches_reference_with_orthonormal_beta(beta):
    z = torch.randn(11, 3, dtype=torch.float64)
    target = torch.rand(11, 9, dtype=torch.float64)
    results = {}
    for backend in ("fused", "reference"):
        dec, _ = _decoder(beta, backend=backend)
        loss = ((dec(z) - target) ** 2).sum()
        results[backend] = (loss, torch.autograd.grad(loss, list(dec.parameters())))
    torch.testing.assert_close(results["fused"][0], results["reference"][0], rtol=1e-11, atol=0)
    for gf, gr in zip(results["fused"][1], results["reference"][1]):
        torch.testing.assert_close(gf, gr, rtol=1e-9, atol=1e-11)


def test_fit_beta_pca_is_the_top_principal_directions():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g, dtype=torch.float64) * torch.tensor([5.0, 0.1, 3.0, 0.2, 1.0, 0.3],
                                                                              dtype=torch.float64)
    b = fit_beta("pca", x, 3)
    torch.testing.assert_close(b.t() @ b, torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-12)
    assert b.abs().argmax(0).tolist() == [0, 2, 4]  # variance order 5 > 3 > 1 along the axes
    assert (b[b.abs().argmax(0), torch.arange(3)] > 0).all()
    assert fit_beta("fixed", x, 3) is None
    with pytest.raises(ValueError, match="needs training data"):
        fit_beta("pca", None, 3)


def test_unfitted_pca_raises():
    dec = LIDDecoder(2, 5, hidden=4, beta="pca")
    with pytest.raises(RuntimeError, match="no basis"):
        dec(torch.randn(3, 2))


def test_pca_lidvae_checkpoint_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(64, 3, generator=g) @ torch.rand(3, 10, generator=g) / 3).clamp(0, 1)
    opts = ModelOptions(latent_dim=3, encoder_hidden=(8,), icnn_hidden=8, beta="pca")
    model = build_from_spec(parse_spec("lidvae"), 10, opts, train_x=x)
    torch.testing.assert_close(model.decoder.beta.weight(), fit_beta("pca", x, 3).float(), rtol=0, atol=1e-6)
    train(model, x, TrainConfig(epochs=1, batch_size=32, progress=False), tmp_path)
    state = load_checkpoint(tmp_path)
    assert all(isinstance(v, torch.Tensor) for v in state["model_state"].values())
    rebuilt = model_from_checkpoint(state)
    model.eval()
    rebuilt.eval()
    z = torch.randn(5, 3)
    torch.testing.assert_close(rebuilt.decode(z), model.decode(z), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="no basis"):
        build_model(state["model_config"]).decode(z)  # without the state dict the basis is missing


def test_spec_modifiers_and_default_fits_pca():
    assert parse_spec("lidvae-pca").beta == "pca" and parse_spec("lidvae-random").beta == "random"
    with pytest.raises(ValueError, match="for the LID models only"):
        parse_spec("vae-pca")
    x = torch.rand(40, 10)
    model = build_from_spec(parse_spec("lidvae"), 10, ModelOptions(latent_dim=3, encoder_hidden=(8,),
                                                                        icnn_hidden=8), train_x=x)
    assert isinstance(model, LIDVAE) and model.config["beta"] == "pca"  # the Gaussian family's default
    opts = ModelOptions(latent_dim=3, encoder_hidden=(8,), icnn_hidden=8, clusters=2)
    mixture = build_from_spec(parse_spec("lidgmvae"), 10, opts, train_x=x)
    assert mixture.decoder.beta.mode == "random"  # the mixture family's default
    named = build_from_spec(parse_spec("lidgmvae"), 10, dataclasses.replace(opts, beta="pca"), train_x=x)
    assert named.decoder.beta.mode == "pca"  # --beta names one for every LID model of the run
    torch.testing.assert_close(named.decoder.beta.weight().double(), fit_beta("pca", x, 3), rtol=0, atol=1e-6)


@pytest.mark.parametrize("early_stopping", [False, True])
def test_training_fits_pca_beta_on_the_training_split_only(tmp_path, early_stopping):
    """β = pca of a trained LIDVAE is the top principal directions of the rows it was fitted on — the
    training split (less the validation rows with early stopping) — never the test split. The
    data make the splits' directions differ: train varies along coordinates 0-1, test along 5-6."""
    import numpy as np

    from lidvae_ext import cli
    from lidvae_ext.data.dataset import validation_split

    rng = np.random.default_rng(0)

    def rows(n, axes):
        x = np.full((n, 8), 0.5) + 0.01 * rng.standard_normal((n, 8))
        x[:, axes] += 0.4 * rng.uniform(-1, 1, (n, len(axes))) * np.array([1.0, 0.5])
        return x.clip(0, 1).astype(np.float32)

    train, test = rows(60, [0, 1]), rows(30, [5, 6])
    np.savez(tmp_path / "d.npz", train=train, test=test)
    args = ["train", "--model", "lidvae", "--beta", "pca", "--latent-dim", "2", "--data", str(tmp_path / "d.npz"),
            "--epochs", "1", "--no-eval", "--no-progress", "--threads", "1", "--encoder-hidden", "8",
            "--icnn-hidden", "4", "--out", str(tmp_path / "run")]
    if early_stopping:
        args += ["--early-stopping", "1", "--val-fraction", "0.25"]
    assert cli.main(args) == 0
    fitted = model_from_checkpoint(tmp_path / "run").decoder.beta.weight().double()
    rows_fitted = torch.from_numpy(train)
    if early_stopping:
        rows_fitted = validation_split(rows_fitted, 0.25, 0)[0]
    torch.testing.assert_close(fitted, fit_beta("pca", rows_fitted, 2), rtol=0, atol=1e-6)
    assert (fitted - fit_beta("pca", torch.from_numpy(test), 2)).abs().max() > 0.5
    if early_stopping:  # the validation rows are left out too
        assert (fitted - fit_beta("pca", torch.from_numpy(train), 2)).abs().max() > 1e-4


def _clustered_rows(n_per=40, seed=0):
    """Three clusters far apart along e0/e1; inside them the rows vary along e2 (sd 2) and e3 (sd 1)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.zeros(3, 8, dtype=torch.float64)
    centres[1, 0], centres[2, 1] = 30.0, 30.0
    noise = torch.zeros(3 * n_per, 8, dtype=torch.float64)
    noise[:, 2] = 2.0 * torch.randn(3 * n_per, generator=g, dtype=torch.float64)
    noise[:, 3] = torch.randn(3 * n_per, generator=g, dtype=torch.float64)
    noise[:, 4:] = 0.01 * torch.randn(3 * n_per, 4, generator=g, dtype=torch.float64)
    return centres.repeat_interleave(n_per, 0) + noise, torch.arange(3).repeat_interleave(n_per)


def test_kmeans_recovers_separated_clusters():
    x, truth = _clustered_rows()
    labels, centres = kmeans(x, 3, seed=1)
    for k in range(3):  # each true cluster is one k-means cluster (labels up to permutation)
        assert labels[truth == k].unique().numel() == 1
    assert labels.unique().numel() == 3
    for k in range(3):  # each centre is the mean of its rows
        torch.testing.assert_close(centres[k], x[labels == k].mean(0), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="N >= clusters=50"):
        kmeans(x[:10], 50)


def test_within_directions_are_the_within_cluster_axes():
    x, _ = _clustered_rows()
    within = within_cluster_directions(x, 2, clusters=3)
    pca = principal_directions(x, 2)
    e = torch.eye(8, dtype=torch.float64)
    torch.testing.assert_close(within.abs(), e[:, 2:4], rtol=0, atol=0.05)  # e2 then e3 (sample rotation)
    assert float((pca.t() @ e[:, :2]).square().sum()) > 1.9  # plain PCA picks the between-cluster axes
    torch.testing.assert_close(fit_beta("within", x, 2, clusters=3), within, rtol=0, atol=0)


def test_within_beta_decoder_and_spec(tmp_path):
    x, _ = _clustered_rows()
    dec = LIDDecoder(2, 8, hidden=6, beta="within")
    with pytest.raises(RuntimeError, match="'within' β embedding has no basis"):
        dec(torch.randn(3, 2))
    dec.fit_beta(x.float())
    assert dec.beta.mode == "within"
    torch.testing.assert_close(dec.beta.weight().double(), within_cluster_directions(x, 2), rtol=0, atol=1e-6)
    opts = ModelOptions(latent_dim=2, encoder_hidden=(8,), icnn_hidden=8, clusters=3)
    model = build_from_spec(parse_spec("lidgmvae-within"), 8, opts, train_x=x.float())
    torch.testing.assert_close(model.decoder.beta.weight().double(), within_cluster_directions(x, 2, clusters=3),
                               rtol=0, atol=1e-6)


def test_sentence_model_refuses_within_beta():
    from lidvae_ext.families.sentence.models import LIDSVAE
    with pytest.raises(ValueError, match="beta='within'.*image rows"):
        LIDSVAE(vocab_size=50, latent_dim=4, hidden=8, beta="within")
