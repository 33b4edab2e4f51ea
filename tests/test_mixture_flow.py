"""The optional volume-preserving flow on q(z|x,y) of the mixture models: the flow itself, the objective, metrics."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.distributions import Bernoulli, Normal

from lidvae_ext.checkpoint import load_checkpoint
from lidvae_ext.core.options import ModelOptions
from lidvae_ext.families import build_from_spec, build_model, parse_spec
from lidvae_ext.families.mixture import metrics as mm
from lidvae_ext.families.mixture.flow import AdditiveCoupling, VolumePreservingFlow
from lidvae_ext.families.mixture.models import GMVAE, LIDGMVAE
from lidvae_ext.training import TrainConfig, train

from mixture_bounds import assert_iwae_brackets_nll

warnings.filterwarnings("ignore", message="lidvae_ext: no fused kernel")


def randomize(flow: VolumePreservingFlow, scale: float = 0.5, seed: int = 0) -> VolumePreservingFlow:
    """Give the (zero-initialized, identity) couplings random last layers so that the flow is not the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for c in flow.couplings:
            last = c.net[-1]
            last.weight.copy_(scale * torch.randn(last.weight.shape, generator=g, dtype=last.weight.dtype))
            last.bias.copy_(scale * torch.randn(last.bias.shape, generator=g, dtype=last.bias.dtype))
    return flow


def tiny_flow(kind="gmvae", d=6, k=2, c=3, **kw):
    torch.manual_seed(0)
    if kind == "gmvae":
        model = GMVAE(d, k, c, encoder_hidden=(16, 16), decoder_hidden=(16,), flow=True, flow_hidden=(8,), **kw)
    else:
        model = LIDGMVAE(d, k, c, encoder_hidden=(16, 16), icnn_hidden=8, strong_convexity=0.2, backend="reference",
                         flow=True, flow_hidden=(8,), **kw)
    with torch.no_grad():
        model.prior_std_raw.add_(0.3 * torch.randn_like(model.prior_std_raw))
        model.cluster_encoder[-1].bias.add_(torch.linspace(1.5, -1.5, c))
    model = model.double()
    randomize(model.flow)
    return model


@pytest.mark.parametrize("k", [2, 5])
def test_flow_is_invertible_and_volume_preserving(k):
    flow = randomize(VolumePreservingFlow(k, hidden=(8,)).double())
    z = torch.randn(7, 3, k, dtype=torch.float64)
    fz = flow(z)
    assert (fz - z).abs().max() > 1e-2  # not the identity
    torch.testing.assert_close(flow.inverse(fz), z, rtol=0, atol=1e-12)
    torch.testing.assert_close(flow(flow.inverse(z)), z, rtol=0, atol=1e-12)
    for point in torch.randn(4, k, dtype=torch.float64):
        jac = torch.autograd.functional.jacobian(flow, point)
        assert (jac - torch.eye(k, dtype=torch.float64)).abs().max() > 1e-3
        assert abs(float(torch.linalg.det(jac)) - 1.0) < 1e-10
    assert flow.log_abs_det_jacobian(z).shape == (7, 3) and not flow.log_abs_det_jacobian(z).any()


def test_flow_masks_alternate_and_move_every_coordinate():
    k = 6
    flow = randomize(VolumePreservingFlow(k, hidden=(8,)).double())
    first, second = [0, 1, 2], [3, 4, 5]
    assert [c.cond.tolist() for c in flow.couplings] == [first, second]
    assert [c.update.tolist() for c in flow.couplings] == [second, first]
    z = torch.randn(10, k, dtype=torch.float64)
    for c in flow.couplings:  # each coupling leaves exactly its conditioning half unchanged
        out = c(z)
        torch.testing.assert_close(out[:, c.cond], z[:, c.cond], rtol=0, atol=0)
        assert ((out[:, c.update] - z[:, c.update]).abs() > 1e-6).all()
    assert ((flow(z) - z).abs() > 1e-6).all()  # with a fixed mask the first half would never move
    # each output coordinate depends on every input coordinate only where the alternation allows: ∂f_a/∂z_b ≠ 0
    jac = torch.autograd.functional.jacobian(flow, z[0])
    assert jac[:3, 3:].abs().max() > 1e-4 and jac[3:, :3].abs().max() > 1e-4
    with pytest.raises(ValueError, match="latent_dim >= 2"):
        VolumePreservingFlow(1)
    with pytest.raises(ValueError, match="disjoint"):
        AdditiveCoupling([0, 1], [1, 2])


@pytest.mark.parametrize("kind", ["gmvae", "lidgmvae"])
def test_flow_elbo_matches_brute_force_enumeration(kind):
    """−loss = Σ_y q(y|x)[E log p(x|f(z₀)) + log p(f(z₀)|y) − log N(z₀; m, s²)] − KL(q(y|x)‖Unif), by hand."""
    model = tiny_flow(kind)
    x = torch.bernoulli(torch.full((3, 6), 0.4, dtype=torch.float64), generator=torch.Generator().manual_seed(1))
    s = 4000
    eps = torch.randn(model.clusters, s, 3, model.latent_dim, generator=torch.Generator().manual_seed(2),
                      dtype=torch.float64)
    with torch.no_grad():
        terms = model.loss_terms(x.repeat(s, 1), eps.reshape(model.clusters, s * 3, model.latent_dim))
        model_elbo = -terms["loss"].reshape(s, 3).mean(0)
        qy = torch.softmax(model.cluster_encoder(x), -1)
        mu, std = model.prior_mean, torch.nn.functional.softplus(model.prior_std_raw) + model.prior_std_floor
        mean, logvar = model.encoder(x)
        brute = torch.zeros(3, dtype=torch.float64)
        se2 = torch.zeros(3, dtype=torch.float64)
        for y in range(model.clusters):
            q0 = Normal(mean[y], (0.5 * logvar[y]).exp())
            z0 = mean[y] + (0.5 * logvar[y]).exp() * eps[y]  # (s, 3, K), the same draws
            z = z0
            for c in model.flow.couplings:  # the flow written out: z_b += t(z_a), halves alternating
                z = z.clone()
                z[..., c.update] = z[..., c.update] + c.net(z[..., c.cond])
            # the decoded latents are the flow's output, draw for draw
            torch.testing.assert_close(terms["z"][y], z.reshape(s * 3, -1), rtol=0, atol=1e-12)
            log_px = Bernoulli(logits=model.decode(z), validate_args=False).log_prob(x).sum(-1)
            log_pz = Normal(mu[y], std[y]).log_prob(z).sum(-1)
            term = log_px + log_pz - q0.log_prob(z0).sum(-1) + math.log(1 / model.clusters) - torch.log(qy[:, y])
            brute += qy[:, y] * term.mean(0)
            se2 += (qy[:, y] ** 2) * (log_pz + q0.entropy().sum(-1)).var(0) / s  # the KL is the only MC part
    tol = 6 * se2.sqrt() + 1e-9
    assert ((model_elbo - brute).abs() < tol).all(), (model_elbo, brute, tol)
    # the training-time AU trace: E_q[z|x] from the component modes f(m_k(x))
    out = model(x, eps=eps[:, 0])
    with torch.no_grad():
        torch.testing.assert_close(out["mean"], (qy.t().unsqueeze(-1) * model.flow(mean)).sum(0))


def test_flow_iwae_bounds_against_quadrature():
    """K = 2: log p(x) on a grid; IWAE(k) with the flow is ≥ the NLL (a proper bound) and ≤ −ELBO, tightening in k."""
    model = tiny_flow("gmvae", d=5, k=2, c=3)
    model.eval()
    x = torch.bernoulli(torch.full((4, 5), 0.5, dtype=torch.float64), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        t = torch.linspace(-9, 9, 601, dtype=torch.float64)
        grid = torch.cartesian_prod(t, t)  # (G, 2)
        params = model.decode(grid).unsqueeze(1).expand(-1, x.shape[0], -1)
        log_joint = model.likelihood.log_prob(x, params) + model.log_prior(grid).unsqueeze(1)
        nll = -(torch.logsumexp(log_joint, 0) + 2 * math.log(float(t[1] - t[0])))
    gen = torch.Generator().manual_seed(0)
    iw = assert_iwae_brackets_nll(model, x, nll, gen)
    assert (iw[100] - nll).abs().max() < 0.5, (iw[100], nll)  # close to the truth at k = 100


def test_flow_moments_and_metrics():
    model = tiny_flow("gmvae", d=6, k=4, c=3)
    x = torch.rand(40, 6, dtype=torch.float64)
    with torch.no_grad():
        log_qy, mean_k, var_k = model.component_moments(x, 4000)
        mean, logvar = model.encoder(x)
        noise = torch.randn(20000, *mean.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        z = model.flow(mean + torch.exp(0.5 * logvar) * noise)
    # MC moments agree with an independent large-sample estimate (6 standard errors of both estimates)
    se = (z.var(0) * (1 / 4000 + 1 / 20000)).sqrt()
    assert ((mean_k - z.mean(0)).abs() <= 6 * se + 1e-9).all()
    assert ((var_k - z.var(0)).abs() <= 0.1 * z.var(0) + 1e-9).all()
    assert (z.var(0) > 0.01).all()  # the comparison is not vacuous
    # the identity flow: moments are exact (antithetic noise), as without a flow
    with torch.no_grad():
        for c in model.flow.couplings:
            c.net[-1].weight.zero_()
            c.net[-1].bias.zero_()
        _, m_id, _ = model.component_moments(x)
    torch.testing.assert_close(m_id, mean, rtol=0, atol=1e-12)
    # an encoder that ignores x: no active unit through the flow (common random numbers give zero variance)
    randomize(model.flow)
    with torch.no_grad():
        model.encoder.input.weight.zero_()
        model.cluster_encoder[0].weight.zero_()
    m = mm.evaluate_mixture(model, x, iwae_samples=3, prepare_targets=False)
    assert m["active_units"] == 0 and m["active_units_within_cluster"] == 0
    assert max(m["au_variance"]) < 1e-20
    assert m["kl_z"] > 0 and len(m["kl_per_dim"]) == 4 and m["mutual_info"] < 1e-6


def test_flow_spec_options_checkpoint_and_resume(tmp_path):
    opts = ModelOptions(latent_dim=3, encoder_hidden=(16,), decoder_hidden=(16,), icnn_hidden=8, backend="reference",
                        clusters=4, binarize=True, beta="fixed")
    assert build_from_spec(parse_spec("gmvae"), 12, opts).flow is None
    assert isinstance(build_from_spec(parse_spec("gmvae-flow"), 12, opts).flow, VolumePreservingFlow)
    assert build_from_spec(parse_spec("lidgmvae-fixed-flow"), 12, opts).config["flow"] is True
    assert build_from_spec(parse_spec("lidgmvae"), 12, ModelOptions(**{**opts.__dict__, "flow": True})).flow
    with pytest.raises(ValueError, match="flow for the mixture models"):
        parse_spec("lidvae-flow")

    def make():
        torch.manual_seed(0)
        return build_from_spec(parse_spec("lidgmvae-fixed-flow"), 12, opts)

    x = torch.rand(64, 12)
    cfg = lambda e: TrainConfig(epochs=e, batch_size=32, lr=3e-3, progress=False)  # noqa: E731
    full = make()
    train(full, x, cfg(3), tmp_path / "full", val_x=x[:20])
    assert any(p.abs().sum() > 0 for c in full.flow.couplings for p in c.net[-1].parameters())  # the flow trained
    train(make(), x, cfg(1), tmp_path / "part")
    resumed = make()
    assert train(resumed, x, cfg(3), tmp_path / "part", resume=True).resumed_from == 1
    torch.testing.assert_close(resumed.state_dict(), full.state_dict(), rtol=0, atol=0)
    state = load_checkpoint(tmp_path / "full")
    rebuilt = build_model(state["model_config"])
    rebuilt.load_state_dict(state["model_state"])
    assert rebuilt.config == full.config and rebuilt.flow is not None
    xe, eps = torch.rand(9, 12), torch.randn(4, 9, 3)
    torch.testing.assert_close(rebuilt.loss_terms(xe, eps)["loss"], full.loss_terms(xe, eps)["loss"])
