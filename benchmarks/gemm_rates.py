"""Single-GEMM rates (GFLOP/s) of the GEMM libraries available to the CPU path.

For each benchmark shape ``m×k×n`` (C[m, n] = A[m, k] B[k, n], row-major) the
libraries are timed *interleaved* (one call of each per round, medians):

- ``aten``      ``torch.mm`` (torch's MKL / its own BLAS),
- ``onednn``    ``torch._C._nn.mkldnn_linear`` (oneDNN through torch, if built),
- ``openblas``  ``scipy_cblas_sgemm`` of the ``scipy-openblas32`` package through
  ctypes, OpenBLAS's own threads (``openblas_set_num_threads(T)``),
- ``openblas-split``  the same library single-threaded, the rows of C split over
  T Python threads (ctypes drops the GIL): the scheme lidvae_ext's
  ``openblas`` backend uses inside ``at::parallel_for``,
- ``lidvae``    the extension's own GEMM entry (``lidvae_ext._extension.gemm``, the ``_gemm`` operator) with the
  backend chosen by ``LIDVAE_CPU_GEMM``, when the build has it,
- ``xla``       ``jax.jit(jnp.dot)`` when JAX is installed.

The OpenBLAS kernel depends on ``OPENBLAS_CORETYPE`` (read when the library is
loaded): the script prints it; run it once with and once without::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/gemm_rates.py
    python benchmarks/gemm_rates.py
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import threading
import time
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import describe_machine  # noqa: E402

# (m, k, n): the C4 products (B=256, d=784, H=1024, L=3, M=3L*H+1=3073) and the C2 ones
SHAPES = [(256, 784, 3073), (256, 1024, 1024), (256, 3073, 784), (3073, 256, 784),
          (1024, 512, 1025), (1024, 64, 1537)]

_ROW_MAJOR, _NO_TRANS = 101, 111


def _load_openblas():
    try:
        import scipy_openblas32
    except ImportError:
        return None
    path = os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(fullname=True))
    lib = ctypes.CDLL(path)
    lib.scipy_openblas_get_corename.restype = ctypes.c_char_p
    lib.scipy_openblas_get_config.restype = ctypes.c_char_p
    return lib


def _openblas_gemm(lib, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
    m, k = a.shape
    n = b.shape[1]
    f = ctypes.c_float
    lib.scipy_cblas_sgemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, m, n, k, f(1.0),
                          a.ctypes.data_as(ctypes.c_void_p), a.strides[0] // 4,
                          b.ctypes.data_as(ctypes.c_void_p), b.strides[0] // 4, f(0.0),
                          c.ctypes.data_as(ctypes.c_void_p), c.strides[0] // 4)


def _split_rows(lib, a, b, c, threads: int) -> None:
    m = a.shape[0]
    bounds = np.linspace(0, m, threads + 1).astype(int)
    workers = [threading.Thread(target=_openblas_gemm, args=(lib, a[lo:hi], b, c[lo:hi]))
               for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def callables(shape, threads: int, lib) -> dict[str, Callable[[], object]]:
    m, k, n = shape
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
    c = torch.empty(m, n)
    fns: dict[str, Callable[[], object]] = {"aten": lambda: torch.mm(a, b, out=c)}
    bt = b.t().contiguous()
    if torch.backends.mkldnn.is_available():
        a_mk = a.to_mkldnn()  # oneDNN's own layout; the conversion is not timed
        fns["onednn"] = lambda: torch._C._nn.mkldnn_linear(a_mk, bt)  # weight (n, k)
    if lib is not None:
        an, bn, cn = a.numpy(), b.numpy(), np.empty((m, n), np.float32)
        cn2 = np.empty((m, n), np.float32)

        def ob():
            lib.scipy_openblas_set_num_threads(threads)
            _openblas_gemm(lib, an, bn, cn)

        def ob_split():
            lib.scipy_openblas_set_num_threads(1)
            _split_rows(lib, an, bn, cn2, threads)

        fns["openblas"], fns["openblas-split"] = ob, ob_split
    try:
        from lidvae_ext import _extension

        if _extension.loaded():
            fns["lidvae"] = lambda: _extension.gemm(a, b, c)
    except ImportError:
        pass
    try:
        import jax
        import jax.numpy as jnp

        ja, jb = jnp.asarray(a.numpy()), jnp.asarray(b.numpy())
        dot = jax.jit(jnp.dot)
        dot(ja, jb).block_until_ready()
        fns["xla"] = lambda: dot(ja, jb).block_until_ready()
    except ImportError:
        pass
    return fns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timer", default="wall", choices=["wall", "process"],
                        help="wall clock, or this process's CPU time (robust to other load; with --threads 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lib = _load_openblas()
    print(describe_machine())
    if lib is not None:
        print(f"# scipy-openblas32: core {lib.scipy_openblas_get_corename().decode()}, "
              f"config {lib.scipy_openblas_get_config().decode()}")
    clock = time.process_time if args.timer == "process" else time.perf_counter
    rows = []
    for shape in SHAPES:
        fns = callables(shape, args.threads, lib)
        for fn in fns.values():
            fn()
        times: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(args.reps):
            for name, fn in fns.items():
                t0 = clock()
                fn()
                times[name].append(clock() - t0)
        flops = 2.0 * shape[0] * shape[1] * shape[2]
        rows.append((shape, {k: flops / statistics.median(v) / 1e9 for k, v in times.items()}))
    names = list(rows[0][1])
    print("| m×k×n | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for shape, rates in rows:
        print(f"| {shape[0]}×{shape[1]}×{shape[2]} | " +
              " | ".join(f"{rates.get(n, float('nan')):.0f}" for n in names) + " |")
    print(f"GFLOP/s, float32, {args.threads} threads, medians of {args.reps} interleaved calls, "
          f"timer={args.timer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
