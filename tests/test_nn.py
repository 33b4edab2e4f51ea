"""Modules: ICNN, BrenierMap, InjectiveLinear, LIDDecoder (fused vs reference, properties, compile)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import lidvae_ext
from lidvae_ext import BrenierMap, ICNN, InjectiveLinear, LIDDecoder, ops
from lidvae_ext.nn import resolve_backend

needs_fused = pytest.mark.skipif(not ops.fused_available("cpu"), reason="lidvae_ext._C not built")


def _set_backend(module, backend):
    for sub in module.modules():
        if isinstance(sub, BrenierMap):
            sub.backend = backend


def _loss_and_grads(module, z, target):
    z = z.detach().requires_grad_(True)
    loss = F.binary_cross_entropy_with_logits(module(z), target, reduction="sum")
    params = list(module.parameters())
    grads = torch.autograd.grad(loss, [z, *params])
    return loss.detach(), grads


def test_exports():
    assert lidvae_ext.LIDDecoder is LIDDecoder
    assert callable(lidvae_ext.build_info)


@needs_fused
def test_build_info_records_torch_version():
    info = lidvae_ext.build_info()
    from lidvae_ext import _build_config

    assert info["torch_version"] == _build_config.TORCH_VERSION  # the torch compiled against
    assert info["torch_runtime"] == torch.__version__
    assert "with_cuda" in info


@needs_fused
@pytest.mark.parametrize("positivity", ["softplus", "clamp"])
@pytest.mark.parametrize("beta", ["fixed", "learned"])
@pytest.mark.parametrize("out_dim", [9, 5])  # the CPU GEMM path and the row-wise d <= 8 path
def test_lid_decoder_fused_matches_reference(positivity, beta, out_dim):
    torch.manual_seed(0)
    decoder = LIDDecoder(3, out_dim, hidden=6, num_layers=2, strong_convexity=0.1, beta=beta,
                         positivity=positivity).double()
    z = torch.randn(11, 3, dtype=torch.float64)
    target = torch.rand(11, out_dim, dtype=torch.float64)
    results = {}
    for backend in ("fused", "reference"):
        _set_backend(decoder, backend)
        results[backend] = _loss_and_grads(decoder, z, target)
    torch.testing.assert_close(results["fused"][0], results["reference"][0], rtol=1e-11, atol=0)
    for g_fused, g_ref in zip(results["fused"][1], results["reference"][1]):
        torch.testing.assert_close(g_fused, g_ref, rtol=1e-9, atol=1e-11)


def test_brenier_map_leading_dims_and_potential():
    torch.manual_seed(1)
    bmap = BrenierMap(4, 8, num_layers=3).double()
    y = torch.randn(2, 5, 4, dtype=torch.float64)
    psi, grad = bmap.potential_and_map(y)
    assert psi.shape == (2, 5) and grad.shape == (2, 5, 4)
    torch.testing.assert_close(psi, bmap.potential(y))
    flat = bmap(y.reshape(10, 4))
    torch.testing.assert_close(grad.reshape(10, 4), flat)
    with pytest.raises(ValueError, match=r"y must have shape \(\.\.\., 4\)"):
        bmap(torch.randn(3, 5, dtype=torch.float64))


@pytest.mark.parametrize("activation", ["leaky_relu", "softplus"])
@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_monotone_map(activation, alpha):
    """⟨g(y₁) − g(y₂), y₁ − y₂⟩ ≥ α‖y₁ − y₂‖² (ψ is α-strongly convex)."""
    torch.manual_seed(2)
    bmap = BrenierMap(5, 16, num_layers=3, activation=activation, strong_convexity=alpha).double()
    with torch.no_grad():  # make the network far from trivial
        bmap.icnn.W_raw.add_(torch.randn_like(bmap.icnn.W_raw))
    y1, y2 = torch.randn(500, 5, dtype=torch.float64), torch.randn(500, 5, dtype=torch.float64) * 2
    with torch.no_grad():
        inner = ((bmap(y1) - bmap(y2)) * (y1 - y2)).sum(-1)
    bound = alpha * (y1 - y2).square().sum(-1)
    assert (inner >= bound - 1e-10).all(), (inner - bound).min()


def test_lid_decoder_injective_on_random_pairs():
    """With α > 0 each map is α-strongly monotone: ‖dec(z₁) − dec(z₂)‖ ≥ α²·σ_min(β)·‖z₁ − z₂‖."""
    torch.manual_seed(3)
    alpha = 0.2
    decoder = LIDDecoder(4, 12, hidden=16, strong_convexity=alpha, beta="learned").double()
    z1, z2 = torch.randn(400, 4, dtype=torch.float64), torch.randn(400, 4, dtype=torch.float64)
    z2[:10] = z1[:10] + 1e-3 * torch.randn(10, 4, dtype=torch.float64)  # near pairs too
    with torch.no_grad():
        gap = (decoder(z1) - decoder(z2)).norm(dim=-1)
        sigma_min = torch.linalg.svdvals(decoder.beta.weight()).min()
    assert sigma_min > 0
    assert (gap >= alpha**2 * sigma_min * (z1 - z2).norm(dim=-1) * (1 - 1e-9)).all()


def test_every_decoder_parameter_gets_gradient():
    torch.manual_seed(4)
    decoder = LIDDecoder(3, 10, hidden=8, beta="learned")
    z, target = torch.randn(32, 3), torch.rand(32, 10)
    F.binary_cross_entropy_with_logits(decoder(z), target).backward()
    for name, param in decoder.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_injective_linear_full_column_rank():
    torch.manual_seed(5)
    beta = InjectiveLinear(5, 9)
    with torch.no_grad():
        beta.log_scale.fill_(-3.0)
        beta.raw.copy_(torch.randn(9, 5) @ torch.diag(torch.tensor([1.0, 1.0, 1.0, 1.0, 1e-6])))
    weight = beta.weight()
    assert torch.linalg.matrix_rank(weight.double()).item() == 5
    torch.testing.assert_close(weight.t() @ weight, torch.eye(5) * torch.exp(torch.tensor(-6.0)),
                               rtol=1e-4, atol=1e-6)
    fixed = InjectiveLinear(2, 4, mode="fixed")
    torch.testing.assert_close(fixed(torch.tensor([[1.0, 2.0]])), torch.tensor([[1.0, 2.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="out_features >= in_features"):
        InjectiveLinear(5, 4)


def test_constructor_errors():
    with pytest.raises(ValueError, match="out_dim >= latent_dim"):
        LIDDecoder(10, 5, hidden=4)
    with pytest.raises(ValueError, match="backend must be one of"):
        BrenierMap(3, 4, backend="cuda")
    with pytest.raises(ValueError, match="activation must be one of"):
        ICNN(3, 4, activation="relu")
    with pytest.raises(ValueError, match="negative_slope must be in"):
        ICNN(3, 4, negative_slope=-0.1)
    with pytest.raises(ValueError, match="strong_convexity must be finite"):
        ICNN(3, 4, strong_convexity=-1)
    with pytest.raises(ValueError, match="hidden must be a positive integer"):
        ICNN(3, 0)


def test_auto_backend_falls_back_with_one_warning(monkeypatch):
    """A device without fused kernels (here: the build reported absent) → reference, warned once."""
    monkeypatch.setattr(lidvae_ext.ops, "fused_available", lambda device_type="cpu": False)
    bmap = BrenierMap(3, 4)
    y = torch.randn(2, 3)
    lidvae_ext.nn._warned_fallback.discard(("cpu", torch.float32))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_backend("auto", y) == "reference"
        assert resolve_backend("auto", y) == "reference"
        bmap(y)
    assert sum("using the autograd reference" in str(w.message) for w in caught) == 1
    with pytest.raises(RuntimeError, match="backend='fused' is not available"):
        resolve_backend("fused", y)
    lidvae_ext.nn._warned_fallback.discard(("cpu", torch.float32))


@needs_fused
def test_auto_backend_picks_fused_for_float32():
    assert resolve_backend("auto", torch.randn(2, 3)) == "fused"


def test_state_dict_and_functional_call():
    a, b = LIDDecoder(2, 5, hidden=4, beta="learned"), LIDDecoder(2, 5, hidden=4, beta="learned")
    z = torch.randn(3, 2)
    before = b(z).detach()
    assert (before - a(z)).abs().max() > 1e-3  # b starts from other weights
    # functional_call runs b with a's parameters (and differentiates w.r.t. them) ...
    params = {k: v.detach().clone().requires_grad_(True) for k, v in a.named_parameters()}
    out = torch.func.functional_call(b, params, (z,))
    torch.testing.assert_close(out, a(z))
    grads = torch.autograd.grad(out.square().sum(), list(params.values()))
    want = torch.autograd.grad(a(z).square().sum(), list(a.parameters()))
    for name, g, w in zip(params, grads, want):
        torch.testing.assert_close(g, w, msg=name)
    torch.testing.assert_close(b(z), before)  # ... without touching b's own
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(z), b(z))


@needs_fused
@pytest.mark.parametrize("kind", ["map", "decoder"])
def test_torch_compile_fullgraph_matches_eager(kind):
    torch.manual_seed(7)
    torch._dynamo.reset()
    if kind == "map":
        module = BrenierMap(3, 8, num_layers=2, strong_convexity=0.1, backend="fused")
        x = torch.randn(16, 3)
    else:
        module = LIDDecoder(3, 7, hidden=8, backend="fused", beta="learned")
        x = torch.randn(16, 3)

    def step(inp):
        out = module(inp)
        return out.square().sum()

    compiled = torch.compile(step, fullgraph=True)
    results = []
    for fn in (step, compiled):
        inp = x.clone().requires_grad_(True)
        module.zero_grad()
        loss = fn(inp)
        loss.backward()
        results.append([loss.detach(), inp.grad] + [p.grad.clone() for p in module.parameters()])
    for e, c in zip(*results):
        torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["reference", pytest.param("fused", marks=needs_fused)])
@pytest.mark.parametrize("positivity", ["softplus", "clamp"])
def test_functional_call_with_fresh_weights_each_time(backend, positivity):
    """functional_call with one set of new weights, then another, gives each set's values (with and
    without grad mode): nothing is reused from an earlier call. The new tensors all have version counter 0 (fresh clones), so a
    weight cache keyed on version counters would return the first set's weights the second time."""
    torch.manual_seed(3)
    mods = [LIDDecoder(3, 6, hidden=5, beta="learned", backend=backend, positivity=positivity).double()
            for _ in range(3)]
    target, *sources = mods
    z = torch.randn(4, 3, dtype=torch.float64)
    for mode in (torch.enable_grad, torch.no_grad):  # training and inference
        with mode():
            target(z)  # the target's own weights were used once
            for source in sources + sources[::-1]:
                params = {k: v.detach().clone() for k, v in source.named_parameters()}
                assert all(p._version == 0 for p in params.values())
                torch.testing.assert_close(torch.func.functional_call(target, params, (z,)), source(z),
                                           rtol=1e-12, atol=1e-12)
    assert (sources[0](z) - sources[1](z)).abs().max() > 1e-3  # the two sets differ
