"""Which shapes the fused CUDA kernels take (mirrors csrc/cuda/icnn_cuda_kernels.cuh).

The fused path keeps every weight in shared memory; these formulas are the
``fused_forward_smem_elems`` / ``fused_backward_smem_elems`` of the kernels,
and docs/cuda.md quotes them.
"""

from __future__ import annotations

import torch

FUSED_WIDTHS = (16, 32, 64, 128)
H100_SMEM_OPTIN = 232448  # bytes of dynamic shared memory per block (sm_90 opt-in)


def _groups(hidden: int) -> int:
    lanes = min(hidden, 32)
    return 8 * (32 // lanes)  # 256 threads = 8 warps, 32 // lanes samples per warp


def fused_smem_bytes(dim: int, hidden: int, layers: int, dtype: torch.dtype) -> tuple[int, int]:
    """(forward, backward) shared memory of the fused kernels, backward with one sample slot per group."""
    size = torch.empty((), dtype=dtype).element_size()
    stacked = layers * hidden + 1
    lda = dim | 1
    weights = stacked * lda + (layers - 1) * hidden * (hidden + 1) + hidden
    forward = weights + stacked + _groups(hidden) * (dim + 2 * stacked)
    backward = weights + _groups(hidden) * (2 * stacked + 2 * layers * hidden + 2 * dim + 1)
    return forward * size, backward * size


def fused_fits(dim: int, hidden: int, layers: int, dtype: torch.dtype, limit: int = H100_SMEM_OPTIN,
               which: str = "both") -> bool:
    """Whether the fused kernels run this shape (else the generic cuBLAS path does).

    ``which``: "forward", "backward" or "both" (the two ops choose independently).
    """
    if hidden not in FUSED_WIDTHS:
        return False
    forward, backward = fused_smem_bytes(dim, hidden, layers, dtype)
    return {"forward": forward, "backward": backward, "both": max(forward, backward)}[which] <= limit
