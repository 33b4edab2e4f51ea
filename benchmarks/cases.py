"""Benchmark configurations C1–C4 and the timed callables for each backend.

Shared by ``benchmarks/run.py`` (the table) and ``benchmarks/test_bench.py``
(pytest-benchmark). Every case builds ONE module and switches its
``backend`` attribute, so fused and reference run on identical weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from lidvae_ext import BrenierMap, LIDDecoder


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "decoder" or "map"
    batch: int
    dim: int  # input dim of the map (d), or latent dim K for the decoder
    hidden: int
    layers: int
    out_dim: int = 0  # D for the decoder

    def describe(self) -> str:
        if self.kind == "decoder":
            return (f"LIDDecoder B={self.batch} K={self.dim} D={self.out_dim} "
                    f"H={self.hidden} L={self.layers}, BCE")
        return f"BrenierMap B={self.batch} d={self.dim} H={self.hidden} L={self.layers}, Σg²"


CASES = {
    "C1": Case("C1", "decoder", 128, 64, 512, 2, out_dim=784),
    "C2": Case("C2", "decoder", 1024, 64, 512, 2, out_dim=784),
    "C3": Case("C3", "map", 4096, 2, 64, 3),
    "C4": Case("C4", "map", 256, 784, 1024, 3),
    # large-batch throughput cases (run by default on CUDA only)
    "C1L": Case("C1L", "decoder", 65536, 64, 512, 2, out_dim=784),
    "C3L": Case("C3L", "map", 2**20, 2, 64, 3),
}
DEFAULT_CASES = {"cpu": ("C1", "C2", "C3", "C4"), "cuda": ("C1", "C2", "C3", "C4", "C1L", "C3L")}


def _set_backend(module: torch.nn.Module, backend: str) -> None:
    for sub in module.modules():
        if isinstance(sub, BrenierMap):
            sub.backend = backend


@dataclass
class Workload:
    """A module with its inputs, and a way to run inference or a training step."""

    case: Case
    module: torch.nn.Module
    inputs: torch.Tensor
    target: torch.Tensor | None

    def loss(self, out: torch.Tensor) -> torch.Tensor:
        if self.case.kind == "decoder":
            return F.binary_cross_entropy_with_logits(out, self.target, reduction="sum")
        return out.square().sum()

    def fn(self, backend: str, mode: str) -> Callable[[], object]:
        """A zero-argument callable running ``mode`` ("map" or "train") on ``backend``."""
        module, inputs = self.module, self.inputs
        params = [p for p in module.parameters() if p.requires_grad]

        def run_map():
            _set_backend(module, backend)
            with torch.no_grad():
                out = module(inputs)
            return out.detach()

        def run_train():
            _set_backend(module, backend)
            x = inputs.detach().requires_grad_(True)
            loss = self.loss(module(x))
            return torch.autograd.grad(loss, [x, *params], allow_unused=True)

        return run_map if mode == "map" else run_train


def make_workload(case: Case, device: str = "cpu", dtype: torch.dtype = torch.float32,
                  seed: int = 0) -> Workload:
    gen = torch.Generator().manual_seed(seed)
    # The weights too come from `seed` (the global RNG is left as it was): every run of a case
    # times the same function, and a check against the fused output that fails (float32 rounding
    # moving a pre-activation across the leaky-ReLU kink) fails in every run, not by chance.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if case.kind == "decoder":
            module = LIDDecoder(case.dim, case.out_dim, case.hidden, case.layers, strong_convexity=0.0, beta="fixed")
        else:
            module = BrenierMap(case.dim, case.hidden, case.layers)
    inputs = torch.randn(case.batch, case.dim, generator=gen)
    target = (torch.rand(case.batch, case.out_dim, generator=gen) < 0.3).to(dtype) if case.kind == "decoder" else None
    module = module.to(device=device, dtype=dtype)
    return Workload(case, module, inputs.to(device=device, dtype=dtype),
                    None if target is None else target.to(device))
