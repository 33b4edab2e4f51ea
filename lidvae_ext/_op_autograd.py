"""Autograd, forward-mode and higher-order formulas of the fused ICNN operators.

Each operator gets an ``Autograd`` kernel that applies a
``torch.autograd.Function`` with ``setup_context``, ``backward``, ``jvp`` and
a generated vmap rule, so reverse mode, ``torch.autograd.forward_ad`` and
every ``torch.func`` transform (grad, vjp, jvp, jacrev, jacfwd, hessian,
vmap) reach a real formula:

``icnn_forward``
    backward: the closed-form ``icnn_backward`` operator (the fast training
    path, unchanged). jvp: a tangent of the input alone is a Hessian-vector
    product, i.e. ``icnn_backward``'s ``grad_y`` with the tangent as
    ``grad_map`` (∇²ψ is symmetric); tangents of the weights are pushed
    through the explicit reference recursion
    (:func:`lidvae_ext.reference.icnn_forward_explicit`).
``icnn_backward``
    backward and jvp (third derivatives of ψ): an autograd composition on the
    saved state. The operator's outputs are recomputed with differentiable
    tensor ops from ``(grad_psi, grad_map, y, A, W, w_out, pre)``; the bias,
    which is not an input of ``icnn_backward``, is recovered from ``pre`` as
    ``b = pre − (A y + W σ(pre))`` — an identity on the states the forward
    produces, so the total derivative (through ``pre``'s own derivative,
    which ``icnn_forward``'s backward provides) is exact.

The ``upstream`` output is marked non-differentiable (nothing downstream of
the operators' own formulas reads it as a function of the inputs); ``pre`` is
differentiable so that higher-order gradients reach the bias.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import forward_ad

from ._op_batching import batched_backward, batched_forward, batched_input_vjp
from .reference import bias_from_pre, icnn_forward_explicit, pre_tangent


def _forward_op():
    return torch.ops.lidvae_ext.icnn_forward.default


def _backward_op():
    return torch.ops.lidvae_ext.icnn_backward.default


def _wants_function(*args) -> bool:
    """Whether a call outside torch.func must record a derivative (autograd or forward AD)."""
    return (torch.is_grad_enabled() and torch._C._any_requires_grad(*args)) or forward_ad._current_level >= 0


_DIRECT_UNDER_FUNCTORCH = (
    "lidvae_ext: torch.ops.lidvae_ext.{op} was called directly inside a torch.func transform; "
    "call lidvae_ext.ops.{op} (or the modules) instead, which give the transforms the "
    "operator's derivative formulas"
)


def call_forward(y, A, b, W, w_out, strong_convexity, activation, negative_slope):
    """``icnn_forward`` that every autograd mode and ``torch.func`` transform can differentiate."""
    if torch._C._are_functorch_transforms_active():
        # Route through the autograd.Function *before* the dispatcher, where functorch
        # dispatches it to its grad/jvp/vmap rules (from inside an operator kernel it cannot).
        return IcnnForward.apply(y, A, b, W, w_out, strong_convexity, activation, negative_slope, True)
    return _forward_op()(y, A, b, W, w_out, strong_convexity, activation, negative_slope)


def call_backward(grad_psi, grad_map, y, A, W, w_out, grad, pre, upstream,
                  strong_convexity, activation, negative_slope, need_input_grad):
    """``icnn_backward`` that every autograd mode and ``torch.func`` transform can differentiate."""
    args = (grad_psi, grad_map, y, A, W, w_out, grad, pre, upstream,
            strong_convexity, activation, negative_slope, need_input_grad)
    if torch._C._are_functorch_transforms_active():
        return IcnnBackward.apply(*args, True)
    return _backward_op()(*args)


def _apply_outside_transforms(function, *args):
    """``function.apply`` without the per-call ``inspect.signature`` binding of
    ``autograd.Function.apply`` (no defaults to bind; no functorch level active)."""
    return super(torch.autograd.Function, function).apply(*args)


def _zeros_if_none(tangents, primals):
    return tuple(torch.zeros_like(p) if t is None else t for t, p in zip(tangents, primals))


def _pad_columns(t: Tensor, width: int) -> Tensor:
    return t if t.shape[-1] == width else F.pad(t, (0, width - t.shape[-1]))


# --------------------------------------------------------------------------
# icnn_forward
# --------------------------------------------------------------------------


class IcnnForward(torch.autograd.Function):
    """``icnn_forward`` with its reverse-mode and forward-mode formulas."""

    @staticmethod
    def vmap(info, in_dims, *args):
        return batched_forward(call_forward, info.batch_size, in_dims[:8], args[:8])

    @staticmethod
    def forward(y, A, b, W, w_out, strong_convexity, activation, negative_slope, keep_for_jvp):
        with torch._C._AutoDispatchBelowAutograd():
            return _forward_op()(y, A, b, W, w_out, strong_convexity, activation, negative_slope)

    @staticmethod
    def setup_context(ctx, inputs, output):
        y, A, b, W, w_out, strong_convexity, activation, negative_slope, keep_for_jvp = inputs
        _psi, grad, pre, upstream = output
        # The map output is NOT saved for the backward: it is read only when ψ itself gets a
        # gradient (rare: a loss on ψ and ∇ψ of one call), and then recomputed. Saving it
        # would keep a (B, d) tensor alive through the whole backward pass — e.g. a decoder's
        # logits, which the loss would otherwise have freed (this matters for peak memory).
        ctx.save_for_backward(y, A, b, W, w_out, pre, upstream)
        if keep_for_jvp:  # only under forward AD / torch.func, where jvp may run
            ctx.save_for_forward(y, A, b, W, w_out, grad, pre, upstream)
        ctx.hyper = (strong_convexity, activation, negative_slope)
        ctx.mark_non_differentiable(upstream)
        # Unused outputs (often ψ) then arrive as None instead of materialized zeros.
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, grad_psi, grad_map, grad_pre, _grad_upstream):
        y, A, b, W, w_out, pre, upstream = ctx.saved_tensors
        hyper = ctx.hyper
        need_input_grad = bool(ctx.needs_input_grad[0])
        grads = [None] * 9
        if grad_map is not None or grad_psi is not None:
            if grad_map is None:
                grad_map = y.new_zeros(y.shape[0], A.shape[1])
            grad = None
            if grad_psi is not None:
                # Recompute the map (the potential's input gradient is grad_psi * ∇ψ).
                grad = call_forward(y, A, b, W, w_out, *hyper)[1]
            only_input = need_input_grad and not any(ctx.needs_input_grad[1:5])
            if only_input and torch._C._are_functorch_transforms_active():
                # Only the input is differentiated (jacrev / vjp w.r.t. z): the row-wise
                # input VJP, whose vmap rule folds (plain autograd keeps the fused op).
                grads[0] = call_input_vjp(grad_psi, grad_map, y, A, W, w_out, grad, pre, upstream, *hyper)
            else:
                grad_y, grad_A, grad_b, grad_W, grad_w_out = call_backward(
                    grad_psi, grad_map, y, A, W, w_out, grad, pre, upstream, *hyper, need_input_grad
                )
                grads[:5] = [grad_y if need_input_grad else None, grad_A, grad_b, grad_W, grad_w_out]
        if grad_pre is not None:
            # Only higher-order gradients reach `pre` (through icnn_backward's formula).
            _, vjp_fn = torch.func.vjp(
                lambda *p: icnn_forward_explicit(*p, *hyper)[2], y, A, b, W, w_out
            )
            extra = vjp_fn(grad_pre)
            grads[:5] = [e if g is None else g + e for g, e in zip(grads[:5], extra)]
            if not need_input_grad:
                grads[0] = None
        return tuple(grads)

    @staticmethod
    def jvp(ctx, dy, dA, db, dW, dw_out, *_non_tensor):
        y, A, b, W, w_out, grad, pre, upstream = ctx.saved_tensors
        strong_convexity, activation, negative_slope = ctx.hyper
        width = A.shape[1]
        if dy is None and dA is None and db is None and dW is None and dw_out is None:
            return None, None, None, None
        if dA is None and db is None and dW is None and dw_out is None:
            # Input tangent only: d∇ψ = ∇²ψ·ẏ, icnn_backward's grad_y for grad_map = ẏ
            # (with y padded to full width, so all d rows of ∇²ψ[:, :k]·ẏ come back).
            tangent = _pad_columns(dy, width)
            hvp = call_backward(
                None, tangent, _pad_columns(y, width), A, W, w_out, None, pre, upstream,
                strong_convexity, activation, negative_slope, True,
            )[0]
            dpsi = (grad * tangent).sum(dim=-1)
            dpre = pre_tangent(tangent, A, W, w_out, pre, activation, negative_slope)
            return dpsi, hvp, dpre, None
        primals = (y, A, b, W, w_out)
        tangents = _zeros_if_none((dy, dA, db, dW, dw_out), primals)
        _, (dpsi, dgrad, dpre) = torch.func.jvp(
            lambda *p: icnn_forward_explicit(*p, *ctx.hyper)[:3], primals, tangents
        )
        return dpsi, dgrad, dpre, None


def forward_autograd_kernel(keyset, y, A, b, W, w_out, strong_convexity, activation, negative_slope):
    """``Autograd`` kernel of ``icnn_forward``."""
    if torch._C._are_functorch_transforms_active():
        raise RuntimeError(_DIRECT_UNDER_FUNCTORCH.format(op="icnn_forward"))
    if _wants_function(y, A, b, W, w_out):
        return _apply_outside_transforms(
            IcnnForward, y, A, b, W, w_out, strong_convexity, activation, negative_slope,
            forward_ad._current_level >= 0,
        )
    with torch._C._AutoDispatchBelowAutograd():
        return _forward_op().redispatch(
            keyset & torch._C._after_autograd_keyset,
            y, A, b, W, w_out, strong_convexity, activation, negative_slope,
        )


# --------------------------------------------------------------------------
# icnn_backward (third derivatives of ψ)
# --------------------------------------------------------------------------


def backward_recomputed(grad_psi, grad_map, y, A, W, w_out, pre, hyper, need_input_grad):
    """``icnn_backward``'s outputs as differentiable tensor ops of the saved state.

    The bias is recovered per row from ``pre`` (see the module docstring); ψ and
    ∇ψ are the explicit recursion and their VJP is taken by ``torch.func.vjp``,
    so the result can be differentiated again by autograd or any transform.
    """
    bias_rows = bias_from_pre(y, A, W, w_out, pre, hyper[1], hyper[2])

    def potential_and_map(y_, A_, b_, W_, w_):
        return tuple(icnn_forward_explicit(y_, A_, b_, W_, w_, *hyper)[:2])

    (psi, _), vjp_fn = torch.func.vjp(potential_and_map, y, A, bias_rows, W, w_out)
    cotangent_psi = torch.zeros_like(psi) if grad_psi is None else grad_psi
    grad_y, grad_A, grad_b_rows, grad_W, grad_w_out = vjp_fn((cotangent_psi, grad_map))
    if not need_input_grad:
        grad_y = y.new_zeros(0)
    return grad_y, grad_A, grad_b_rows.sum(dim=0), grad_W, grad_w_out


class IcnnBackward(torch.autograd.Function):
    """``icnn_backward`` with its derivatives (an autograd composition, see the module doc)."""

    @staticmethod
    def vmap(info, in_dims, *args):
        return batched_backward(call_backward, info.batch_size, in_dims[:13], args[:13])

    @staticmethod
    def forward(grad_psi, grad_map, y, A, W, w_out, grad, pre, upstream,
                strong_convexity, activation, negative_slope, need_input_grad, keep_for_jvp):
        with torch._C._AutoDispatchBelowAutograd():
            return _backward_op()(
                grad_psi, grad_map, y, A, W, w_out, grad, pre, upstream,
                strong_convexity, activation, negative_slope, need_input_grad,
            )

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad_psi, grad_map, y, A, W, w_out, _grad, pre, _upstream = inputs[:9]
        strong_convexity, activation, negative_slope, need_input_grad, keep_for_jvp = inputs[9:]
        ctx.has_grad_psi = grad_psi is not None
        saved = (grad_psi if grad_psi is not None else grad_map.new_zeros(0), grad_map, y, A, W, w_out, pre)
        ctx.save_for_backward(*saved)
        if keep_for_jvp:
            ctx.save_for_forward(*saved)
        ctx.hyper = (strong_convexity, activation, negative_slope)
        ctx.need_input_grad = need_input_grad
        ctx.set_materialize_grads(False)

    @staticmethod
    def _recompute(ctx, grad_psi, grad_map, y, A, W, w_out, pre):
        return backward_recomputed(
            grad_psi if ctx.has_grad_psi else None, grad_map, y, A, W, w_out, pre,
            ctx.hyper, ctx.need_input_grad,
        )

    @staticmethod
    def backward(ctx, *cotangents):
        saved = ctx.saved_tensors
        if all(c is None for c in cotangents):
            return (None,) * 14
        outputs, vjp_fn = torch.func.vjp(lambda *s: IcnnBackward._recompute(ctx, *s), *saved)
        grads = vjp_fn(_zeros_if_none(cotangents, outputs))
        g_psi, g_map, g_y, g_A, g_W, g_w_out, g_pre = grads
        needs = ctx.needs_input_grad
        pick = lambda i, g: g if needs[i] else None  # noqa: E731
        return (
            pick(0, g_psi) if ctx.has_grad_psi else None, pick(1, g_map), pick(2, g_y),
            pick(3, g_A), pick(4, g_W), pick(5, g_w_out), None, pick(7, g_pre), None,
            None, None, None, None, None,
        )

    @staticmethod
    def jvp(ctx, d_psi, d_map, d_y, d_A, d_W, d_w_out, _d_grad, d_pre, _d_upstream, *_non_tensor):
        saved = ctx.saved_tensors
        tangents = (d_psi if ctx.has_grad_psi else None, d_map, d_y, d_A, d_W, d_w_out, d_pre)
        _, out_tangents = torch.func.jvp(
            lambda *s: IcnnBackward._recompute(ctx, *s), saved, _zeros_if_none(tangents, saved)
        )
        return out_tangents


class IcnnInputVjp(torch.autograd.Function):
    """``icnn_backward``'s ``grad_y`` alone, for backward passes that need no weight gradient.

    Used under ``torch.func`` when only the input is differentiated (``jacrev`` /
    ``vmap(vjp)`` w.r.t. z): ``grad_y`` is row-wise, so unlike the full operator its
    vmap rule can fold the vmapped dimension into the rows — one kernel call for the
    whole Jacobian instead of one per output. Derivatives: as :class:`IcnnBackward`.
    """

    @staticmethod
    def forward(grad_psi, grad_map, y, A, W, w_out, grad, pre, upstream,
                strong_convexity, activation, negative_slope):
        with torch._C._AutoDispatchBelowAutograd():
            return _backward_op()(
                grad_psi, grad_map, y, A, W, w_out, grad, pre, upstream,
                strong_convexity, activation, negative_slope, True,
            )[0]

    @staticmethod
    def setup_context(ctx, inputs, output):
        IcnnBackward.setup_context(ctx, (*inputs, True, True), None)

    @staticmethod
    def vmap(info, in_dims, *args):
        return batched_input_vjp(call_input_vjp, info.batch_size, in_dims, args)

    @staticmethod
    def backward(ctx, cotangent):
        if cotangent is None:
            return (None,) * 12
        _, vjp_fn = torch.func.vjp(lambda *s: IcnnBackward._recompute(ctx, *s)[0], *ctx.saved_tensors)
        g_psi, g_map, g_y, g_A, g_W, g_w_out, g_pre = vjp_fn(cotangent)
        needs = ctx.needs_input_grad
        pick = lambda i, g: g if needs[i] else None  # noqa: E731
        return (
            pick(0, g_psi) if ctx.has_grad_psi else None, pick(1, g_map), pick(2, g_y),
            pick(3, g_A), pick(4, g_W), pick(5, g_w_out), None, pick(7, g_pre), None, None, None, None,
        )

    @staticmethod
    def jvp(ctx, d_psi, d_map, d_y, d_A, d_W, d_w_out, _d_grad, d_pre, _d_upstream, *_non_tensor):
        saved = ctx.saved_tensors
        tangents = (d_psi if ctx.has_grad_psi else None, d_map, d_y, d_A, d_W, d_w_out, d_pre)
        _, out_tangent = torch.func.jvp(
            lambda *s: IcnnBackward._recompute(ctx, *s)[0], saved, _zeros_if_none(tangents, saved)
        )
        return out_tangent


def call_input_vjp(grad_psi, grad_map, y, A, W, w_out, grad, pre, upstream,
                   strong_convexity, activation, negative_slope):
    """``icnn_backward(...)[0]`` (with ``need_input_grad=True``), transform-safe."""
    args = (grad_psi, grad_map, y, A, W, w_out, grad, pre, upstream,
            strong_convexity, activation, negative_slope)
    if torch._C._are_functorch_transforms_active():
        return IcnnInputVjp.apply(*args)
    return _backward_op()(*args, True)[0]


def backward_autograd_kernel(keyset, grad_psi, grad_map, y, A, W, w_out, grad, pre, upstream,
                             strong_convexity, activation, negative_slope, need_input_grad):
    """``Autograd`` kernel of ``icnn_backward``."""
    args = (grad_psi, grad_map, y, A, W, w_out, grad, pre, upstream,
            strong_convexity, activation, negative_slope, need_input_grad)
    if torch._C._are_functorch_transforms_active():
        raise RuntimeError(_DIRECT_UNDER_FUNCTORCH.format(op="icnn_backward"))
    if _wants_function(grad_psi, grad_map, y, A, W, w_out, grad, pre, upstream):
        return _apply_outside_transforms(IcnnBackward, *args, forward_ad._current_level >= 0)
    with torch._C._AutoDispatchBelowAutograd():
        return _backward_op().redispatch(keyset & torch._C._after_autograd_keyset, *args)
