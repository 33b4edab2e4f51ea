"""Build bookkeeping: the build/runtime torch check and the build info."""

from __future__ import annotations

import types

import pytest
import torch

from lidvae_ext import _extension


def test_mismatched_torch_gives_rebuild_instructions(monkeypatch):
    fake_config = types.SimpleNamespace(TORCH_VERSION="1.0.0", WITH_CUDA=False, CUDA_ARCH_LIST="")
    real_import = _extension.importlib.import_module

    def fake_import(name, *args, **kwargs):
        if name == "lidvae_ext._build_config":
            return fake_config
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(_extension.importlib, "import_module", fake_import)
    with pytest.raises(ImportError, match=r"built against torch 1\.0\.0 .* but torch .* is running.*"
                                          r"--no-build-isolation"):
        _extension._load()


def test_cuda_build_needs_cuda_torch(monkeypatch):
    fake_config = types.SimpleNamespace(TORCH_VERSION=torch.__version__, WITH_CUDA=True, CUDA_ARCH_LIST="9.0")
    real_import = _extension.importlib.import_module
    monkeypatch.setattr(_extension.importlib, "import_module",
                        lambda name, *a, **k: fake_config if name == "lidvae_ext._build_config"
                        else real_import(name, *a, **k))
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(ImportError, match=r"CUDA kernels: yes"):
        _extension._load()


@pytest.mark.skipif(not _extension.loaded(), reason="lidvae_ext._C not built")
def test_build_info_matches_runtime():
    info = _extension.build_info()
    assert info["torch_version"] == torch.__version__
    from lidvae_ext import _build_config

    assert info["with_cuda"] is _build_config.WITH_CUDA
    assert info["cuda_arch_list"] == _build_config.CUDA_ARCH_LIST
    assert set(info["activations"]) == {"leaky_relu", "softplus"}
