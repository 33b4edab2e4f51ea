"""torch.library glue for the fused ICNN operators.

The operators are defined in C++ (``csrc/ops.cpp``) and implemented per
backend (``csrc/cpu``, ``csrc/cuda``). This module registers, for *every*
operator, a fake (meta) kernel so ``torch.compile`` / ``torch.export`` can
trace them, an ``Autograd`` kernel, a ``vmap`` batching rule and a float32
autocast rule:

* ``icnn_forward`` is differentiated by the closed-form ``icnn_backward``
  operator (DESIGN.md §3) — first derivatives of ψ and ∇ψ w.r.t. the input
  and every weight, i.e. the second-order training step of a Brenier-map
  decoder, without double-backward autograd. Its forward-mode formula is a
  Hessian-vector product (see :mod:`lidvae_ext._op_autograd`).
* ``icnn_backward`` is differentiable again (third derivatives of ψ, e.g.
  gradient penalties) by an autograd composition on the saved state.
* Batching rules: :mod:`lidvae_ext._op_batching`.
* The weight parametrization operators ``softplus_weights`` /
  ``softplus_weights_backward``: :mod:`lidvae_ext.positivity`.

Under a ``torch.func`` transform call :func:`icnn_forward` / :func:`icnn_backward`
(or the modules) rather than ``torch.ops.lidvae_ext.*`` directly: functorch can
transform the operators' ``autograd.Function`` only when it is entered before
the dispatcher, so the raw operators raise inside a transform.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _extension, _op_autograd

_LIB = "lidvae_ext"


def fused_available(device_type: str = "cpu") -> bool:
    """Whether fused kernels for ``device_type`` ("cpu" or "cuda") were built and loaded."""
    if not _extension.loaded():
        return False
    if device_type == "cpu":
        return True
    if device_type == "cuda":
        return bool(_extension.build_info().get("with_cuda", False))
    return False


def icnn_forward(
    y: Tensor, A: Tensor, b: Tensor, W: Tensor, w_out: Tensor,
    strong_convexity: float, activation: str, negative_slope: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``torch.ops.lidvae_ext.icnn_forward`` → ``(ψ, ∇ψ, pre, upstream)``, transform-safe.

    Identical to the operator, except that under a ``torch.func`` transform it
    enters through the operator's ``autograd.Function`` (which functorch can
    transform); the raw operator raises there rather than drop derivatives.
    """
    return _op_autograd.call_forward(y, A, b, W, w_out, strong_convexity, activation, negative_slope)


def icnn_backward(
    grad_psi: Tensor | None, grad_map: Tensor, y: Tensor, A: Tensor, W: Tensor, w_out: Tensor,
    grad: Tensor | None, pre: Tensor, upstream: Tensor,
    strong_convexity: float, activation: str, negative_slope: float, need_input_grad: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``torch.ops.lidvae_ext.icnn_backward``, transform-safe (see :func:`icnn_forward`)."""
    return _op_autograd.call_backward(grad_psi, grad_map, y, A, W, w_out, grad, pre, upstream,
                         strong_convexity, activation, negative_slope, need_input_grad)


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
    """Fused ψ(y) (B,) and Brenier map ∇ψ(y) (B, d) of the ICNN.

    Same arguments and layout as :func:`lidvae_ext.reference.icnn_potential_and_map`;
    differentiable w.r.t. ``y`` and every weight through the closed-form
    backward operator (itself differentiable again), in forward mode, and
    under every ``torch.func`` transform. ``y`` may have k < d columns: it then stands for the
    zero-padded ``[y, 0]``, and the products with the zero columns are skipped.
    """
    psi, grad, _, _ = icnn_forward(y, A, b, W, w_out, float(strong_convexity), activation, float(negative_slope))
    return psi, grad


def icnn_map(y: Tensor, *args, **kwargs) -> Tensor:
    """Fused Brenier map ∇ψ(y) only."""
    return icnn_potential_and_map(y, *args, **kwargs)[1]


# --------------------------------------------------------------------------
# Registration (only when the compiled library is loaded).
# --------------------------------------------------------------------------


def _check_same_device_dtype(op: str, y: Tensor, **others: Tensor) -> None:
    for name, t in others.items():
        torch._check(
            t.device == y.device,
            lambda: f"{op}: {name} is on {t.device} but y is on {y.device} (all tensors must be on one device)",
        )
        torch._check(
            t.dtype == y.dtype,
            lambda: f"{op}: {name} has dtype {t.dtype} but y has dtype {y.dtype} (all tensors must share one dtype)",
        )


def _fake_forward(y, A, b, W, w_out, strong_convexity, activation, negative_slope):
    _check_same_device_dtype("icnn_forward", y, A=A, b=b, W=W, w_out=w_out)
    torch._check(y.dim() == 2, lambda: f"icnn_forward: y must be 2-D (B, d), got {tuple(y.shape)}")
    batch, hidden, num_layers = y.shape[0], w_out.shape[0], W.shape[0] + 1
    torch._check(
        A.dim() == 2 and A.shape[0] == num_layers * hidden + 1 and A.shape[1] >= y.shape[1],
        lambda: f"icnn_forward: A must be ({num_layers * hidden + 1}, d) with d >= y.size(1) = "
        f"{y.shape[1]}, got {tuple(A.shape)}",
    )
    return (
        y.new_empty(batch),
        y.new_empty(batch, A.shape[1]),
        y.new_empty(batch, A.shape[0]),
        y.new_empty(batch, (num_layers - 1) * hidden),
    )


def _fake_backward(
    grad_psi, grad_map, y, A, W, w_out, grad, pre, upstream,
    strong_convexity, activation, negative_slope, need_input_grad,
):
    others = dict(grad_map=grad_map, A=A, W=W, w_out=w_out, pre=pre, upstream=upstream)
    if grad is not None:
        others["grad"] = grad
    _check_same_device_dtype("icnn_backward", y, **others)
    torch._check(
        grad is not None or grad_psi is None,
        lambda: "icnn_backward: grad (the map icnn_forward returned) is required when grad_psi is given",
    )
    grad_y = y.new_empty(y.shape) if need_input_grad else y.new_empty(0)
    return (
        grad_y,
        A.new_empty(A.shape),
        A.new_empty(A.shape[0]),
        W.new_empty(W.shape),
        w_out.new_empty(w_out.shape),
    )


def _register() -> None:
    from . import _op_batching, flops, positivity

    torch.library.register_fake(f"{_LIB}::icnn_forward")(_fake_forward)
    torch.library.register_fake(f"{_LIB}::icnn_backward")(_fake_backward)
    # Autograd kernels (what torch.library.register_autograd installs, plus forward-mode
    # formulas and functorch support: see _op_autograd).
    _IMPL.impl("icnn_forward", _op_autograd.forward_autograd_kernel, "Autograd", with_keyset=True)
    _IMPL.impl("icnn_backward", _op_autograd.backward_autograd_kernel, "Autograd", with_keyset=True)
    torch.library.register_vmap(f"{_LIB}::icnn_forward", _op_batching.forward_vmap, lib=_IMPL)
    torch.library.register_vmap(f"{_LIB}::icnn_backward", _op_batching.backward_vmap, lib=_IMPL)
    for device_type in ("cpu", "cuda"):
        for op in ("icnn_forward", "icnn_backward"):
            # Under torch.autocast the operators run in float32 (outputs float32).
            torch.library.register_autocast(f"{_LIB}::{op}", device_type, torch.float32, lib=_IMPL)
    positivity.register(_IMPL)  # softplus_weights / softplus_weights_backward
    flops.register()  # torch.utils.flop_counter.FlopCounterMode counts the fused operators


_IMPL = torch.library.Library(_LIB, "IMPL") if _extension.loaded() else None

if _extension.loaded():
    _register()
