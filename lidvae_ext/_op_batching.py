"""``torch.vmap`` batching rules of the fused ICNN operators.

``icnn_forward`` is row-wise in ``y``: with unbatched weights the vmapped
dimension is folded into the row dimension and the operator runs **once**
on ``(N·B, d)`` rows. ``icnn_backward`` returns weight gradients summed over
rows, which folding would also sum over the vmapped dimension, so it (and
``icnn_forward`` with batched weights, e.g. an ensemble) runs once per
vmapped element and the results are stacked — slower, never wrong. When a
backward pass needs only the input gradient (``jacrev`` w.r.t. the input),
the formulas call the row-wise input VJP instead, which folds again.

The same rules serve the operators' ``torch.library.register_vmap``
registration (``op`` = the raw operator) and the ``vmap`` staticmethods of
their ``autograd.Function`` wrappers (``op`` = the transform-safe Python
entry point, so derivatives taken outside the ``vmap`` still see a formula).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def _select(args: Sequence, in_dims: Sequence, index: int) -> tuple:
    return tuple(
        a.select(d, index) if isinstance(a, Tensor) and d is not None else a for a, d in zip(args, in_dims)
    )


def _loop(op: Callable, batch_size: int, in_dims: Sequence, args: Sequence) -> tuple:
    results = [op(*_select(args, in_dims, i)) for i in range(batch_size)]
    return tuple(torch.stack(parts) for parts in zip(*results))


def batched_forward(op: Callable, batch_size: int, in_dims: Sequence, args: Sequence):
    """``icnn_forward`` over a vmapped dimension: ``(outputs, out_dims)``."""
    in_dims = tuple(in_dims) + (None,) * (len(args) - len(in_dims))
    if any(d is not None for d in in_dims[1:5]):
        return _loop(op, batch_size, in_dims, args), (0, 0, 0, 0)
    rows = args[0].movedim(in_dims[0], 0)
    n, batch = rows.shape[0], rows.shape[1]
    outs = op(rows.reshape(n * batch, *rows.shape[2:]), *args[1:])
    return tuple(o.reshape(n, batch, *o.shape[1:]) for o in outs), (0, 0, 0, 0)


def batched_backward(op: Callable, batch_size: int, in_dims: Sequence, args: Sequence):
    """``icnn_backward`` over a vmapped dimension (one call per element): ``(outputs, out_dims)``."""
    in_dims = tuple(in_dims) + (None,) * (len(args) - len(in_dims))
    return _loop(op, batch_size, in_dims, args), (0, 0, 0, 0, 0)


_ROWS = (0, 1, 2, 6, 7, 8)  # grad_psi, grad_map, y, grad, pre, upstream: one row per sample


def batched_input_vjp(op: Callable, batch_size: int, in_dims: Sequence, args: Sequence):
    """``icnn_backward``'s ``grad_y`` alone over a vmapped dimension: rows folded, one call.

    Every row argument gets the vmapped dimension in front (expanded where it has
    none) and is flattened into the rows; batched weights fall back to a loop.
    """
    in_dims = tuple(in_dims) + (None,) * (len(args) - len(in_dims))
    if any(in_dims[i] is not None for i in (3, 4, 5)):
        return torch.stack([op(*_select(args, in_dims, i)) for i in range(batch_size)]), 0
    folded = list(args)
    rows = None
    for i in _ROWS:
        t = args[i]
        if t is None:
            continue
        t = t.movedim(in_dims[i], 0) if in_dims[i] is not None else t.expand(batch_size, *t.shape)
        rows = t.shape[1]
        folded[i] = t.reshape(batch_size * t.shape[1], *t.shape[2:])
    out = op(*folded)
    return out.reshape(batch_size, rows, *out.shape[1:]), 0


def forward_vmap(info, in_dims, *args):
    """``register_vmap`` rule of ``icnn_forward``."""
    return batched_forward(torch.ops.lidvae_ext.icnn_forward.default, info.batch_size, in_dims, args)


def backward_vmap(info, in_dims, *args):
    """``register_vmap`` rule of ``icnn_backward``."""
    return batched_backward(torch.ops.lidvae_ext.icnn_backward.default, info.batch_size, in_dims, args)
