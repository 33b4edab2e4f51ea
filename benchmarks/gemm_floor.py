"""How close the fused CPU path of a BrenierMap is to the time of its own GEMMs.

Replays, on random data with the same shapes and memory layouts, exactly the
matrix products the fused CPU operators issue for a leaky-ReLU ``BrenierMap``
with d > 8 (csrc/cpu/icnn_cpu.cpp: the stacked input product, the W products
of the forward and of the sensitivities, the stacked map product; in the
backward the tangent, r_0, dA, dW and dy products) and times them
*interleaved* with the real map / training step and the autograd reference.
``reference / GEMMs`` is then the speed-up the fused path would have if
everything but its GEMMs (elementwise passes, parameter softplus, loss,
framework overhead) were free: an upper bound for the fused design on this
machine. The module's weight parametrization (softplus of the raw hidden
weights, its backward when training) is timed too, both as the fused path
computes it (the one-pass ``softplus_weights`` operators) and as ``F.softplus``
with autograd (what the reference pays); the fused path cannot avoid its own,
so ``reference / (GEMMs + parametrization)`` is the tighter bound.

Usage::

    python benchmarks/gemm_floor.py                 # C4: B=256 d=784 H=1024 L=3
    python benchmarks/gemm_floor.py --batch 512 --dim 256 --hidden 512 --layers 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lidvae_ext import BrenierMap


def gemm_lists(batch: int, dim: int, hidden: int, layers: int, dtype: torch.dtype):
    """The fused path's forward and backward products as zero-argument callables."""
    B, d, H, L = batch, dim, hidden, layers
    M, LH = L * H + 1, L * H
    g = torch.Generator().manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    y, v, A, b = rnd(B, d), rnd(B, d), rnd(M, d), rnd(M)
    W = rnd(max(L - 1, 1), H, H)
    pre, z, delta, up = rnd(B, M), rnd(B, H), rnd(B, M), rnd(B, max(L - 1, 1) * H)
    grad, work, gy = rnd(B, d), rnd(B, LH), rnd(B, d)
    gA, gW = rnd(M, d), rnd(max(L - 1, 1), H, H)

    def blk(t, l):
        return t.narrow(1, l * H, H)

    forward = [lambda: torch.mm(y, A.t(), out=pre)]
    for l in range(1, L):
        forward.append(lambda l=l: blk(pre, l).addmm_(z, W[l - 1].t()))
    for l in range(L - 1, 0, -1):
        forward.append(lambda l=l: torch.mm(blk(delta, l), W[l - 1], out=blk(up, l - 1)))
    forward.append(lambda: torch.addmm(y, delta, A, beta=0.5, out=grad))

    backward = [
        lambda: torch.mm(v, A[:H].t(), out=blk(work, 0)),
        lambda: torch.mm(blk(work, 0).t(), y, out=gA[:H]),
        lambda: torch.addmm(v, blk(work, 0), A[:H], beta=0.5, out=gy),
    ]
    if L > 1:
        backward.append(lambda: torch.mm(v, A[H:LH].t(), out=work[:, H:]))
    for l in range(1, L):
        backward.append(lambda l=l: blk(work, l).addmm_(blk(work, l - 1), W[l - 1].t()))
    backward.append(lambda: torch.mv(blk(work, L - 1).t(), pre[:, -1], out=gW[0, 0]))  # dw_out
    backward.append(lambda: torch.mv(v.t(), pre[:, -1], out=gA[-1]))  # dA of the output row
    for l in range(L - 1, -1, -1):
        if l == 0:
            backward.append(lambda: gA[:H].addmm_(blk(work, 0).t(), v))
        else:
            backward.append(lambda l=l: torch.mm(blk(work, l).t(), v, out=gA[l * H:(l + 1) * H]))
            backward.append(lambda l=l: torch.mm(blk(work, l).t(), blk(work, l - 1), out=gW[l - 1]))
    return forward, backward


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=784)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.dim <= 8:
        parser.error("--dim must be > 8 (smaller inputs use row-wise products, not GEMMs)")
    torch.set_num_threads(args.threads)
    dtype = torch.float32

    module = BrenierMap(args.dim, args.hidden, args.layers).to(dtype)
    inputs = torch.randn(args.batch, args.dim, dtype=dtype)
    params = list(module.parameters())
    forward, backward = gemm_lists(args.batch, args.dim, args.hidden, args.layers, dtype)

    def step(backend: str, train: bool):
        def run():
            module.backend = backend
            if not train:
                with torch.no_grad():
                    return module(inputs)
            x = inputs.detach().requires_grad_(True)
            return torch.autograd.grad(module(x).square().sum(), [x, *params])
        return run

    def parametrization(train: bool, fused: bool):
        """The module's weight parametrization alone (softplus of the raw hidden weights and
        w_out) as the fused path (``fused``) or the reference computes it: forward, plus its
        backward when training."""
        raw = [p for p in params if p.requires_grad]

        def run():
            if not train:
                with torch.no_grad():
                    return module.icnn.weights(fused=fused)
            weights = module.icnn.weights(fused=fused)
            return torch.autograd.grad(weights, raw, [torch.ones_like(w) for w in weights],
                                       allow_unused=True)
        return run

    fns = {
        "map: parametrization": parametrization(False, True),
        "train: parametrization": parametrization(True, True),
        "map: F.softplus parametrization": parametrization(False, False),
        "train: F.softplus parametrization": parametrization(True, False),
        "map: fused": step("fused", False),
        "map: reference": step("reference", False),
        "map: fused GEMMs only": lambda: [f() for f in forward],
        "train: fused": step("fused", True),
        "train: reference": step("reference", True),
        "train: fused GEMMs only": lambda: [f() for f in forward + backward],
    }
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(3):
            fn()
    for _ in range(args.reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"# BrenierMap B={args.batch} d={args.dim} H={args.hidden} L={args.layers}, float32, "
          f"{args.threads} threads, medians of {args.reps} interleaved reps")
    print(f"# products: forward {len(forward)}, backward {len(backward)}")
    print("| mode | fused (ms) | its GEMMs alone (ms) | weight parametrization: fused op / F.softplus (ms) "
          "| reference (ms) | speed-up | bound: ref / GEMMs | bound: ref / (GEMMs + parametrization) |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in ("map", "train"):
        f, gm, r = med[f"{mode}: fused"], med[f"{mode}: fused GEMMs only"], med[f"{mode}: reference"]
        pm, pa = med[f"{mode}: parametrization"], med[f"{mode}: F.softplus parametrization"]
        print(f"| {mode} | {f:.2f} | {gm:.2f} | {pm:.2f} / {pa:.2f} | {r:.2f} | {r / f:.2f}× | {r / gm:.2f}× "
              f"| {r / (gm + pm):.2f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
