"""torch.func transforms and forward-mode AD on the fused modules, against the reference.

The oracle is the reference backend's reverse-mode Jacobian by plain autograd
(``torch.autograd.functional.jacobian``, no transform involved), itself checked
against central finite differences. Everything is float64 and compared tightly.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, jvp, vmap

from lidvae_ext import BrenierMap, LIDDecoder, ops, reference
from icnn_inputs import fresh_seed, sample_inputs

pytestmark = pytest.mark.skipif(not ops.fused_available("cpu"), reason="lidvae_ext._C not built")

TOL = dict(rtol=1e-10, atol=1e-11)
CASES = ["decoder-fixed", "decoder-learned", "map-softplus"]


def _pair(case: str, seed: int):
    """The same module with the fused and with the reference backend (float64)."""
    def make(backend):
        torch.manual_seed(seed)
        if case == "map-softplus":
            return BrenierMap(5, 8, num_layers=3, activation="softplus", strong_convexity=0.3,
                              backend=backend).double()
        beta = case.split("-")[1]
        return LIDDecoder(4, 11, hidden=8, strong_convexity=0.5, beta=beta, backend=backend).double()
    return make("fused"), make("reference")


def _single(module):
    """A function of one latent/input vector (the shape torch.func users write)."""
    return lambda u: module(u[None])[0]


def _input(module, seed: int, batch: int | None = None):
    dim = module.latent_dim if isinstance(module, LIDDecoder) else module.dim
    gen = torch.Generator().manual_seed(seed)
    shape = (dim,) if batch is None else (batch, dim)
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def _oracle_jacobian(ref, u):
    return torch.autograd.functional.jacobian(_single(ref), u)


@pytest.mark.parametrize("case", CASES)
def test_oracle_matches_finite_differences(case):
    seed = fresh_seed()
    _, ref = _pair(case, seed)
    u = _input(ref, seed)
    jac = _oracle_jacobian(ref, u)
    eps = 1e-6
    columns = [(_single(ref)(u + eps * e) - _single(ref)(u - eps * e)) / (2 * eps)
               for e in torch.eye(u.numel(), dtype=u.dtype)]
    torch.testing.assert_close(torch.stack(columns, dim=1), jac, rtol=1e-6, atol=1e-7,
                               msg=f"seed={seed}")
    assert jac.abs().max() > 1e-3  # a real Jacobian, not zeros


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_jvp_jacfwd_jacrev_forward_ad(case, backend):
    seed = fresh_seed()
    fused, ref = _pair(case, seed)
    module = fused if backend == "fused" else ref
    u = _input(module, seed)
    tangent = _input(module, seed + 1)
    want = _oracle_jacobian(ref, u)
    f = _single(module)
    out, jt = jvp(f, (u,), (tangent,))
    torch.testing.assert_close(out, _single(ref)(u), **TOL)
    torch.testing.assert_close(jt, want @ tangent, **TOL, msg=f"seed={seed}")
    torch.testing.assert_close(jacfwd(f)(u), want, **TOL, msg=f"seed={seed}")
    torch.testing.assert_close(jacrev(f)(u), want, **TOL, msg=f"seed={seed}")
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(u[None], tangent[None])
        got = torch.autograd.forward_ad.unpack_dual(module(dual)).tangent[0]
    torch.testing.assert_close(got, want @ tangent, **TOL, msg=f"seed={seed}")


def _op_events(fn, op: str = "icnn_forward") -> int:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key == f"lidvae_ext::{op}")


@pytest.mark.parametrize("case", CASES)
def test_vmap_folds_the_batch_into_one_call(case):
    seed = fresh_seed()
    fused, ref = _pair(case, seed)
    batch = _input(fused, seed, batch=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the per-sample fallback warns ("performance drop")
        got = vmap(_single(fused))(batch)
    torch.testing.assert_close(got, ref(batch), **TOL)
    maps = 1 if case.startswith("map") else 2
    # Each map's operator is entered once batched and runs once on all 7·1 rows (2 events);
    # a per-sample rule would run it 7 times (8 events).
    assert _op_events(lambda: vmap(_single(fused))(batch)) == 2 * maps


@pytest.mark.parametrize("case", CASES)
def test_jacrev_wrt_the_input_is_one_folded_backward_per_map(case):
    seed = fresh_seed()
    fused, ref = _pair(case, seed)
    u = _input(fused, seed)
    torch.testing.assert_close(jacrev(_single(fused))(u), _oracle_jacobian(ref, u), **TOL)
    maps = 1 if case.startswith("map") else 2
    # Entered once batched + one call on all (outputs × rows), not one call per output.
    assert _op_events(lambda: jacrev(_single(fused))(u), "icnn_backward") == 2 * maps


@pytest.mark.parametrize("case", CASES)
def test_vmap_of_jacrev_and_jacfwd(case):
    seed = fresh_seed()
    fused, ref = _pair(case, seed)
    batch = _input(fused, seed, batch=3)
    want = torch.stack([_oracle_jacobian(ref, u) for u in batch])
    torch.testing.assert_close(vmap(jacrev(_single(fused)))(batch), want, **TOL)
    torch.testing.assert_close(vmap(jacfwd(_single(fused)))(batch), want, **TOL)
    # The reference backend is transform-safe too (explicit recursion under torch.func).
    torch.testing.assert_close(vmap(jacrev(_single(ref)))(batch), want, **TOL)
    torch.testing.assert_close(vmap(_single(ref))(batch), ref(batch), **TOL)


def test_vmap_over_batched_weights_is_an_ensemble():
    """Weights carrying the vmapped dimension (a stacked ensemble): one result per member."""
    seed = fresh_seed()
    members = [_pair("decoder-fixed", seed + k) for k in range(3)]
    z = _input(members[0][0], seed, batch=4)
    stacked = torch.func.stack_module_state([m for m, _ in members])[0]
    got = vmap(lambda p: functional_call(members[0][0], p, (z,)))(stacked)
    want = torch.stack([ref(z) for _, ref in members])
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("activation", ["leaky_relu", "softplus"])
def test_hessian_of_the_fused_potential(activation):
    seed = fresh_seed()
    torch.manual_seed(seed)
    bmap = BrenierMap(4, 6, activation=activation, strong_convexity=0.2, backend="fused").double()
    y = _input(bmap, seed)
    want = torch.autograd.functional.hessian(bmap.icnn.potential, y)
    psi = lambda u: bmap.potential_and_map(u)[0]  # noqa: E731 — ψ from the fused operator
    torch.testing.assert_close(hessian(psi)(y), want, **TOL)
    torch.testing.assert_close(jacrev(jacrev(psi))(y), want, **TOL)
    torch.testing.assert_close(jacfwd(bmap)(y), want, **TOL)  # the map's Jacobian is ∇²ψ


@pytest.mark.parametrize("case", CASES)
def test_grad_and_jvp_over_parameters_with_functional_call(case):
    seed = fresh_seed()
    fused, ref = _pair(case, seed)
    batch = _input(fused, seed, batch=5)
    params = {k: v.detach() for k, v in fused.named_parameters()}
    gen = torch.Generator().manual_seed(seed + 2)
    tangents = {k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in params.items()}

    def loss(module):
        return lambda p: functional_call(module, p, (batch,)).sin().sum()

    got = grad(loss(fused))(params)
    ref_params = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    want = torch.autograd.grad(loss(ref)(ref_params), list(ref_params.values()))
    for (name, g), w in zip(got.items(), want):
        torch.testing.assert_close(g, w, **TOL, msg=name)
    # jvp over the weights: ∂∇ψ/∂θ·θ̇, against central differences of the reference.
    outputs = lambda module: (lambda p: functional_call(module, p, (batch,)))  # noqa: E731
    _, got_t = jvp(outputs(fused), (params,), (tangents,))
    eps = 1e-6
    shifted = [outputs(ref)({k: v + s * eps * tangents[k] for k, v in params.items()}) for s in (1, -1)]
    torch.testing.assert_close(got_t, (shifted[0] - shifted[1]) / (2 * eps), rtol=1e-6, atol=1e-7)
    _, ref_t = jvp(outputs(ref), (params,), (tangents,))
    torch.testing.assert_close(got_t, ref_t, **TOL)


def test_raw_operator_under_a_transform_raises():
    inputs = sample_inputs(2, 3, 4, 2)
    hyper = (0.1, "leaky_relu", 0.2)
    with pytest.raises(RuntimeError, match="called directly inside a torch.func transform.*lidvae_ext.ops"):
        jvp(lambda y: torch.ops.lidvae_ext.icnn_forward(y, *inputs[1:], *hyper)[1], (inputs[0],),
            (torch.ones_like(inputs[0]),))
    # ... while the Python entry point gives the Hessian-vector product.
    tangent = torch.randn_like(inputs[0])
    _, got = jvp(lambda y: ops.icnn_forward(y, *inputs[1:], *hyper)[1], (inputs[0],), (tangent,))
    want = torch.autograd.functional.jvp(lambda y: reference.icnn_map(y, *inputs[1:], *hyper),
                                         inputs[0], tangent)[1]
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("activation", ["leaky_relu", "softplus"])
@pytest.mark.parametrize("columns", [3, 5])
def test_explicit_reference_matches_autograd_reference(activation, columns):
    """The transform-safe formulation (used under torch.func) = the autograd oracle, to 2nd order."""
    seed = fresh_seed()
    inputs = sample_inputs(6, 5, 7, 3, seed=seed, requires_grad=True)
    inputs[0] = inputs[0][:, :columns].detach().requires_grad_(True)
    hyper = (0.4, activation, 0.2)
    explicit = reference.icnn_forward_explicit(*inputs, *hyper)[:2]
    auto = reference.icnn_potential_and_map(*inputs, *hyper)
    gen = torch.Generator().manual_seed(seed)
    cot = [torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in auto]
    for e, a in zip(explicit, auto):
        torch.testing.assert_close(e, a, **TOL)
    ge = torch.autograd.grad(sum((e * c).sum() for e, c in zip(explicit, cot)), inputs)
    ga = torch.autograd.grad(sum((a * c).sum() for a, c in zip(auto, cot)), inputs)
    for e, a in zip(ge, ga):
        torch.testing.assert_close(e, a, **TOL)


def test_per_sample_gradients():
    """vmap(grad(·)) over the batch with shared weights (the DP-SGD pattern) = one autograd call each."""
    seed = fresh_seed()
    fused, ref = _pair("decoder-fixed", seed)
    batch = _input(fused, seed, batch=4)
    params = {k: v.detach() for k, v in fused.named_parameters()}

    def loss(p, u):
        return functional_call(fused, p, (u[None],)).square().sum()

    got = vmap(grad(loss), in_dims=(None, 0))(params, batch)
    for i, u in enumerate(batch):
        ref.zero_grad()
        ref(u[None]).square().sum().backward()
        for name, p in ref.named_parameters():
            torch.testing.assert_close(got[name][i], p.grad, **TOL, msg=name)


@pytest.mark.parametrize("vectorize", [False, True])
def test_autograd_functional_jacobian_and_hessian(vectorize):
    """torch.autograd.functional (vectorize=True runs the backward under vmap) on a batch."""
    seed = fresh_seed()
    fused, ref = _pair("decoder-learned", seed)
    batch = _input(fused, seed, batch=3)
    torch.testing.assert_close(torch.autograd.functional.jacobian(fused, batch, vectorize=vectorize),
                               torch.autograd.functional.jacobian(ref, batch), **TOL)
    scalar = lambda module: (lambda u: module(u).sin().sum())  # noqa: E731
    want = torch.autograd.functional.hessian(scalar(ref), batch)
    got = torch.autograd.functional.hessian(scalar(fused), batch, vectorize=vectorize)
    torch.testing.assert_close(got, want, **TOL)
    assert want.abs().max() > 1e-3


@pytest.mark.parametrize("entry", ["raw", "python"])
def test_vmap_with_in_dims_1_on_square_shapes(entry):
    """vmap over dimension 1 of y (the folded path), of the bias and of icnn_backward's grad_map (the
    looped paths), with every size equal (B = N = d = L·H + 1 = 5), where a rule that took dimension
    0 as the vmapped one would still run, on the wrong slices: values equal a loop over the slices."""
    n = 5
    y0, A, b, W, w_out = sample_inputs(n, n, 2, 2, seed=fresh_seed())  # L·H + 1 = 5 rows of A
    assert A.shape == (5, 5)
    gen = torch.Generator().manual_seed(1)
    ys = torch.randn(n, n, n, generator=gen, dtype=torch.float64)  # (B, N, d): slice j is ys[:, j]
    bs = torch.randn(5, n, generator=gen, dtype=torch.float64)  # (L·H + 1, N)
    hyper = (0.3, "softplus", 0.2)
    fwd = torch.ops.lidvae_ext.icnn_forward if entry == "raw" else ops.icnn_forward
    bwd = torch.ops.lidvae_ext.icnn_backward if entry == "raw" else ops.icnn_backward

    def check(got, want):
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)

    got = vmap(lambda y: fwd(y, A, b, W, w_out, *hyper), in_dims=1)(ys)
    check(got, [torch.stack(p) for p in zip(*[fwd(ys[:, j], A, b, W, w_out, *hyper) for j in range(n)])])
    got = vmap(lambda bb: fwd(y0, A, bb, W, w_out, *hyper), in_dims=1)(bs)
    check(got, [torch.stack(p) for p in zip(*[fwd(y0, A, bs[:, j], W, w_out, *hyper) for j in range(n)])])

    _, _, pre, upstream = fwd(y0, A, b, W, w_out, *hyper)
    vs = torch.randn(n, n, n, generator=gen, dtype=torch.float64)  # (B, N, d) cotangents of the map
    got = vmap(lambda v: bwd(None, v, y0, A, W, w_out, None, pre, upstream, *hyper, True), in_dims=1)(vs)
    want = [bwd(None, vs[:, j], y0, A, W, w_out, None, pre, upstream, *hyper, True) for j in range(n)]
    check(got, [torch.stack(p) for p in zip(*want)])
