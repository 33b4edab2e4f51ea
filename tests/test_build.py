"""Build bookkeeping: the build/runtime torch check, the build info, and the stable ABI of the
compiled operator library (docs/wheel.md)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import types

import pytest
import torch

from lidvae_ext import _extension


def test_too_old_torch_gives_install_instructions(monkeypatch):
    fake_config = types.SimpleNamespace(TORCH_VERSION="2.99.0", TORCH_MIN="2.99", WITH_CUDA=False,
                                        CUDA_ARCH_LIST="")
    real_import = _extension.importlib.import_module

    def fake_import(name, *args, **kwargs):
        if name == "lidvae_ext._build_config":
            return fake_config
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(_extension.importlib, "import_module", fake_import)
    with pytest.raises(ImportError, match=r"built against torch 2\.99\.0 .*need torch >= 2\.99 .* but torch .* "
                                          r"is running.*--no-build-isolation"):
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
                                 CUDA_VERSION=cuda_version, ABI="stable", TORCH_MIN="2.10")


@pytest.mark.parametrize("running,cuda", [("2.11.0+cu130", "13.0"), ("2.10.0", None), ("2.13.0+cpu", None),
                                          ("2.14.0.dev20270101+cpu", None)])
def test_stable_cpu_build_runs_beside_any_later_torch(running, cuda):
    """The stable-ABI operators: one build for every torch >= 2.10 (no GPU: nothing to warn)."""
    assert _extension.check_compatibility(_config("2.13.0+cpu", False), running, cuda, False) is None


def test_cpu_build_on_cuda_torch_with_gpu_warns():
    message = _extension.check_compatibility(_config("2.11.0+cpu", False), "2.11.0+cu130", "13.0", True)
    assert message is not None and "\n" not in message
    assert "CUDA kernels are absent" in message
    assert "torch 2.11.0+cpu (CUDA kernels: no)" in message and "torch 2.11.0+cu130 (CUDA 13.0)" in message


@pytest.mark.parametrize("torch_cuda,gpu", [("13.0", False), (None, False)])
def test_cpu_build_without_gpu_loads_silently(torch_cuda, gpu):
    assert _extension.check_compatibility(_config("2.13.0+cpu", False), "2.13.0", torch_cuda, gpu) is None


@pytest.mark.parametrize("running", ["2.11.0+cu130", "2.13.0+cu130", "2.10.0+cu130"])
def test_cuda_build_on_any_later_cuda_torch_loads_silently(running):
    """The CUDA kernels are on the stable ABI too: any torch >= 2.10 with the same CUDA major."""
    assert _extension.check_compatibility(_config("2.11.0+cu130", True, "13.0"), running, "13.0",
                                          True) is None


@pytest.mark.parametrize("config,torch_version,torch_cuda,match", [
    (_config("2.13.0+cpu", False), "2.9.1+cu128", "12.8",
     r"^lidvae_ext was built against torch 2\.13\.0\+cpu \(CUDA kernels: no\); its operators need torch "
     r">= 2\.10 \(LibTorch stable ABI\) but torch 2\.9\.1\+cu128 \(CUDA 12\.8\) is running\. Install "
     r"torch >= 2\.10"),

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
    from lidvae_ext import _build_config

    assert info["torch_version"] == _build_config.TORCH_VERSION  # compiled against
    assert info["torch_runtime"] == torch.__version__
    assert info["torch_min"] == _build_config.TORCH_MIN == "2.10"

    assert info["with_cuda"] is _build_config.WITH_CUDA
    assert info["cuda_arch_list"] == _build_config.CUDA_ARCH_LIST
    assert set(info["activations"]) == {"leaky_relu", "softplus"}
    assert info["abi"] == _build_config.ABI == "stable"


def _compiled(stem: str) -> str:
    found = sorted(glob.glob(os.path.join(os.path.dirname(_extension.__file__), f"{stem}*.so")))
    assert found, f"no lidvae_ext/{stem}*.so"
    return found[0]


@pytest.mark.skipif(not _extension.loaded(), reason="lidvae_ext._C not built")
@pytest.mark.skipif(shutil.which("nm") is None or shutil.which("readelf") is None, reason="no binutils")
def test_operator_library_uses_only_the_stable_abi():
    """_kernels imports no torch C++ symbol (only the C shim), and links no libtorch_python;
    _C (pybind11) links no torch library at all: what lets one build load beside every torch."""
    kernels = _compiled("_kernels")
    undefined = subprocess.run(["nm", "-D", "--undefined-only", kernels], capture_output=True, text=True,
                               check=True).stdout.split()
    cxx_torch = [s for s in undefined if s.startswith(("_ZN2at", "_ZN3c10", "_ZN5torch", "_ZNK2at",
                                                        "_ZNK3c10", "_ZNK5torch"))]
    assert not cxx_torch, cxx_torch[:10]
    assert "torch_call_dispatcher" in undefined and "torch_parallel_for" in undefined
    needed = subprocess.run(["readelf", "-d", kernels], capture_output=True, text=True, check=True).stdout
    assert "libtorch_python" not in needed
    module = subprocess.run(["readelf", "-d", _compiled("_C")], capture_output=True, text=True,
                            check=True).stdout
    assert "NEEDED" in module and not any(lib in module for lib in ("libtorch", "libc10"))
