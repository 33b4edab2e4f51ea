"""CUDA operators: vs the autograd reference and the CPU op, gradcheck, opcheck,
torch.compile (incl. CUDA graphs), streams, poisoned memory, compute-sanitizer.

Skipped without a GPU or without CUDA kernels in the build. The fused
small-width path and the generic cuBLAS path are both exercised: the
``path`` fixture sets LIDVAE_CUDA_FUSED ("auto": fused where the shape has a
fused kernel and fits in shared memory, "0": always generic); the
``fused_used`` test checks with the profiler which kernels actually ran.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import lidvae_ext
from lidvae_ext import ops, reference
from cuda_shapes import FUSED_WIDTHS, fused_fits
from icnn_inputs import fresh_seed, kink_free_seed, max_rel_errors, outputs_and_grads, sample_cotangents, sample_inputs

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    pytest.mark.skipif(not ops.fused_available("cuda"), reason="lidvae_ext built without CUDA kernels"),
]

ACTIVATIONS = ["leaky_relu", "softplus"]
GENERIC_WIDTHS = [8, 200, 512]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(params=["auto", "generic"])
def path(request, monkeypatch):
    monkeypatch.setenv("LIDVAE_CUDA_FUSED", "auto" if request.param == "auto" else "0")
    return request.param


def _grid(widths, count, seed, edges):
    full = list(itertools.product([0, 1, 7, 300], [1, 5, 40], widths, [1, 2, 3], ACTIVATIONS, [0.0, 0.3]))
    return edges + random.Random(seed).sample(full, count - len(edges))


FUSED_GRID = _grid(FUSED_WIDTHS, 24, 90, [
    (0, 5, 16, 2, "leaky_relu", 0.3), (1, 1, 16, 1, "softplus", 0.0), (300, 40, 128, 2, "softplus", 0.3),
    (300, 1, 32, 3, "leaky_relu", 0.0), (7, 40, 64, 3, "softplus", 0.0), (300, 5, 128, 3, "leaky_relu", 0.3),
])
GENERIC_GRID = _grid(GENERIC_WIDTHS, 10, 91, [(300, 40, 512, 2, "softplus", 0.3), (0, 5, 8, 1, "leaky_relu", 0.0)])


def _check_vs_reference(batch, dim, hidden, layers, activation, alpha, dtype, in_dim=None):
    seed = kink_free_seed(batch, dim, hidden, layers, activation, dtype, device="cuda", in_dim=in_dim)
    hyper = (alpha, activation, 0.2)
    inputs64 = sample_inputs(batch, dim, hidden, layers, seed=seed)
    if in_dim is not None:
        inputs64[0] = inputs64[0][:, :in_dim].contiguous()
    u, v = sample_cotangents(batch, dim, seed=seed)
    want = outputs_and_grads(reference, inputs64, u, v, hyper)
    inputs = [t.to("cuda", dtype) for t in inputs64]
    got = outputs_and_grads(ops, inputs, u.to("cuda", dtype), v.to("cuda", dtype), hyper)
    for g, w in zip(got, want):
        assert g.device.type == "cuda" and g.dtype == dtype and g.shape == w.shape
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    errs = max_rel_errors([g.cpu() for g in got], want)
    assert all(e <= tol for e in errs.values()), f"seed={seed} errors={errs}"


@pytest.mark.parametrize("batch,dim,hidden,layers,activation,alpha", FUSED_GRID)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_widths_match_reference(path, batch, dim, hidden, layers, activation, alpha, dtype):
    _check_vs_reference(batch, dim, hidden, layers, activation, alpha, dtype)


@pytest.mark.parametrize("batch,dim,hidden,layers,activation,alpha", GENERIC_GRID)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_generic_widths_match_reference(batch, dim, hidden, layers, activation, alpha, dtype):
    _check_vs_reference(batch, dim, hidden, layers, activation, alpha, dtype)


@pytest.mark.parametrize("in_dim,dim", [(1, 2), (3, 40), (35, 40)])
@pytest.mark.parametrize("hidden", [16, 64, 200])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_zero_padded_input(path, in_dim, dim, hidden, activation):
    _check_vs_reference(9, dim, hidden, 2, activation, 0.3, torch.float64, in_dim=in_dim)


@pytest.mark.parametrize("hidden", [16, 128, 200])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_matches_cpu_op(path, hidden, activation):
    """Same inputs through the CPU and the CUDA op: every output, the saved activations included."""
    y, A, b, W, w_out = sample_inputs(57, 6, hidden, 3, seed=fresh_seed())
    u, v = sample_cotangents(57, 6)
    hyper = (0.3, activation, 0.2)
    cpu_fwd = torch.ops.lidvae_ext.icnn_forward(y, A, b, W, w_out, *hyper)
    cuda_in = [t.cuda() for t in (y, A, b, W, w_out)]
    gpu_fwd = torch.ops.lidvae_ext.icnn_forward(*cuda_in, *hyper)
    for c, g in zip(cpu_fwd, gpu_fwd):
        torch.testing.assert_close(g.cpu(), c, rtol=1e-11, atol=1e-12)
    cpu_bwd = torch.ops.lidvae_ext.icnn_backward(u, v, y, A, W, w_out, cpu_fwd[1], cpu_fwd[2], cpu_fwd[3], *hyper,
                                                 True)
    y_, A_, _, W_, w_out_ = cuda_in
    gpu_bwd = torch.ops.lidvae_ext.icnn_backward(u.cuda(), v.cuda(), y_, A_, W_, w_out_, gpu_fwd[1], gpu_fwd[2],
                                                 gpu_fwd[3], *hyper, True)
    for c, g in zip(cpu_bwd, gpu_bwd):
        torch.testing.assert_close(g.cpu(), c, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("hidden", [16, 8])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_gradcheck(path, hidden, activation, layers):
    inputs = sample_inputs(4, 3, hidden, layers, seed=fresh_seed(), device="cuda", requires_grad=True)

    def fn(*args):
        return ops.icnn_potential_and_map(*args, 0.3, activation, 0.2)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def _forward_args(hidden=16, activation="leaky_relu", batch=5, requires_grad=True):
    return (*sample_inputs(batch, 3, hidden, 2, device="cuda", requires_grad=requires_grad), 0.2, activation, 0.2)


@pytest.mark.parametrize("hidden", [16, 8])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("batch", [0, 6])
def test_opcheck_forward(hidden, activation, batch):
    torch.library.opcheck(torch.ops.lidvae_ext.icnn_forward.default, _forward_args(hidden, activation, batch))


@pytest.mark.parametrize("hidden", [16, 8])
@pytest.mark.parametrize("with_grad_psi", [True, False])
@pytest.mark.parametrize("need_input_grad", [True, False])
def test_opcheck_backward(hidden, with_grad_psi, need_input_grad):
    y, A, b, W, w_out, alpha, act, slope = _forward_args(hidden, requires_grad=False)
    _, grad, pre, upstream = torch.ops.lidvae_ext.icnn_forward(y, A, b, W, w_out, alpha, act, slope)
    u, v = sample_cotangents(y.shape[0], y.shape[1], device="cuda")
    args = (u if with_grad_psi else None, v, y, A, W, w_out, grad, pre, upstream, alpha, act, slope,
            need_input_grad)
    torch.library.opcheck(torch.ops.lidvae_ext.icnn_backward.default, args)


def _training_step(y, A, b, W, w_out, activation):
    psi, grad = ops.icnn_potential_and_map(y, A, b, W, w_out, 0.3, activation, 0.2)
    return (grad.square().sum(dim=1) + psi).mean()


@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
@pytest.mark.parametrize("hidden", [16, 200])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_torch_compile_matches_eager(mode, hidden, activation):
    """fullgraph compile (and CUDA graphs with reduce-overhead) of a training step, forward + backward."""
    torch._dynamo.reset()
    compiled = torch.compile(_training_step, fullgraph=True, mode=mode)
    base = sample_inputs(64, 5, hidden, 2, dtype=torch.float32, device="cuda", seed=fresh_seed())
    for step in range(3):  # reduce-overhead records on the first calls, replays afterwards
        results = []
        for fn in (_training_step, compiled):
            leaves = [(t + 0.01 * step).detach().requires_grad_(True) for t in base]
            loss = fn(*leaves, activation)
            loss.backward()
            results.append([loss.detach().clone()] + [l.grad.clone() for l in leaves])
        for e, c in zip(*results):
            torch.testing.assert_close(c, e, rtol=1e-4, atol=1e-5)


def test_non_default_stream(path):
    """Kernels and GEMMs run on the current stream; results match the default-stream ones."""
    inputs = sample_inputs(300, 5, 32, 3, device="cuda", seed=fresh_seed())
    u, v = sample_cotangents(300, 5, device="cuda")
    want_fwd = torch.ops.lidvae_ext.icnn_forward(*inputs, 0.3, "softplus", 0.2)
    y, A, _, W, w_out = inputs
    want_bwd = torch.ops.lidvae_ext.icnn_backward(u, v, y, A, W, w_out, *want_fwd[1:], 0.3, "softplus", 0.2, True)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        torch.cuda._sleep(10_000_000)  # keep the side stream busy: a default-stream launch would race ahead
        got_fwd = torch.ops.lidvae_ext.icnn_forward(*inputs, 0.3, "softplus", 0.2)
        got_bwd = torch.ops.lidvae_ext.icnn_backward(u, v, y, A, W, w_out, *got_fwd[1:], 0.3, "softplus", 0.2,
                                                     True)
    torch.cuda.current_stream().wait_stream(stream)
    for g, w in zip((*got_fwd, *got_bwd), (*want_fwd, *want_bwd)):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-13)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_device_guard_second_gpu(path):
    inputs = sample_inputs(33, 5, 16, 2, device="cuda:1", seed=fresh_seed())
    u, v = sample_cotangents(33, 5, device="cuda:1")
    with torch.cuda.device(0):
        psi, grad, pre, up = torch.ops.lidvae_ext.icnn_forward(*inputs, 0.3, "softplus", 0.2)
        y, A, _, W, w_out = inputs
        grads = torch.ops.lidvae_ext.icnn_backward(u, v, y, A, W, w_out, grad, pre, up, 0.3, "softplus", 0.2, True)
    want = torch.ops.lidvae_ext.icnn_forward(*[t.cpu() for t in inputs], 0.3, "softplus", 0.2)
    assert all(t.device == torch.device("cuda:1") for t in (psi, grad, pre, up, *grads))
    torch.testing.assert_close(grad.cpu(), want[1], rtol=1e-11, atol=1e-12)


def _poison_cuda_allocator(dtype):
    """Fill freed blocks of the caching allocator with NaN so that reused memory starts as NaN."""
    torch.cuda.synchronize()
    junk = [torch.full((n,), float("nan"), dtype=dtype, device="cuda") for n in (1 << 20, 1 << 16, 4096, 512, 64)]
    torch.cuda.synchronize()
    del junk


@pytest.mark.parametrize("hidden", [16, 200])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_outputs_fully_written(path, hidden, dtype):
    y, A, b, W, w_out = sample_inputs(300, 6, hidden, 3, dtype=dtype, device="cuda", seed=fresh_seed())
    u, v = sample_cotangents(300, 6, dtype=dtype, device="cuda")
    for activation in ACTIVATIONS:
        for with_u in (True, False):
            _poison_cuda_allocator(dtype)
            psi, grad, pre, upstream = torch.ops.lidvae_ext.icnn_forward(y, A, b, W, w_out, 0.0, activation, 0.2)
            _poison_cuda_allocator(dtype)
            grads = torch.ops.lidvae_ext.icnn_backward(u if with_u else None, v, y, A, W, w_out, grad, pre,
                                                       upstream, 0.0, activation, 0.2, True)
            for t in (psi, grad, pre, upstream, *grads):
                assert torch.isfinite(t).all(), f"{activation} with_u={with_u}: output not fully written"


def test_deterministic(path):
    """The fused backward sums per-block partials in a fixed order (and cuBLAS is deterministic)."""
    inputs = sample_inputs(5000, 5, 32, 2, dtype=torch.float32, device="cuda", seed=fresh_seed())
    u, v = sample_cotangents(5000, 5, dtype=torch.float32, device="cuda")
    y, A, b, W, w_out = inputs
    runs = []
    for _ in range(2):
        _, grad, pre, upstream = torch.ops.lidvae_ext.icnn_forward(*inputs, 0.3, "softplus", 0.2)
        runs.append(torch.ops.lidvae_ext.icnn_backward(u, v, y, A, W, w_out, grad, pre, upstream, 0.3, "softplus",
                                                       0.2, True))
    for a, b_ in zip(*runs):
        assert torch.equal(a, b_)


def test_large_batch_fused_vs_generic(monkeypatch):
    """Many tiles per block in the fused backward: fused and generic paths agree in float64."""
    inputs = sample_inputs(100_000, 4, 32, 2, device="cuda", seed=fresh_seed())
    u, v = sample_cotangents(100_000, 4, device="cuda")
    y, A, b, W, w_out = inputs
    results = []
    for mode in ("1", "0"):
        monkeypatch.setenv("LIDVAE_CUDA_FUSED", mode)
        fwd = torch.ops.lidvae_ext.icnn_forward(*inputs, 0.3, "softplus", 0.2)
        bwd = torch.ops.lidvae_ext.icnn_backward(u, v, y, A, W, w_out, *fwd[1:], 0.3, "softplus", 0.2, True)
        results.append((*fwd, *bwd))
    for f, g in zip(*results):
        torch.testing.assert_close(f, g, rtol=1e-10, atol=1e-10)


def _cuda_kernel_names(fn) -> set[str]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return {e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA}


@pytest.mark.parametrize("hidden,dim,dtype", [(16, 5, torch.float32), (128, 40, torch.float32),
                                              (64, 5, torch.float64), (128, 40, torch.float64), (8, 5, torch.float32)])
def test_fused_used_where_it_fits(monkeypatch, hidden, dim, dtype):
    monkeypatch.setenv("LIDVAE_CUDA_FUSED", "auto")
    inputs = sample_inputs(64, dim, hidden, 3, dtype=dtype, device="cuda")
    u, v = sample_cotangents(64, dim, dtype=dtype, device="cuda")
    y, A, b, W, w_out = inputs

    def step():
        fwd = torch.ops.lidvae_ext.icnn_forward(*inputs, 0.3, "softplus", 0.2)
        torch.ops.lidvae_ext.icnn_backward(u, v, y, A, W, w_out, *fwd[1:], 0.3, "softplus", 0.2, True)

    names = " ".join(_cuda_kernel_names(step))
    for which in ("forward", "backward"):
        expect = fused_fits(dim, hidden, 3, dtype, which=which)
        assert (f"icnn_fused_{which}_kernel" in names) == expect, (which, names)


def test_forced_fused_errors(monkeypatch):
    monkeypatch.setenv("LIDVAE_CUDA_FUSED", "1")
    y, A, b, W, w_out = sample_inputs(3, 4, 8, 2, device="cuda")
    with pytest.raises(RuntimeError, match="no fused CUDA kernel for H = 8"):
        torch.ops.lidvae_ext.icnn_forward(y, A, b, W, w_out, 0.0, "softplus", 0.2)
    y, A, b, W, w_out = sample_inputs(3, 2000, 128, 3, device="cuda")  # weights far beyond shared memory
    with pytest.raises(RuntimeError, match=r"needs \d+ bytes of shared memory.*LIDVAE_CUDA_FUSED"):
        torch.ops.lidvae_ext.icnn_forward(y, A, b, W, w_out, 0.0, "softplus", 0.2)
    monkeypatch.setenv("LIDVAE_CUDA_FUSED", "auto")
    torch.ops.lidvae_ext.icnn_forward(y, A, b, W, w_out, 0.0, "softplus", 0.2)  # auto: generic path


def test_input_validation():
    y, A, b, W, w_out = sample_inputs(3, 4, 16, 2, device="cuda")
    with pytest.raises(RuntimeError, match="A is on cpu but y is on cuda"):
        torch.ops.lidvae_ext.icnn_forward(y, A.cpu(), b, W, w_out, 0.0, "softplus", 0.2)
    with pytest.raises(RuntimeError, match="A has dtype Float but y has dtype Double"):
        torch.ops.lidvae_ext.icnn_forward(y, A.float(), b, W, w_out, 0.0, "softplus", 0.2)
    with pytest.raises(RuntimeError, match="b must have shape"):
        torch.ops.lidvae_ext.icnn_forward(y, A, b[:-1], W, w_out, 0.0, "softplus", 0.2)
    with pytest.raises(RuntimeError, match="activation must be 'leaky_relu' or 'softplus'"):
        torch.ops.lidvae_ext.icnn_forward(y, A, b, W, w_out, 0.0, "relu", 0.2)


def _compute_sanitizer() -> str | None:
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and os.path.exists(os.path.join(home, "bin", "compute-sanitizer")):
            return os.path.join(home, "bin", "compute-sanitizer")
    return None


_SANITIZED_SCRIPT = textwrap.dedent("""
    import os, sys
    sys.path[:0] = [{package_root!r}, {tests!r}]  # the lidvae_ext this test imported, and the test helpers
    import torch
    from lidvae_ext import ops
    from icnn_inputs import sample_inputs, sample_cotangents
    for mode in ("1", "0"):
        os.environ["LIDVAE_CUDA_FUSED"] = mode
        for dtype in (torch.float32, torch.float64):
            for activation in ("leaky_relu", "softplus"):
                for batch, dim, in_dim, layers in ((37, 5, 5, 3), (20, 3, 1, 1)):
                    y, A, b, W, w_out = sample_inputs(batch, dim, 16, layers, dtype=dtype, device="cuda")
                    y = y[:, :in_dim].contiguous()
                    u, v = sample_cotangents(batch, dim, dtype=dtype, device="cuda")
                    fwd = torch.ops.lidvae_ext.icnn_forward(y, A, b, W, w_out, 0.3, activation, 0.2)
                    torch.ops.lidvae_ext.icnn_backward(u, v, y, A, W, w_out, *fwd[1:], 0.3, activation, 0.2, True)
    torch.cuda.synchronize()
    print("sanitized run done")
""")


@pytest.mark.slow
@pytest.mark.parametrize("tool", ["memcheck", "racecheck", "synccheck", "initcheck"])
def test_compute_sanitizer(tool, tmp_path):
    """memcheck: out-of-bounds/misaligned accesses; racecheck: shared-memory hazards; synccheck: invalid
    __syncwarp/__syncthreads use; initcheck: reads of uninitialized global memory."""
    sanitizer = _compute_sanitizer()
    if sanitizer is None:
        pytest.skip("compute-sanitizer not found")
    script = tmp_path / "sanitized.py"
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(lidvae_ext.__file__)))
    script.write_text(_SANITIZED_SCRIPT.format(package_root=package_root, tests=os.path.join(ROOT, "tests")))
    cmd = [sanitizer, f"--tool={tool}", "--error-exitcode=86"]
    if tool in ("racecheck", "initcheck"):
        cmd += ["--kernel-name", "kns=icnn"]  # judge our kernels only, not cuBLAS / torch internals
    cmd += [sys.executable, str(script)]
    env = dict(os.environ, PYTORCH_NO_CUDA_MEMORY_CACHING="1")  # exact allocation bounds for memcheck
    # The child imports the same lidvae_ext as this process (an installed package or an
    # in-place build: package_root comes first on its sys.path), whatever its cwd.
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env, cwd=tmp_path)
    output = proc.stdout[-6000:] + proc.stderr[-6000:]
    assert proc.returncode == 0 and "sanitized run done" in proc.stdout, output
    assert "ERROR SUMMARY: 0 errors" in proc.stdout + proc.stderr, output
