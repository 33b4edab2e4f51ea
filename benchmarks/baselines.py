"""Two outside baselines of the benchmark workloads, on the weights of the same module.

``eager``  the model written the way the official LIDVAE code writes an ICNN: one
           ``F.linear`` per layer for the input terms A_l y + b_l (no stacked
           product), the hidden weights as softplus(raw), the map by
           ``torch.autograd.grad(create_graph=True)`` of the summed potential.
``jax``    the same function in JAX, jit-compiled: ``jax.grad`` of the summed
           potential for the map, ``jax.value_and_grad`` of the loss for the
           training step (gradient w.r.t. the input and every raw parameter);
           β = [I; 0] of a LIDDecoder as zero padding. Matrix products run at
           ``jax_default_matmul_precision="highest"``: on NVIDIA GPUs JAX's
           default rounds float32 products to TF32 (about 1e-3 relative
           error), while torch keeps full float32 unless ``allow_tf32`` is
           set. JAX is optional: :func:`jax_callables` raises ``ImportError``
           without it.

Both return ``{"map": fn, "train": fn}`` of zero-argument callables; ``map``
returns the map output and ``train`` the gradient w.r.t. the input first, so
the benchmark can check them against the fused path before timing.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from lidvae_ext import BrenierMap, LIDDecoder


def _maps(module: torch.nn.Module) -> list[tuple[str, BrenierMap]]:
    if isinstance(module, BrenierMap):
        return [("", module)]
    if isinstance(module, LIDDecoder):
        if module.beta.mode != "fixed":
            raise NotImplementedError("the baselines cover the default beta='fixed'")
        return [("latent_map.", module.latent_map), ("data_map.", module.data_map)]
    raise TypeError(f"no baseline for {type(module).__name__}")


# ---- official-style eager -----------------------------------------------------------

def _eager_potential(bmap: BrenierMap, y: torch.Tensor) -> torch.Tensor:
    icnn = bmap.icnn
    alpha, act, slope = icnn.hyper()
    H, L = icnn.hidden, icnn.num_layers
    positive = F.softplus if icnn.positivity == "softplus" else (lambda t: t.clamp(min=0))
    W, w_out = positive(icnn.W_raw), positive(icnn.w_out_raw)
    sigma = (lambda t: F.leaky_relu(t, slope)) if act == "leaky_relu" else F.softplus
    sigma0 = (lambda t: F.leaky_relu(t, slope).square()) if act == "leaky_relu" else F.softplus
    z = sigma0(F.linear(y, icnn.A[:H], icnn.b[:H]))
    for layer in range(1, L):
        rows = slice(layer * H, (layer + 1) * H)
        z = sigma(F.linear(z, W[layer - 1]) + F.linear(y, icnn.A[rows], icnn.b[rows]))
    out = sigma(z @ w_out + F.linear(y, icnn.A[-1:], icnn.b[-1:]).squeeze(-1))
    return out + 0.5 * alpha * y.square().sum(-1)


def _eager_map(bmap: BrenierMap, y: torch.Tensor, create_graph: bool) -> torch.Tensor:
    with torch.enable_grad():
        y_in = y if y.requires_grad else y.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(_eager_potential(bmap, y_in).sum(), y_in, create_graph=create_graph)
    return grad


def eager_callables(module: torch.nn.Module, inputs: torch.Tensor,
                    loss: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, Callable[[], object]]:
    maps = _maps(module)
    params = [p for p in module.parameters() if p.requires_grad]

    def forward(x: torch.Tensor, create_graph: bool) -> torch.Tensor:
        out = x
        for i, (_, bmap) in enumerate(maps):
            if i > 0:  # β = [I; 0]
                out = F.pad(out, (0, bmap.icnn.dim - out.shape[-1]))
            out = _eager_map(bmap, out, create_graph)
        return out

    def run_map():
        return forward(inputs, create_graph=False).detach()

    def run_train():
        x = inputs.detach().requires_grad_(True)
        return torch.autograd.grad(loss(forward(x, create_graph=True)), [x, *params], allow_unused=True)

    return {"map": run_map, "train": run_train}


# ---- JAX --------------------------------------------------------------------------

JAX_FORMULATIONS = ("stacked", "per_layer")


def jax_callables(module: torch.nn.Module, inputs: torch.Tensor, kind: str,
                  target: torch.Tensor | None, formulation: str = "stacked") -> dict[str, Callable[[], object]]:
    """jit-compiled map and training step (raises ImportError without JAX).

    ``formulation`` is how the ICNN's input products are written: ``"stacked"`` forms every
    layer's ``y @ A_l.T`` as one product with the stacked A and slices it; ``"per_layer"`` writes
    one product per layer (as the official code and most JAX users write an ICNN, a skip
    ``Linear`` per layer). Same weights, same function; XLA schedules them differently.
    """
    if formulation not in JAX_FORMULATIONS:
        raise ValueError(f"formulation must be one of {JAX_FORMULATIONS}, got {formulation!r}")
    import jax
    import jax.numpy as jnp

    if inputs.dtype == torch.float64:
        jax.config.update("jax_enable_x64", True)
    # full float32 products, as torch computes them (JAX's GPU default is TF32); read at trace time
    jax.config.update("jax_default_matmul_precision", "highest")
    maps = _maps(module)
    params = {f"{prefix}{name}": jnp.asarray(p.detach().cpu().numpy())
              for prefix, bmap in maps for name, p in bmap.icnn.named_parameters(prefix="icnn")}
    x = jnp.asarray(inputs.detach().cpu().numpy())
    tgt = None if target is None else jnp.asarray(target.detach().cpu().numpy())

    def potential(p, prefix, bmap, y):
        icnn = bmap.icnn
        alpha, act, slope = icnn.hyper()
        H, L = icnn.hidden, icnn.num_layers
        softplus = jax.nn.softplus
        positive = softplus if icnn.positivity == "softplus" else (lambda t: jnp.maximum(t, 0))
        A, b = p[f"{prefix}icnn.A"], p[f"{prefix}icnn.b"]
        W, w_out = positive(p[f"{prefix}icnn.W_raw"]), positive(p[f"{prefix}icnn.w_out_raw"])

        def lrelu(t):
            return jnp.where(t > 0, t, slope * t)

        sigma = lrelu if act == "leaky_relu" else softplus
        sigma0 = (lambda t: jnp.square(lrelu(t))) if act == "leaky_relu" else softplus
        if formulation == "stacked":
            pre = y @ A.T + b
            blocks = [pre[:, layer * H:(layer + 1) * H] for layer in range(L)] + [pre[:, -1]]
        else:  # one skip product per layer
            blocks = [y @ A[layer * H:(layer + 1) * H].T + b[layer * H:(layer + 1) * H] for layer in range(L)]
            blocks.append(y @ A[-1] + b[-1])
        z = sigma0(blocks[0])
        for layer in range(1, L):
            z = sigma(z @ W[layer - 1].T + blocks[layer])
        out = sigma(z @ w_out + blocks[-1])
        return out + 0.5 * alpha * jnp.sum(y * y, axis=-1)

    def forward(p, y):
        out = y
        for i, (prefix, bmap) in enumerate(maps):
            if i > 0:
                out = jnp.pad(out, ((0, 0), (0, bmap.icnn.dim - out.shape[-1])))
            out = jax.grad(lambda u, pre=prefix, bm=bmap: jnp.sum(potential(p, pre, bm, u)))(out)
        return out

    def loss(p, y):
        out = forward(p, y)
        if kind == "decoder":  # BCE with logits, summed
            return jnp.sum(jnp.maximum(out, 0) - out * tgt + jnp.log1p(jnp.exp(-jnp.abs(out))))
        return jnp.sum(out * out)

    map_jit = jax.jit(forward)
    train_jit = jax.jit(jax.value_and_grad(loss, argnums=(1, 0)))

    def run_map():
        return map_jit(params, x).block_until_ready()

    def run_train():
        value, (gx, gp) = train_jit(params, x)
        gx.block_until_ready()
        return gx, gp

    return {"map": run_map, "train": run_train}


def as_numpy(out: object) -> np.ndarray:
    """The map output, or the input gradient of a training step, as a NumPy array."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    if isinstance(out, torch.Tensor):
        return out.detach().cpu().numpy()
    return np.asarray(out)
