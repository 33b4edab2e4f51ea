"""The CPU kernels' scratch cache (csrc/cpu/workspace.h): reuse, limits, and dirty memory.

The cached blocks are handed out again without being cleared, so every test here checks
values against the reference after the cache has served earlier calls with other inputs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
import torch

import lidvae_ext
from lidvae_ext import _extension
from icnn_inputs import assert_fused_matches_reference, fresh_seed, sample_cotangents, sample_inputs

pytestmark = pytest.mark.skipif(not _extension.loaded(), reason="needs the compiled extension")

ACTIVATIONS = ["leaky_relu", "softplus"]  # the in-place (sigma'' = 0) and the curved backward


@pytest.fixture
def default_limit():
    """Restores the cache limit a test changes."""
    before = lidvae_ext.cpu_workspace_info()["limit_bytes"]
    yield before
    _extension._cpu_workspace(before)


def _check_against_reference(batch, dim, hidden, layers, activation, seed, dtype=torch.float64):
    inputs = sample_inputs(batch, dim, hidden, layers, seed=seed)
    u, v = sample_cotangents(batch, dim, seed=seed)
    assert_fused_matches_reference(inputs, u, v, (0.3, activation, 0.2), dtype, f"seed={seed}")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dim", [2, 17])  # row-wise (per-thread partial sums, zeroed scratch) and GEMM paths
def test_reused_blocks_give_reference_values(activation, dim, default_limit):
    """Calls after the first get recycled (dirty) blocks; their values must not change."""
    lidvae_ext.release_cpu_workspace()
    first = fresh_seed()
    # Dirty the cache with larger values and another shape, then reuse it.
    _check_against_reference(96, dim, 24, 3, activation, first)
    misses = lidvae_ext.cpu_workspace_info()["misses"]
    for k in range(3):
        _check_against_reference(80, dim, 24, 3, activation, first + 1 + k)
    info = lidvae_ext.cpu_workspace_info()
    assert info["misses"] == misses, f"a smaller call after a larger one took new memory: {info}"
    assert info["hits"] > 0 and info["cached_bytes"] > 0


def test_steady_state_training_takes_no_new_memory(default_limit):
    module = lidvae_ext.BrenierMap(2, 64, 3).double()
    x = torch.randn(512, 2, dtype=torch.float64, requires_grad=True)

    def step():
        loss = module(x).square().sum()
        return torch.autograd.grad(loss, [x, *module.parameters()])

    step()
    before = lidvae_ext.cpu_workspace_info()
    grads = [step() for _ in range(3)]
    after = lidvae_ext.cpu_workspace_info()
    assert after["misses"] == before["misses"] and after["hits"] > before["hits"], (before, after)
    for g in grads[1:]:  # the same inputs: recycled scratch gives the same result, bit for bit
        assert all(torch.equal(a, b) for a, b in zip(g, grads[0]))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_limit_zero_keeps_nothing_and_stays_right(activation, default_limit):
    info = lidvae_ext.set_cpu_workspace_limit(0)
    assert info["limit_bytes"] == 0 and info["cached_bytes"] == 0
    misses = info["misses"]
    _check_against_reference(64, 2, 16, 3, activation, fresh_seed())
    info = lidvae_ext.cpu_workspace_info()
    assert info["cached_bytes"] == 0 and info["cached_blocks"] == 0
    assert info["misses"] > misses  # every scratch buffer came from the system


def test_lowering_the_limit_evicts_and_release_frees(default_limit):
    lidvae_ext.set_cpu_workspace_limit(256)
    _check_against_reference(256, 2, 64, 3, "leaky_relu", fresh_seed())
    held = lidvae_ext.cpu_workspace_info()["cached_bytes"]
    assert held > 64 * 1024
    info = lidvae_ext.set_cpu_workspace_limit(64 / 1024)  # 64 KiB
    assert 0 <= info["cached_bytes"] <= 64 * 1024 and info["limit_bytes"] == 64 * 1024
    lidvae_ext.set_cpu_workspace_limit(256)
    _check_against_reference(256, 2, 64, 3, "leaky_relu", fresh_seed())
    held = lidvae_ext.cpu_workspace_info()["cached_bytes"]
    assert lidvae_ext.release_cpu_workspace() == held
    assert lidvae_ext.cpu_workspace_info()["cached_bytes"] == 0


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "8", True, None])
def test_bad_limit_is_refused(bad):
    with pytest.raises(ValueError, match="set_cpu_workspace_limit: megabytes must be"):
        lidvae_ext.set_cpu_workspace_limit(bad)


def test_concurrent_calls_from_threads(default_limit):
    """Several Python threads share the cache (a mutex); each gets its own blocks."""
    seeds = [fresh_seed() + k for k in range(4)]
    errors: list[BaseException] = []

    def work(seed):
        try:
            for k in range(3):
                _check_against_reference(48 + 8 * k, 2, 16, 3, "softplus", seed + 10 * k)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def _run_with_env(value: str, cwd) -> subprocess.CompletedProcess:
    code = (
        "import torch, lidvae_ext\n"
        "print(lidvae_ext.cpu_workspace_info()['limit_bytes'])\n"
        "m = lidvae_ext.BrenierMap(2, 8, 2)\n"
        "print(float(m(torch.randn(4, 2)).sum()))\n"
    )
    env = dict(os.environ, LIDVAE_CPU_WORKSPACE_MB=value)
    # Run outside the source tree, so that `import lidvae_ext` finds the package the tests run (the
    # installed wheel, or the in-place build on PYTHONPATH), not the unbuilt sources in the cwd.
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_environment_sets_the_limit(tmp_path):
    proc = _run_with_env("3", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == str(3 << 20)


@pytest.mark.parametrize("value", ["abc", "-5", "1.5"])
def test_bad_environment_value_is_one_clear_error(value, tmp_path):
    proc = _run_with_env(value, tmp_path)
    assert proc.returncode != 0
    assert f"LIDVAE_CPU_WORKSPACE_MB must be a whole number of MiB >= 0" in proc.stderr
    assert f"got '{value}'" in proc.stderr
