"""torch.autocast and reduced-precision modules: the fused kernels run in float32."""

from __future__ import annotations

import warnings

import pytest
import torch

import lidvae_ext.nn
from lidvae_ext import BrenierMap, LIDDecoder, ops, reference

pytestmark = pytest.mark.skipif(not ops.fused_available("cpu"), reason="lidvae_ext._C not built")


def _no_fallback():
    """A context in which the reference fallback's (once-per-dtype) warning is an error."""
    lidvae_ext.nn._warned_fallback.clear()
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.filterwarnings("error", message=".*using the autograd reference.*")
    return ctx


def _pair(seed, beta="fixed"):
    torch.manual_seed(seed)
    fused = LIDDecoder(4, 12, hidden=16, strong_convexity=0.5, backend="auto", beta=beta)
    ref = LIDDecoder(4, 12, hidden=16, strong_convexity=0.5, backend="reference", beta=beta)
    ref.load_state_dict(fused.state_dict())
    return fused, ref


@pytest.mark.parametrize("beta,backward_inside", [("fixed", True), ("random", False)])
def test_autocast_bfloat16_encoder_output_runs_fused_in_float32(beta, backward_inside):
    """The decoder computes in float32 under autocast, the β rotation included.

    With β = [I; 0] every product is the fused operators', whose autocast rule holds in the
    backward too, so even a backward run inside the autocast context is float32. The
    rotation of an orthonormal β ('random', the default) is plain matmuls: its forward turns
    autocast off, but a backward run *inside* the context would meet autocast's bfloat16
    policy like any nn.Linear's — PyTorch's advice is to call backward outside it, as here.
    """
    fused, ref = _pair(0, beta)
    z = torch.randn(9, 4).to(torch.bfloat16).requires_grad_(True)  # what an autocast encoder hands over
    ctx = _no_fallback()
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fused(z)
            if backward_inside:
                out.square().sum().backward()
        if not backward_inside:
            out.square().sum().backward()
    finally:
        ctx.__exit__(None, None, None)
    assert out.dtype == torch.float32
    z32 = z.detach().float().requires_grad_(True)
    want = ref(z32)
    want.square().sum().backward()
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    assert z.grad.dtype == torch.bfloat16
    torch.testing.assert_close(z.grad.float(), z32.grad.bfloat16().float(), rtol=0, atol=0)
    for p, q in zip(fused.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5)


def test_autocast_rule_on_the_operator():
    """The operators themselves cast reduced-precision inputs to float32 under autocast."""
    torch.manual_seed(1)
    bmap = BrenierMap(5, 8, strong_convexity=0.2)
    A, b, W, w_out = (t.detach() for t in bmap.icnn.weights())
    y = torch.randn(6, 5)
    want = ops.icnn_potential_and_map(y, A, b, W, w_out, 0.2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ops.icnn_potential_and_map(y.bfloat16(), A.bfloat16(), b, W, w_out.bfloat16(), 0.2)
    for g, w in zip(got, want):
        assert g.dtype == torch.float32
        # Only the inputs' bfloat16 rounding differs.
        torch.testing.assert_close(g, w, rtol=0.05, atol=0.05)
    exact = ops.icnn_potential_and_map(y.bfloat16().float(), A.bfloat16().float(), b, W,
                                       w_out.bfloat16().float(), 0.2)
    for g, e in zip(got, exact):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_module_computes_in_float32_and_casts_back(dtype):
    torch.manual_seed(2)
    half = BrenierMap(6, 16, strong_convexity=0.3, backend="auto").to(dtype)
    y = torch.randn(10, 6).to(dtype).requires_grad_(True)
    ctx = _no_fallback()
    try:
        psi, grad = half.potential_and_map(y)
    finally:
        ctx.__exit__(None, None, None)
    assert psi.dtype == dtype and grad.dtype == dtype
    # Oracle: the float32 reference on the same (reduced-precision) values, rounded once.
    weights32 = [w.detach().float().requires_grad_(True) for w in half.icnn.weights()]
    y32 = y.detach().float().requires_grad_(True)
    want_psi, want_grad = reference.icnn_potential_and_map(y32, *weights32, *half.icnn.hyper())
    ulp = torch.finfo(dtype).eps
    torch.testing.assert_close(grad.float(), want_grad.to(dtype).float(), rtol=ulp, atol=ulp)
    torch.testing.assert_close(psi.float(), want_psi.to(dtype).float(), rtol=ulp, atol=ulp)
    grad.float().square().sum().backward()
    want_grad.to(dtype).float().square().sum().backward()
    assert y.grad.dtype == dtype and half.icnn.A.grad.dtype == dtype
    torch.testing.assert_close(y.grad.float(), y32.grad.to(dtype).float(), rtol=4 * ulp, atol=4 * ulp)
    torch.testing.assert_close(half.icnn.A.grad.float(), weights32[0].grad.to(dtype).float(),
                               rtol=4 * ulp, atol=4 * ulp)
