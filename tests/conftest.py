"""CPU-variant parametrization of the op tests.

Every test in ``test_ops.py`` runs under each *CPU variant* — a GEMM backend of the
extension (``LIDVAE_CPU_GEMM``) with a row-pass ISA (``LIDVAE_CPU_ISA``), forced through
the environment, which the operators read at every call. By default the variants are
the build's best (``auto``: OpenBLAS when it loads, the widest ISA the CPU runs) and
ATen GEMMs with the baseline ISA; ``LIDVAE_TEST_CPU_VARIANTS=all`` runs the full
product of the backends the build has and the ISAs the CPU supports
(``test_cpu_backends.py`` covers that product in every run on a compact grid).
"""

from __future__ import annotations

import os

import pytest

VARIANT_MODULES = {"test_ops"}


def cpu_variants(full: bool) -> list[tuple[str, str]]:
    """``(gemm, isa)`` pairs: the product of what the build/CPU has, or best + aten/baseline."""
    try:
        import lidvae_ext

        info = lidvae_ext.build_info()
    except Exception:  # noqa: BLE001 - an unbuilt extension has no variants
        return []
    if not info or "cpu_gemm_backends" not in info:
        return []
    if full:
        return [(g, i) for g in info["cpu_gemm_backends"] for i in info["cpu_isas"]]
    best = (info["cpu_gemm_backends"][-1], info["cpu_isas"][-1])
    return list(dict.fromkeys([best, ("aten", "baseline")]))


def pytest_generate_tests(metafunc):
    if metafunc.module.__name__.rsplit(".", 1)[-1] not in VARIANT_MODULES:
        return
    variants = cpu_variants(os.environ.get("LIDVAE_TEST_CPU_VARIANTS", "") == "all")
    if variants and "cpu_variant" in metafunc.fixturenames:
        metafunc.parametrize("cpu_variant", variants, indirect=True, ids=[f"{g}-{i}" for g, i in variants])


@pytest.fixture(autouse=True)
def cpu_variant(request, monkeypatch):
    """Forces the CPU GEMM backend and ISA of a parametrized test (nothing otherwise)."""
    variant = getattr(request, "param", None)
    if variant is not None:
        monkeypatch.setenv("LIDVAE_CPU_GEMM", variant[0])
        monkeypatch.setenv("LIDVAE_CPU_ISA", variant[1])
    return variant
