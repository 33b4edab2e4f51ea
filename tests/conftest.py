"""Test-suite fixtures: random seeds, and the CPU-variant parametrization of the op tests.

**Seeds.** Random seeds for the test suite: fresh every run, printed, reproducible with one variable.

Each run draws one session seed (or takes ``LIDVAE_TEST_SEED``); every test is
seeded from it and its node id, so a test gets the same seed whichever other
tests run with it. Before each test, Python's ``random``, NumPy's global RNG
and torch's default generator are seeded with that test's seed; the operator
tests draw their input seeds from ``random`` (``icnn_inputs.fresh_seed``).
The session seed is printed in pytest's header, and a failing test's report
names it:

    LIDVAE_TEST_SEED=123456 pytest tests/test_ops.py::test_gradcheck

reruns that test on exactly the same random inputs. Tests that create their
own generator with a fixed seed keep it (those say why the property checked
cannot depend on the draw).

**CPU variants.** CPU-variant parametrization of the op tests.

Every test in ``test_ops.py`` runs under each *CPU variant* — a GEMM backend of the
extension (``LIDVAE_CPU_GEMM``) with a row-pass ISA (``LIDVAE_CPU_ISA``), forced through
the environment, which the operators read at every call. By default the variants are
the build's choice (``auto``: ATen on Intel CPUs, else OpenBLAS when it loads; the widest
ISA the CPU runs), every other GEMM backend with that ISA, and ATen GEMMs with the baseline
ISA; ``LIDVAE_TEST_CPU_VARIANTS=all`` runs the full
product of the backends the build has and the ISAs the CPU supports
(``test_cpu_backends.py`` covers that product in every run on a compact grid).
"""

from __future__ import annotations

import os
import random
import zlib

import numpy as np
import pytest
import torch

SEED_ENV = "LIDVAE_TEST_SEED"


def _session_seed() -> int:
    value = os.environ.get(SEED_ENV, "").strip()
    if value:
        try:
            return int(value)
        except ValueError:
            raise pytest.UsageError(f"{SEED_ENV} must be an integer, got {value!r}") from None
    return random.SystemRandom().randrange(2**31)


SESSION_SEED = _session_seed()


def seed_for(nodeid: str) -> int:
    """The seed of the test ``nodeid`` in this session."""
    return (SESSION_SEED + zlib.crc32(nodeid.encode())) % 2**31


def pytest_report_header(config) -> str:
    return f"random seeds: {SEED_ENV}={SESSION_SEED} (set it to rerun with the same draws)"


@pytest.fixture(autouse=True)
def seed(request) -> int:
    """Seeds ``random``, NumPy and torch for this test; the value is the test's seed."""
    value = seed_for(request.node.nodeid)
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)
    return value


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        report.sections.append(
            ("random seed", f"reproduce with {SEED_ENV}={SESSION_SEED} (this test's seed: "
                            f"{seed_for(item.nodeid)})"))


# ----------------------------------------------------------------------------- CPU variants
VARIANT_MODULES = {"test_ops"}


def cpu_variants(full: bool) -> list[tuple[str, str]]:
    """``(gemm, isa)`` pairs: the product of what the build/CPU has, or the build's choice, every GEMM backend
    with the widest ISA, and aten/baseline."""
    try:
        import lidvae_ext

        info = lidvae_ext.build_info()
    except Exception:  # noqa: BLE001 - an unbuilt extension has no variants
        return []
    if not info or "cpu_gemm_backends" not in info:
        return []
    if full:
        return [(g, i) for g in info["cpu_gemm_backends"] for i in info["cpu_isas"]]
    widest = info["cpu_isas"][-1]  # every GEMM backend (the build's auto choice among them) with it
    return list(dict.fromkeys([*((g, widest) for g in info["cpu_gemm_backends"]), ("aten", "baseline")]))


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
