"""lidvae_ext: fused kernels and modules for latent-identifiable VAEs.

Quick start::

    from lidvae_ext import LIDDecoder
    decoder = LIDDecoder(latent_dim=32, out_dim=784, hidden=128)
    logits = decoder(z)   # z: (B, 32) -> (B, 784), injective in z
"""

from __future__ import annotations

from . import _extension, ops, reference
from .errors import CheckpointError, TrainingDiverged
from .nn import BrenierMap, ICNN, InjectiveLinear, LIDDecoder, fit_beta, principal_directions
from .user_vae import diagnose_vae, evaluate_vae, wrap_vae

__version__ = "0.1.0"


def build_info() -> dict:
    """Build configuration of the compiled kernels (empty dict if not built)."""
    return _extension.build_info()


cpu_workspace_info = _extension.cpu_workspace_info
set_cpu_workspace_limit = _extension.set_cpu_workspace_limit
release_cpu_workspace = _extension.release_cpu_workspace


__all__ = [
    "BrenierMap",
    "CheckpointError",
    "ICNN",
    "InjectiveLinear",
    "LIDDecoder",
    "TrainingDiverged",
    "build_info",
    "cpu_workspace_info",
    "diagnose_vae",
    "evaluate_vae",
    "fit_beta",
    "principal_directions",
    "release_cpu_workspace",
    "set_cpu_workspace_limit",
    "wrap_vae",
    "ops",
    "reference",
    "__version__",
]
