"""Decoder train step (and map) with β = [I;0] vs the fixed orthonormal β ("pca"-style) vs the learned β.

Interleaved round-robin in one process on identical ICNN weights, so a noisy
machine affects every variant alike; prints medians and ratios to β = [I;0].

    python benchmarks/beta_speed.py --reps 30 --threads 2 --cases C1 C2
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cases import CASES  # noqa: E402
from run import time_interleaved  # noqa: E402

from lidvae_ext import LIDDecoder  # noqa: E402
from lidvae_ext.nn import random_orthonormal  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--modes", nargs="+", default=["train", "map"])
    p.add_argument("--cases", nargs="+", default=["C1"], choices=["C1", "C2"], help="decoder cases (default C1)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.cases:
        time_case(CASES[name], args)
    return 0


def time_case(case, args) -> None:
    """Time the three β variants of one decoder case, interleaved, and print medians and ratios."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(case.batch, case.dim, generator=gen)
    target = (torch.rand(case.batch, case.out_dim, generator=gen) < 0.3).float()
    decoders = {}
    for beta in ("fixed", "random", "learned"):
        torch.manual_seed(0)
        decoders[beta] = LIDDecoder(case.dim, case.out_dim, case.hidden, case.layers, strong_convexity=0.5, beta=beta)
    decoders["random"].beta.set_basis(random_orthonormal(case.out_dim, case.dim, 1))

    def fn(dec, mode):
        params = list(dec.parameters())

        def train():
            loss = torch.nn.functional.binary_cross_entropy_with_logits(dec(z), target, reduction="sum")
            return torch.autograd.grad(loss, params)

        def fmap():
            with torch.no_grad():
                return dec(z)

        return train if mode == "train" else fmap

    print(f"{case.describe()}, {torch.get_num_threads()} threads, {args.reps} reps (interleaved)")
    for mode in args.modes:
        times = time_interleaved({b: fn(d, mode) for b, d in decoders.items()}, args.reps, args.warmup, "cpu")
        base = statistics.median(times["fixed"])
        for b, t in times.items():
            med = statistics.median(t)
            print(f"{mode:5s} beta={b:8s} median {med * 1e3:8.2f} ms  ({med / base:.3f}x of [I;0])")


if __name__ == "__main__":
    sys.exit(main())
