"""Models, likelihoods and model specs."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from lidvae_ext import LIDDecoder
from lidvae_ext.core.encoder import GaussianMLPEncoder
from lidvae_ext.core.likelihoods import BernoulliLikelihood, GaussianLikelihood
from lidvae_ext.core.options import ModelOptions
from lidvae_ext.families import build_from_spec, build_model, parse_model_list, parse_spec
from lidvae_ext.families.gaussian.models import LIDVAE, VAE

warnings.filterwarnings("ignore", message="lidvae_ext: no fused kernel")


def small_lidvae(**kw):
    kw.setdefault("backend", "reference")
    return LIDVAE(12, 3, encoder_hidden=(16,), icnn_hidden=8, **kw)


@pytest.mark.parametrize("make", [lambda: VAE(12, 3, (16,), (16,)), small_lidvae])
def test_forward_backward_all_parameters(make):
    torch.manual_seed(0)
    model = make()
    x = torch.rand(5, 12)
    out = model(x)
    assert out["loss"].shape == () and torch.isfinite(out["loss"])
    assert out["mean"].shape == (5, 3)
    out["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.decode(torch.zeros(2, 4, 3)).shape == (2, 4, 12)
    assert model.sample(7).shape == (7, 12)
    assert model.reconstruct(x).shape == (5, 12)


def test_loss_is_rec_plus_weighted_kl():
    torch.manual_seed(0)
    model = VAE(12, 3, (16,), (16,), kl_weight=0.25)
    x, eps = torch.rand(6, 12), torch.randn(6, 3)
    terms = model.loss_terms(x, eps)
    mean, logvar = model.encode(x)
    z = mean + (0.5 * logvar).exp() * eps
    rec = -torch.distributions.Bernoulli(logits=model.decode(z), validate_args=False).log_prob(x).sum(-1)
    torch.testing.assert_close(terms["rec"], rec)
    torch.testing.assert_close(terms["loss"], rec + 0.25 * terms["kl"])
    out = model(x, eps=eps, normalizer=3.0)
    torch.testing.assert_close(out["loss"], terms["loss"].sum() / 3.0)


def test_shared_encoder_init_and_lidvae_options():
    torch.manual_seed(1)
    vae = VAE(12, 3, (16,), (16,))
    torch.manual_seed(1)
    lid = small_lidvae(strong_convexity=0.3, beta="learned")
    for (n1, p1), (n2, p2) in zip(vae.encoder.named_parameters(), lid.encoder.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    assert isinstance(lid.decoder, LIDDecoder)
    assert lid.decoder.latent_map.icnn.strong_convexity == 0.3
    assert lid.decoder.data_map.icnn.strong_convexity == 0.3
    assert lid.decoder.beta.mode == "learned" and any(True for _ in lid.decoder.beta.parameters())
    assert not any(True for _ in small_lidvae(beta="fixed").decoder.beta.parameters())


def test_custom_encoder():
    class Enc(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(12, 6)

        def forward(self, x):
            return self.lin(x).chunk(2, -1)

    model = VAE(12, 3, decoder_hidden=(8,), encoder=Enc())
    assert model(torch.rand(4, 12))["loss"].isfinite()
    assert model.config["custom_encoder"]
    with pytest.raises(ValueError, match="custom encoder"):
        build_model(model.config)


def test_encoder_logvar_bounded():
    enc = GaussianMLPEncoder(4, 2, (8,), min_logvar=-5.0, max_logvar=3.0)
    with torch.no_grad():
        enc.net[-1].bias.copy_(torch.tensor([0.0, 0.0, 1e4, -1e4]))
    _, logvar = enc(torch.zeros(3, 4))
    assert (logvar <= 3.0).all() and (logvar >= -5.0).all()


def test_likelihoods_match_torch_distributions():
    x, eta = torch.rand(4, 5), torch.randn(4, 5)
    xb = torch.bernoulli(x)
    torch.testing.assert_close(BernoulliLikelihood().log_prob(xb, eta),
                               torch.distributions.Bernoulli(logits=eta).log_prob(xb).sum(-1))
    g = GaussianLikelihood(5, std=0.3)
    torch.testing.assert_close(g.log_prob(x, eta), torch.distributions.Normal(eta, 0.3).log_prob(x).sum(-1))
    assert not any(True for _ in g.parameters())
    gl = GaussianLikelihood(5, std=0.3, learn_std=True, min_std=0.05)
    torch.testing.assert_close(gl.log_std().exp(), torch.full((5,), 0.3))
    with torch.no_grad():
        gl.log_std_raw.fill_(-50.0)
    assert torch.allclose(gl.log_std().exp(), torch.full((5,), 0.05))
    assert len(list(gl.parameters())) == 1
    # broadcasting over importance samples (k, B, D) vs data (B, D)
    assert BernoulliLikelihood().log_prob(xb, torch.randn(3, 4, 5)).shape == (3, 4)


def test_dynamic_binarization():
    lik = BernoulliLikelihood(binarize=True)
    x = torch.full((2000, 10), 0.3)
    b = lik.prepare(x)
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    assert abs(float(b.mean()) - 0.3) < 0.02
    f1, f2 = lik.fixed_targets(x, seed=3), lik.fixed_targets(x, seed=3)
    assert torch.equal(f1, f2) and not torch.equal(f1, lik.fixed_targets(x, seed=4))
    assert torch.equal(BernoulliLikelihood().fixed_targets(x), x)
    # Training mode: a fresh Bernoulli draw of the batch every call. The reparameterization
    # noise is fixed here, so only the binarization can make two calls differ.
    model = VAE(10, 2, (8,), (8,), binarize=True)
    model.train()
    batch, eps = x[:50], torch.randn(50, 2)
    losses = [float(model(batch, eps=eps)["loss"]) for _ in range(4)]
    assert len(set(losses)) == 4, losses
    # ...and the loss is the loss of the Bernoulli draw itself (same RNG state, same draw)
    state = torch.get_rng_state()
    train_loss = model(batch, eps=eps)["loss"]
    torch.set_rng_state(state)
    drawn = torch.bernoulli(batch)
    model.eval()  # evaluation mode uses the batch as given
    torch.testing.assert_close(train_loss, model(drawn, eps=eps)["loss"], rtol=0, atol=0)
    assert float(model(batch, eps=eps)["loss"]) == float(model(batch, eps=eps)["loss"])
    # without binarization the same weights and noise give one loss
    soft = VAE(10, 2, (8,), (8,), binarize=False)
    soft.load_state_dict(model.state_dict())
    soft.train()
    assert len({float(soft(batch, eps=eps)["loss"]) for _ in range(3)}) == 1


@pytest.mark.parametrize("make", [lambda: VAE(12, 3, (16,), (16,), likelihood="gaussian", learn_std=True),
                                  lambda: small_lidvae(strong_convexity=0.1, beta="learned")])
def test_build_model_roundtrip(make):
    torch.manual_seed(0)
    model = make()
    clone = build_model(model.config)
    clone.load_state_dict(model.state_dict())
    z = torch.randn(4, 3)
    torch.testing.assert_close(clone.decode(z), model.decode(z))
    assert clone.config == model.config


def test_model_specs():
    s = parse_spec("lidvae-alpha0.1")
    assert (s.model, s.strong_convexity, s.kl_weight) == ("lidvae", 0.1, 1.0)
    s = parse_spec("betavae0.5")
    assert (s.model, s.kl_weight) == ("vae", 0.5)
    s = parse_spec("lidvae-alpha0-learned-kl2")
    assert (s.strong_convexity, s.beta, s.kl_weight) == (0.0, "learned", 2.0)
    for bad in ("gan", "vae-alpha0.1", "lidvae-foo", "betavae"):
        with pytest.raises(ValueError):
            parse_spec(bad)
    assert [x.name for x in parse_model_list("vae,lidvae,lidvae-alpha0.1,betavae0.5")] == [
        "vae", "lidvae", "lidvae-alpha0.1", "betavae0.5"]
    with pytest.raises(ValueError):
        parse_model_list("vae,vae")
    opts = ModelOptions(latent_dim=3, encoder_hidden=(8,), decoder_hidden=(8,), icnn_hidden=8,
                        strong_convexity=0.2, backend="reference")
    m = build_from_spec(parse_spec("lidvae"), 12, opts, train_x=torch.rand(20, 12))
    assert m.config["strong_convexity"] == 0.2  # run default
    m = build_from_spec(parse_spec("lidvae-alpha0-fixed"), 12, opts)
    assert m.config["strong_convexity"] == 0.0  # explicit override
    m = build_from_spec(parse_spec("betavae0.5"), 12, opts)
    assert isinstance(m, VAE) and m.kl_weight == 0.5


@pytest.mark.skipif(not __import__("lidvae_ext").ops.fused_available("cpu"), reason="fused kernels not built")
@pytest.mark.parametrize("beta", ["fixed", "learned"])
def test_lidvae_fused_matches_reference(beta):
    torch.manual_seed(0)
    ref = small_lidvae(beta=beta, strong_convexity=0.1).double()
    fused = build_model({**ref.config, "backend": "fused"}).double()
    fused.load_state_dict(ref.state_dict())
    x, eps = torch.rand(7, 12, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    lr, lf = ref(x, eps=eps)["loss"], fused(x, eps=eps)["loss"]
    torch.testing.assert_close(lf, lr, rtol=1e-10, atol=1e-10)
    lr.backward()
    lf.backward()
    for (name, a), b in zip(ref.named_parameters(), fused.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-8, atol=1e-10, msg=name)
