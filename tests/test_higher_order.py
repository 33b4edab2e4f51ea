"""Differentiating the fused backward again: third derivatives of ψ, gradient penalties."""

from __future__ import annotations

import pytest
import torch

from lidvae_ext import LIDDecoder, ops, reference
from icnn_inputs import fresh_seed, kink_free_seed, sample_cotangents, sample_inputs

pytestmark = pytest.mark.skipif(not ops.fused_available("cpu"), reason="lidvae_ext._C not built")

TOL = dict(rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("activation", ["leaky_relu", "softplus"])
@pytest.mark.parametrize("columns", [2, 4])  # zero-padded input and full input
def test_gradgradcheck(activation, columns):
    seed = kink_free_seed(3, 4, 5, 2, activation, torch.float64)
    inputs = sample_inputs(3, 4, 5, 2, seed=seed, requires_grad=True)
    inputs[0] = inputs[0][:, :columns].detach().requires_grad_(True)

    def fn(*args):
        return ops.icnn_potential_and_map(*args, 0.3, activation, 0.2)

    assert torch.autograd.gradgradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def _third_order(impl, inputs, hyper, u, v, w, use_psi: bool):
    """Gradient (w.r.t. every input) of ‖∂(u·ψ + v·∇ψ)/∂y‖²_w + ‖∂/∂A‖² — a penalty on gradients."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    psi, grad = impl.icnn_potential_and_map(*leaves, *hyper)
    loss = (grad * v).sum() + ((psi * u).sum() if use_psi else 0.0)
    gy, gA, gb = torch.autograd.grad(loss, leaves[:3], create_graph=True)
    penalty = (gy.square() * w).sum() + gA.square().sum() + gb.sin().sum()
    return torch.autograd.grad(penalty, leaves, allow_unused=True)


@pytest.mark.parametrize("activation", ["leaky_relu", "softplus"])
@pytest.mark.parametrize("use_psi", [False, True])
@pytest.mark.parametrize("columns", [3, 6])
def test_third_derivatives_match_reference(activation, use_psi, columns):
    seed = kink_free_seed(7, 6, 8, 3, activation, torch.float64)
    inputs = sample_inputs(7, 6, 8, 3, seed=seed)
    inputs[0] = inputs[0][:, :columns]
    u, v = sample_cotangents(7, 6, seed=seed)
    w = torch.rand(7, columns, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    hyper = (0.25, activation, 0.2)
    got = _third_order(ops, inputs, hyper, u, v, w, use_psi)
    want = _third_order(reference, inputs, hyper, u, v, w, use_psi)
    for name, g, r in zip("y A b W w_out".split(), got, want):
        if r is None:  # e.g. ∂/∂b of a leaky-ReLU penalty never reaches b
            assert g is None or torch.count_nonzero(g) == 0, name
            continue
        torch.testing.assert_close(g, r, **TOL, msg=f"{name} seed={seed}")
    assert any(r is not None and r.abs().max() > 1e-3 for r in want)


def test_gradient_penalty_trains_like_the_reference():
    """A Jacobian-norm regularizer on the decoder input: 3 Adam steps, fused = reference."""
    seed = fresh_seed()
    models = []
    for backend in ("fused", "reference"):
        torch.manual_seed(seed)
        models.append(LIDDecoder(3, 9, hidden=8, strong_convexity=0.5, backend=backend).double())
    torch.manual_seed(seed + 1)
    z = torch.randn(6, 3, dtype=torch.float64)
    target = torch.randn(6, 9, dtype=torch.float64)
    initial = [p.detach().clone() for p in models[0].parameters()]
    finals = []
    for model in models:
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(3):
            zz = z.clone().requires_grad_(True)
            out = model(zz)
            (gz,) = torch.autograd.grad(out.square().sum(), zz, create_graph=True)
            loss = (out - target).square().mean() + 0.1 * gz.square().sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        finals.append([p.detach().clone() for p in model.parameters()])
    for got, want in zip(*finals):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10, msg=f"seed={seed}")
    assert any((p - q).abs().max() > 1e-4 for p, q in zip(finals[0], initial))  # it trained


def test_forward_over_reverse_third_derivatives():
    """jacfwd(jacrev(∇ψ)) — the icnn_backward jvp — against nested reference autograd."""
    seed = kink_free_seed(1, 4, 6, 2, "softplus", torch.float64)
    inputs = sample_inputs(1, 4, 6, 2, seed=seed)
    hyper = (0.1, "softplus", 0.2)
    fused = lambda y: ops.icnn_map(y[None], *inputs[1:], *hyper)[0]  # noqa: E731
    ref = lambda y: reference.icnn_map(y[None], *inputs[1:], *hyper)[0]  # noqa: E731
    y = inputs[0][0]
    got = torch.func.jacfwd(torch.func.jacrev(fused))(y)
    want = torch.autograd.functional.jacobian(
        lambda x: torch.autograd.functional.jacobian(ref, x, create_graph=True), y)
    torch.testing.assert_close(got, want, **TOL)
    assert want.abs().max() > 1e-3


def test_fourth_derivatives_match_reference():
    """Differentiating the third-derivative formula once more (icnn_backward's backward is itself
    a differentiable composition)."""
    seed = kink_free_seed(2, 3, 4, 2, "softplus", torch.float64)
    inputs = sample_inputs(2, 3, 4, 2, seed=seed)
    hyper = (0.2, "softplus", 0.2)

    def fourth(impl):
        y, A = (t.clone().requires_grad_(True) for t in inputs[:2])
        g = impl.icnn_map(y, A, *inputs[2:], *hyper)
        (g1,) = torch.autograd.grad(g.sin().sum(), y, create_graph=True)
        (g2,) = torch.autograd.grad(g1.square().sum(), y, create_graph=True)
        return torch.autograd.grad(g2.cos().sum(), [y, A])

    for got, want in zip(fourth(ops), fourth(reference)):
        torch.testing.assert_close(got, want, **TOL)
        # Non-trivial at the tolerance's scale (atol 1e-11): over 300 draws the smallest
        # max |4th derivative| was 3.6e-5, and 1.3 % of draws fall under 1e-4.
        assert want.abs().max() > 1e-7
