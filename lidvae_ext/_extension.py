"""Loading of the compiled parts of lidvae_ext, with a build/runtime check (docs/wheel.md).

- ``lidvae_ext/_kernels*.so``: the operators on the LibTorch stable ABI, one binary for every
  torch from the build's ``TORCH_MIN`` (2.10) on; loaded with ``torch.ops.load_library``.
- ``lidvae_ext._C``: a pybind11 module with the build configuration; no torch in it.
- ``lidvae_ext/_cuda*.so`` (builds with CUDA kernels): the CUDA kernels, on the same stable
  ABI; they link torch's CUDA libraries, so they need a CUDA torch of the same CUDA major.

The build records what it compiled against in ``lidvae_ext/_build_config.py``; we compare it
with the running torch *before* loading anything and raise a one-line error that says what to
install (a stable-ABI library in a torch older than it would die with "undefined symbol"). A
build without CUDA kernels on a CUDA torch with a GPU present loads, with a warning.
"""

from __future__ import annotations

import glob
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
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

_module: Any = None
_load_error: str | None = None


def _strip_local(version: str) -> str:
    return version.split("+")[0]


def _require_compiled() -> bool:
    """``LIDVAE_EXT_REQUIRE_C=1`` turns a missing compiled module into an ImportError (CI uses it)."""
    return os.environ.get("LIDVAE_EXT_REQUIRE_C", "0") == "1"


def _cuda_major(version: str | None) -> str | None:
    return version.split(".")[0] if version else None


def _release(version: str) -> tuple[int, ...]:
    """``"2.11.0+cu130"`` -> ``(2, 11, 0)``; pre-release tails (``2.12.0a0``) are dropped."""
    parts = []
    for piece in _strip_local(version).split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
        if not piece.isdigit():
            break
    return tuple(parts)


def check_compatibility(config: Any, torch_version: str, torch_cuda: str | None,
                        gpu_present: bool) -> str | None:
    """Whether a build (its ``_build_config``) can run beside this torch.

    Parameters
    ----------
    config
        The build configuration: ``TORCH_VERSION`` (compiled against), ``TORCH_MIN`` (the
        oldest torch the stable-ABI operators run with), ``WITH_CUDA``, ``CUDA_VERSION``.
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
        One line naming both builds, when the module cannot run with this torch: a torch older
        than ``TORCH_MIN``; for a build with CUDA kernels, a CPU-only torch or another CUDA
        major version.
    """
    built = config.TORCH_VERSION
    minimum = getattr(config, "TORCH_MIN", None) or _strip_local(built)
    built_cuda = getattr(config, "CUDA_VERSION", None)
    kernels = "no"
    if config.WITH_CUDA:
        kernels = f"yes, CUDA {built_cuda}" if built_cuda else "yes"
    described = f"lidvae_ext was built against torch {built} (CUDA kernels: {kernels})"
    running = f"torch {torch_version} (CUDA {torch_cuda})"
    if _release(torch_version) < _release(minimum):
        raise ImportError(f"{described}; its operators need torch >= {minimum} (LibTorch stable ABI) "
                          f"but {running} is running. Install torch >= {minimum} "
                          f"(pip install 'torch>={minimum}'), or {_REBUILD_HINT[0].lower()}"
                          f"{_REBUILD_HINT[1:]}")
    if config.WITH_CUDA and torch_cuda is None:
        raise ImportError(f"{described} but {running} is running: the CUDA kernels need a CUDA build "
                          f"of torch. {_REBUILD_HINT}")
    if config.WITH_CUDA and built_cuda and _cuda_major(built_cuda) != _cuda_major(torch_cuda):
        raise ImportError(f"{described} but {running} is running: the CUDA major versions differ. "
                          f"{_REBUILD_HINT}")
    if not config.WITH_CUDA and torch_cuda is not None and gpu_present:
        return (f"{described}, and {running} sees a GPU: the fused CUDA kernels are absent, so on "
                "CUDA tensors the modules use the autograd reference (backend='auto', slower) or "
                "refuse (backend='fused'). Install a wheel with CUDA kernels for this torch "
                "(scripts/build_wheel.sh on a machine with nvcc and this torch).")
    return None


def _gpu_present() -> bool:
    try:
        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - a broken driver is no GPU for this purpose
        return False


def _library(stem: str) -> str | None:
    """Path of the compiled library ``lidvae_ext/<stem>*.so`` (None when absent)."""
    found = sorted(glob.glob(os.path.join(_PACKAGE_DIR, f"{stem}*.so")))
    return found[0] if found else None


def _register_openblas_package() -> None:
    """Tells the GEMM loader where the scipy_openblas32 package (if importable) keeps its library."""
    try:
        import scipy_openblas32
    except ImportError:
        return
    try:
        path = os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(True))
    except Exception:  # noqa: BLE001 - a broken package is the same as none (the loader's other candidates)
        return
    torch.ops.lidvae_ext._add_openblas_candidate(path)


def _load_libraries(config: Any) -> Any:
    """Imports ``_C`` and loads the operator libraries; returns the ``_C`` module."""
    module = importlib.import_module("lidvae_ext._C")
    kernels = _library("_kernels")
    if kernels is None:
        raise ImportError(f"no lidvae_ext/_kernels*.so beside {__file__}")
    torch.ops.load_library(kernels)
    if config.WITH_CUDA:
        cuda = _library("_cuda")
        if cuda is None:
            raise ImportError(f"the build has CUDA kernels but no lidvae_ext/_cuda*.so beside {__file__}")
        torch.ops.load_library(cuda)
    _register_openblas_package()
    return module


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
        _module = _load_libraries(config)
    except (ImportError, OSError) as exc:
        if _require_compiled():
            raise ImportError(f"could not load lidvae_ext's compiled parts ({exc}). {_REBUILD_HINT}") from exc
        _load_error = f"could not load lidvae_ext's compiled parts ({exc}). {_REBUILD_HINT}"


def loaded() -> bool:
    """True when the compiled operators are registered."""
    return _module is not None


def load_error() -> str | None:
    """Why the compiled module is not loaded (None when it is)."""
    return _load_error


def _runtime_info() -> dict:
    """The CPU path as the next operator call would run it (the _runtime_info operator)."""
    info: dict = {}
    for line in str(torch.ops.lidvae_ext._runtime_info()).splitlines():
        key, _, value = line.partition("=")
        info[key] = tuple(value.split(",")) if key in ("cpu_gemm_backends", "cpu_isas") else value
    return info


def build_info() -> dict:
    """Build configuration of the compiled parts, and the CPU path they take now.

    Empty when not built. ``torch_version`` is the torch compiled against, ``torch_min`` the
    oldest torch the operators run with, ``abi`` the route (``"stable"``, docs/wheel.md).
    """
    if _module is None:
        return {}
    info = dict(_module.build_info())
    info["torch_runtime"] = torch.__version__
    info.update(_runtime_info())
    return info


def _cpu_workspace(limit_bytes: int = -1, release: bool = False) -> dict[str, int]:
    if _module is None:
        raise RuntimeError(f"the CPU workspace cache needs the compiled kernels: {_load_error}")
    text = str(torch.ops.lidvae_ext._cpu_workspace(limit_bytes, release))
    return {key: int(value) for key, _, value in (line.partition("=") for line in text.splitlines())}


def cpu_workspace_info() -> dict[str, int]:
    """The CPU kernels' scratch cache: what it holds now and how it has served.

    The fused CPU operators take their scratch buffers (several (B, L·H) arrays per training
    step) from a process-wide cache, so that their pages stay mapped between calls instead of
    being faulted in again on every call (docs/benchmarks.md: 20 % of a C3 map call). It keeps
    at most ``limit_bytes`` of free blocks, oldest returned first out.

    Returns
    -------
    dict
        ``cached_bytes`` and ``cached_blocks`` (free blocks held now), ``limit_bytes``,
        ``hits`` and ``misses`` (requests served from the cache, and those that took new
        memory, since the process started).
    """
    return _workspace_stats()


def _workspace_stats(limit_bytes: int = -1) -> dict[str, int]:
    info = _cpu_workspace(limit_bytes)
    info.pop("released_bytes")
    return info


def set_cpu_workspace_limit(megabytes: float) -> dict[str, int]:
    """Sets how much free scratch memory the CPU kernels keep between calls (MiB; 0 = none).

    The default is ``LIDVAE_CPU_WORKSPACE_MB`` from the environment, else 256 MiB (0 in
    AddressSanitizer builds). Lowering it returns the oldest blocks to the system at once.
    Returns :func:`cpu_workspace_info` after the change.
    """
    if isinstance(megabytes, bool) or not isinstance(megabytes, (int, float)) or not megabytes >= 0 \
            or megabytes == float("inf"):
        raise ValueError(f"set_cpu_workspace_limit: megabytes must be a finite number >= 0, got {megabytes!r}")
    return _workspace_stats(int(megabytes * (1 << 20)))


def release_cpu_workspace() -> int:
    """Returns every cached CPU scratch block to the system; the number of bytes freed."""
    return _cpu_workspace(release=True)["released_bytes"]


def gemm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, backend: str = "auto",
         alpha: float = 1.0, base: torch.Tensor | None = None, beta: float = 0.0) -> None:
    """``out = alpha * a @ b + beta * base`` through a CPU GEMM backend (tests, benchmarks).

    Parameters
    ----------
    a, b, out
        2-D CPU tensors of one dtype; ``out`` is written.
    backend
        ``"auto"`` (as the operators choose), ``"aten"`` or ``"openblas"``.
    alpha, beta, base
        Scale of the product, and the optional tensor added with weight ``beta`` (may be ``out``).
    """
    torch.ops.lidvae_ext._gemm(a, b, out, backend, alpha, base, beta)


_load()
