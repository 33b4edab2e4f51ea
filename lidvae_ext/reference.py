"""Pure-PyTorch reference implementation of the ICNN and its Brenier map.

This module is the test oracle: the ICNN is written with plain tensor ops,
and the map ∇ψ is obtained by ``torch.autograd.grad(create_graph=True)``, so
training through it is ordinary double-backward autograd. The fused operators
in :mod:`lidvae_ext.ops` must agree with it to rounding error.

Weight layout (shared with the fused operators), with ``H`` the hidden width,
``L`` the number of layers, ``M = L*H + 1`` and ``d`` the input dimension:

``A`` (M, d)
    Stacked input weights ``[A_0; A_1; ...; A_L]``.
``b`` (M,)
    Stacked biases.
``W`` (L-1, H, H)
    Non-negative hidden-to-hidden weights ``W_1 .. W_{L-1}``.
``w_out`` (H,)
    Non-negative last-layer weights ``W_L``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

ACTIVATIONS = ("leaky_relu", "softplus")


def first_layer_activation(pre: Tensor, activation: str, negative_slope: float) -> Tensor:
    """σ₀: squared leaky ReLU (the paper's ICNN) or softplus."""
    if activation == "leaky_relu":
        return F.leaky_relu(pre, negative_slope).square()
    if activation == "softplus":
        return F.softplus(pre)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def hidden_activation(pre: Tensor, activation: str, negative_slope: float) -> Tensor:
    """σ for layers 1..L: leaky ReLU (the paper's ICNN) or softplus."""
    if activation == "leaky_relu":
        return F.leaky_relu(pre, negative_slope)
    if activation == "softplus":
        return F.softplus(pre)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def icnn_potential(
    y: Tensor,
    A: Tensor,
    b: Tensor,
    W: Tensor,
    w_out: Tensor,
    strong_convexity: float = 0.0,
    activation: str = "leaky_relu",
    negative_slope: float = 0.2,
) -> Tensor:
    """Potential ψ(y) of the ICNN for a batch ``y`` of shape (B, d); returns (B,).

    ``y`` may have fewer columns k < d than ``A``: it then stands for the
    zero-padded ``[y, 0]`` (the fixed β = [I; 0] of a LIDDecoder).
    """
    if y.shape[-1] < A.shape[1]:
        y = F.pad(y, (0, A.shape[1] - y.shape[-1]))
    hidden = w_out.shape[0]
    num_layers = W.shape[0] + 1
    pre_all = y @ A.t() + b  # (B, M): every A_l y + b_l in one product
    z = first_layer_activation(pre_all[:, :hidden], activation, negative_slope)
    for layer in range(1, num_layers):
        block = pre_all[:, layer * hidden : (layer + 1) * hidden]
        z = hidden_activation(z @ W[layer - 1].t() + block, activation, negative_slope)
    out = hidden_activation(z @ w_out + pre_all[:, -1], activation, negative_slope)
    return out + 0.5 * strong_convexity * y.square().sum(dim=-1)


def icnn_potential_and_map(
    y: Tensor,
    A: Tensor,
    b: Tensor,
    W: Tensor,
    w_out: Tensor,
    strong_convexity: float = 0.0,
    activation: str = "leaky_relu",
    negative_slope: float = 0.2,
) -> tuple[Tensor, Tensor]:
    """ψ(y) (B,) and the Brenier map ∇ψ(y) (B, d), differentiable to second order.

    With ``y`` of k < d columns (zero-padded input), the map is still (B, d).

    Under grad mode the map is computed with
    ``torch.autograd.grad(create_graph=True)``, so it can be backpropagated
    through (the double backward the fused op replaces); under ``no_grad`` it
    is a plain first-order gradient.
    """
    differentiable = torch.is_grad_enabled()
    with torch.enable_grad():
        y_in = y if y.requires_grad else y.detach().requires_grad_(True)
        y_full = y_in if y_in.shape[-1] == A.shape[1] else F.pad(y_in, (0, A.shape[1] - y_in.shape[-1]))
        psi = icnn_potential(y_full, A, b, W, w_out, strong_convexity, activation, negative_slope)
        (grad,) = torch.autograd.grad(psi.sum(), y_full, create_graph=differentiable)
    if not differentiable:
        psi, grad = psi.detach(), grad.detach()
    return psi, grad


def icnn_map(y: Tensor, *args, **kwargs) -> Tensor:
    """Brenier map ∇ψ(y) only (see :func:`icnn_potential_and_map`)."""
    return icnn_potential_and_map(y, *args, **kwargs)[1]
