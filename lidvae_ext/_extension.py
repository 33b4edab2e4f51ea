"""Loading of the compiled module ``lidvae_ext._C`` with a build/runtime check.

The build records the torch version it compiled against in
``lidvae_ext/_build_config.py``. Loading a C++ extension into a different
torch usually dies with an opaque "undefined symbol"; we compare versions
*before* importing ``_C`` and raise a readable error that says how to rebuild.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import torch

_REBUILD_HINT = (
    "Rebuild lidvae_ext against the torch you run: "
    "`pip install --no-build-isolation --force-reinstall --no-deps .` from the source tree "
    "(or rebuild the wheel with `pip wheel --no-build-isolation --no-deps .`)."
)

_module: Any = None
_load_error: str | None = None


def _strip_local(version: str) -> str:
    return version.split("+")[0]


def _require_compiled() -> bool:
    """``LIDVAE_EXT_REQUIRE_C=1`` turns a missing compiled module into an ImportError (CI uses it)."""
    return os.environ.get("LIDVAE_EXT_REQUIRE_C", "0") == "1"


def _load() -> None:
    global _module, _load_error
    try:
        config = importlib.import_module("lidvae_ext._build_config")
    except ImportError:
        _load_error = "lidvae_ext was not built (no _build_config); using the reference backend only"
        if _require_compiled():
            raise ImportError(f"LIDVAE_EXT_REQUIRE_C=1 but {_load_error}. {_REBUILD_HINT}") from None
        return
    built, running = config.TORCH_VERSION, torch.__version__
    if _strip_local(built) != _strip_local(running) or (
        config.WITH_CUDA and torch.version.cuda is None
    ):
        raise ImportError(
            f"lidvae_ext was built against torch {built} (CUDA kernels: "
            f"{'yes' if config.WITH_CUDA else 'no'}) but torch {running} "
            f"(CUDA {torch.version.cuda}) is running. {_REBUILD_HINT}"
        )
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
