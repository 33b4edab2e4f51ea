"""The exact posterior of the cluster y (lidvae_ext.families.mixture.diagnostics)."""

from __future__ import annotations

import math

import pytest
import torch

from lidvae_ext.diagnostics import diagnose
from lidvae_ext.families import GAUSSIAN, MIXTURE
from lidvae_ext.families.mixture import diagnostics as yd
from lidvae_ext.families.mixture.models import GMVAE
from lidvae_ext.families.gaussian.models import VAE


def _tiny_gmvae(d=5, k=1, c=3):
    torch.manual_seed(0)
    model = GMVAE(d, k, c, encoder_hidden=(16, 16), decoder_hidden=(16,))
    with torch.no_grad():
        model.prior_std_raw.add_(0.3 * torch.randn_like(model.prior_std_raw))
        model.prior_mean.mul_(1.5)
        model.cluster_encoder[-1].bias.add_(torch.linspace(1.5, -1.5, c))
        for p in model.decoder.parameters():
            p.mul_(3.0)  # a decoder that separates the components
    return model.double().eval()


def test_snis_posterior_matches_quadrature():
    """K = 1: p(y|x) ∝ ∫ p(x|z) N(z; μ_y, σ_y²) dz by quadrature, row by row."""
    model = _tiny_gmvae()
    x = torch.bernoulli(torch.full((6, 5), 0.5, dtype=torch.float64), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        grid = torch.linspace(-16, 16, 40001, dtype=torch.float64).unsqueeze(-1)
        params = model.decode(grid).unsqueeze(1).expand(-1, x.shape[0], -1)  # (G, N, D)
        log_lik = model.likelihood.log_prob(x, params)  # (G, N)
        mu, lv = model.prior_params()
        log_comp = -0.5 * ((grid - mu.t()) ** 2 / lv.exp().t() + lv.t() + math.log(2 * math.pi))  # (G, C)
        joint = torch.logsumexp(log_lik.unsqueeze(-1) + log_comp.unsqueeze(1), dim=0)  # (N, C)
        want = torch.softmax(joint, dim=-1)
    p, q, ess = yd.exact_cluster_posterior(model, x, num_samples=20000, seed=1)
    assert p.shape == q.shape == (6, 3) and ess.shape == (6,)
    assert torch.allclose(p.sum(-1), torch.ones(6, dtype=torch.float64))
    assert (p - want).abs().max() < 0.02, (p, want)
    assert ((want - 1 / 3).abs().max(-1).values > 0.1).all()  # the rig separates the clusters: not uniform
    assert torch.allclose(q, model.encode_mixture(x)[0].exp())


def test_summary_known_answers():
    """Exact posterior one-hot on 3 clusters, q uniform: y lives in the model but not in q."""
    c = 3
    p = torch.eye(c, dtype=torch.float64).repeat(2, 1)  # (6, 3), every cluster used
    q = torch.full((6, c), 1.0 / c, dtype=torch.float64)
    s = yd.summarize_cluster_posterior(p, q)
    assert s["y_exact_kl_uniform"] == pytest.approx(math.log(c))
    assert s["y_q_kl_uniform"] == pytest.approx(0.0, abs=1e-12)
    assert s["y_gap_kl"] == pytest.approx(math.log(c))
    assert s["y_exact_mi"] == pytest.approx(math.log(c))
    assert s["y_q_mi"] == pytest.approx(0.0, abs=1e-12)
    assert s["y_exact_active_clusters"] == c and s["y_q_active_clusters"] == c
    assert s["y_agreement"] == pytest.approx(2 / 6)  # argmax of a uniform row is cluster 0
    same = yd.summarize_cluster_posterior(p, p)
    assert same["y_gap_kl"] == pytest.approx(0.0, abs=1e-12) and same["y_agreement"] == 1.0
    with pytest.raises(ValueError, match="p and q must be"):
        yd.summarize_cluster_posterior(p, q[:, :2])


def test_decoder_that_ignores_z_leaves_y_unidentifiable():
    """p(x|z) constant in z: the exact p(y|x) is the prior's uniform, whatever q(y|x) says."""
    model = _tiny_gmvae(d=4, k=2, c=3)
    with torch.no_grad():
        model.decoder[-1].weight.zero_()
        for layer in list(model.decoder)[:-1]:
            if hasattr(layer, "weight"):
                layer.weight.zero_()
    encode = model.encode_mixture

    def broad_proposal(x):  # q(y|x) as trained (skewed), q(z|x,y) = N(0, 3²): covers the whole prior
        log_qy, mean, logvar = encode(x)
        return log_qy, torch.zeros_like(mean), torch.full_like(logvar, math.log(9.0))

    model.encode_mixture = broad_proposal
    x = torch.bernoulli(torch.full((8, 4), 0.5, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    s = yd.cluster_posterior(model, x, num_samples=8000, seed=2)
    assert s["y_exact_kl_uniform"] < 0.02, s
    assert s["y_q_kl_uniform"] > 0.2 and s["y_gap_kl"] > 0.2  # the rigged q(y|x) is skewed


def test_the_mixture_family_adds_the_cluster_posterior_to_diagnose():
    x = torch.bernoulli(torch.full((6, 5), 0.5, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    mixed = diagnose(_tiny_gmvae(), x, num_examples=6, posterior_samples=50, extra=MIXTURE.latent_diagnostics)
    assert {"y_exact_kl_uniform", "y_gap_kl", "y_exact_mi", "y_ess_mean"} <= set(mixed)
    assert mixed["y_num_samples"] == 50
    torch.manual_seed(0)
    plain = diagnose(VAE(5, 2, encoder_hidden=(8,), decoder_hidden=(8,)).double(), x, num_examples=6,
                     posterior_samples=50, extra=GAUSSIAN.latent_diagnostics)
    assert not any(k.startswith("y_") for k in plain)


def test_bad_arguments():
    model = _tiny_gmvae()
    with pytest.raises(ValueError, match="num_samples must be >= 2"):
        yd.exact_cluster_posterior(model, torch.zeros(3, 5, dtype=torch.float64), num_samples=1)
    with pytest.raises(ValueError, match="x must have shape"):
        yd.exact_cluster_posterior(model, torch.zeros(5, dtype=torch.float64))
