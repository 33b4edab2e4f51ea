"""Print the benchmark table: fused operators vs the autograd reference.

For each configuration (C1–C4, see ``cases.py``) and mode — ``map``
(inference: ∇ψ only, no graph) and ``train`` (map + loss + backward to the
input and every parameter) — the fused path, JAX jit of the same function, the
official-style eager code (``baselines.py``) and the autograd reference are
timed *interleaved* (one call of each per round) after warm-up, on the same
weights, every baseline checked against the fused output first; the table
reports medians and the ratios other / fused measured in the same run
(``--schedule blocks`` times each column in its own back-to-back block instead). The
header names the CPU, the GEMM library and kernel the fused path uses, and the
OpenBLAS environment. ``--memory`` adds the peak CPU memory of one training step of each,
from the profiler's allocation events.

Usage::

    python benchmarks/run.py                    # all cases, CPU, float32
    python benchmarks/run.py --cases C1 C3 --reps 30 --threads 2
    python benchmarks/run.py --device cuda --memory --json rows.json   # + fused-generic, C1L, C3L
    # OpenBLAS picks its kernel from the CPU unless OPENBLAS_CORETYPE says otherwise:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/run.py --threads 2 --reps 21 --floor
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

import lidvae_ext

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cases import CASES, DEFAULT_CASES, Case, make_workload  # noqa: E402
from machine import cpu_model, describe_machine  # noqa: E402

BACKENDS = ("fused", "reference")
COMPILED = "compiled"  # torch.compile of the torch.func formulation (--compile)
JAX = "jax"  # jax.jit of the same function (benchmarks/baselines.py; "not installed" without JAX)
EAGER = "eager"  # the official LIDVAE way of writing it (benchmarks/baselines.py)
ATEN = "fused-aten"  # the fused path on ATen GEMMs + baseline row passes + F.softplus (--aten-column)
SOFTPLUS = "fused-F.softplus"  # the fused path with F.softplus weights (--softplus-column)
GENERIC = "fused-generic"  # CUDA: the cuBLAS + elementwise-kernel path (LIDVAE_CUDA_FUSED=0)
FP32_PEAK_TFLOPS = 67.0  # H100/H200 SXM CUDA-core FP32 peak (docs/cuda.md), for the throughput line


def _with_env(fn, **env):
    """``fn`` run with the environment variables ``env`` set (the ops read them per call)."""

    def run():
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            return fn()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    return run


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _time_call(fn, device: str, clock) -> float:
    if device == "cuda":
        # wall clock between device synchronizations: the same for torch and for JAX
        # (which runs on its own stream, invisible to torch's CUDA events); includes launches
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t0
    t0 = clock()
    fn()
    return clock() - t0


def time_blocks(fns: dict, reps: int, warmup: int, device: str,
                clock=time.perf_counter) -> dict[str, list[float]]:
    """Seconds per call for each callable, each timed in its own back-to-back block.

    Each block warms up its own callable first; a library whose thread pool suffers from
    sharing the cores with another's (interleaving) shows its best case here.
    """
    times: dict[str, list[float]] = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        _sync(device)
        times[name] = [_time_call(fn, device, clock) for _ in range(reps)]
    return times


def time_interleaved(fns: dict, reps: int, warmup: int, device: str,
                     clock=time.perf_counter) -> dict[str, list[float]]:
    """Seconds per call for each callable, measured round-robin."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(_time_call(fn, device, clock))
    return times


def peak_cpu_bytes(fn) -> int:
    """Peak bytes allocated by ``fn`` above what was live before it (profiler events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
        del out
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]"
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def peak_cuda_bytes(fn) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn()
    del out
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def train_flops(case: Case) -> float:
    """FLOPs of the GEMMs of one fused leaky-ReLU BrenierMap training step (d > 8, no padding).

    Forward: the stacked input product and the map product (2·B·d·M each), the L−1 W products
    and the L−1 reverse W^T products (2·B·H² each). Backward: the tangent A v (2·B·d·L·H),
    W products of the tangent and dW (2·(L−1)·2·B·H²), dA (2·B·d·M) plus r_0's dA_0 and dy
    (2·2·B·H·d).
    """
    B, d, H, L = case.batch, case.dim, case.hidden, case.layers
    M = L * H + 1
    forward = 2 * 2 * B * d * M + 2 * (L - 1) * 2 * B * H * H
    backward = 2 * B * d * L * H + 2 * (L - 1) * 2 * B * H * H + 2 * B * d * M + 2 * 2 * B * H * d
    return float(forward + backward)


def doc_train_flops(case: Case) -> float:
    """FLOPs of one leaky-ReLU BrenierMap training step as docs/cuda.md counts them (map cases).

    Per sample, in MACs, with M = L·H + 1 and K = d (no padding): forward M·K + 2(L−1)H² + H + M·d,
    backward 2M·d + 2(L−1)H² + 2H + 2H·K; 1 MAC = 2 FLOP.
    """
    d, H, L = case.dim, case.hidden, case.layers
    M = L * H + 1
    forward = M * d + 2 * (L - 1) * H * H + H + M * d
    backward = 2 * M * d + 2 * (L - 1) * H * H + 2 * H + 2 * H * d
    return 2.0 * case.batch * (forward + backward)


def append_json_rows(path: str, rows: list[dict]) -> None:
    """Append ``rows`` to the JSON list in ``path`` (created when missing), atomically."""
    import json

    existing = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            existing = json.load(f)
        if not isinstance(existing, list):
            raise SystemExit(f"--json {path}: the file holds no JSON list; remove it or pick another path")
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(existing + rows, f, indent=1)
    os.replace(tmp, path)


def best_gemm_rate(case: Case, dtype: torch.dtype, reps: int) -> tuple[float, str]:
    """Best median GFLOP/s over the case's large GEMM shapes and the GEMM backends the build has."""
    from lidvae_ext._extension import gemm

    B, d, H, L = case.batch, case.dim, case.hidden, case.layers
    M = L * H + 1
    best, label = 0.0, ""
    for backend in lidvae_ext.build_info().get("cpu_gemm_backends", ("aten",)):
        for m, k, n in ((B, d, M), (B, H, H), (B, M, d)):
            a, b, c = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype), torch.empty(m, n, dtype=dtype)
            gemm(a, b, c, backend)
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                gemm(a, b, c, backend)
                times.append(time.perf_counter() - t0)
            rate = 2.0 * m * k * n / statistics.median(times) / 1e9
            if rate > best:
                best, label = rate, f"{backend} {m}×{k}×{n}"
    return best, label


def _checked(name: str, fn, expected, tol: float):
    """``fn`` if its output matches ``expected`` (relative to its largest entry), else a reason."""
    from baselines import as_numpy

    got, want = as_numpy(fn()), as_numpy(expected)
    err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
    return (fn, err) if err <= tol else (None, f"{name} mismatch (rel err {err:.1e})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=None, choices=list(CASES),
                        help="default: C1–C4 on the CPU; C1–C4 plus the large-batch C1L, C3L on CUDA")
    parser.add_argument("--modes", nargs="+", default=["map", "train"], choices=["map", "train"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--reps", type=int, default=20, help="timed repetitions per backend (default 20)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--schedule", default="interleaved", choices=["interleaved", "blocks"],
                        help="interleaved (default): one call of each column per round; blocks: each "
                             "column timed in its own back-to-back block (no thread-pool handover "
                             "between libraries)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--timer", default="wall", choices=["wall", "process"],
                        help="CPU only: wall clock (default) or this process's CPU time (robust to other "
                             "load on the machine; equals wall time only with --threads 1)")
    parser.add_argument("--memory", action="store_true", help="also report peak memory of a training step")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile of the torch.func formulation (compiles first)")
    parser.add_argument("--no-jax", action="store_true", help="leave out the JAX column")
    parser.add_argument("--no-eager", action="store_true", help="leave out the official-style eager column")
    parser.add_argument("--aten-column", action="store_true",
                        help="CPU: also time the fused path with ATen GEMMs, baseline row passes and "
                             "the F.softplus weight parametrization (LIDVAE_CPU_GEMM=aten "
                             "LIDVAE_CPU_ISA=baseline LIDVAE_CPU_SOFTPLUS=aten, the CPU path before #10)")
    parser.add_argument("--softplus-column", action="store_true",
                        help="CPU: also time the fused path with the weight parametrization by "
                             "F.softplus + autograd instead of the fused pass (LIDVAE_CPU_SOFTPLUS=aten)")
    parser.add_argument("--floor", action="store_true",
                        help="CPU: the GEMM FLOP floor of C4's training step from the best single-GEMM "
                             "rate measured in this run")
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="append one row per timing to the JSON list in PATH, written after every "
                             "table row: "
                             '{"case", "mode", "impl", "dtype", "batch", "ms"} (+ "peak_mb" with --memory)')
    parser.add_argument("--no-generic", action="store_true",
                        help="CUDA: leave out the fused-generic column (LIDVAE_CUDA_FUSED=0)")
    args = parser.parse_args(argv)
    if args.cases is None:
        args.cases = list(DEFAULT_CASES[args.device])
    # JAX on a GPU would otherwise reserve 75 % of its memory at import, starving torch
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    dtype = getattr(torch, args.dtype)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else cpu_model()
    print(f"# lidvae_ext benchmark: device={args.device} ({device_name}), dtype={args.dtype}, "
          f"threads={torch.get_num_threads()}, torch={torch.__version__}, reps={args.reps} {'in separate blocks' if args.schedule == 'blocks' else 'interleaved'}, "
          f"warmup={args.warmup}, timer={args.timer}")
    print(describe_machine())
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    extra = [GENERIC] if args.device == "cuda" and not args.no_generic else []
    extra += [n for n, off in ((JAX, args.no_jax), (EAGER, args.no_eager)) if not off]
    extra += [COMPILED] if args.compile else []
    extra += [ATEN] if args.aten_column and args.device == "cpu" else []
    extra += [SOFTPLUS] if args.softplus_column and args.device == "cpu" else []
    header = "| case | mode | fused (ms) | " + "".join(f"{n} (ms) | " for n in (*extra, "reference"))
    header += "".join(f"fused vs {n} | " for n in (*extra, "reference"))
    if args.memory:
        header += "peak mem fused / ref (MB) |"
    print(header.rstrip())
    print("|" + "---|" * (header.count("|") - 1))
    notes: list[str] = []
    if args.json:
        append_json_rows(args.json, [])  # a bad file fails now, before any timing
    for name in args.cases:
        work = make_workload(CASES[name], args.device, dtype)
        others: dict[str, dict] = {}
        jax_variants: list[str] = []
        if JAX in extra:
            try:
                from baselines import JAX_FORMULATIONS, jax_callables

                # every formulation is timed; the JAX column is the fastest (a note names it)
                for form in JAX_FORMULATIONS:
                    others[f"{JAX}-{form}"] = jax_callables(work.module, work.inputs, work.case.kind, work.target,
                                                            form)
                    jax_variants.append(f"{JAX}-{form}")
                others[JAX] = {}
            except ImportError:
                others[JAX] = {}  # column says "not installed"
        if EAGER in extra:
            from baselines import eager_callables

            others[EAGER] = eager_callables(work.module, work.inputs, work.loss)
        if GENERIC in extra:
            others[GENERIC] = {m: _with_env(work.fn("fused", m), LIDVAE_CUDA_FUSED="0") for m in args.modes}
        if ATEN in extra:
            others[ATEN] = {m: _with_env(work.fn("fused", m), LIDVAE_CPU_GEMM="aten", LIDVAE_CPU_ISA="baseline",
                                         LIDVAE_CPU_SOFTPLUS="aten")
                            for m in args.modes}
        if SOFTPLUS in extra:
            others[SOFTPLUS] = {m: _with_env(work.fn("fused", m), LIDVAE_CPU_SOFTPLUS="aten") for m in args.modes}
        if COMPILED in extra:
            from func_baseline import compiled_callables

            others[COMPILED] = compiled_callables(work.module, work.inputs, work.loss)
        for mode in args.modes:
            fns = {backend: work.fn(backend, mode) for backend in BACKENDS}
            expected = fns["fused"]()
            cells: dict[str, str] = {}
            for col in [*(c for c in extra if c != JAX or not jax_variants), *jax_variants]:
                if mode not in others[col]:
                    cells[col] = "not installed"
                    continue
                fn, err = _checked(col, others[col][mode], expected, tol)
                if fn is None:
                    cells[col] = err
                else:
                    fns[col] = fn
            clock = time.process_time if args.timer == "process" else time.perf_counter
            timer = time_blocks if args.schedule == "blocks" else time_interleaved
            times = timer(fns, args.reps, args.warmup, args.device, clock)
            med = {k: statistics.median(v) for k, v in times.items()}
            timed = {v: med[v] for v in jax_variants if v in med}
            if timed:  # the JAX column: the fastest formulation
                best = min(timed, key=timed.get)
                med[JAX] = timed[best]
                refused = [f"{v.removeprefix(JAX + '-')} refused ({cells[v]})" for v in jax_variants if v in cells]
                notes.append(f"{name} {mode}: JAX column = {best.removeprefix(JAX + '-')} formulation; "
                             + ", ".join([*(f"{v.removeprefix(JAX + '-')} {t * 1e3:.2f} ms" for v, t in timed.items()),
                                          *refused]))
            elif jax_variants:
                cells[JAX] = cells.get(jax_variants[0], "not installed")
            cols = (*extra, "reference")
            row = f"| {name} | {mode} | {med['fused'] * 1e3:.2f} | "
            row += "".join(f"{med[c] * 1e3:.2f} | " if c in med else f"{cells[c]} | " for c in cols)
            row += "".join(f"{med[c] / med['fused']:.2f}× | " if c in med else "– | " for c in cols)
            mem: dict[str, float] = {}
            if args.memory:
                if mode == "train":
                    peak = peak_cuda_bytes if args.device == "cuda" else peak_cpu_bytes
                    mem = {k: peak(fns[k]) / 2**20 for k in BACKENDS}
                    row += f"{mem['fused']:.1f} / {mem['reference']:.1f} ({mem['fused'] / mem['reference']:.2f}×) |"
                else:
                    row += " |"
            print(row.rstrip(), flush=True)
            rows: list[dict] = []
            for impl, t in med.items():
                entry = {"case": name, "mode": mode, "impl": impl, "dtype": args.dtype,
                         "batch": work.case.batch, "ms": t * 1e3, "device": args.device}
                if impl in mem:
                    entry["peak_mb"] = mem[impl]
                rows.append(entry)
            if args.json:  # after every row of the table: a run killed by a time limit keeps what it timed
                append_json_rows(args.json, rows)
            if args.device == "cuda" and mode == "train" and work.case.kind == "map":
                flops = doc_train_flops(work.case)
                tflops = flops / med["fused"] / 1e12
                notes.append(f"{name} train throughput (docs/cuda.md FLOP count, {flops / 1e9:.2f} GFLOP/step): "
                             f"{tflops:.1f} TFLOP/s = {100 * tflops / FP32_PEAK_TFLOPS:.0f} % of the "
                             f"{FP32_PEAK_TFLOPS:g} TFLOP/s FP32 CUDA-core peak")
            if (args.floor and args.device == "cpu" and mode == "train" and work.case.kind == "map"
                    and work.case.dim > 8):
                rate, label = best_gemm_rate(work.case, dtype, max(5, args.reps // 2))
                floor = train_flops(work.case) / (rate * 1e9)
                notes.append(f"{name} train GEMM floor: {train_flops(work.case) / 1e9:.2f} GFLOP at the best "
                             f"single-GEMM rate {rate:.0f} GFLOP/s ({label}) = {floor * 1e3:.1f} ms; "
                             f"fused {med['fused'] * 1e3:.1f} ms = {floor / med['fused']:.2f} of the floor "
                             f"(target ≥ 0.75)")
    print("\nCases: " + "; ".join(f"{c.name}: {c.describe()}" for c in (CASES[n] for n in args.cases)))
    print(f"Columns: {GENERIC} = CUDA, the cuBLAS path (LIDVAE_CUDA_FUSED=0); {ATEN} = the fused path with ATen GEMMs, baseline row passes and F.softplus weights; {SOFTPLUS} = the fused path with F.softplus weights; {JAX} = jax.jit of the same function (benchmarks/baselines.py), {EAGER} = the "
          "official LIDVAE way (per-layer F.linear, autograd.grad(create_graph=True)); both checked "
          f"against the fused output (relative tolerance {tol:g}) before timing.")
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
