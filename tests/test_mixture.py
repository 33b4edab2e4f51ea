"""Mixture-prior models (GMVAE, LIDGMVAE): objective, bounds, metrics, specs, checkpoints, CLI."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from torch.distributions import Bernoulli, Normal

from lidvae_ext import cli
from lidvae_ext.checkpoint import load_checkpoint
from lidvae_ext.core.options import ModelOptions
from lidvae_ext.families import build_from_spec, build_model, parse_spec
from lidvae_ext.families.mixture import metrics as mm
from lidvae_ext.families.mixture.models import GMVAE, LIDGMVAE, gaussian_kl_diag
from lidvae_ext.report import REQUIRED_KEYS
from lidvae_ext.training import TrainConfig, train

from mixture_bounds import assert_iwae_brackets_nll

warnings.filterwarnings("ignore", message="lidvae_ext: no fused kernel")
FUSED = __import__("lidvae_ext").ops.fused_available("cpu")


def tiny(kind="gmvae", d=6, k=2, c=3, skew=True, **kw):
    torch.manual_seed(0)
    if kind == "gmvae":
        model = GMVAE(d, k, c, encoder_hidden=(16, 16), decoder_hidden=(16,), **kw)
    else:
        kw.setdefault("backend", "reference")
        model = LIDGMVAE(d, k, c, encoder_hidden=(16, 16), icnn_hidden=8, strong_convexity=0.2, **kw)
    with torch.no_grad():  # distinct prior scales and a far-from-uniform q(y|x): every term matters
        model.prior_std_raw.add_(0.3 * torch.randn_like(model.prior_std_raw))
        if skew:
            model.cluster_encoder[-1].bias.add_(torch.linspace(1.5, -1.5, c))
    return model.double()


@pytest.mark.parametrize("kind", ["gmvae", "lidgmvae"])
def test_elbo_matches_brute_force_enumeration(kind):
    """−loss_terms = Σ_y q(y|x)[E_q(z|x,y) log p(x,z,y) − log q(z,y|x)], every density from torch.distributions."""
    model = tiny(kind, kl_weight=1.0)
    x = torch.bernoulli(torch.full((3, 6), 0.4, dtype=torch.float64), generator=torch.Generator().manual_seed(1))
    s = 4000
    g = torch.Generator().manual_seed(2)
    eps = torch.randn(model.clusters, s, 3, model.latent_dim, generator=g, dtype=torch.float64)
    with torch.no_grad():
        # the model: one loss_terms call on s copies of the batch (one z per component per copy)
        terms = model.loss_terms(x.repeat(s, 1), eps.reshape(model.clusters, s * 3, model.latent_dim))
        model_elbo = -terms["loss"].reshape(s, 3).mean(0)
        logits = model.cluster_encoder(x)
        qy = torch.softmax(logits, -1)
        mu, std = model.prior_mean, torch.nn.functional.softplus(model.prior_std_raw) + model.prior_std_floor
        brute = torch.zeros(3, dtype=torch.float64)
        se2 = torch.zeros(3, dtype=torch.float64)
        for y in range(model.clusters):
            onehot = torch.zeros(3, model.clusters, dtype=torch.float64)
            onehot[:, y] = 1
            # q(z|x,y) from the encoder's MLP applied to the concatenation [x, onehot y]
            w = torch.cat([model.encoder.input.weight, model.encoder.cluster_embedding.t()], 1)
            h = model.encoder.act(torch.cat([x, onehot], 1) @ w.t() + model.encoder.input.bias)
            m, lv = model.encoder.rest(h).chunk(2, -1)
            lv = mm_clamp(lv, model)
            q_z = Normal(m, (0.5 * lv).exp())
            z = m + (0.5 * lv).exp() * eps[y]  # (s, 3, K): the same draws (common random numbers)
            log_px = Bernoulli(logits=model.decode(z), validate_args=False).log_prob(x).sum(-1)
            log_pz = Normal(mu[y], std[y]).log_prob(z).sum(-1)
            term = log_px + log_pz - q_z.log_prob(z).sum(-1) + math.log(1 / model.clusters) - torch.log(qy[:, y])
            brute += qy[:, y] * term.mean(0)
            se2 += (qy[:, y] ** 2) * (log_pz - q_z.log_prob(z).sum(-1)).var(0) / s  # only the KL is Monte-Carlo here
    tol = 6 * se2.sqrt() + 1e-9
    assert ((model_elbo - brute).abs() < tol).all(), (model_elbo, brute, tol)


def mm_clamp(lv, model):
    lo, hi = model.encoder.min_logvar, model.encoder.max_logvar
    return lo + (hi - lo) * torch.sigmoid((lv - 0.5 * (lo + hi)) * 4.0 / (hi - lo))


def test_loss_terms_exact_pieces_and_kl_weight():
    model = tiny("gmvae", kl_weight=0.2)
    x = torch.rand(4, 6, dtype=torch.float64)
    eps = torch.randn(3, 4, 2, dtype=torch.float64)
    t = model.loss_terms(x, eps)
    log_qy, mean, logvar = model.encode_mixture(x)
    mu, lv = model.prior_params()
    # closed-form KL against torch.distributions
    ref_kl = torch.distributions.kl_divergence(Normal(mean, (0.5 * logvar).exp()),
                                               Normal(mu[:, None], (0.5 * lv[:, None]).exp())).sum(-1)  # (C, B)
    torch.testing.assert_close(t["kl_z"], (log_qy.exp().t() * ref_kl).sum(0))
    torch.testing.assert_close(t["kl_y"], torch.distributions.kl_divergence(
        torch.distributions.Categorical(logits=log_qy), torch.distributions.Categorical(logits=torch.zeros(4, 3))))
    torch.testing.assert_close(t["loss"], t["rec"] + 0.2 * (t["kl_z"] + t["kl_y"]))
    out = model(x, eps=eps, normalizer=2.0)
    torch.testing.assert_close(out["loss"], t["loss"].sum() / 2.0)
    torch.testing.assert_close(out["mean"], model.encode(x)[0])
    assert gaussian_kl_diag(mu, lv, mu, lv).abs().max() < 1e-12


def test_iwae_is_a_proper_bound_against_quadrature():
    """K = 1: log p(x) by quadrature; IWAE(k) NLL ≥ NLL and ≤ −ELBO, tightening with k."""
    model = tiny("gmvae", d=5, k=1, c=3, skew=False)
    model.eval()
    x = torch.bernoulli(torch.full((6, 5), 0.5, dtype=torch.float64), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        grid = torch.linspace(-14, 14, 40001, dtype=torch.float64).unsqueeze(-1)
        params = model.decode(grid).unsqueeze(1).expand(-1, x.shape[0], -1)  # (G, N, D)
        log_joint = model.likelihood.log_prob(x, params) + model.log_prior(grid).unsqueeze(1)  # (G, N)
        dz = float(grid[1] - grid[0])
        nll = -(torch.logsumexp(log_joint, 0) + math.log(dz))
    gen = torch.Generator().manual_seed(0)
    assert_iwae_brackets_nll(model, x, nll, gen)
    # consistent: with many samples the estimate reaches log p(x) (a bias in the weights would show here)
    many = -mm.mixture_iwae_log_likelihood(model, x.repeat(10, 1), 20000, generator=gen).reshape(10, 6).mean(0)
    assert (many - nll).abs().max() < 0.01, (many, nll)


def test_cluster_metrics_known_answers():
    assert mm.cluster_accuracy(torch.tensor([0, 0, 1, 1, 1, 2]), torch.tensor([3, 3, 5, 5, 3, 7])) == 5 / 6
    assert mm.cluster_accuracy(torch.tensor([4, 4, 4, 4]), torch.tensor([0, 1, 1, 2])) == 0.5
    assert mm.active_clusters(torch.tensor([0.5, 0.49, 0.01, 0.0])) == 2  # threshold 1/40 = 0.025
    assert mm.active_clusters(torch.tensor([0.25, 0.25, 0.25, 0.25])) == 4
    assert mm.active_clusters(torch.tensor([0.025, 0.975, 0.0, 0.0])) == 2  # ≥ is inclusive
    torch.testing.assert_close(mm.entropy(torch.tensor([0.5, 0.5, 0.0])), torch.tensor(math.log(2), dtype=torch.float64))
    torch.testing.assert_close(mm.kl_to_uniform(torch.log(torch.tensor([[1 / 3] * 3]))),
                               torch.zeros(1, dtype=torch.float64))
    with pytest.raises(ValueError, match="equal length"):
        mm.cluster_accuracy(torch.tensor([0, 1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="C = 3"):
        mm.active_clusters(torch.tensor([0.5, 0.5]), 3)


def _rig_cluster_encoder(model, logits):
    last = model.cluster_encoder[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.as_tensor(logits, dtype=last.bias.dtype))


def test_evaluate_mixture_collapsed_and_uniform_clusters():
    model = tiny("gmvae", d=6, k=2, c=4)
    x = torch.rand(50, 6, dtype=torch.float64)
    labels = torch.arange(50) % 3
    _rig_cluster_encoder(model, [30.0, 0.0, 0.0, 0.0])  # all mass on cluster 0
    m = mm.evaluate_mixture(model, x, labels=labels, iwae_samples=3, prepare_targets=False)
    assert m["clusters"] == 4 and m["active_clusters"] == 1
    assert abs(m["kl_y"] - math.log(4)) < 1e-6 and abs(m["cluster_entropy"]) < 1e-6 and abs(m["mutual_info_y"]) < 1e-6
    assert abs(m["cluster_accuracy"] - 17 / 50) < 1e-12  # one cluster → the majority label's share
    assert abs(m["kl"] - (m["kl_z"] + m["kl_y"])) < 1e-9 and len(m["kl_per_dim"]) == 2
    _rig_cluster_encoder(model, [0.0, 0.0, 0.0, 0.0])  # q(y|x) uniform: every cluster "used", none informative
    m = mm.evaluate_mixture(model, x, labels=None, iwae_samples=3, prepare_targets=False)
    assert m["active_clusters"] == 4 and abs(m["kl_y"]) < 1e-9 and m["cluster_accuracy"] is None
    assert abs(m["cluster_entropy"] - math.log(4)) < 1e-9 and abs(m["mutual_info_y"]) < 1e-9
    # E_q[z|x] is the q(y|x)-weighted component mean
    log_qy, mean, _ = mm.encode_mixture_dataset(model, x)
    torch.testing.assert_close(mm.posterior_mean(log_qy, mean), mean.mean(1))
    assert 0 <= m["active_units_within_cluster"] <= 2


def test_within_cluster_active_units_ignore_cluster_only_variation():
    """z collapsed onto p(z|y), y informative: E_q[z|x] varies (AU = K) but nothing within clusters (0)."""
    model = tiny("gmvae", d=6, k=2, c=2).float()
    x = torch.rand(40, 6)
    rng = torch.Generator().manual_seed(0)
    onehot_logits = torch.where(torch.rand(40, generator=rng) < 0.5, 30.0, -30.0)
    mu, _ = model.prior_params()

    def encode_mixture(xb):
        n = xb.shape[0]
        logits = torch.stack([onehot_logits[:n], -onehot_logits[:n]], 1)
        mean = mu.detach()[:, None, :].expand(2, n, 2).clone()
        return torch.log_softmax(logits, -1), mean, torch.zeros(2, n, 2)

    model.encode_mixture = encode_mixture
    m = mm.evaluate_mixture(model, x, iwae_samples=2, prepare_targets=False, batch_size=64)
    assert m["active_units"] == 2 and m["active_units_within_cluster"] == 0
    for key in REQUIRED_KEYS[:-1]:
        assert key in m


def test_mutual_information_zero_when_posterior_ignores_x():
    n, c, k = 40, 3, 2
    log_qy = torch.log_softmax(torch.randn(c), 0).expand(n, c)
    mean = torch.randn(c, k).expand(n, c, k)
    logvar = torch.randn(c, k).expand(n, c, k)
    assert abs(mm.mixture_mutual_information(log_qy, mean, logvar, 3, torch.Generator().manual_seed(0))) < 1e-9
    # fully separated posteriors: I = log N
    sep = torch.arange(n, dtype=torch.float64)[:, None, None].expand(n, c, k) * 100
    mi = mm.mixture_mutual_information(log_qy.double(), sep, torch.full((n, c, k), -4.0, dtype=torch.float64), 1,
                                       torch.Generator().manual_seed(0))
    assert abs(mi - math.log(n)) < 1e-6


@pytest.mark.skipif(not FUSED, reason="fused kernels not built")
@pytest.mark.parametrize("beta", ["fixed", "learned"])
def test_lidgmvae_fused_matches_reference(beta):
    ref = tiny("lidgmvae", d=7, k=3, c=4, beta=beta)
    fused = build_model({**ref.config, "backend": "fused"}).double()
    fused.load_state_dict(ref.state_dict())
    x = torch.rand(5, 7, dtype=torch.float64)
    eps = torch.randn(4, 5, 3, dtype=torch.float64)
    lr, lf = ref(x, eps=eps)["loss"], fused(x, eps=eps)["loss"]
    torch.testing.assert_close(lf, lr, rtol=1e-10, atol=1e-10)
    lr.backward()
    lf.backward()
    for (name, a), b in zip(ref.named_parameters(), fused.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-8, atol=1e-10, msg=name)


def test_specs_share_the_lidvae_decoder_options():
    opts = ModelOptions(latent_dim=3, encoder_hidden=(16,), icnn_hidden=8, icnn_layers=3, strong_convexity=0.3,
                        beta="learned", backend="reference", clusters=5)
    lidvae = build_from_spec(parse_spec("lidvae"), 12, opts)
    lid = build_from_spec(parse_spec("lidgmvae"), 12, opts)
    assert isinstance(lid, LIDGMVAE) and lid.clusters == 5
    for key in ("icnn_hidden", "icnn_layers", "strong_convexity", "beta", "backend"):
        assert lid.config[key] == lidvae.config[key], key
    assert repr(lid.decoder) == repr(lidvae.decoder)
    assert build_from_spec(parse_spec("lidgmvae-alpha0"), 12, opts).config["strong_convexity"] == 0.0
    beta_gm = build_from_spec(parse_spec("betagmvae0.2"), 12, opts)
    assert isinstance(beta_gm, GMVAE) and beta_gm.kl_weight == 0.2 and beta_gm.clusters == 5
    with pytest.raises(ValueError, match="alpha0"):
        parse_spec("gmvae-alpha0")
    with pytest.raises(ValueError, match="clusters"):
        build_from_spec(parse_spec("gmvae"), 12, ModelOptions(latent_dim=3, clusters=0))


def test_bad_shapes_and_arguments():
    model = tiny("gmvae")
    with pytest.raises(ValueError, match=r"\(B, 6\).*\(4, 5\)"):
        model(torch.rand(4, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"eps must have shape \(C, B, K\) = \(3, 4, 2\)"):
        model.loss_terms(torch.rand(4, 6, dtype=torch.float64), torch.randn(4, 3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="clusters"):
        GMVAE(6, 2, 0)
    with pytest.raises(ValueError, match="labels has 3 entries for 4"):
        mm.evaluate_mixture(model, torch.rand(4, 6, dtype=torch.float64), labels=torch.zeros(3))
    with pytest.raises(ValueError, match="out_dim >= latent_dim"):
        LIDGMVAE(3, 4, 2, backend="reference")


@pytest.mark.parametrize("kind", ["gmvae", "lidgmvae"])
def test_checkpoint_rebuild_and_exact_resume(tmp_path, kind):
    def make():
        torch.manual_seed(0)
        m = GMVAE(12, 3, 4, (16,), (16,), binarize=True) if kind == "gmvae" else \
            LIDGMVAE(12, 3, 4, (16,), icnn_hidden=8, strong_convexity=0.5, backend="reference", binarize=True)
        return m

    x = torch.rand(64, 12)
    cfg = lambda e: TrainConfig(epochs=e, batch_size=32, lr=3e-3, progress=False)  # noqa: E731
    full = make()
    train(full, x, cfg(3), tmp_path / "full", val_x=x[:20])
    train(make(), x, cfg(1), tmp_path / "part")
    resumed = make()
    res = train(resumed, x, cfg(3), tmp_path / "part", resume=True)
    assert res.resumed_from == 1
    torch.testing.assert_close(resumed.state_dict(), full.state_dict(), rtol=0, atol=0)
    state = load_checkpoint(tmp_path / "full")
    rebuilt = build_model(state["model_config"])
    rebuilt.load_state_dict(state["model_state"])
    assert type(rebuilt) is type(full) and rebuilt.config == full.config
    xe = torch.rand(9, 12)
    torch.testing.assert_close(rebuilt.loss_terms(xe, torch.zeros(4, 9, 3))["loss"],
                               full.loss_terms(xe, torch.zeros(4, 9, 3))["loss"])


TINY = ["--train-size", "120", "--test-size", "50", "--encoder-hidden", "32", "--decoder-hidden", "32",
        "--icnn-hidden", "16", "--latent-dim", "4", "--iwae-samples", "5", "--no-progress", "--threads", "1"]


def test_cli_compare_mixture_report_and_evaluate(tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = cli.main(["compare", "--epochs", "1", "--out", str(out), "--models", "gmvae,lidgmvae,vae",
                   "--clusters", "3", *TINY])
    assert rc == 0
    table = capsys.readouterr().out
    assert "active clusters" in table and "| vae |" in table
    report = json.loads((out / "report.json").read_text())
    for name in ("gmvae", "lidgmvae"):
        m = report[name]
        for key in ("active_units", "latent_dim", "iwae_nll", "neg_elbo", "kl", "mutual_info", "active_clusters",
                    "clusters", "cluster_accuracy", "seconds"):
            assert key in m, (name, key)
        assert m["clusters"] == 3 and 1 <= m["active_clusters"] <= 3 and 0 < m["cluster_accuracy"] <= 1
        assert m["iwae_nll"] > 0 and len(m["cluster_usage"]) == 3 and abs(sum(m["cluster_usage"]) - 1) < 1e-6
    assert "clusters" not in report["vae"]
    for fig in ("kl_per_dim.png", "samples.png", "cluster_samples.png", "cluster_usage.png"):
        assert (out / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli.main(["evaluate", str(out / "lidgmvae"), "--iwae-samples", "4"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["clusters"] == 3 and m["iwae_samples"] == 4 and m["cluster_accuracy"] is not None
    assert m["active_units"] == report["lidgmvae"]["active_units"]


def test_cli_rejects_bad_clusters(capsys):
    for bad in ("0", "-2", "three"):
        with pytest.raises(SystemExit) as exc:
            cli.main(["compare", "--models", "gmvae", "--clusters", bad])
        assert exc.value.code == 2
        assert "--clusters must be a positive integer" in capsys.readouterr().err


def test_mixture_early_stopping_and_diagnostics_use_the_mixture():
    """Validation −ELBO draws (C, B, K) noise (was (B, K): an error); SNIS diagnostics weight with the mixture prior."""
    from lidvae_ext.diagnostics import posterior_spread
    from lidvae_ext.training import validation_loss

    model = tiny("gmvae")
    x = torch.bernoulli(torch.full((30, 6), 0.5, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(4)
    expected = mm.mixture_negative_elbo(model, x, batch_size=1024, generator=gen)
    assert abs(validation_loss(model, x, seed=4) - expected) < 1e-9
    res = train(model, x, TrainConfig(epochs=3, batch_size=10, progress=False, early_stopping=1), stop_x=x[:10])
    assert res.epochs >= 1
    # the exact posterior of a one-example, K = 1 model against quadrature with the mixture prior
    m1 = tiny("gmvae", d=5, k=1, c=3, skew=False)
    x1 = x[:2, :5]
    with torch.no_grad():
        grid = torch.linspace(-12, 12, 20001, dtype=torch.float64).unsqueeze(-1)
        lj = m1.likelihood.log_prob(x1, m1.decode(grid).unsqueeze(1).expand(-1, 2, -1)) + m1.log_prior(grid)[:, None]
        w = torch.softmax(lj, 0)
        exact_mean = (w * grid).sum(0)
        exact_var = (w * (grid - exact_mean).square()).sum(0)
    out = posterior_spread(m1, x1, num_samples=20000, seed=0)
    assert abs(out["exact_var"][0] - float(exact_var.mean())) < 0.05 * float(exact_var.mean()) + 1e-3, (
        out["exact_var"], exact_var)


def test_active_units_count_a_variance_equal_to_the_threshold():
    """AU = #{d : Var ≥ t}: E_q[z|x] ∈ {0, 1} on two examples has variance exactly 0.5, which counts at
    t = 0.5 and not just above it (a `>` comparison would count 0)."""
    model = tiny("gmvae", d=6, k=2, c=2).double()
    with torch.no_grad():
        model.prior_mean.zero_()  # so z - μ_y is exact too (the within-cluster AU)
    x = torch.rand(2, 6, dtype=torch.float64)
    values = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)

    def encode_mixture(xb):
        n = xb.shape[0]
        log_qy = torch.full((n, 2), math.log(0.5), dtype=torch.float64)  # both components alike: E_q[z|x] = mean
        return log_qy, values[:n].expand(2, n, 2).clone(), torch.zeros(2, n, 2, dtype=torch.float64)

    model.encode_mixture = encode_mixture
    kw = dict(iwae_samples=2, prepare_targets=False)
    m = mm.evaluate_mixture(model, x, au_threshold=0.5, **kw)
    assert m["au_variance"] == [0.5, 0.5]
    assert m["active_units"] == 2 and m["active_units_within_cluster"] == 2
    m = mm.evaluate_mixture(model, x, au_threshold=math.nextafter(0.5, 1.0), **kw)
    assert m["active_units"] == 0 and m["active_units_within_cluster"] == 0
