"""Fused CPU operators vs the autograd reference, gradcheck, opcheck, errors."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from lidvae_ext import ops, reference
from icnn_inputs import (fresh_seed, kink_free_seed, max_rel_errors, outputs_and_grads, sample_cotangents,
                         sample_inputs)
from icnn_inputs import strided as _strided

pytestmark = pytest.mark.skipif(not ops.fused_available("cpu"), reason="lidvae_ext._C not built")

ACTIVATIONS = ["leaky_relu", "softplus"]
FULL_GRID = list(itertools.product([0, 1, 7, 300], [1, 2, 17, 784], [1, 8, 64, 512], [1, 2, 3],
                                   ACTIVATIONS, [0.0, 0.3]))


def _sampled_grid(count: int) -> list[tuple]:
    """Every edge value at least once, plus a seeded random sample of the full grid."""
    edges = [(0, 17, 8, 2, "leaky_relu", 0.3), (1, 1, 1, 1, "softplus", 0.0),
             (7, 1, 64, 3, "leaky_relu", 0.0), (300, 784, 512, 2, "leaky_relu", 0.3),
             (7, 784, 512, 3, "softplus", 0.3), (300, 2, 1, 3, "softplus", 0.3),
             (1, 784, 8, 1, "leaky_relu", 0.0), (300, 17, 64, 1, "softplus", 0.0)]
    rng = random.Random(2021)
    rest = [case for case in FULL_GRID if case not in edges]  # no case twice
    return edges + rng.sample(rest, count - len(edges))


GRID = _sampled_grid(28)
assert len(set(GRID)) == len(GRID)


@pytest.mark.parametrize("batch,dim,hidden,layers,activation,alpha", GRID)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_reference(batch, dim, hidden, layers, activation, alpha, dtype):
    seed = kink_free_seed(batch, dim, hidden, layers, activation, dtype)
    hyper = (alpha, activation, 0.2)
    inputs64 = sample_inputs(batch, dim, hidden, layers, seed=seed)
    u, v = sample_cotangents(batch, dim, seed=seed)
    want = outputs_and_grads(reference, inputs64, u, v, hyper)
    inputs = [t.to(dtype) for t in inputs64]
    got = outputs_and_grads(ops, inputs, u.to(dtype), v.to(dtype), hyper)
    for g, w in zip(got, want):
        assert g.dtype == dtype and g.shape == w.shape
    # float32: the parameter gradients are sums over the batch, whose rounding error grows like
    # sqrt(B)·eps; 1e-4 up to B = 64, then ∝ sqrt(B) (B = 300: 2.2e-4; a d_w_out of 1.02e-4 was seen
    # at B = 300 on the ATen GEMM backend, with LIDVAE_TEST_SEED=409634182, before and after stop 21)
    tol = 1e-10 if dtype == torch.float64 else 1e-4 * max(1.0, (batch / 64) ** 0.5)
    errs = max_rel_errors(got, want)
    assert all(e <= tol for e in errs.values()), f"seed={seed} errors={errs}"


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dim", [3, 17])  # the row-wise (d <= 8) and the GEMM code paths
def test_map_only_and_potential_only_losses(activation, dim):
    """Losses using only ∇ψ (the usual case) or only ψ take the same closed form."""
    seed = fresh_seed()
    inputs = sample_inputs(5, dim, 6, 2, seed=seed)
    hyper = (0.1, activation, 0.2)
    for pick in (0, 1):
        results = []
        for impl in (ops, reference):
            leaves = [t.clone().requires_grad_(True) for t in inputs]
            out = impl.icnn_potential_and_map(*leaves, *hyper)[pick]
            grads = torch.autograd.grad(out.sin().sum(), leaves, allow_unused=True)
            results.append([torch.zeros_like(l) if g is None else g for l, g in zip(leaves, grads)])
        for g, w in zip(*results):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12, msg=f"seed={seed} pick={pick}")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_gradcheck(activation, layers):
    inputs = sample_inputs(4, 3, 5, layers, seed=fresh_seed(), requires_grad=True)

    def fn(*args):
        return ops.icnn_potential_and_map(*args, 0.3, activation, 0.2)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def _forward_args(activation="leaky_relu", batch=5, requires_grad=True):
    return (*sample_inputs(batch, 3, 4, 2, requires_grad=requires_grad), 0.2, activation, 0.2)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("batch", [0, 6])
def test_opcheck_forward(activation, batch):
    torch.library.opcheck(torch.ops.lidvae_ext.icnn_forward.default,
                          _forward_args(activation, batch))


@pytest.mark.parametrize("with_grad_psi,pass_map", [(True, True), (False, True), (False, False)])
@pytest.mark.parametrize("need_input_grad", [True, False])
def test_opcheck_backward(with_grad_psi, pass_map, need_input_grad):
    y, A, b, W, w_out, alpha, act, slope = _forward_args(requires_grad=False)
    _, grad, pre, upstream = torch.ops.lidvae_ext.icnn_forward(y, A, b, W, w_out, alpha, act, slope)
    u, v = sample_cotangents(y.shape[0], y.shape[1])
    args = (u if with_grad_psi else None, v, y, A, W, w_out, grad if pass_map else None, pre, upstream,
            alpha, act, slope, need_input_grad)
    torch.library.opcheck(torch.ops.lidvae_ext.icnn_backward.default, args)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("dim,k", [(9, 4), (5, 2), (8, 1), (3, 2)])  # GEMM path, then the d <= 8 path
def test_zero_padded_input_matches_reference(activation, dtype, dim, k):
    """y with k < d columns stands for [y, 0]; the map is (B, d), dLoss/dy is (B, k).

    d <= 8 is the row-wise CPU path a LIDDecoder with out_dim <= 8 takes."""
    seed = kink_free_seed(13, dim, 6, 3, activation, dtype, in_dim=k)
    y, A, b, W, w_out = sample_inputs(13, dim, 6, 3, seed=seed)
    u, v = sample_cotangents(13, dim, seed=seed)
    hyper = (0.3, activation, 0.2)
    want = outputs_and_grads(reference, [y[:, :k], A, b, W, w_out], u, v, hyper)
    got = outputs_and_grads(ops, [t.to(dtype) for t in (y[:, :k], A, b, W, w_out)], u.to(dtype),
                            v.to(dtype), hyper)
    assert got[1].shape == (13, dim) and got[2].shape == (13, k)
    full = outputs_and_grads(reference, [torch.nn.functional.pad(y[:, :k], (0, dim - k)), A, b, W, w_out],
                             u, v, hyper)
    torch.testing.assert_close(want[2], full[2][:, :k])  # the padded reference is the plain one
    errs = max_rel_errors(got, want)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    assert all(e <= tol for e in errs.values()), f"seed={seed} errors={errs}"


def test_noncontiguous_inputs():
    y, A, b, W, w_out = sample_inputs(6, 5, 4, 3, seed=fresh_seed())
    y_nc = y.t().contiguous().t()  # same values, column-major
    A_nc = torch.stack([A, -A], dim=2)[..., 0]  # same values, strided
    assert not y_nc.is_contiguous() and not A_nc.is_contiguous()
    torch.testing.assert_close(A_nc, A)
    got = ops.icnn_potential_and_map(y_nc, A_nc, b, W, w_out, 0.1)
    want = reference.icnn_potential_and_map(y, A, b, W, w_out, 0.1)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w.detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dim", [3, 17])  # the row-wise (d <= 8) and the GEMM code paths
def test_noncontiguous_weights_and_cotangents(activation, dim):
    """Strided W, b, w_out, y, A, and transposed or expanded (stride-0) cotangents give the
    reference's values, forward and backward — through autograd and calling the ops directly."""
    seed = fresh_seed()
    y, A, b, W, w_out = sample_inputs(6, dim, 5, 3, seed=seed)
    u, v = sample_cotangents(6, dim, seed=seed)
    hyper = (0.2, activation, 0.2)
    layouts = [y.t().contiguous().t(), _strided(A), _strided(b), W.transpose(1, 2).contiguous().transpose(1, 2),
               _strided(w_out)]
    assert not any(t.is_contiguous() for t in layouts)
    cotangents = {
        "transposed": (_strided(u), v.t().contiguous().t()),
        "expanded": (u[:1].expand(6), v[:1].expand(6, dim)),
        "map only, expanded": (None, v[:1].expand(6, dim)),
    }
    for name, (gu, gv) in cotangents.items():
        results = []
        for impl, inputs in ((ops, layouts), (reference, [y, A, b, W, w_out])):
            leaves = [t.detach().requires_grad_(True) for t in inputs]  # keeps the strides
            psi, grad = impl.icnn_potential_and_map(*leaves, *hyper)
            outs, cots = ((psi, grad), (gu, gv)) if gu is not None else ((grad,), (gv,))
            grads = torch.autograd.grad(outs, leaves, cots, allow_unused=True)
            results.append([psi.detach(), grad.detach(),
                            *[torch.zeros_like(l) if g is None else g for l, g in zip(leaves, grads)]])
        for n, g, w in zip(("psi", "grad", "d_y", "d_A", "d_b", "d_W", "d_w_out"), *results):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12, msg=f"seed={seed} {name}: {n}")

    # the raw ops with every tensor argument non-contiguous vs the same call on contiguous copies
    fwd, bwd = torch.ops.lidvae_ext.icnn_forward, torch.ops.lidvae_ext.icnn_backward
    f_c = fwd(y, A, b, W, w_out, *hyper)
    f_nc = fwd(*layouts, *hyper)
    for g, w in zip(f_nc, f_c):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12, msg=f"seed={seed} forward")
    _, grad, pre, upstream = f_c
    for pass_u in (True, False):
        args_c = (u if pass_u else None, v, y, A, W, w_out, grad if pass_u else None, pre, upstream)
        args_nc = (_strided(u) if pass_u else None, v.t().contiguous().t(), layouts[0], layouts[1],
                   layouts[3], layouts[4], grad.t().contiguous().t() if pass_u else None,
                   pre.t().contiguous().t(), _strided(upstream))
        want = bwd(*args_c, *hyper, True)
        got = bwd(*args_nc, *hyper, True)
        for i, (g, w) in enumerate(zip(got, want)):
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12, msg=f"seed={seed} backward output {i}")


class _PoisonedAllocations:
    """Every uninitialized allocation (``at::empty``/``empty_like``, in the C++ kernels too) is
    filled with NaN: ATen's deterministic mode with ``fill_uninitialized_memory``."""

    def __enter__(self):
        self.saved = (torch.are_deterministic_algorithms_enabled(),
                      torch.is_deterministic_algorithms_warn_only_enabled(),
                      torch.utils.deterministic.fill_uninitialized_memory)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = True
        assert torch.isnan(torch.empty(8, dtype=torch.float64)).all()
        return self

    def __exit__(self, *exc):
        enabled, warn_only, fill = self.saved
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dim,k", [(4, 4), (6, 2), (17, 17), (12, 5)])  # row-wise / GEMM, padded or not
def test_outputs_fully_written(activation, dim, k):
    """Every element of every output is written: with all allocations poisoned with NaN, the
    outputs are finite and equal the reference (an unwritten element would stay NaN)."""
    seed = fresh_seed()
    y, A, b, W, w_out = sample_inputs(9, dim, 6, 3, seed=seed)
    y = y[:, :k].contiguous()
    u, v = sample_cotangents(9, dim, seed=seed)
    hyper = (0.3, activation, 0.2)
    with _PoisonedAllocations():
        psi, grad, pre, upstream = torch.ops.lidvae_ext.icnn_forward(y, A, b, W, w_out, *hyper)
        results = {"psi": psi, "grad": grad, "pre": pre, "upstream": upstream}
        for pass_u in (True, False):
            for need_input_grad in (True, False):
                outs = torch.ops.lidvae_ext.icnn_backward(
                    u if pass_u else None, v, y, A, W, w_out, grad if pass_u else None, pre, upstream,
                    *hyper, need_input_grad)
                for name, t in zip(("d_y", "d_A", "d_b", "d_W", "d_w_out"), outs):
                    results[f"{name} (grad_psi={pass_u}, input grad={need_input_grad})"] = t
        got = outputs_and_grads(ops, [y, A, b, W, w_out], u, v, hyper)
    for name, t in results.items():
        assert torch.isfinite(t).all(), f"seed={seed}: {name} has unwritten (NaN) elements"
    assert results["d_y (grad_psi=True, input grad=False)"].numel() == 0
    want = outputs_and_grads(reference, [y, A, b, W, w_out], u, v, hyper)
    errs = max_rel_errors(got, want)
    assert all(e <= 1e-10 for e in errs.values()), f"seed={seed} errors={errs}"


# ----------------------------------------------------------------------------- errors


def _call(**overrides):
    args = dict(zip(["y", "A", "b", "W", "w_out"], sample_inputs(5, 3, 4, 2)))
    args.update(strong_convexity=0.0, activation="leaky_relu", negative_slope=0.2)
    args.update(overrides)
    return torch.ops.lidvae_ext.icnn_forward(args["y"], args["A"], args["b"], args["W"], args["w_out"],
                                             args["strong_convexity"], args["activation"],
                                             args["negative_slope"])


@pytest.mark.parametrize(
    "overrides,pattern",
    [
        (dict(y=torch.randn(5, 3, 1, dtype=torch.float64)), r"y must be 2-D"),
        (dict(A=torch.randn(9, 2, dtype=torch.float64)),
         r"A must have shape \(L\*H\+1, d\) = \(9, d\) with d >= y.size\(1\) = 3"),
        (dict(A=torch.randn(8, 3, dtype=torch.float64)), r"A must have shape"),
        (dict(b=torch.randn(7, dtype=torch.float64)), r"b must have shape \[9\]"),
        (dict(W=torch.rand(1, 4, 5, dtype=torch.float64)), r"W must have shape \[1, 4, 4\]"),
        (dict(W=torch.rand(4, 4, dtype=torch.float64)), r"W must be 3-D"),
        (dict(w_out=torch.rand(4, 1, dtype=torch.float64)), r"w_out must be 1-D"),
        (dict(W=-torch.rand(1, 4, 4, dtype=torch.float64)), r"W must be non-negative"),
        (dict(W=torch.full((1, 4, 4), float("nan"), dtype=torch.float64)), r"W must be non-negative and finite"),
        (dict(w_out=-torch.rand(4, dtype=torch.float64)), r"w_out must be non-negative"),
        (dict(A=torch.randn(9, 3, dtype=torch.float32)), r"A has dtype Float but y has dtype Double"),
        (dict(y=torch.randn(5, 3, dtype=torch.float16)), r"y must be float32 or float64"),
        (dict(activation="relu"), r"activation must be 'leaky_relu' or 'softplus'"),
        (dict(strong_convexity=-1.0), r"strong_convexity must be finite and >= 0"),
        (dict(strong_convexity=float("inf")), r"strong_convexity must be finite"),
        (dict(negative_slope=1.5), r"negative_slope must be in \[0, 1\]"),
    ],
)
def test_bad_input_errors_name_the_argument(overrides, pattern):
    with pytest.raises(RuntimeError, match=pattern):
        _call(**overrides)


def test_device_mix_error():
    meta_A = torch.randn(9, 3, dtype=torch.float64, device="meta")
    with pytest.raises(RuntimeError, match="A is on meta but y is on cpu"):
        _call(A=meta_A)


def test_backward_shape_errors():
    y, A, b, W, w_out = sample_inputs(5, 3, 4, 2)
    _, grad, pre, upstream = torch.ops.lidvae_ext.icnn_forward(y, A, b, W, w_out, 0.0, "leaky_relu", 0.2)
    v = torch.randn(5, 3, dtype=torch.float64)
    bk = torch.ops.lidvae_ext.icnn_backward
    with pytest.raises(RuntimeError, match=r"grad_map must have shape \[5, 3\]"):
        bk(None, v[:4], y, A, W, w_out, grad, pre, upstream, 0.0, "leaky_relu", 0.2, True)
    with pytest.raises(RuntimeError, match=r"pre must have shape \[5, 9\]"):
        bk(None, v, y, A, W, w_out, grad, pre[:, :8], upstream, 0.0, "leaky_relu", 0.2, True)
    with pytest.raises(RuntimeError, match=r"grad_psi must have shape \[5\]"):
        bk(v[:, 0][:3], v, y, A, W, w_out, grad, pre, upstream, 0.0, "leaky_relu", 0.2, True)
    with pytest.raises(RuntimeError, match=r"grad \(the map icnn_forward returned.*required when grad_psi"):
        bk(v[:, 0], v, y, A, W, w_out, None, pre, upstream, 0.0, "leaky_relu", 0.2, True)


def test_autograd_does_not_keep_the_map_alive():
    """The forward's map output is not saved for the backward (it is recomputed if ψ gets a
    gradient), so e.g. a decoder's logits can be freed by the loss's backward."""
    y, A, b, W, w_out = [t.requires_grad_(True) for t in sample_inputs(6, 17, 8, 2)]
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        psi, grad = ops.icnn_potential_and_map(y, A, b, W, w_out, 0.1, "leaky_relu", 0.2)
    assert saved, "the autograd formula saved nothing (hook not reached?)"
    storages = {t.untyped_storage().data_ptr() for t in saved}
    assert grad.untyped_storage().data_ptr() not in storages
    # ...and a loss on ψ and ∇ψ together still gets the reference gradients.
    loss = psi.sum() + grad.square().sum()
    got = torch.autograd.grad(loss, [y, A, b, W, w_out])
    leaves = [t.detach().clone().requires_grad_(True) for t in (y, A, b, W, w_out)]
    r_psi, r_grad = reference.icnn_potential_and_map(*leaves, 0.1, "leaky_relu", 0.2)
    want = torch.autograd.grad(r_psi.sum() + r_grad.square().sum(), leaves)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
