"""A volume-preserving flow for posterior samples: additive (NICE / RealNVP-style) couplings.

One additive coupling splits the K coordinates into a conditioning half ``a``
and an updated half ``b`` and maps

    z_a ↦ z_a,    z_b ↦ z_b + t(z_a)

with ``t`` an MLP. Its Jacobian is unit triangular, so its determinant is 1 (log-det 0),
and it is inverted exactly by z_b ↦ z_b − t(z_a). :class:`VolumePreservingFlow`
chains such couplings and **alternates** the halves (coupling i conditions on
the first half when i is even, on the second when i is odd): with a fixed
mask, every coupling would leave the same half untouched and the flow could
never change it — the defect of the official LIDVAE image code.

The flow is unconditional (it does not see x or y), so for a posterior
q(z|x, y) = f_# N(m, diag s²) the density is exactly log q(z|x, y) = log N(f⁻¹(z); m, s²)
and the mutual information I(x; z) equals that of the Gaussian base samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ...core.encoder import mlp


class AdditiveCoupling(nn.Module):
    """z_b ↦ z_b + t(z_a) on the coordinate sets ``cond`` (a) and ``update`` (b) of a K-vector.

    Parameters
    ----------
    cond, update : sequence of int
        Disjoint, together all of 0..K−1; both non-empty.
    hidden : sequence of int
        Widths of the MLP t.
    activation : str
        Its nonlinearity.
    zero_init : bool
        Zero the last layer so that the coupling starts as the identity.
    """

    def __init__(self, cond: Sequence[int], update: Sequence[int], hidden: Sequence[int] = (256,),
                 activation: str = "relu", zero_init: bool = True) -> None:
        super().__init__()
        cond, update = [int(i) for i in cond], [int(i) for i in update]
        if not cond or not update or set(cond) & set(update):
            raise ValueError(f"coupling index sets must be non-empty and disjoint, got {cond} and {update}")
        if sorted(cond + update) != list(range(len(cond) + len(update))):
            raise ValueError(f"coupling index sets must cover 0..K-1, got {cond} and {update}")
        self.register_buffer("cond", torch.tensor(cond, dtype=torch.long), persistent=False)
        self.register_buffer("update", torch.tensor(update, dtype=torch.long), persistent=False)
        self.net = mlp(len(cond), hidden, len(update), activation)
        if zero_init:
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def _shift(self, z: Tensor) -> Tensor:
        return self.net(z.index_select(-1, self.cond))

    def forward(self, z: Tensor) -> Tensor:
        """f(z) for z of shape (..., K)."""
        return z.index_copy(-1, self.update, z.index_select(-1, self.update) + self._shift(z))

    def inverse(self, z: Tensor) -> Tensor:
        """f⁻¹(z) (exact: the conditioning half is unchanged by f)."""
        return z.index_copy(-1, self.update, z.index_select(-1, self.update) - self._shift(z))


class VolumePreservingFlow(nn.Module):
    """``num_couplings`` additive couplings with alternating halves; the log-determinant of ∂f/∂z is 0 everywhere.

    Parameters
    ----------
    dim : int
        K ≥ 2 (each half needs a coordinate).
    hidden : sequence of int
        MLP widths of every coupling's shift network.
    num_couplings : int
        2 (the official code's count) by default; ≥ 2 so that every coordinate moves.
    activation : str
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (256,), num_couplings: int = 2,
                 activation: str = "relu") -> None:
        super().__init__()
        if int(dim) < 2:
            raise ValueError(f"the flow needs latent_dim >= 2 (a coordinate in each half), got {dim}")
        if int(num_couplings) < 2:
            raise ValueError(f"num_couplings must be >= 2 so that both halves are transformed, got {num_couplings}")
        self.dim = int(dim)
        first, second = list(range(self.dim // 2)), list(range(self.dim // 2, self.dim))
        halves = [(first, second), (second, first)]  # (cond, update): alternate on every coupling
        self.couplings = nn.ModuleList(AdditiveCoupling(*halves[i % 2], hidden, activation)
                                       for i in range(int(num_couplings)))

    def forward(self, z: Tensor) -> Tensor:
        """f(z), z of shape (..., K)."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"flow input must have last dimension {self.dim}, got shape {tuple(z.shape)}")
        for c in self.couplings:
            z = c(z)
        return z

    def inverse(self, z: Tensor) -> Tensor:
        """f⁻¹(z)."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"flow input must have last dimension {self.dim}, got shape {tuple(z.shape)}")
        for c in reversed(self.couplings):
            z = c.inverse(z)
        return z

    @staticmethod
    def log_abs_det_jacobian(z: Tensor) -> Tensor:
        """0 for every z (..., K) → (...,): the couplings are unit triangular."""
        return z.new_zeros(z.shape[:-1])
