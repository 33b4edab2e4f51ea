"""The drop-in API: LIDDecoder's defaults and constructors, fit_beta, and the metrics for a user's own VAE."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lidvae_ext
from lidvae_ext import LIDDecoder, diagnose_vae, evaluate_vae, principal_directions
from lidvae_ext.diagnostics import diagnose
from lidvae_ext.families.gaussian.metrics import evaluate
from lidvae_ext.families.gaussian.models import VAE
from lidvae_ext.nn import DEFAULT_ALPHA, DEFAULT_BETA


def _low_rank_data(n=80, d=12, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, k, generator=g) @ torch.rand(k, d, generator=g) / k
    return (x + 0.05 * torch.rand(n, d, generator=g)).clamp(0, 1)


def test_top_level_exports_the_drop_in_api():
    for name in ("LIDDecoder", "fit_beta", "principal_directions", "evaluate_vae", "diagnose_vae", "wrap_vae"):
        assert name in lidvae_ext.__all__ and hasattr(lidvae_ext, name)


def test_bare_constructor_uses_the_documented_defaults():
    dec = LIDDecoder(4, 20, 16)
    assert dec.beta.mode == DEFAULT_BETA == "random"
    assert dec.latent_map.icnn.strong_convexity == dec.data_map.icnn.strong_convexity == DEFAULT_ALPHA > 0
    w = dec.beta.weight().double()
    torch.testing.assert_close(w.t() @ w, torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-6)
    assert float((w[4:] != 0).sum()) > 0  # not the zero-padding [I; 0]
    # seeded: two bare decoders share β; another seed gives another β
    torch.testing.assert_close(LIDDecoder(4, 20, 16).beta.weight(), w.float())
    assert not torch.allclose(LIDDecoder(4, 20, 16, beta_seed=1).beta.weight(), w.float())
    assert f"default {DEFAULT_ALPHA}" in LIDDecoder.__doc__ and f'default "{DEFAULT_BETA}"' in LIDDecoder.__doc__


def test_paper_constructor_is_the_papers_configuration():
    dec = LIDDecoder.paper(3, 9, 8, num_layers=3)
    assert dec.beta.mode == "fixed"
    for icnn in (dec.latent_map.icnn, dec.data_map.icnn):
        assert (icnn.strong_convexity, icnn.positivity, icnn.num_layers) == (0.0, "clamp", 3)


def test_from_data_fixes_beta_on_the_principal_directions():
    x = _low_rank_data()
    dec = LIDDecoder.from_data(x, 3, hidden=8, strong_convexity=0.2)
    assert dec.beta.mode == "pca" and dec.out_dim == 12
    assert dec.latent_map.icnn.strong_convexity == 0.2
    torch.testing.assert_close(dec.beta.weight().double(), principal_directions(x, 3), rtol=0, atol=1e-6)
    # the same basis as centring and an SVD by hand (up to the documented sign convention)
    xc = x.double() - x.double().mean(0)
    _, _, vh = torch.linalg.svd(xc, full_matrices=False)
    torch.testing.assert_close(principal_directions(x, 3).abs(), vh[:3].t().abs(), rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="do not pass beta"):
        LIDDecoder.from_data(x, 3, hidden=8, beta="fixed")


def test_fit_beta_method_and_state_dict_round_trip():
    x = _low_rank_data()
    torch.manual_seed(0)
    dec = LIDDecoder(3, 12, 8, beta="pca").fit_beta(x)
    z = torch.randn(5, 3)
    out = dec(z)
    # a fresh decoder with other weights and no basis gets everything, β included, from the state dict
    torch.manual_seed(1)
    other = LIDDecoder(3, 12, 8, beta="pca")
    other.load_state_dict(dec.state_dict())
    torch.testing.assert_close(other(z), out, rtol=0, atol=0)
    # the default (random) β round-trips too, into a decoder built with another seed
    dec2 = LIDDecoder(3, 12, 8)
    other2 = LIDDecoder(3, 12, 8, beta_seed=7)
    other2.load_state_dict(dec2.state_dict())
    torch.testing.assert_close(other2(z), dec2(z), rtol=0, atol=0)
    # fit_beta turns the default random β into the fitted one
    fitted = LIDDecoder(3, 12, 8).fit_beta(x)
    assert fitted.beta.mode == "pca"
    torch.testing.assert_close(fitted.beta.weight().double(), principal_directions(x, 3), rtol=0, atol=1e-6)


@pytest.mark.parametrize("bad,message", [
    (torch.rand(20, 3, 4), r"2-D \(N, D\).*\(20, 3, 4\)"),
    (torch.rand(3, 12), r"N=3 rows.*K=3"),
    (torch.rand(30, 2), r"D=2 columns.*latent_dim=3"),
    (torch.full((30, 12), float("nan")), "NaN"),
])
def test_principal_directions_errors_name_the_sizes(bad, message):
    with pytest.raises(ValueError, match=message):
        principal_directions(bad, 3)


def test_fit_beta_method_errors():
    with pytest.raises(ValueError, match=r"\(N, 12\).*\(40, 10\)"):
        LIDDecoder(3, 12, 8, beta="pca").fit_beta(torch.rand(40, 10))
    with pytest.raises(ValueError, match="beta='pca'.*'fixed'"):
        LIDDecoder(3, 12, 8, beta="fixed").fit_beta(_low_rank_data())


def _small_vae(seed=0, likelihood="bernoulli"):
    torch.manual_seed(seed)
    return VAE(12, 3, encoder_hidden=(16,), decoder_hidden=(16,), likelihood=likelihood, binarize=True)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_evaluate_vae_equals_the_projects_evaluate(likelihood):
    model = _small_vae(likelihood=likelihood)
    x = _low_rank_data(n=40)
    kwargs = dict(iwae_samples=7, seed=3, batch_size=16)
    ours = evaluate(model, x, **kwargs)
    binarize = likelihood == "bernoulli"
    theirs = evaluate_vae(model.encoder, model.decoder, x, likelihood, binarize=binarize, **kwargs)
    for key in ("active_units", "au_variance", "kl", "kl_per_dim", "mutual_info", "neg_elbo", "iwae_nll"):
        assert theirs[key] == ours[key], key
    assert theirs["active_units_at"] == {"0.01": sum(v >= 0.01 for v in ours["au_variance"]),
                                         "0.1": sum(v >= 0.1 for v in ours["au_variance"])}
    # plain callables (closures over the user's modules) give the same numbers
    lam = evaluate_vae(lambda t: model.encoder(t), lambda z: model.decoder(z), x, likelihood, binarize=binarize,
                       **kwargs)
    assert lam["iwae_nll"] == ours["iwae_nll"] and lam["mutual_info"] == ours["mutual_info"]


def test_evaluate_vae_errors_are_one_line():
    model = _small_vae()
    with pytest.raises(ValueError, match=r"\(N >= 2, D\).*\(4, 3, 4\)"):
        evaluate_vae(model.encoder, model.decoder, torch.rand(4, 3, 4))
    with pytest.raises(ValueError, match=r"\(mean, logvar\)"):
        evaluate_vae(lambda t: t[:, :3], model.decoder, torch.rand(4, 12))
    with pytest.raises(ValueError, match="likelihood must be"):
        evaluate_vae(model.encoder, model.decoder, torch.rand(4, 12), "poisson")
    with pytest.raises(TypeError, match="encoder must be an nn.Module or a callable"):
        evaluate_vae(3, model.decoder, torch.rand(4, 12))


def test_diagnose_vae_equals_the_projects_diagnose():
    model = _small_vae()
    x = _low_rank_data(n=24)
    ours = diagnose(model, x, num_examples=24, posterior_samples=50, seed=1)
    theirs = diagnose_vae(model.encoder, model.decoder, x, binarize=True, num_examples=24, posterior_samples=50,
                          seed=1)
    for key in ("sensitivity", "fisher", "exact_var", "exact_mean_var", "q_mean_var", "ess_mean"):
        assert theirs[key] == ours[key], key
    with pytest.raises(TypeError, match="nn.Module"):
        diagnose_vae(lambda t: model.encoder(t), model.decoder, x)


def test_evaluate_vae_on_a_lid_decoder_in_a_user_vae():
    """A user-built encoder + LIDDecoder: the metrics run on the fused decoder and are finite."""
    x = _low_rank_data(n=40)
    enc = nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 6))
    m = evaluate_vae(lambda t: enc(t).chunk(2, -1), LIDDecoder(3, 12, 8), x, iwae_samples=5)
    assert m["latent_dim"] == 3 and all(torch.isfinite(torch.tensor([m["iwae_nll"], m["neg_elbo"]])))
    with torch.no_grad():
        mu, logvar = enc(x).chunk(2, -1)
    kl = 0.5 * (mu.double().square() + logvar.double().exp() - 1 - logvar.double()).sum(-1).mean()
    assert m["kl"] == pytest.approx(float(kl), rel=1e-12)
