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
from torch.autograd import forward_ad

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


def _transforms_active() -> bool:
    """Whether a torch.func transform or a forward-AD level is active (autograd.grad unusable)."""
    return torch._C._are_functorch_transforms_active() or forward_ad._current_level >= 0


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
    """ψ(y) (B,) and the Brenier map ∇ψ(y) (B, d), differentiable to any order.

    With ``y`` of k < d columns (zero-padded input), the map is still (B, d).

    Under grad mode the map is computed with
    ``torch.autograd.grad(create_graph=True)``, so it can be backpropagated
    through (the double backward the fused op replaces); under ``no_grad`` it
    is a plain first-order gradient. Under a ``torch.func`` transform (vmap,
    grad, jvp, jacrev, ...) or ``torch.autograd.forward_ad``, where
    ``autograd.grad`` on a detached leaf would lose the transform's tangents,
    the map is the explicit reverse recursion of :func:`icnn_forward_explicit`
    (plain tensor ops, so every transform composes; the tests check the two
    formulations agree to rounding, derivatives included).
    """
    if _transforms_active():
        psi, grad, _, _ = icnn_forward_explicit(
            y, A, b, W, w_out, strong_convexity, activation, negative_slope
        )
        return psi, grad
    differentiable = torch.is_grad_enabled()
    with torch.enable_grad():
        y_in = y if y.requires_grad else y.detach().requires_grad_(True)
        y_full = y_in if y_in.shape[-1] == A.shape[1] else F.pad(y_in, (0, A.shape[1] - y_in.shape[-1]))
        psi = icnn_potential(y_full, A, b, W, w_out, strong_convexity, activation, negative_slope)
        (grad,) = torch.autograd.grad(psi.sum(), y_full, create_graph=differentiable)
    if not differentiable:
        psi, grad = psi.detach(), grad.detach()
    return psi, grad


def _slope_factor(pre: Tensor, negative_slope: float) -> Tensor:
    """Leaky-ReLU derivative: 1 where pre > 0, else the slope (torch's convention at 0)."""
    return torch.where(pre > 0, torch.ones_like(pre), torch.full_like(pre, negative_slope))


def _softplus_derivative(pre: Tensor) -> Tensor:
    """d softplus / d pre with torch's threshold 20 (exactly 1 above it, like F.softplus)."""
    return torch.where(pre > 20.0, torch.ones_like(pre), torch.sigmoid(pre))


def _first_derivative(pre: Tensor, activation: str, negative_slope: float) -> Tensor:
    """σ₀'(pre) as a differentiable expression."""
    if activation == "leaky_relu":
        return 2.0 * F.leaky_relu(pre, negative_slope) * _slope_factor(pre, negative_slope)
    return _softplus_derivative(pre)


def _hidden_derivative(pre: Tensor, activation: str, negative_slope: float) -> Tensor:
    """σ'(pre) as a differentiable expression."""
    if activation == "leaky_relu":
        return _slope_factor(pre, negative_slope)
    return _softplus_derivative(pre)


def icnn_forward_explicit(
    y: Tensor,
    A: Tensor,
    b: Tensor,
    W: Tensor,
    w_out: Tensor,
    strong_convexity: float = 0.0,
    activation: str = "leaky_relu",
    negative_slope: float = 0.2,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``icnn_forward``'s four outputs ``(ψ, ∇ψ, pre, upstream)`` as plain tensor ops.

    The map is the reverse recursion written out (``δ_L = σ'(a_L)``,
    ``e_{l-1} = W_lᵀ δ_l``, ``δ_{l-1} = σ'(a_{l-1}) ⊙ e_{l-1}``,
    ``∇ψ = Σ_l A_lᵀ δ_l + αy``) instead of an ``autograd.grad`` call, so it can
    be differentiated by any transform to any order. ``b`` may be ``(M,)`` or
    per row ``(B, M)``. ``pre`` is every pre-activation ``a_l`` (B, M) and
    ``upstream`` the ``e_l`` for ``l < L-1`` (B, (L-1)·H), as the operator returns.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if y.shape[-1] < A.shape[1]:
        y = F.pad(y, (0, A.shape[1] - y.shape[-1]))
    hidden, num_layers = w_out.shape[0], W.shape[0] + 1
    affine = y @ A.t() + b
    pres = [affine[:, :hidden]]
    z = first_layer_activation(pres[0], activation, negative_slope)
    for layer in range(1, num_layers):
        block = affine[:, layer * hidden : (layer + 1) * hidden]
        pres.append(z @ W[layer - 1].t() + block)
        z = hidden_activation(pres[-1], activation, negative_slope)
    pre_out = z @ w_out + affine[:, -1]
    psi = hidden_activation(pre_out, activation, negative_slope)
    psi = psi + 0.5 * strong_convexity * y.square().sum(dim=-1)
    delta_out = _hidden_derivative(pre_out, activation, negative_slope)
    upstream = delta_out[:, None] * w_out  # e_{L-1}
    deltas, ups = [], []
    for layer in range(num_layers - 1, -1, -1):
        derivative = (_first_derivative if layer == 0 else _hidden_derivative)(
            pres[layer], activation, negative_slope
        )
        delta = derivative * upstream
        deltas.append(delta)
        if layer > 0:
            upstream = delta @ W[layer - 1]  # e_{layer-1}
            ups.append(upstream)
    stacked = torch.cat([*reversed(deltas), delta_out[:, None]], dim=1)
    grad = stacked @ A + strong_convexity * y
    pre = torch.cat([*pres, pre_out[:, None]], dim=1)
    upstream_all = torch.cat(list(reversed(ups)), dim=1) if ups else y.new_zeros(y.shape[0], 0)
    return psi, grad, pre, upstream_all


def icnn_map(y: Tensor, *args, **kwargs) -> Tensor:
    """Brenier map ∇ψ(y) only (see :func:`icnn_potential_and_map`)."""
    return icnn_potential_and_map(y, *args, **kwargs)[1]


def bias_from_pre(
    y: Tensor, A: Tensor, W: Tensor, w_out: Tensor, pre: Tensor, activation: str, negative_slope: float
) -> Tensor:
    """Per-row biases (B, M) that reproduce the pre-activations ``pre`` from y and the weights.

    ``b_l = a_l − A_l y − W_l σ(a_{l-1})``: on the ``pre`` that ``icnn_forward``
    returns every row equals the true ``b``, and as a differentiable expression it
    lets a formula written in ``(y, A, W, w_out, pre)`` depend on the bias through
    ``pre`` (used for the derivatives of ``icnn_backward``, which takes no ``b``).
    """
    y = y if y.shape[-1] == A.shape[1] else F.pad(y, (0, A.shape[1] - y.shape[-1]))
    hidden, num_layers = w_out.shape[0], W.shape[0] + 1
    blocks = [pre[:, :hidden]]
    z = first_layer_activation(pre[:, :hidden], activation, negative_slope)
    for layer in range(1, num_layers):
        block = pre[:, layer * hidden : (layer + 1) * hidden]
        blocks.append(block - z @ W[layer - 1].t())
        z = hidden_activation(block, activation, negative_slope)
    blocks.append((pre[:, -1] - z @ w_out)[:, None])
    return torch.cat(blocks, dim=1) - y @ A.t()


def pre_tangent(
    dy: Tensor, A: Tensor, W: Tensor, w_out: Tensor, pre: Tensor, activation: str, negative_slope: float
) -> Tensor:
    """Tangent of the pre-activations for an input tangent ``dy`` (full width d), weights fixed.

    ``ȧ_0 = A_0 ẏ``, ``ȧ_l = W_l (σ'(a_{l-1}) ⊙ ȧ_{l-1}) + A_l ẏ`` (σ₀' for layer 0).
    """
    hidden, num_layers = w_out.shape[0], W.shape[0] + 1
    affine = dy @ A.t()
    blocks = [affine[:, :hidden]]
    for layer in range(1, num_layers + 1):
        derivative = (_first_derivative if layer == 1 else _hidden_derivative)(
            pre[:, (layer - 1) * hidden : layer * hidden], activation, negative_slope
        )
        dz = derivative * blocks[-1]
        if layer < num_layers:
            blocks.append(dz @ W[layer - 1].t() + affine[:, layer * hidden : (layer + 1) * hidden])
        else:
            blocks.append((dz @ w_out + affine[:, -1])[:, None])
    return torch.cat(blocks, dim=1)
