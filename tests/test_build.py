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


def _config(torch_version: str, with_cuda: bool, cuda_version: str | None = None):
    return types.SimpleNamespace(TORCH_VERSION=torch_version, WITH_CUDA=with_cuda, CUDA_ARCH_LIST="",
                                 CUDA_VERSION=cuda_version)


def test_cpu_build_on_cuda_torch_with_gpu_warns():
    message = _extension.check_compatibility(_config("2.11.0+cpu", False), "2.11.0+cu130", "13.0", True)
    assert message is not None and "\n" not in message
    assert "CUDA kernels are absent" in message
    assert "torch 2.11.0+cpu (CUDA kernels: no)" in message and "torch 2.11.0+cu130 (CUDA 13.0)" in message


@pytest.mark.parametrize("torch_cuda,gpu", [("13.0", False), (None, False)])
def test_cpu_build_without_gpu_loads_silently(torch_cuda, gpu):
    assert _extension.check_compatibility(_config("2.13.0+cpu", False), "2.13.0", torch_cuda, gpu) is None


def test_cuda_build_on_its_torch_loads_silently():
    assert _extension.check_compatibility(_config("2.11.0+cu130", True, "13.0"), "2.11.0+cu130", "13.0",
                                          True) is None


@pytest.mark.parametrize("config,torch_version,torch_cuda,match", [
    (_config("2.13.0+cpu", False), "2.11.0+cu130", "13.0",
     r"^lidvae_ext was built against torch 2\.13\.0\+cpu \(CUDA kernels: no\) but torch 2\.11\.0\+cu130 "
     r"\(CUDA 13\.0\) is running\. Install the lidvae_ext wheel built for the torch you run"),
    (_config("2.11.0+cu130", True, "13.0"), "2.11.0+cpu", None, r"CUDA kernels: yes, CUDA 13\.0\) but torch"),
    (_config("2.11.0+cu130", True, "13.0"), "2.11.0+cu128", "12.8", r"the CUDA major versions differ"),
])
def test_incompatible_builds_refused_in_one_line(config, torch_version, torch_cuda, match):
    with pytest.raises(ImportError, match=match) as info:
        _extension.check_compatibility(config, torch_version, torch_cuda, False)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not _extension.loaded(), reason="lidvae_ext._C not built")
def test_load_warns_for_cpu_build_beside_cuda_torch_and_gpu(monkeypatch):
    fake_config = _config(torch.__version__, False)
    real_import = _extension.importlib.import_module
    monkeypatch.setattr(_extension.importlib, "import_module",
                        lambda name, *a, **k: fake_config if name == "lidvae_ext._build_config"
                        else real_import(name, *a, **k))
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(_extension, "_module", _extension._module)  # both restored after the test
    monkeypatch.setattr(_extension, "_load_error", _extension._load_error)
    with pytest.warns(RuntimeWarning, match=r"the fused CUDA kernels are absent"):
        _extension._load()


@pytest.mark.skipif(not _extension.loaded(), reason="lidvae_ext._C not built")
def test_build_info_matches_runtime():
    info = _extension.build_info()
    assert info["torch_version"] == torch.__version__
    from lidvae_ext import _build_config

    assert info["with_cuda"] is _build_config.WITH_CUDA
    assert info["cuda_arch_list"] == _build_config.CUDA_ARCH_LIST
    assert set(info["activations"]) == {"leaky_relu", "softplus"}
    assert info["abi"] == _build_config.ABI == "per-torch"
