"""Loading of the compiled module ``lidvae_ext._C`` with a build/runtime check.

The build records the torch it compiled against in ``lidvae_ext/_build_config.py``
(and the wheel's metadata pins that torch release, docs/wheel.md). Loading a C++
extension into a different torch usually dies with an opaque "undefined symbol";
we compare versions *before* importing ``_C`` and raise a readable error that
names both and says what to install or how to rebuild. A build without CUDA
kernels on a CUDA torch with a GPU present loads, with a warning.
"""

from __future__ import annotations

import importlib
import os
import warnings
from typing import Any

import torch

_REBUILD_HINT = (
    "Install the lidvae_ext wheel built for the torch you run (scripts/build_wheel.sh builds one "
    "for the torch of its Python), or rebuild from the source tree: "
    "`pip install --no-build-isolation --force-reinstall --no-deps .`."
)

_module: Any = None
_load_error: str | None = None


def _strip_local(version: str) -> str:
    return version.split("+")[0]


def _require_compiled() -> bool:
    """``LIDVAE_EXT_REQUIRE_C=1`` turns a missing compiled module into an ImportError (CI uses it)."""
    return os.environ.get("LIDVAE_EXT_REQUIRE_C", "0") == "1"


def _cuda_major(version: str | None) -> str | None:
    return version.split(".")[0] if version else None


def check_compatibility(config: Any, torch_version: str, torch_cuda: str | None,
                        gpu_present: bool) -> str | None:
    """Whether a build (its ``_build_config``) can run beside this torch.

    Parameters
    ----------
    config
        The build configuration: ``TORCH_VERSION``, ``WITH_CUDA`` and, in builds since the
        wheel (docs/wheel.md), ``CUDA_VERSION``.
    torch_version, torch_cuda
        ``torch.__version__`` and ``torch.version.cuda`` of the running torch.
    gpu_present
        Whether a CUDA device is visible.

    Returns
    -------
    str or None
        A warning to show when the module loads but some of its kernels are absent
        (a build without CUDA kernels, a CUDA torch and a GPU), else ``None``.

    Raises
    ------
    ImportError
        One line naming both builds, when the module cannot run with this torch: another
        torch release, CUDA kernels on a CPU-only torch, or another CUDA major version.
    """
    built = config.TORCH_VERSION
    built_cuda = getattr(config, "CUDA_VERSION", None)
    kernels = "no"
    if config.WITH_CUDA:
        kernels = f"yes, CUDA {built_cuda}" if built_cuda else "yes"
    described = f"lidvae_ext was built against torch {built} (CUDA kernels: {kernels})"
    running = f"torch {torch_version} (CUDA {torch_cuda})"
    if _strip_local(built) != _strip_local(torch_version) or (config.WITH_CUDA and torch_cuda is None):
        raise ImportError(f"{described} but {running} is running. {_REBUILD_HINT}")
    if config.WITH_CUDA and built_cuda and _cuda_major(built_cuda) != _cuda_major(torch_cuda):
        raise ImportError(f"{described} but {running} is running: the CUDA major versions differ. "
                          f"{_REBUILD_HINT}")
    if not config.WITH_CUDA and torch_cuda is not None and gpu_present:
        return (f"{described}, and {running} sees a GPU: the fused CUDA kernels are absent, so on "
                "CUDA tensors the modules use the autograd reference (backend='auto', slower) or "
                "refuse (backend='fused'). Install the wheel built for this torch with CUDA kernels "
                "(scripts/build_wheel.sh on a machine with nvcc and this torch).")
    return None


def _gpu_present() -> bool:
    try:
        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - a broken driver is no GPU for this purpose
        return False


def _load() -> None:
    global _module, _load_error
    try:
        config = importlib.import_module("lidvae_ext._build_config")
    except ImportError:
        _load_error = "lidvae_ext was not built (no _build_config); using the reference backend only"
        if _require_compiled():
            raise ImportError(f"LIDVAE_EXT_REQUIRE_C=1 but {_load_error}. {_REBUILD_HINT}") from None
        return
    # torch.cuda.is_available() only on a CUDA torch (it initializes the driver).
    gpu = torch.version.cuda is not None and not config.WITH_CUDA and _gpu_present()
    warning = check_compatibility(config, torch.__version__, torch.version.cuda, gpu)
    if warning:
        warnings.warn(warning, RuntimeWarning, stacklevel=2)
    try:
        _module = importlib.import_module("lidvae_ext._C")
    except ImportError as exc:
        if _require_compiled():
            raise
        _load_error = f"could not import lidvae_ext._C ({exc}). {_REBUILD_HINT}"


def loaded() -> bool:
    """True when the compiled operators are registered."""
    return _module is not None


def load_error() -> str | None:
    """Why the compiled module is not loaded (None when it is)."""
    return _load_error


def build_info() -> dict:
    """Build configuration of the compiled module (empty dict when not built)."""
    if _module is None:
        return {}
    return dict(_module.build_info())


_load()
