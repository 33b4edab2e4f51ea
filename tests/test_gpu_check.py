"""The GPU-machine script's logic, checked here with its GPU stages skipped.

``scripts/gpu_check.sh`` runs on a lent GPU machine under a hard time limit, so
its bookkeeping (stage selection, skips, the per-stage deadline, results.json)
is tested on the CPU with ``GPU_CHECK_NO_GPU=1``; the stages themselves are the
CUDA tests and benchmarks, which skip without a GPU anyway.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lidvae_ext

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"
pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="scripts/gpu_check.sh is not in this checkout")


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
                "GPU_CHECK_NO_GPU": "1", **env}
    return subprocess.run(["bash", str(SCRIPT), *args], env=full_env, capture_output=True, text=True,
                          timeout=120)


def _results(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "out" / "results.json").read_text())


def test_gpu_stages_skip_without_gpu(tmp_path):
    proc = _run(tmp_path, "--skip-build")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = _results(tmp_path)
    assert res["gpu"] is False and res["passed"] is True
    assert [s["stage"] for s in res["stages"]] == ["tests", "bench", "sanitizer", "compile"]
    assert all(s["status"] == "skipped" and s["note"] == "no GPU" for s in res["stages"])
    # build_info is that of the package the stages would test: the one the repository root
    # imports (an in-place build), recorded as missing when the source tree is not built
    if Path(lidvae_ext.__file__).resolve().parents[1] == SCRIPT.parents[1]:
        assert res["build_info"] == json.loads(json.dumps(lidvae_ext.build_info()))
    else:
        assert not res["build_info"], res["build_info"]   # None (no import) or {} (no compiled module)
        assert "build_info" in res["env"]
    assert "no GPU (GPU stages are skipped)" in res["env"] and "torch" in res["env"]
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert files == {"results.json"}, files   # nothing else is left under $OUT


def test_stage_selection_and_deadline(tmp_path):
    # 40 s deadline with 30 s kept for the summary: a stage may not start (needs >= 20 s)
    proc = _run(tmp_path, "--stages", "build", DEADLINE_S="40")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (stage,) = _results(tmp_path)["stages"]
    assert stage["stage"] == "build" and stage["status"] == "skipped"
    assert "DEADLINE_S=40" in stage["note"]
    assert not (tmp_path / "out" / "build.log").exists()


@pytest.mark.parametrize("args, message", [
    (["--stages", "tests,gpu"], "unknown stage 'gpu'"),
    (["--bogus"], "unknown argument '--bogus'"),
])
def test_bad_arguments(tmp_path, args, message):
    proc = _run(tmp_path, *args)
    assert proc.returncode == 2
    assert message in proc.stderr
