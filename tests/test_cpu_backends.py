"""The CPU GEMM backends (LIDVAE_CPU_GEMM) and row-pass ISAs (LIDVAE_CPU_ISA).

Every backend the build has and every ISA the CPU runs computes the fused ops to the
reference tolerances (a compact grid covering every CPU code path: the row-wise d <= 8
path, the GEMM path, zero-padded input, L = 1 and deeper, both activations); the GEMM
entry matches torch.mm on every operand layout the kernels pass; an OpenBLAS that does
not load means ATen GEMMs with a one-line notice, and an impossible request is an error.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import lidvae_ext
from lidvae_ext import ops, reference
from icnn_inputs import assert_fused_matches_reference, kink_free_seed, sample_cotangents, sample_inputs

pytestmark = pytest.mark.skipif(not ops.fused_available("cpu"), reason="lidvae_ext._C not built")

INFO = lidvae_ext.build_info() if ops.fused_available("cpu") else {}
BACKENDS = list(INFO.get("cpu_gemm_backends", ("aten",)))
ISAS = list(INFO.get("cpu_isas", ("baseline",)))
ROOT = Path(__file__).resolve().parents[1]

# (batch, dim, in_dim, hidden, layers, activation, alpha): every CPU code path once
CASES = [
    (37, 2, 2, 16, 3, "leaky_relu", 0.3),    # row-wise input products (d <= 8)
    (19, 5, 5, 24, 2, "softplus", 0.0),      # row-wise, curved backward
    (33, 40, 40, 48, 3, "leaky_relu", 0.0),  # GEMMs, big enough to split over threads
    (21, 30, 30, 20, 2, "softplus", 0.3),    # GEMMs, curved backward
    (17, 24, 6, 16, 2, "leaky_relu", 0.3),   # zero-padded input (K < d), GEMM path
    (9, 12, 12, 8, 1, "softplus", 0.2),      # a single hidden layer
]


def _check_ops(case, dtype):
    batch, dim, in_dim, hidden, layers, activation, alpha = case
    seed = kink_free_seed(batch, dim, hidden, layers, activation, dtype, in_dim=in_dim)
    inputs64 = sample_inputs(batch, dim, hidden, layers, seed=seed)
    inputs64[0] = inputs64[0][:, :in_dim].contiguous()
    u, v = sample_cotangents(batch, dim, seed=seed)
    assert_fused_matches_reference(inputs64, u, v, (alpha, activation, 0.2), dtype, f"case={case} seed={seed}")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("gemm", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ops_match_reference_on_every_variant(gemm, isa, dtype, monkeypatch):
    monkeypatch.setenv("LIDVAE_CPU_GEMM", gemm)
    monkeypatch.setenv("LIDVAE_CPU_ISA", isa)
    assert lidvae_ext.build_info()["cpu_gemm"] == gemm and lidvae_ext.build_info()["cpu_isa"] == isa
    for case in CASES:
        _check_ops(case, dtype)


def _operand(rows, cols, layout, dtype, gen):
    """A (rows, cols) view: contiguous, transposed storage, or a column slice of a wider matrix."""
    if layout == "n":
        return torch.randn(rows, cols, generator=gen, dtype=dtype)
    if layout == "t":
        return torch.randn(cols, rows, generator=gen, dtype=dtype).t()
    return torch.randn(rows, cols + 5, generator=gen, dtype=dtype)[:, 2:2 + cols]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("m,k,n", [(96, 80, 72), (3, 1, 5), (1, 7, 1), (64, 0, 9), (0, 4, 3), (130, 9, 33)])
def test_gemm_matches_mm(backend, dtype, m, k, n):
    from lidvae_ext._extension import gemm

    gen = torch.Generator().manual_seed(m * 1000 + k * 10 + n)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for la, lb, lo in itertools.product("nts", "nts", "ns"):
        a, b = _operand(m, k, la, dtype, gen), _operand(k, n, lb, dtype, gen)
        base = _operand(m, n, "n", dtype, gen)
        want = a @ b
        scale = max(want.abs().max().item() if want.numel() else 1.0, 1.0)
        out = _operand(m, n, lo, dtype, gen)
        gemm(a, b, out, backend)
        assert (out - want).abs().max().item() <= tol * scale if out.numel() else True, (la, lb, lo)
        out = _operand(m, n, lo, dtype, gen)  # out = 0.5 * base + 2 * a @ b
        gemm(a, b, out, backend, alpha=2.0, base=base, beta=0.5)
        assert torch.allclose(out, 0.5 * base + 2 * want, rtol=0, atol=4 * tol * scale), (la, lb, lo)
        acc = base.clone()  # accumulate in place: acc += a @ b
        gemm(a, b, acc, backend, base=acc, beta=1.0)
        assert torch.allclose(acc, base + want, rtol=0, atol=2 * tol * scale), (la, lb, lo)


def test_bad_requests_are_errors(monkeypatch):
    x = sample_inputs(4, 3, 5, 2, seed=1)
    monkeypatch.setenv("LIDVAE_CPU_GEMM", "mkl")
    with pytest.raises(RuntimeError, match="LIDVAE_CPU_GEMM must be auto, aten or openblas, got 'mkl'"):
        ops.icnn_potential_and_map(*sample_inputs(4, 12, 5, 2, seed=1), 0.0, "leaky_relu", 0.2)
    monkeypatch.setenv("LIDVAE_CPU_GEMM", "aten")
    monkeypatch.setenv("LIDVAE_CPU_ISA", "sse9")
    with pytest.raises(RuntimeError, match="LIDVAE_CPU_ISA must be auto, baseline, avx2 or avx512, got 'sse9'"):
        ops.icnn_potential_and_map(*x, 0.0, "leaky_relu", 0.2)
    missing = [i for i in ("avx2", "avx512") if i not in ISAS]
    if missing:  # a CPU without AVX-512 (or AVX2): asking for it is an error, not a crash
        monkeypatch.setenv("LIDVAE_CPU_ISA", missing[-1])
        with pytest.raises(RuntimeError, match="does not support it"):
            ops.icnn_potential_and_map(*x, 0.0, "leaky_relu", 0.2)


def test_build_info_reports_the_cpu_path(monkeypatch):
    assert INFO["cpu_gemm"] in BACKENDS and INFO["cpu_isa"] == ISAS[-1]
    assert ISAS[0] == "baseline"
    monkeypatch.setenv("LIDVAE_CPU_GEMM", "aten")
    monkeypatch.setenv("LIDVAE_CPU_ISA", "baseline")
    info = lidvae_ext.build_info()
    assert (info["cpu_gemm"], info["cpu_isa"]) == ("aten", "baseline")
    if "openblas" in BACKENDS:
        assert info["openblas"].startswith("OpenBLAS") and "core" in info["openblas"]


def test_auto_gemm_follows_the_cpu_vendor():
    """auto: ATen (torch's MKL) on Intel CPUs, OpenBLAS elsewhere when it loads (docs/benchmarks.md)."""
    if "openblas" not in BACKENDS:
        pytest.skip("OpenBLAS does not load here: auto is ATen everywhere")
    assert INFO["cpu_vendor"] in ("intel", "other")
    assert INFO["cpu_gemm"] == ("aten" if INFO["cpu_vendor"] == "intel" else "openblas")


def test_without_openblas_ops_fall_back_to_aten(tmp_path):
    """An OpenBLAS that does not load: ATen GEMMs, a one-line notice, same results."""
    script = textwrap.dedent("""
        import sys, torch, lidvae_ext
        from lidvae_ext import ops, reference
        sys.path.insert(0, sys.argv[1])
        from icnn_inputs import sample_inputs
        info = lidvae_ext.build_info()
        assert info["cpu_gemm"] == "aten" and info["cpu_gemm_backends"] == ("aten",), info
        assert "not found" in info["openblas"], info
        x = sample_inputs(16, 20, 12, 2, seed=3)
        got = ops.icnn_potential_and_map(*x, 0.0, "leaky_relu", 0.2)[1]
        want = reference.icnn_potential_and_map(*x, 0.0, "leaky_relu", 0.2)[1]
        assert (got - want).abs().max().item() < 1e-10
        import os
        os.environ["LIDVAE_CPU_GEMM"] = "openblas"
        try:
            ops.icnn_potential_and_map(*x, 0.0, "leaky_relu", 0.2)
        except RuntimeError as exc:
            assert "LIDVAE_CPU_GEMM=openblas but scipy-openblas32 not found" in str(exc), exc
        else:
            raise AssertionError("an explicit openblas request without OpenBLAS must fail")
        print("OK")
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("LIDVAE_CPU_GEMM", "LIDVAE_CPU_ISA")}
    env["LIDVAE_OPENBLAS_LIB"] = str(tmp_path / "libscipy_openblas.so")  # not there
    # the lidvae_ext this test process imports (installed, or an in-place build), not the source tree
    package_parent = Path(lidvae_ext.__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(package_parent), env.get("PYTHONPATH", "")])
    res = subprocess.run([sys.executable, "-c", script, str(ROOT / "tests")], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("OK")
    notices = [line for line in res.stderr.splitlines() if line.startswith("lidvae_ext: CPU GEMMs use ATen")]
    assert len(notices) == 1, res.stderr
