"""Print the benchmark table: fused operators vs the autograd reference.

For each configuration (C1–C4, see ``cases.py``) and mode — ``map``
(inference: ∇ψ only, no graph) and ``train`` (map + loss + backward to the
input and every parameter) — the fused and reference callables are timed
*interleaved* (fused, reference, fused, reference, ...) after warm-up, and
the table reports medians and the ratio reference / fused measured in the same
run. ``--memory`` adds the peak CPU memory of one training step of each,
from the profiler's allocation events.

Usage::

    python benchmarks/run.py                    # all cases, CPU, float32
    python benchmarks/run.py --cases C1 C3 --reps 30 --threads 2
    python benchmarks/run.py --device cuda
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cases import CASES, make_workload  # noqa: E402

BACKENDS = ("fused", "reference")
COMPILED = "compiled"  # torch.compile of the torch.func formulation (--compile)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


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
            if device == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times[name].append(start.elapsed_time(end) / 1e3)
            else:
                t0 = clock()
                fn()
                times[name].append(clock() - t0)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--modes", nargs="+", default=["map", "train"], choices=["map", "train"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--reps", type=int, default=20, help="timed repetitions per backend (default 20)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--timer", default="wall", choices=["wall", "process"],
                        help="CPU only: wall clock (default) or this process's CPU time (robust to other "
                             "load on the machine; equals wall time only with --threads 1)")
    parser.add_argument("--memory", action="store_true", help="also report peak memory of a training step")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile of the torch.func formulation (compiles first)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    dtype = getattr(torch, args.dtype)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    print(f"# lidvae_ext benchmark: device={args.device} ({device_name}), dtype={args.dtype}, "
          f"threads={torch.get_num_threads()}, torch={torch.__version__}, reps={args.reps} interleaved, "
          f"warmup={args.warmup}, timer={args.timer}")
    header = "| case | mode | fused median (ms) | reference median (ms) | speed-up |"
    if args.compile:
        header += " compiled median (ms) | fused vs compiled |"
    if args.memory:
        header += " peak mem fused / ref (MB) |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name in args.cases:
        work = make_workload(CASES[name], args.device, dtype)
        compiled = {}
        if args.compile:
            from func_baseline import compiled_callables

            compiled = compiled_callables(work.module, work.inputs, work.loss)
        for mode in args.modes:
            fns = {backend: work.fn(backend, mode) for backend in BACKENDS}
            if args.compile:
                fns[COMPILED] = compiled[mode]
            clock = time.process_time if args.timer == "process" else time.perf_counter
            times = time_interleaved(fns, args.reps, args.warmup, args.device, clock)
            med = {k: statistics.median(v) for k, v in times.items()}
            row = (f"| {name} | {mode} | {med['fused'] * 1e3:.2f} | {med['reference'] * 1e3:.2f} | "
                   f"{med['reference'] / med['fused']:.2f}× |")
            if args.compile:
                row += f" {med[COMPILED] * 1e3:.2f} | {med[COMPILED] / med['fused']:.2f}× |"
            if args.memory:
                if mode == "train":
                    peak = peak_cuda_bytes if args.device == "cuda" else peak_cpu_bytes
                    mem = {k: peak(fns[k]) / 2**20 for k in BACKENDS}
                    row += f" {mem['fused']:.1f} / {mem['reference']:.1f} ({mem['fused'] / mem['reference']:.2f}×) |"
                else:
                    row += " |"
            print(row, flush=True)
    print("\nCases: " + "; ".join(f"{c.name}: {c.describe()}" for c in (CASES[n] for n in args.cases)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
