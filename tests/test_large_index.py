"""Sizes past 2**31 elements: the CPU map path on a stacked A of (L*H+1)*d > 2**31 entries.

``A`` is (32769, 65664) float32: 2 151 743 616 entries (8.0 GiB), so its output row A_L
(row 32768, which starts at element 2 151 677 952) lies wholly past 2**31, and every
product with A (the input products ``y A^T`` and the map ``delta A``) must index it with
64-bit offsets — in the kernels' GEMM wrapper (``csrc/cpu/gemm.cpp``, whose per-thread
blocks of ``A^T`` start past 2**31 at 64 threads) and in the BLAS behind it, whose
arguments are 32-bit ints (scipy-openblas32). The result is compared, entry by entry,
with the same formulas evaluated in float64 on row blocks of A.

The slow test needs about 9 GiB of free memory and is skipped (saying so) when
``MemAvailable`` is below 12 GiB. The small test checks the float64 formulas the slow
test trusts against ``reference.py``.
"""

from __future__ import annotations

import pytest
import torch

import lidvae_ext
from lidvae_ext import reference

HIDDEN = 32768
DIM = 65664  # with 64 threads the last GEMM block of A^T starts at 32736 * DIM > 2**31
STACKED = HIDDEN + 1  # L = 1
BATCH = 2
ALPHA = 0.5
SLOPE = 0.2
NEEDED_GIB = 12.0


def _lrelu(t: torch.Tensor, slope: float) -> torch.Tensor:
    return torch.where(t > 0, t, slope * t)


def _dlrelu(t: torch.Tensor, slope: float) -> torch.Tensor:
    return torch.where(t > 0, torch.ones_like(t), torch.full_like(t, slope))


def one_layer_map(y: torch.Tensor, A: torch.Tensor, b: torch.Tensor, w_out: torch.Tensor, alpha: float,
                  slope: float, rows: int = 1024) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(psi, grad, a_out)`` of a one-layer leaky-ReLU ICNN in float64, reading A ``rows`` rows at a time.

    DESIGN.md §2-3 with L = 1: a_0 = A_0 y + b_0, z_0 = lrelu(a_0)^2, a_1 = w_out . z_0 + A_1 y + b_1,
    psi = lrelu(a_1) + alpha/2 |y|^2, delta_1 = lrelu'(a_1),
    delta_0 = 2 lrelu(a_0) lrelu'(a_0) w_out delta_1, grad = A^T [delta_0; delta_1] + alpha y.
    """
    y64 = y.double()
    pre = torch.cat([y64 @ A[r:r + rows].double().t() for r in range(0, A.shape[0], rows)], dim=1) + b.double()
    hidden = A.shape[0] - 1
    a0, a_out = pre[:, :hidden], pre[:, hidden]
    a_out = a_out + _lrelu(a0, slope).square() @ w_out.double()
    psi = _lrelu(a_out, slope) + 0.5 * alpha * y64.square().sum(1)
    delta_out = _dlrelu(a_out, slope)
    delta0 = 2 * _lrelu(a0, slope) * _dlrelu(a0, slope) * w_out.double() * delta_out[:, None]
    delta = torch.cat([delta0, delta_out[:, None]], dim=1)
    grad = alpha * y64
    for r in range(0, A.shape[0], rows):
        grad = grad + delta[:, r:r + rows] @ A[r:r + rows].double()
    return psi, grad, a_out


def test_one_layer_formulas_match_reference():
    """The float64 formulas of the slow test agree with the autograd reference (small shape)."""
    gen = torch.Generator().manual_seed(0)
    H, d, B = 37, 11, 5
    y = torch.randn(B, d, generator=gen, dtype=torch.float64)
    A = torch.randn(H + 1, d, generator=gen, dtype=torch.float64)
    b = torch.randn(H + 1, generator=gen, dtype=torch.float64)
    w_out = torch.rand(H, generator=gen, dtype=torch.float64)
    W = torch.empty(0, H, H, dtype=torch.float64)
    psi_ref, grad_ref = reference.icnn_potential_and_map(y, A, b, W, w_out, ALPHA, "leaky_relu", SLOPE)
    psi, grad, _ = one_layer_map(y, A, b, w_out, ALPHA, SLOPE, rows=4)  # several row blocks
    torch.testing.assert_close(psi, psi_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-12, atol=1e-12)


def _available_gib() -> float:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def _backends() -> list[str]:
    info = lidvae_ext.build_info()
    return list(info.get("cpu_gemm_backends", ())) if info else []


@pytest.mark.slow
def test_map_past_2_to_31_elements(monkeypatch):
    """The fused map on A with (L*H+1)*d > 2**31 entries equals the float64 formulas, for every
    GEMM backend, single-threaded and split over 64 threads."""
    if not _backends():
        pytest.skip("lidvae_ext._C is not built")
    if _available_gib() < NEEDED_GIB:
        pytest.skip(f"needs {NEEDED_GIB:g} GiB of available memory (A alone is 8 GiB), "
                    f"{_available_gib():.1f} GiB available")
    assert STACKED * DIM > 2**31 and HIDDEN * DIM >= 2**31  # row A_L starts past 2**31
    gen = torch.Generator().manual_seed(20240531)
    y = torch.randn(BATCH, DIM, generator=gen)
    A = torch.empty(STACKED, DIM)
    for r in range(0, STACKED, 1024):  # in blocks: no 8 GiB temporaries
        A[r:r + 1024].normal_(0.0, DIM**-0.5, generator=gen)
    b = torch.randn(STACKED, generator=gen) * 0.5
    w_out = torch.rand(HIDDEN, generator=gen) * (2.0 / HIDDEN) + 1e-3
    W = torch.empty(0, HIDDEN, HIDDEN)
    psi_ref, grad_ref, a_out_ref = one_layer_map(y, A, b, w_out, ALPHA, SLOPE)
    threads = torch.get_num_threads()
    runs = [(backend, n) for backend in _backends() for n in (1, 64)]
    try:
        for backend, n in runs:
            monkeypatch.setenv("LIDVAE_CPU_GEMM", backend)
            torch.set_num_threads(n)
            with torch.no_grad():
                psi, grad, pre, _ = lidvae_ext.ops.icnn_forward(y, A, b, W, w_out, ALPHA, "leaky_relu", SLOPE)
            where = f"LIDVAE_CPU_GEMM={backend}, {n} thread(s)"
            # a_out = pre[:, -1] holds A_L y: row A_L is the part of A past 2**31
            torch.testing.assert_close(pre[:, -1].double(), a_out_ref, rtol=1e-4, atol=1e-4, msg=lambda m: f"{where}: a_out: {m}")
            torch.testing.assert_close(psi.double(), psi_ref, rtol=1e-4, atol=1e-4, msg=lambda m: f"{where}: psi: {m}")
            torch.testing.assert_close(grad.double(), grad_ref, rtol=1e-4, atol=1e-4, msg=lambda m: f"{where}: grad: {m}")
    finally:
        torch.set_num_threads(threads)
