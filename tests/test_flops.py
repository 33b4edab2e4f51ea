"""FLOP formulas of the fused operators (lidvae_ext.flops), as FlopCounterMode uses them."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import lidvae_ext
from lidvae_ext import _extension, flops, reference

pytestmark = pytest.mark.skipif(not _extension.loaded(), reason="needs the compiled extension")


@pytest.mark.parametrize("batch,dim,hidden,layers", [(7, 5, 16, 3), (3, 40, 8, 1), (11, 2, 32, 2)])
def test_forward_count_matches_the_explicit_recursion(batch, dim, hidden, layers):
    """The reference's explicit forward does the kernel's products with aten ops; FlopCounterMode
    counts its matrix products but not the one matrix-vector product (z · w_out: 2·B·H)."""
    stacked = layers * hidden + 1
    args = (torch.randn(batch, dim), torch.randn(stacked, dim), torch.randn(stacked),
            torch.rand(layers - 1, hidden, hidden), torch.rand(hidden))
    with FlopCounterMode(display=False) as counter:
        reference.icnn_forward_explicit(*args, 0.0, "leaky_relu", 0.2)
    assert counter.get_total_flops() + 2 * batch * hidden == 2 * flops.icnn_forward_macs(
        batch, dim, dim, hidden, layers)


@pytest.mark.parametrize("activation", ["leaky_relu", "softplus"])
@pytest.mark.parametrize("input_grad", [True, False])
def test_a_training_step_counts_both_operators(activation, input_grad):
    batch, dim, hidden, layers = 9, 6, 12, 3
    module = lidvae_ext.BrenierMap(dim, hidden, layers, activation=activation, backend="fused")
    x = torch.randn(batch, dim, requires_grad=input_grad)
    with FlopCounterMode(display=False) as counter:
        module(x).square().sum().backward()
    counts = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    assert counts["lidvae_ext.icnn_forward"] == 2 * flops.icnn_forward_macs(batch, dim, dim, hidden, layers)
    assert counts["lidvae_ext.icnn_backward"] == 2 * flops.icnn_backward_macs(
        batch, dim, dim, hidden, layers, activation, need_input_grad=input_grad, with_psi=False)


def test_padded_input_and_potential_gradient_terms():
    """k < d columns shrink only the y-side products; a loss on ψ adds the M-wide db term."""
    b, d, k, h, L = 4, 10, 3, 8, 2
    full = flops.icnn_forward_macs(b, d, d, h, L)
    padded = flops.icnn_forward_macs(b, d, k, h, L)
    assert full - padded == b * (L * h + 1) * (d - k)
    for act in ("leaky_relu", "softplus"):
        base = flops.icnn_backward_macs(b, d, k, h, L, act, True, False)
        assert flops.icnn_backward_macs(b, d, k, h, L, act, True, True) - base == b * (L * h + 1)
        assert base > flops.icnn_backward_macs(b, d, k, h, L, act, False, False)
    with pytest.raises(ValueError, match="activation must be one of"):
        flops.icnn_backward_macs(b, d, k, h, L, "relu", True, False)


def _leaky_backward_products(B, d, K, H, L, need_input_grad):
    """Multiply-adds of backward_leaky.h, product by product, in the kernel's order."""
    products = [
        ("tangent A_l v, every hidden layer", B * L * H * d),
        ("layer-0 curvature r_0^T y", B * H * K),
        ("input gradient A_0^T r_0", B * H * K if need_input_grad else 0),
        ("tangent W_l zdot_{l-1}", (L - 1) * B * H * H),
        ("dw_out = zdot^T delta_L", B * H),
        ("dA_L = v^T delta_L", B * d),
        ("dA_l = delta_l^T v, every hidden layer", L * B * H * d),
        ("dW_l = delta_l^T zdot_{l-1}", (L - 1) * B * H * H),
    ]
    return sum(n for _, n in products)


def _curved_backward_products(B, d, K, H, L, need_input_grad):
    """Multiply-adds of backward_curved.h, product by product, in the kernel's order."""
    M = L * H + 1
    products = [
        ("tangent A v", B * M * d),
        ("tangent W_l zdot_{l-1}", (L - 1) * B * H * H),
        ("adot_L = zdot_{L-1} . w_out", B * H),
        ("back = r_L w_out", B * H),
        ("back = r_l W_l", (L - 1) * B * H * H),
        ("dW_l: delta^T zdot and r^T z", 2 * (L - 1) * B * H * H),
        ("dw_out: two matrix-vector products", 2 * B * H),
        ("dA = delta^T v", B * M * d),
        ("dA += r^T y", B * M * K),
        ("dy = r A", B * M * K if need_input_grad else 0),
    ]
    return sum(n for _, n in products)


@pytest.mark.parametrize("need_input_grad", [True, False])
@pytest.mark.parametrize("B,d,K,H,L", [(9, 6, 6, 12, 3), (5, 17, 4, 8, 2), (3, 3, 3, 16, 1)])
def test_backward_count_matches_the_kernels_products(B, d, K, H, L, need_input_grad):
    assert flops.icnn_backward_macs(B, d, K, H, L, "leaky_relu", need_input_grad, False) == \
        _leaky_backward_products(B, d, K, H, L, need_input_grad)
    assert flops.icnn_backward_macs(B, d, K, H, L, "softplus", need_input_grad, False) == \
        _curved_backward_products(B, d, K, H, L, need_input_grad)
