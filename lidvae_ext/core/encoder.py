"""Gaussian MLP encoder q(z|x) = N(μ(x), diag σ²(x)) and the MLP building block."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh, "gelu": nn.GELU, "softplus": nn.Softplus}


def activation_class(name: str) -> type[nn.Module]:
    """The ``nn.Module`` class of a nonlinearity by name (one of ``ACTIVATIONS``)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "relu") -> nn.Sequential:
    """A plain MLP ``in_dim → hidden[0] → … → hidden[-1] → out_dim``.

    Parameters
    ----------
    in_dim, out_dim : int
        Input and output widths.
    hidden : sequence of int
        Hidden widths (may be empty: a single linear layer).
    activation : str
        Nonlinearity between layers (none after the last).

    Returns
    -------
    torch.nn.Sequential
    """
    act = activation_class(activation)
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        if int(h) < 1:
            raise ValueError(f"hidden widths must be positive, got {list(hidden)}")
        layers += [nn.Linear(width, int(h)), act()]
        width = int(h)
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class GaussianMLPEncoder(nn.Module):
    """Amortized diagonal-Gaussian posterior q(z|x).

    Any module with the same call signature — ``encoder(x) -> (mean, logvar)``,
    both of shape (B, latent_dim) — can be used in place of this one.

    Parameters
    ----------
    in_dim : int
        Data dimension D.
    latent_dim : int
        Latent dimension K.
    hidden : sequence of int, default (256, 256)
        Hidden widths of the MLP.
    activation : str, default "relu"
        Nonlinearity.
    min_logvar, max_logvar : float
        Log-variances are soft-clamped to this range for numerical safety.
    """

    def __init__(
        self,
        in_dim: int,
        latent_dim: int,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        min_logvar: float = -12.0,
        max_logvar: float = 6.0,
    ) -> None:
        super().__init__()
        if in_dim < 1 or latent_dim < 1:
            raise ValueError(f"in_dim and latent_dim must be positive, got {in_dim}, {latent_dim}")
        self.in_dim, self.latent_dim = int(in_dim), int(latent_dim)
        self.net = mlp(in_dim, hidden, 2 * latent_dim, activation)
        self.min_logvar, self.max_logvar = float(min_logvar), float(max_logvar)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(mean, logvar)`` of q(z|x), each (B, latent_dim)."""
        out = self.net(x)
        mean, logvar = out.chunk(2, dim=-1)
        # Smooth clamp: identity in the middle, saturates at the bounds.
        lo, hi = self.min_logvar, self.max_logvar
        logvar = lo + (hi - lo) * torch.sigmoid((logvar - 0.5 * (lo + hi)) * 4.0 / (hi - lo))
        return mean, logvar
