"""Non-negative ICNN weights: ``softplus(raw)`` as one fused pass each way, or ``clamp``.

The ICNN modules keep raw hidden weights and make them non-negative before the
kernels see them (``ICNN.weights``). With ``positivity="softplus"`` that is
``W = softplus(raw)`` and, in the backward, ``grad_raw = grad_W · sigmoid(raw)``:
two elementwise passes over the (L−1)·H² hidden weights every training step.
On the fused CPU path they are the operators

``lidvae_ext::softplus_weights(raw) -> W``
    one vectorized pass (per-ISA row kernel, OpenMP over torch's intra-op
    threads); the values of ``torch.nn.functional.softplus`` (β = 1,
    threshold 20) to a few ulp;
``lidvae_ext::softplus_weights_backward(grad, raw) -> grad_raw``
    ``grad · sigmoid(raw)`` (``grad`` above the threshold), one pass.

Both have fake kernels (``torch.compile`` / ``torch.export``), autograd formulas
(the backward operator is differentiable again by plain tensor ops, so double
backward through the parametrization is exact; under forward-mode AD and
``torch.func`` transforms the ``Autograd`` kernels compute the composite
``F.softplus`` formulas instead, so every transform gets real derivatives), vmap
rules, and a CUDA kernel written with ATen ops. The modules call them only where they are the fast
path — CPU float32/float64 tensors outside forward-mode AD and ``torch.func``
transforms — and use ``F.softplus`` everywhere else (same values, autograd's
formulas). On the CPU the fused pass is taken for tensors of at least
``FUSED_SOFTPLUS_MIN_NUMEL`` elements (``LIDVAE_CPU_SOFTPLUS=auto``, the default):
below that, ``F.softplus`` and its autograd node cost less than the operator
call with its Python ``autograd.Function`` (fwd + bwd, one thread, docs/benchmarks.md:
29 against 81 µs at 128 elements, 70 against 100 µs at 16 384, level at 65 536,
1.46 against 1.31 ms at 262 144). ``LIDVAE_CPU_SOFTPLUS=fused`` takes the fused pass at every
size, ``aten`` never (the path before the fused pass, kept for A/B benchmarks);
the reference backend always uses ``F.softplus``.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import forward_ad

from . import _extension

POSITIVITY = ("softplus", "clamp")
_LIB = "lidvae_ext"
_THRESHOLD = 20.0  # torch.nn.functional.softplus's default: identity above it
_FAST_DTYPES = (torch.float32, torch.float64)
SOFTPLUS_CHOICES = ("auto", "fused", "aten")
FUSED_SOFTPLUS_MIN_NUMEL = 65536  # "auto": the fused pass from this many elements on (measured crossover)


def softplus_path() -> str:
    """``"auto"``, ``"fused"`` or ``"aten"``: what ``LIDVAE_CPU_SOFTPLUS`` selects for CPU weights.

    ``"auto"`` (the default) takes the fused pass for tensors of at least
    ``FUSED_SOFTPLUS_MIN_NUMEL`` elements and ``F.softplus`` below; ``"aten"`` is
    returned whatever the variable says when the compiled extension is not loaded.
    """
    choice = os.environ.get("LIDVAE_CPU_SOFTPLUS", "auto") or "auto"
    if choice not in SOFTPLUS_CHOICES:
        raise ValueError(f"LIDVAE_CPU_SOFTPLUS must be one of {SOFTPLUS_CHOICES}, got {choice!r}")
    if not _extension.loaded():
        return "aten"
    return choice


def _use_fused_softplus(raw: Tensor) -> bool:
    return (
        raw.device.type == "cpu"
        and raw.dtype in _FAST_DTYPES
        and not torch._C._are_functorch_transforms_active()
        and forward_ad._current_level < 0
        and _path_takes_fused(softplus_path(), raw.numel())
    )


def _path_takes_fused(path: str, numel: int) -> bool:
    return path == "fused" or (path == "auto" and numel >= FUSED_SOFTPLUS_MIN_NUMEL)


def positive(raw: Tensor, positivity: str, fused: bool = False) -> Tensor:
    """The non-negative effective weights of ``raw`` under ``positivity``.

    Parameters
    ----------
    raw : Tensor
        Raw weights (any shape).
    positivity : {"softplus", "clamp"}
        ``softplus(raw)`` or ``raw.clamp(min=0)``.
    fused : bool, default False
        Whether the caller is the fused path (then ``softplus`` may use the
        :func:`softplus_weights` operator, see the module docstring); the
        reference path passes False and gets ``F.softplus``.
    """
    if positivity == "clamp":
        return raw.clamp(min=0.0)
    if positivity != "softplus":
        raise ValueError(f"positivity must be one of {POSITIVITY}, got {positivity!r}")
    if fused and _use_fused_softplus(raw):
        return torch.ops.lidvae_ext.softplus_weights.default(raw)
    return F.softplus(raw)


def softplus_weights(raw: Tensor) -> Tensor:
    """``torch.ops.lidvae_ext.softplus_weights``: ``softplus(raw)`` in one pass."""
    return torch.ops.lidvae_ext.softplus_weights.default(raw)


def softplus_weights_backward(grad: Tensor, raw: Tensor) -> Tensor:
    """``torch.ops.lidvae_ext.softplus_weights_backward``: ``grad · sigmoid(raw)`` in one pass."""
    return torch.ops.lidvae_ext.softplus_weights_backward.default(grad, raw)


# --------------------------------------------------------------------------
# Registration (from ops._register, only when the compiled library is loaded).
# --------------------------------------------------------------------------


def _fake_softplus(raw: Tensor) -> Tensor:
    return torch.empty_like(raw, memory_format=torch.contiguous_format)


def _fake_softplus_backward(grad: Tensor, raw: Tensor) -> Tensor:
    torch._check(
        grad.shape == raw.shape,
        lambda: f"softplus_weights_backward: grad has shape {tuple(grad.shape)} but raw has "
        f"shape {tuple(raw.shape)} (they must match)",
    )
    torch._check(
        grad.dtype == raw.dtype,
        lambda: f"softplus_weights_backward: grad has dtype {grad.dtype} but raw has dtype {raw.dtype}",
    )
    return torch.empty_like(raw, memory_format=torch.contiguous_format)


def _composite_softplus(raw: Tensor) -> Tensor:
    return F.softplus(raw)


def _composite_softplus_backward(grad: Tensor, raw: Tensor) -> Tensor:
    return torch.where(raw > _THRESHOLD, grad, grad * torch.sigmoid(raw))


def _transformed() -> bool:
    """Forward-mode AD or a torch.func transform is active: use the composite formulas."""
    return torch._C._are_functorch_transforms_active() or forward_ad._current_level >= 0


def _apply(function, *args):
    """``function.apply`` without ``autograd.Function.apply``'s signature binding (no transform active)."""
    return super(torch.autograd.Function, function).apply(*args)


class _SoftplusWeights(torch.autograd.Function):
    """``softplus_weights`` with its backward operator."""

    @staticmethod
    def forward(raw):
        with torch._C._AutoDispatchBelowAutograd():
            return torch.ops.lidvae_ext.softplus_weights.default(raw)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        (raw,) = ctx.saved_tensors
        return softplus_weights_backward(grad, raw)


class _SoftplusWeightsBackward(torch.autograd.Function):
    """``softplus_weights_backward``; its own derivatives by tensor ops (differentiable again)."""

    @staticmethod
    def forward(grad, raw):
        with torch._C._AutoDispatchBelowAutograd():
            return torch.ops.lidvae_ext.softplus_weights_backward.default(grad, raw)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, cotangent):
        # out = grad · s(raw) (grad itself above the threshold): linear in grad (the same
        # operator), and d/draw = grad · s(1 − s) (0 above the threshold).
        grad, raw = ctx.saved_tensors
        needs_grad, needs_raw = ctx.needs_input_grad
        d_grad = softplus_weights_backward(cotangent, raw) if needs_grad else None
        d_raw = None
        if needs_raw:
            sig = torch.sigmoid(raw)
            d_raw = torch.where(raw > _THRESHOLD, torch.zeros_like(raw), cotangent * grad * sig * (1 - sig))
        return d_grad, d_raw


def _softplus_autograd_kernel(keyset, raw):
    """``Autograd`` kernel of ``softplus_weights``.

    Reverse mode: the backward operator. Under forward-mode AD or a ``torch.func``
    transform: ``F.softplus`` (same values; its derivatives are every transform's).
    """
    if _transformed():
        return _composite_softplus(raw)
    if torch.is_grad_enabled() and raw.requires_grad:
        return _apply(_SoftplusWeights, raw)
    with torch._C._AutoDispatchBelowAutograd():
        return torch.ops.lidvae_ext.softplus_weights.default.redispatch(
            keyset & torch._C._after_autograd_keyset, raw)


def _softplus_backward_autograd_kernel(keyset, grad, raw):
    """``Autograd`` kernel of ``softplus_weights_backward`` (see :func:`_softplus_autograd_kernel`)."""
    if _transformed():
        return _composite_softplus_backward(grad, raw)
    if torch.is_grad_enabled() and (grad.requires_grad or raw.requires_grad):
        return _apply(_SoftplusWeightsBackward, grad, raw)
    with torch._C._AutoDispatchBelowAutograd():
        return torch.ops.lidvae_ext.softplus_weights_backward.default.redispatch(
            keyset & torch._C._after_autograd_keyset, grad, raw)


def _vmap_softplus(info, in_dims, raw):
    return softplus_weights(raw), in_dims[0]


def _vmap_softplus_backward(info, in_dims, grad, raw):
    size = info.batch_size
    grad = grad.movedim(in_dims[0], 0) if in_dims[0] is not None else grad.expand(size, *grad.shape)
    raw = raw.movedim(in_dims[1], 0) if in_dims[1] is not None else raw.expand(size, *raw.shape)
    return softplus_weights_backward(grad, raw), 0


def _cuda_softplus(raw: Tensor) -> Tensor:
    return F.softplus(raw).contiguous()


def _cuda_softplus_backward(grad: Tensor, raw: Tensor) -> Tensor:
    torch._check(grad.shape == raw.shape and grad.dtype == raw.dtype,
                 lambda: f"softplus_weights_backward: grad {tuple(grad.shape)} {grad.dtype} must match "
                 f"raw {tuple(raw.shape)} {raw.dtype}")
    return torch.ops.aten.softplus_backward(grad, raw, 1.0, _THRESHOLD).contiguous()


def register(lib: torch.library.Library) -> None:
    """Fake kernels, autograd formulas, vmap rules and the CUDA kernel of the two operators."""
    torch.library.register_fake(f"{_LIB}::softplus_weights", lib=lib)(_fake_softplus)
    torch.library.register_fake(f"{_LIB}::softplus_weights_backward", lib=lib)(_fake_softplus_backward)
    # Autograd kernels: what torch.library.register_autograd installs (the formulas above),
    # plus the composite formulas under forward AD and torch.func transforms.
    lib.impl("softplus_weights", _softplus_autograd_kernel, "Autograd", with_keyset=True)
    lib.impl("softplus_weights_backward", _softplus_backward_autograd_kernel, "Autograd", with_keyset=True)
    torch.library.register_vmap(f"{_LIB}::softplus_weights", _vmap_softplus, lib=lib)
    torch.library.register_vmap(f"{_LIB}::softplus_weights_backward", _vmap_softplus_backward, lib=lib)
    lib.impl("softplus_weights", _cuda_softplus, "CUDA")
    lib.impl("softplus_weights_backward", _cuda_softplus_backward, "CUDA")
