"""One header line describing the machine a benchmark ran on.

CPU model, torch threads, the OpenBLAS environment (``OPENBLAS_CORETYPE`` /
``OPENBLAS_L2_SIZE`` change which OpenBLAS kernels run), and, when the
extension is built, the GEMM backend and row-pass ISA its CPU path uses.
"""

from __future__ import annotations

import os
import platform

import torch


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (platform's guess elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def openblas_env() -> str:
    """``OPENBLAS_CORETYPE=... OPENBLAS_L2_SIZE=...`` with "unset" for absent ones."""
    return " ".join(f"{k}={os.environ.get(k, 'unset')}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))


def extension_cpu_config() -> str:
    """The extension's CPU GEMM backend and row-pass ISA (from ``build_info()``)."""
    try:
        import lidvae_ext

        info = lidvae_ext.build_info()
    except Exception as exc:  # noqa: BLE001 - a header line must not fail the benchmark
        return f"lidvae_ext unavailable ({exc})"
    if not info:
        return "lidvae_ext not built"
    gemm = info.get("cpu_gemm", "aten (no cpu_gemm in build_info)")
    detail = info.get("cpu_gemm_detail", "")
    isa = info.get("cpu_isa", "baseline")
    try:
        from lidvae_ext.positivity import FUSED_SOFTPLUS_MIN_NUMEL, softplus_path

        softplus = {"auto": f"fused softplus_weights pass from {FUSED_SOFTPLUS_MIN_NUMEL} elements, F.softplus below",
                    "fused": "fused softplus_weights pass",
                    "aten": "F.softplus + autograd"}[softplus_path()]
    except (ImportError, ValueError) as exc:
        softplus = f"unknown ({exc})"
    return (f"lidvae_ext CPU GEMM={gemm}{f' ({detail})' if detail else ''}, row-pass ISA={isa}, "
            f"weight softplus={softplus} (LIDVAE_CPU_SOFTPLUS)")


def describe_machine() -> str:
    return (f"# CPU: {cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
            f"threads={torch.get_num_threads()}; {openblas_env()}\n# {extension_cpu_config()}")
