"""The weight parametrization operators softplus_weights / softplus_weights_backward.

Values against ``F.softplus`` / ``grad·sigmoid`` (float64 tight, float32 loose) on every
row-pass ISA the CPU runs, on fresh random and edge inputs; gradcheck (reverse, forward
and second order), opcheck, vmap; the modules use them on the fused path only, with the
same training gradients as the reference, also through a second derivative.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import lidvae_ext
from lidvae_ext import BrenierMap, LIDDecoder, ops, positivity

pytestmark = pytest.mark.skipif(not ops.fused_available("cpu"), reason="lidvae_ext._C not built")

ISAS = list(lidvae_ext.build_info().get("cpu_isas", ("baseline",))) if ops.fused_available("cpu") else []
EDGES = [0.0, -0.0, 1e-30, -1e-30, 19.999, 20.0, 20.001, -20.0, 30.0, -60.0, -86.9, -87.0,
         -87.5, -100.0, -700.0, -708.5, -745.0, -1e4, 1e4]


def _inputs(dtype: torch.dtype) -> torch.Tensor:
    # an odd length (vector tails), wide and narrow ranges, and the edges of the reductions
    wide = torch.empty(4099, dtype=torch.float64).uniform_(-120.0, 120.0)
    narrow = 6 * torch.randn(3001, dtype=torch.float64)
    return torch.cat([wide, narrow, torch.tensor(EDGES, dtype=torch.float64)]).to(dtype)


def _close(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> None:
    rtol, atol = (1e-13, 1e-300) if dtype == torch.float64 else (2e-6, 1e-37)
    torch.testing.assert_close(got.double(), want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_values_match_torch_on_every_isa(isa, dtype, monkeypatch):
    monkeypatch.setenv("LIDVAE_CPU_ISA", isa)
    raw = _inputs(dtype)
    grad = torch.randn(raw.shape, dtype=torch.float64).to(dtype)
    want = F.softplus(raw.double())
    _close(positivity.softplus_weights(raw), want, dtype)
    want_back = torch.where(raw.double() > 20, grad.double(), grad.double() * torch.sigmoid(raw.double()))
    _close(positivity.softplus_weights_backward(grad, raw), want_back, dtype)


def test_shapes_layouts_and_threads():
    raw = torch.randn(3, 70, 90, dtype=torch.float64).transpose(1, 2)  # non-contiguous
    out = positivity.softplus_weights(raw)
    assert out.shape == raw.shape and out.is_contiguous()
    torch.testing.assert_close(out, F.softplus(raw), rtol=1e-13, atol=0)
    grad = torch.randn(70, 90, 3, dtype=torch.float64).permute(2, 1, 0)  # non-contiguous too
    torch.testing.assert_close(positivity.softplus_weights_backward(grad, raw), grad * torch.sigmoid(raw),
                               rtol=1e-13, atol=0)
    big = torch.randn(2, 300, 400)  # several parallel chunks
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = positivity.softplus_weights(big)
        torch.set_num_threads(1)
        one = positivity.softplus_weights(big)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    torch.testing.assert_close(one, F.softplus(big), rtol=2e-6, atol=1e-37)
    empty = torch.empty(0, 5)
    assert positivity.softplus_weights(empty).shape == (0, 5)


def test_bad_inputs_are_errors():
    with pytest.raises(RuntimeError, match=r"grad has shape \[3\] but raw has shape \[4\]"):
        positivity.softplus_weights_backward(torch.zeros(3), torch.zeros(4))
    with pytest.raises(RuntimeError, match="grad has dtype Double but raw has dtype Float"):
        positivity.softplus_weights_backward(torch.zeros(4, dtype=torch.float64), torch.zeros(4))
    with pytest.raises(RuntimeError, match="raw must be float32 or float64, got Int"):
        positivity.softplus_weights(torch.zeros(4, dtype=torch.int32))


def test_gradcheck_first_second_and_forward_mode():
    raw = (4 * torch.randn(3, 5, dtype=torch.float64)).requires_grad_(True)
    grad = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(positivity.softplus_weights, (raw,), check_forward_ad=True)
    assert torch.autograd.gradgradcheck(positivity.softplus_weights, (raw,))
    assert torch.autograd.gradcheck(positivity.softplus_weights_backward, (grad, raw), check_forward_ad=True)
    assert torch.autograd.gradgradcheck(positivity.softplus_weights_backward, (grad, raw))


def test_opcheck():
    raw = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.lidvae_ext.softplus_weights.default, (raw,))
    torch.library.opcheck(torch.ops.lidvae_ext.softplus_weights_backward.default, (grad, raw))
    torch.library.opcheck(torch.ops.lidvae_ext.softplus_weights.default, (raw.detach().float(),))


def test_transforms():
    raw = 3 * torch.randn(5, 4, dtype=torch.float64)
    grad = torch.randn(2, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(torch.vmap(positivity.softplus_weights)(raw), F.softplus(raw), rtol=1e-13, atol=0)
    got = torch.vmap(positivity.softplus_weights_backward, in_dims=(0, None))(grad, raw)
    torch.testing.assert_close(got, grad * torch.sigmoid(raw), rtol=1e-13, atol=0)
    loss = lambda f: lambda r: (f(r) ** 3).sum()  # noqa: E731
    for transform in (torch.func.grad, torch.func.jacfwd, torch.func.hessian):
        torch.testing.assert_close(transform(loss(positivity.softplus_weights))(raw),
                                   transform(loss(F.softplus))(raw), rtol=1e-12, atol=1e-14)
    tangent = torch.randn_like(raw)
    _, jvp_out = torch.func.jvp(positivity.softplus_weights, (raw,), (tangent,))
    torch.testing.assert_close(jvp_out, tangent * torch.sigmoid(raw), rtol=1e-12, atol=0)


class _OpLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def _train_grads(module, x):
    x = x.detach().requires_grad_(True)
    params = [p for p in module.parameters() if p.requires_grad]
    loss = module(x).square().sum()
    return torch.autograd.grad(loss, [x, *params])


@pytest.mark.parametrize("positivity_name", ["softplus", "clamp"])
def test_module_training_gradients_match_reference(positivity_name, monkeypatch):
    torch.manual_seed(3)
    bmap = BrenierMap(6, 12, num_layers=3, positivity=positivity_name, strong_convexity=0.1).double()
    with torch.no_grad():  # some raw weights negative (clamp: some gradients 0), some past 20
        bmap.icnn.W_raw.add_(0.5 * torch.randn_like(bmap.icnn.W_raw))
        bmap.icnn.W_raw[0, 0, :3] = torch.tensor([21.0, -25.0, -0.3])
    x = torch.randn(9, 6, dtype=torch.float64)
    bmap.backend = "reference"
    want = _train_grads(bmap, x)
    bmap.backend = "fused"
    monkeypatch.setenv("LIDVAE_CPU_SOFTPLUS", "fused")  # these weights are below the "auto" size threshold
    with _OpLog() as log:
        got = _train_grads(bmap, x)
    used = any("softplus_weights" in n for n in log.names)
    assert used == (positivity_name == "softplus"), log.names
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    monkeypatch.setenv("LIDVAE_CPU_SOFTPLUS", "aten")
    with _OpLog() as log:
        old = _train_grads(bmap, x)
    assert not any("softplus_weights" in n for n in log.names)
    for g, w in zip(old, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_reference_backend_and_other_dtypes_use_f_softplus():
    bmap = BrenierMap(3, 8, backend="reference").double()
    with _OpLog() as log:
        bmap(torch.randn(4, 3, dtype=torch.float64))
    assert not any("softplus_weights" in n for n in log.names)
    half = BrenierMap(3, 8, backend="fused").to(torch.bfloat16)
    with _OpLog() as log:
        half(torch.randn(4, 3, dtype=torch.bfloat16))
    assert not any("softplus_weights" in n for n in log.names)


def test_double_backward_through_the_parametrization_matches_reference():
    torch.manual_seed(5)
    dec = LIDDecoder(3, 10, hidden=8, backend="fused").double()
    z = torch.randn(6, 3, dtype=torch.float64)

    def penalty():
        zz = z.clone().requires_grad_(True)
        (gz,) = torch.autograd.grad(dec(zz).sin().sum(), zz, create_graph=True)
        return torch.autograd.grad(gz.square().sum(), [dec.latent_map.icnn.W_raw, dec.data_map.icnn.w_out_raw])

    got = penalty()
    for m in (dec.latent_map, dec.data_map):
        m.backend = "reference"
    want = penalty()
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


def test_bad_environment_choice_is_an_error(monkeypatch):
    monkeypatch.setenv("LIDVAE_CPU_SOFTPLUS", "mkl")
    with pytest.raises(ValueError, match="LIDVAE_CPU_SOFTPLUS must be one of"):
        BrenierMap(3, 8, backend="fused")(torch.randn(2, 3))


def test_cuda_kernel_formulas_on_cpu_tensors():
    # The CUDA kernels are ATen compositions (no GPU here: run the same functions on CPU).
    raw = torch.cat([8 * torch.randn(500, dtype=torch.float64), torch.tensor([20.0, 25.0, -30.0], dtype=torch.float64)])
    grad = torch.randn_like(raw)
    torch.testing.assert_close(positivity._cuda_softplus(raw), positivity.softplus_weights(raw), rtol=1e-13, atol=0)
    torch.testing.assert_close(positivity._cuda_softplus_backward(grad, raw),
                               positivity.softplus_weights_backward(grad, raw), rtol=1e-13, atol=0)
    with pytest.raises(RuntimeError, match="must match"):
        positivity._cuda_softplus_backward(grad[:3], raw)


@pytest.mark.parametrize("numel,fused", [(64, False), (positivity.FUSED_SOFTPLUS_MIN_NUMEL - 1, False),
                                         (positivity.FUSED_SOFTPLUS_MIN_NUMEL, True)])
def test_auto_takes_the_fused_pass_by_size(numel, fused, monkeypatch):
    """LIDVAE_CPU_SOFTPLUS=auto: F.softplus below FUSED_SOFTPLUS_MIN_NUMEL elements, the operator from it on;
    the values are softplus either way."""
    monkeypatch.setenv("LIDVAE_CPU_SOFTPLUS", "auto")
    raw = torch.randn(numel, dtype=torch.float64, requires_grad=True)
    with _OpLog() as log:
        w = positivity.positive(raw, "softplus", fused=True)
        (grad,) = torch.autograd.grad(w.sum(), raw)
    assert any("softplus_weights" in n for n in log.names) == fused, log.names
    torch.testing.assert_close(w, F.softplus(raw), rtol=1e-13, atol=0)
    torch.testing.assert_close(grad, torch.sigmoid(raw), rtol=1e-13, atol=0)
    monkeypatch.setenv("LIDVAE_CPU_SOFTPLUS", "fused")
    with _OpLog() as log:
        positivity.positive(raw, "softplus", fused=True)
    assert any("softplus_weights" in n for n in log.names)
