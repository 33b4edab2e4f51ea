"""Known-answer tests of lidvae_ext.diagnostics (decoder sensitivity, SNIS exact-posterior spread)."""

import numpy as np
import pytest
import torch
from torch import nn

from lidvae_ext import diagnostics
from lidvae_ext.classical.ppca import PPCA
from lidvae_ext.core.likelihoods import BernoulliLikelihood, GaussianLikelihood
from lidvae_ext.core.model import LatentVariableModel


class FixedEncoder(nn.Module):
    """q(z|x) = N(x A + c, diag exp(logvar)) with fixed parameters."""

    def __init__(self, A, c, logvar):
        super().__init__()
        self.register_buffer("A", A)
        self.register_buffer("c", c)
        self.register_buffer("logvar", logvar)
        self.dummy = nn.Parameter(torch.zeros(()))  # so the model has a parameter (device/dtype probe)

    def forward(self, x):
        return x @ self.A + self.c, self.logvar.expand(x.shape[0], -1)


def linear_decoder(W, b):
    lin = nn.Linear(W.shape[1], W.shape[0])
    with torch.no_grad():
        lin.weight.copy_(W)
        lin.bias.copy_(b)
    return lin


def test_decoder_that_ignores_a_coordinate():
    torch.manual_seed(0)
    K, D, dead = 4, 10, 2
    W = torch.randn(D, K, dtype=torch.float64)
    W[:, dead] = 0.0
    dec = linear_decoder(W, torch.randn(D, dtype=torch.float64)).double()
    A = 0.3 * torch.randn(D, K, dtype=torch.float64)
    A[:, dead] = 0.0  # q(z_dead | x) = N(0, 1) = the prior
    logvar = torch.full((K,), -1.0, dtype=torch.float64)
    logvar[dead] = 0.0
    model = LatentVariableModel(FixedEncoder(A, torch.zeros(K, dtype=torch.float64), logvar), dec,
                                BernoulliLikelihood(), K).double()
    x = (torch.rand(40, D, generator=torch.Generator().manual_seed(1)) < 0.5).double()
    out = diagnostics.diagnose(model, x, num_examples=40, posterior_samples=4000, prepare_targets=False)
    assert out["sensitivity"][dead] == 0.0 and out["fisher"][dead] == 0.0
    live = [k for k in range(K) if k != dead]
    # linear decoder: ∂η/∂z_k = W[:, k] exactly
    assert np.allclose([out["sensitivity"][k] for k in live], [float(W[:, k].square().sum()) for k in live],
                       rtol=1e-7)
    assert min(out["fisher"][k] for k in live) > 0.0
    # the exact posterior along the ignored coordinate is the prior
    assert out["exact_var"][dead] == pytest.approx(1.0, abs=0.1)
    assert out["exact_mean_var"][dead] < 0.05
    assert out["exact_mean_var"][dead] < 3 * out["exact_mean_noise"][dead]  # indistinguishable from MC noise


def test_linear_gaussian_exact_posterior_matches_ppca():
    torch.manual_seed(0)
    K, D, sigma = 3, 6, 0.5
    W = torch.randn(D, K, dtype=torch.float64)
    mu = torch.randn(D, dtype=torch.float64)
    ppca = PPCA(W.numpy(), sigma ** 2, mu.numpy())
    rng = np.random.default_rng(3)
    z_true = rng.standard_normal((30, K))
    x = torch.from_numpy(z_true @ W.numpy().T + mu.numpy() + sigma * rng.standard_normal((30, D)))
    means, cov = ppca.posterior(x.numpy())
    # proposal: the exact means (as a linear map of x) with a diagonal, wider variance
    Mm = W.T @ W + sigma ** 2 * torch.eye(K, dtype=torch.float64)
    A = torch.linalg.solve(Mm, W.T).T  # x ↦ (x − μ) A
    enc = FixedEncoder(A, -(mu @ A), torch.log(1.5 * torch.from_numpy(np.diag(cov).copy())))
    lik = GaussianLikelihood(D, std=sigma).double()
    model = LatentVariableModel(enc, linear_decoder(W, mu).double(), lik, K).double()
    out = diagnostics.diagnose(model, x, num_examples=30, posterior_samples=20000, prepare_targets=False)
    assert np.allclose(out["exact_var"], np.diag(cov), rtol=0.05)
    assert np.allclose(out["exact_mean_var"], means.var(0, ddof=1), rtol=0.05)
    assert np.allclose(out["sensitivity"], W.square().sum(0).numpy(), rtol=1e-7)
    assert np.allclose(out["fisher"], W.square().sum(0).numpy() / sigma ** 2, rtol=1e-7)
    assert out["ess_min"] > 100


def test_diagnose_runs_on_lidvae_and_rejects_unknown_likelihood():
    from lidvae_ext.families.gaussian.models import LIDVAE

    torch.manual_seed(0)
    model = LIDVAE(8, 3, encoder_hidden=(16,), icnn_hidden=8, strong_convexity=0.5, beta="random")
    x = torch.rand(12, 8)
    out = diagnostics.diagnose(model, x, num_examples=12, posterior_samples=50)
    assert len(out["fisher"]) == 3 and all(f > 0 for f in out["fisher"])  # α > 0: injective, every z_k moves η
    with pytest.raises(ValueError, match="Fisher weight"):
        diagnostics.fisher_weight(object(), torch.zeros(2))


def test_jacobian_matches_autograd_on_a_lid_decoder_with_jumps():
    """The leaky-ReLU Brenier map jumps across hidden kinks; the FD Jacobian must still be the a.e. derivative."""
    from lidvae_ext.families.gaussian.models import LIDVAE

    torch.manual_seed(0)
    model = LIDVAE(9, 3, encoder_hidden=(8,), icnn_hidden=6, strong_convexity=0.2, beta="random",
                   backend="reference").double()
    z = torch.randn(150, 3, dtype=torch.float64)
    fd = diagnostics.decoder_jacobian(model, z, step=1e-2)  # a large step: many differences straddle a jump
    exact = torch.stack([torch.autograd.functional.jacobian(lambda v: model.decode(v[None])[0], z[i]).t()
                         for i in range(z.shape[0])])  # (B, K, D)
    err = (fd - exact).abs().amax((1, 2))
    assert float(err.max()) < 2e-2
    assert float(err.median()) < 1e-3


def test_bernoulli_fisher_weight_is_the_curvature_of_the_log_likelihood():
    """w(η) = p(1 − p), p = σ(η): minus the second derivative in η of log p(x|η) = xη − log(1 + e^η)
    (autograd on that formula, for x = 0 and 1) and the variance of the score x − p; and the decoder
    Fisher information F_kk = E Σ_d w(η_d) (∂η_d/∂z_k)² of a linear decoder, recomputed by hand."""
    eta = torch.linspace(-6.0, 6.0, 25, dtype=torch.float64)
    w = diagnostics.fisher_weight(BernoulliLikelihood(), eta)
    for x in (0.0, 1.0):
        e = eta.clone().requires_grad_(True)
        (g,) = torch.autograd.grad((x * e - torch.log1p(torch.exp(e))).sum(), e, create_graph=True)
        (h,) = torch.autograd.grad(g.sum(), e)
        torch.testing.assert_close(w, -h, rtol=1e-12, atol=1e-15)
    p = 1.0 / (1.0 + torch.exp(-eta))
    torch.testing.assert_close(w, p * (1 - p) ** 2 + (1 - p) * p**2, rtol=1e-12, atol=1e-15)  # E (x − p)²

    gen = torch.Generator().manual_seed(2)
    K, D = 3, 7
    W = torch.randn(D, K, generator=gen, dtype=torch.float64)
    b = torch.randn(D, generator=gen, dtype=torch.float64)
    A = 0.3 * torch.randn(D, K, generator=gen, dtype=torch.float64)
    logvar = torch.full((K,), -1.0, dtype=torch.float64)
    model = LatentVariableModel(FixedEncoder(A, torch.zeros(K, dtype=torch.float64), logvar),
                                linear_decoder(W, b).double(), BernoulliLikelihood(), K).double()
    x = (torch.rand(30, D, generator=gen) < 0.5).double()
    out = diagnostics.decoder_sensitivity(model, x, num_samples=1, seed=4)
    eps = torch.randn(30, K, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    z = x @ A + torch.exp(0.5 * logvar) * eps  # the same draws
    q = 1.0 / (1.0 + torch.exp(-(z @ W.T + b)))
    want = ((q * (1 - q)) @ W.square()).mean(0)  # (K,)
    np.testing.assert_allclose(out["fisher"], want.numpy(), rtol=1e-7)
