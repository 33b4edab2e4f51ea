"""Floating-point operation counts of the fused ICNN operators, for ``FlopCounterMode``.

``torch.utils.flop_counter.FlopCounterMode`` counts the matrix products of aten operators;
a custom operator counts nothing unless it registers a formula. :func:`register` (called when
the operators are registered) gives ``lidvae_ext::icnn_forward`` and ``icnn_backward`` the
multiply-adds their CPU and CUDA kernels perform in matrix and matrix-vector products, as
``FlopCounterMode`` counts them (2 per multiply-add; elementwise work is not counted, as for
aten). With them a whole training step — encoder, fused decoder, loss — is counted in one
place, and the FLOPs of an LID model and of its baseline can be compared
(``benchmarks/price.py --flops``).

Per row of the batch, with d the map's width, k ≤ d the columns of y (``[y, 0]`` padding),
H the width, L the depth and M = L·H + 1 the stacked input rows:

* forward: A y (M·k), the hidden products forward and back (2·(L−1)·H²), the output
  layer (H) and the map Σ A_lᵀ δ_l (M·d);
* backward, leaky ReLU (σ'' = 0 after layer 0): the tangent A v (L·H·d) and W ż
  ((L−1)·H²), dA (L·H·d + d), dW ((L−1)·H²), dw_out (H), the layer-0 curvature term rᵀ y
  (H·k) and, when the input gradient is asked for, A_0ᵀ r (H·k); ψ's own gradient adds M;
* backward, softplus (curvature in every layer): the tangent (M·d + (L−1)·H² + H), the
  curvature adjoints (r W: (L−1)·H², r_L w_out: H), dW (2·(L−1)·H²), dw_out (2·H), dA
  (M·d + M·k), the input gradient (M·k); ψ's own gradient adds M.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import flop_registry, register_flop_formula

_CURVED = {"leaky_relu": False, "softplus": True}


def icnn_forward_macs(batch: int, dim: int, in_dim: int, hidden: int, layers: int) -> int:
    """Multiply-adds of one ``icnn_forward`` call (see the module docstring)."""
    stacked = layers * hidden + 1
    per_row = stacked * in_dim + 2 * (layers - 1) * hidden**2 + hidden + stacked * dim
    return batch * per_row


def icnn_backward_macs(batch: int, dim: int, in_dim: int, hidden: int, layers: int, activation: str,
                       need_input_grad: bool, with_psi: bool) -> int:
    """Multiply-adds of one ``icnn_backward`` call (see the module docstring)."""
    if activation not in _CURVED:
        raise ValueError(f"activation must be one of {tuple(_CURVED)}, got {activation!r}")
    stacked = layers * hidden + 1
    hidden_sq = (layers - 1) * hidden**2
    if _CURVED[activation]:
        per_row = (2 * stacked * dim + 4 * hidden_sq + 4 * hidden + stacked * in_dim
                   + (stacked * in_dim if need_input_grad else 0))
    else:
        per_row = (2 * layers * hidden * dim + dim + 2 * hidden_sq + hidden + hidden * in_dim
                   + (hidden * in_dim if need_input_grad else 0))
    if with_psi:
        per_row += stacked
    return batch * per_row


def _forward_flop(y_shape, A_shape, b_shape, W_shape, w_out_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * icnn_forward_macs(y_shape[0], A_shape[1], y_shape[1], w_out_shape[0], W_shape[0] + 1)


def _backward_flop(grad_psi_shape, grad_map_shape, y_shape, A_shape, W_shape, w_out_shape, grad_shape,
                   pre_shape, upstream_shape, strong_convexity, activation, negative_slope, need_input_grad,
                   *args, out_shape=None, **kwargs) -> int:
    return 2 * icnn_backward_macs(y_shape[0], A_shape[1], y_shape[1], w_out_shape[0], W_shape[0] + 1,
                                  activation, bool(need_input_grad), grad_psi_shape is not None)


def register() -> None:
    """Registers the two formulas with ``torch.utils.flop_counter`` (once per process)."""
    forward = torch.ops.lidvae_ext.icnn_forward
    backward = torch.ops.lidvae_ext.icnn_backward
    if forward not in flop_registry:
        register_flop_formula(forward)(_forward_flop)
    if backward not in flop_registry:
        register_flop_formula(backward)(_backward_flop)
