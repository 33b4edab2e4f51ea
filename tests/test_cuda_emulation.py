"""The CUDA backend's sources, run on the CPU through scripts/cuda_emulation.

csrc/cuda/icnn_cuda.cu (host code) and csrc/cuda/icnn_cuda_kernels.cuh (the
kernels) are compiled *unchanged* with g++ against a small emulation of the
CUDA subset they use: every CUDA thread is a real thread, __syncwarp /
__syncthreads / __shfl_xor_sync are barriers, shared memory and every CPU
allocation are filled with NaN bytes first. The operators are registered as
torch.ops.lidvae_cuda_emu.* on CPU tensors and checked here against the
autograd reference, for the fused path (LIDVAE_CUDA_FUSED=1) and the generic
path (LIDVAE_CUDA_FUSED=0). This runs on machines without a GPU; it does not
replace tests/test_ops_cuda.py on a real GPU (nvcc codegen, real timing).
"""

from __future__ import annotations

import itertools
import os
import random
import shutil

import pytest
import torch

from lidvae_ext import reference
from cuda_shapes import FUSED_WIDTHS, fused_fits, fused_smem_bytes
from icnn_inputs import fresh_seed, kink_free_seed, max_rel_errors, outputs_and_grads, sample_cotangents, sample_inputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow

ACTIVATIONS = ["leaky_relu", "softplus"]


@pytest.fixture(scope="module")
def emu():
    """Builds (once per machine, cached by torch's extension cache) the emulated CUDA ops."""
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler for the CUDA emulation")
    from torch.utils import cpp_extension

    module = cpp_extension.load(
        name="lidvae_cuda_emu",
        sources=[os.path.join(ROOT, "scripts", "cuda_emulation", "emulated_ops.cpp"),
                 os.path.join(ROOT, "scripts", "cuda_emulation", "emulated_kernels.cpp"),
                 os.path.join(ROOT, "csrc", "icnn_checks.cpp")],
        extra_include_paths=[os.path.join(ROOT, "csrc"), os.path.join(ROOT, "scripts", "cuda_emulation")],
        extra_cflags=["-O1", "-std=c++20", "-DLIDVAE_CUDA_EMULATION", "-pthread", "-Wno-unknown-pragmas"],
        extra_ldflags=["-pthread"],
        verbose=False,
    )
    module.set_poison_allocator(True)
    yield module
    module.set_poison_allocator(False)


@pytest.fixture(params=["fused", "generic"])
def path(request, monkeypatch):
    monkeypatch.setenv("LIDVAE_CUDA_FUSED", "1" if request.param == "fused" else "0")
    return request.param


class _EmulatedOps:
    """``icnn_potential_and_map`` with the fused-op autograd formula, on the emulated ops."""

    @staticmethod
    def icnn_potential_and_map(y, A, b, W, w_out, alpha, activation, slope):
        return _EmulatedMap.apply(y, A, b, W, w_out, alpha, activation, slope)


class _EmulatedMap(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, A, b, W, w_out, alpha, activation, slope):
        psi, grad, pre, upstream = torch.ops.lidvae_cuda_emu.icnn_forward(y, A, b, W, w_out, alpha,
                                                                          activation, slope)
        ctx.save_for_backward(y, A, W, w_out, grad, pre, upstream)
        ctx.hyper = (alpha, activation, slope)
        return psi, grad

    @staticmethod
    def backward(ctx, grad_psi, grad_map):
        y, A, W, w_out, grad, pre, upstream = ctx.saved_tensors
        grads = torch.ops.lidvae_cuda_emu.icnn_backward(grad_psi, grad_map, y, A, W, w_out, grad, pre,
                                                        upstream, *ctx.hyper, True)
        return (*grads, None, None, None)


def _check(batch, dim, hidden, layers, activation, alpha, dtype=torch.float64, in_dim=None):
    seed = kink_free_seed(batch, dim, hidden, layers, activation, dtype, in_dim=in_dim)
    hyper = (alpha, activation, 0.2)
    inputs64 = sample_inputs(batch, dim, hidden, layers, seed=seed)
    if in_dim is not None:
        inputs64[0] = inputs64[0][:, :in_dim].contiguous()
    u, v = sample_cotangents(batch, dim, seed=seed)
    want = outputs_and_grads(reference, inputs64, u, v, hyper)
    got = outputs_and_grads(_EmulatedOps, [t.to(dtype) for t in inputs64], u.to(dtype), v.to(dtype), hyper)
    for g, w in zip(got, want):
        assert g.dtype == dtype and g.shape == w.shape
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    errs = max_rel_errors(got, want)
    assert all(e <= tol for e in errs.values()), f"seed={seed} errors={errs}"


def _grid(widths, count, seed):
    full = list(itertools.product([1, 7, 300], [1, 5, 40], widths, [1, 2, 3], ACTIVATIONS, [0.0, 0.3]))
    return random.Random(seed).sample(full, count)


@pytest.mark.parametrize("batch,dim,hidden,layers,activation,alpha",
                         _grid(FUSED_WIDTHS, 14, 4) + [(300, 3, 16, 3, "softplus", 0.3),
                                                        (64, 40, 128, 2, "leaky_relu", 0.3)])
def test_matches_reference(emu, path, batch, dim, hidden, layers, activation, alpha):
    if path == "fused" and not fused_fits(dim, hidden, layers, torch.float64):
        pytest.skip("weights exceed the (emulated H100) shared memory: the generic path runs this shape")
    _check(batch, dim, hidden, layers, activation, alpha)


@pytest.mark.parametrize("hidden", [8, 200])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_generic_widths(emu, monkeypatch, hidden, activation):
    monkeypatch.setenv("LIDVAE_CUDA_FUSED", "auto")  # no fused kernel for these widths
    _check(7, 5, hidden, 2, activation, 0.3)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_float32(emu, path, activation):
    _check(33, 6, 32, 3, activation, 0.3, dtype=torch.float32)


@pytest.mark.parametrize("in_dim,dim", [(1, 2), (3, 40), (35, 40)])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_zero_padded_input(emu, path, in_dim, dim, activation):
    _check(9, dim, 16, 2, activation, 0.3, in_dim=in_dim)


def test_empty_batch(emu, path):
    y, A, b, W, w_out = sample_inputs(0, 3, 16, 2)
    psi, grad, pre, upstream = torch.ops.lidvae_cuda_emu.icnn_forward(y, A, b, W, w_out, 0.3, "softplus", 0.2)
    assert psi.shape == (0,) and grad.shape == (0, 3) and pre.shape == (0, 33) and upstream.shape == (0, 16)
    u, v = sample_cotangents(0, 3)
    gy, gA, gb, gW, gwo = torch.ops.lidvae_cuda_emu.icnn_backward(u, v, y, A, W, w_out, grad, pre, upstream,
                                                                  0.3, "softplus", 0.2, True)
    assert gy.shape == (0, 3)
    for g in (gA, gb, gW, gwo):
        assert torch.count_nonzero(g) == 0


@pytest.mark.parametrize("with_u", [True, False])
@pytest.mark.parametrize("need_input_grad", [True, False])
def test_backward_options(emu, path, with_u, need_input_grad):
    """grad_psi=None means u = 0; need_input_grad=False returns an empty dLoss/dy."""
    y, A, b, W, w_out = sample_inputs(11, 4, 32, 2, seed=fresh_seed())
    u, v = sample_cotangents(11, 4)
    hyper = (0.3, "softplus", 0.2)
    _, grad, pre, upstream = torch.ops.lidvae_cuda_emu.icnn_forward(y, A, b, W, w_out, *hyper)
    got = torch.ops.lidvae_cuda_emu.icnn_backward(u if with_u else None, v, y, A, W, w_out, grad, pre,
                                                  upstream, *hyper, need_input_grad)
    want = outputs_and_grads(reference, [y, A, b, W, w_out], u if with_u else torch.zeros_like(u), v, hyper)[2:]
    if need_input_grad:
        torch.testing.assert_close(got[0], want[0], rtol=1e-10, atol=1e-12)
    else:
        assert got[0].numel() == 0
    for g, w in zip(got[1:], want[1:]):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_deterministic(emu, path):
    """The fused backward reduces per-block partials in a fixed order: bitwise reproducible."""
    y, A, b, W, w_out = sample_inputs(300, 5, 16, 2, seed=fresh_seed())
    u, v = sample_cotangents(300, 5)
    hyper = (0.3, "softplus", 0.2)
    runs = []
    for _ in range(2):
        _, grad, pre, upstream = torch.ops.lidvae_cuda_emu.icnn_forward(y, A, b, W, w_out, *hyper)
        runs.append(torch.ops.lidvae_cuda_emu.icnn_backward(u, v, y, A, W, w_out, grad, pre, upstream, *hyper,
                                                            True))
    for a, b_ in zip(*runs):
        assert torch.equal(a, b_)


def test_fused_falls_back_when_shared_memory_is_short(emu, monkeypatch):
    """auto: a shape whose weights do not fit in shared memory runs on the generic path."""
    monkeypatch.setenv("LIDVAE_CUDA_FUSED", "auto")
    monkeypatch.setenv("LIDVAE_EMU_SMEM", str(16 * 1024))
    monkeypatch.setenv("LIDVAE_EMU_DEVICE", "1")  # limits are cached per device
    _check(7, 40, 64, 2, "softplus", 0.3)


def test_forced_fused_errors_are_actionable(emu, monkeypatch):
    y, A, b, W, w_out = sample_inputs(3, 40, 64, 2)
    monkeypatch.setenv("LIDVAE_CUDA_FUSED", "1")
    monkeypatch.setenv("LIDVAE_EMU_SMEM", str(16 * 1024))
    monkeypatch.setenv("LIDVAE_EMU_DEVICE", "1")  # limits are cached per device
    forward_bytes = fused_smem_bytes(40, 64, 2, torch.float64)[0]  # the Python mirror of the kernel layout
    with pytest.raises(RuntimeError, match=rf"needs {forward_bytes} bytes of shared memory.*allows 16384.*"
                                           "LIDVAE_CUDA_FUSED"):
        torch.ops.lidvae_cuda_emu.icnn_forward(y, A, b, W, w_out, 0.0, "softplus", 0.2)
    monkeypatch.setenv("LIDVAE_CUDA_FUSED", "auto")
    _, grad, pre, upstream = torch.ops.lidvae_cuda_emu.icnn_forward(y, A, b, W, w_out, 0.0, "softplus", 0.2)
    monkeypatch.setenv("LIDVAE_CUDA_FUSED", "1")
    u, v = sample_cotangents(3, 40)
    backward_bytes = fused_smem_bytes(40, 64, 2, torch.float64)[1]  # one sample slot per group
    with pytest.raises(RuntimeError, match=rf"icnn_backward: .*needs {backward_bytes} bytes of shared memory"):
        torch.ops.lidvae_cuda_emu.icnn_backward(u, v, y, A, W, w_out, grad, pre, upstream, 0.0, "softplus", 0.2,
                                                True)
    y, A, b, W, w_out = sample_inputs(3, 4, 8, 2)
    with pytest.raises(RuntimeError, match="no fused CUDA kernel for H = 8"):
        torch.ops.lidvae_cuda_emu.icnn_forward(y, A, b, W, w_out, 0.0, "softplus", 0.2)
    monkeypatch.setenv("LIDVAE_CUDA_FUSED", "yes")
    with pytest.raises(RuntimeError, match="LIDVAE_CUDA_FUSED must be"):
        torch.ops.lidvae_cuda_emu.icnn_forward(y, A, b, W, w_out, 0.0, "softplus", 0.2)


def test_validation_messages_match_cpu(emu):
    y, A, b, W, w_out = sample_inputs(3, 4, 16, 2)
    with pytest.raises(RuntimeError, match="lidvae_ext::icnn_forward: b must have shape"):
        torch.ops.lidvae_cuda_emu.icnn_forward(y, A, b[:-1], W, w_out, 0.0, "softplus", 0.2)
    with pytest.raises(RuntimeError, match="activation must be 'leaky_relu' or 'softplus'"):
        torch.ops.lidvae_cuda_emu.icnn_forward(y, A, b, W, w_out, 0.0, "relu", 0.2)
    with pytest.raises(RuntimeError, match="A has dtype"):
        torch.ops.lidvae_cuda_emu.icnn_forward(y, A.float(), b, W, w_out, 0.0, "softplus", 0.2)
