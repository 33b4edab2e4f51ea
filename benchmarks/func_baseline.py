"""The torch.func formulation of the same workloads, for ``torch.compile``.

The eager reference computes ∇ψ with ``torch.autograd.grad(create_graph=True)``,
which dynamo cannot trace; the functional formulation below (∇ψ by
``torch.func.grad``, the training step by an outer ``torch.func.grad``) is
what ``torch.compile`` can turn into one graph. It reads the weights of the
same module, so all three backends compute the same numbers.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from lidvae_ext import BrenierMap, LIDDecoder, reference


def _brenier_map(params: dict, prefix: str, bmap: BrenierMap, y: torch.Tensor) -> torch.Tensor:
    icnn = bmap.icnn
    A, b = params[f"{prefix}icnn.A"], params[f"{prefix}icnn.b"]
    positive = F.softplus if icnn.positivity == "softplus" else (lambda t: t.clamp(min=0))
    W, w_out = positive(params[f"{prefix}icnn.W_raw"]), positive(params[f"{prefix}icnn.w_out_raw"])

    def potential_sum(inp):
        return reference.icnn_potential(inp, A, b, W, w_out, *icnn.hyper()).sum()

    return torch.func.grad(potential_sum)(y)


def functional_forward(module: torch.nn.Module) -> Callable[[dict, torch.Tensor], torch.Tensor]:
    """``f(params, x)`` computing ``module(x)`` with torch.func transforms only."""
    if isinstance(module, BrenierMap):
        return lambda params, x: _brenier_map(params, "", module, x)
    if isinstance(module, LIDDecoder):
        if module.beta.mode != "fixed":
            raise NotImplementedError("the torch.func baseline covers the default beta='fixed'")

        def decoder(params, z):
            latent = _brenier_map(params, "latent_map.", module.latent_map, z)
            padded = F.pad(latent, (0, module.out_dim - module.latent_dim))
            return _brenier_map(params, "data_map.", module.data_map, padded)

        return decoder
    raise TypeError(f"no functional formulation for {type(module).__name__}")


def compiled_callables(module: torch.nn.Module, inputs: torch.Tensor,
                       loss: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, Callable[[], object]]:
    """``{"map": ..., "train": ...}`` zero-argument callables of the compiled formulation."""
    forward = functional_forward(module)
    params = {k: v.detach() for k, v in module.named_parameters()}

    def train_step(p, x):
        # (input gradient, parameter gradients): the input gradient first, like the other
        # columns' training steps, since the benchmark checks the first output against the fused one
        return torch.func.grad(lambda p_, x_: loss(forward(p_, x_)), argnums=(1, 0))(p, x)

    map_compiled = torch.compile(forward, fullgraph=True)
    train_compiled = torch.compile(train_step, fullgraph=True)
    return {
        "map": lambda: map_compiled(params, inputs),
        "train": lambda: train_compiled(params, inputs),
    }
