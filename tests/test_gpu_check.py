"""The GPU-machine script's logic, checked here with its GPU stages skipped.

``scripts/gpu_check.sh`` runs on a lent GPU machine under a hard time limit, so
its bookkeeping (stage selection, skips, the per-stage deadline, results.json)
is tested on the CPU with ``GPU_CHECK_NO_GPU=1``; the stages themselves are the
CUDA tests and benchmarks, which skip without a GPU anyway.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

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
    proc = _run(tmp_path, "--stages", "build", DEADLINE_S="40", GPU_CHECK_PREBUILT="0", GPU_CHECK_WHEEL="0")
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


# --- the prebuilt module (scripts/gpu_prebuild.sh), in a stand-in repository -----------------

_FAKE_PACKAGE = '''
import os
import torch


def build_info():
    if os.environ.get("FAKE_NOT_BUILT"):
        return {}
    return {"with_cuda": os.environ.get("FAKE_WITH_CUDA", "1") == "1", "torch_version": torch.__version__,
            "cuda_arch_list": "9.0"}
'''

# A setup.py that only leaves a mark: whether the build stage compiled is seen from it.
_FAKE_SETUP = "open('compiled.mark', 'w').write('yes')\n"


def _fake_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "scripts" / "gpu_check.sh").write_text(SCRIPT.read_text())
    (repo / "csrc").mkdir()
    (repo / "csrc" / "kernel.cu").write_text("// kernel\n")
    (repo / "setup.py").write_text(_FAKE_SETUP)
    (repo / "lidvae_ext").mkdir()
    (repo / "lidvae_ext" / "__init__.py").write_text(_FAKE_PACKAGE)
    return repo


def _run_fake(repo: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    dropped = ("PYTHONPATH", "PYTHONSAFEPATH", "GPU_CHECK_PREBUILT", "GPU_CHECK_WHEEL")
    clean = {k: v for k, v in os.environ.items() if k not in dropped}
    full_env = {**clean, "PYTHON": sys.executable, "OUT": str(repo / "out"), "GPU_CHECK_NO_GPU": "1", **env}
    return subprocess.run(["bash", str(repo / "scripts" / "gpu_check.sh"), *args], env=full_env,
                          capture_output=True, text=True, timeout=120, cwd=repo)


def _stamp(repo: Path) -> None:
    digest = _run_fake(repo, "--source-hash").stdout.strip()
    assert len(digest) == 64, digest
    (repo / "lidvae_ext" / "_gpu_prebuilt.txt").write_text(f"sources {digest}\ntorch x\narch 9.0\n")


def _build_stage(repo: Path) -> dict:
    results = json.loads((repo / "out" / "results.json").read_text())
    return next(s for s in results["stages"] if s["stage"] == "build")


def test_source_hash_follows_the_sources(tmp_path):
    repo = _fake_repo(tmp_path)
    first = _run_fake(repo, "--source-hash").stdout
    assert _run_fake(repo, "--source-hash").stdout == first
    (repo / "csrc" / "kernel.cu").write_text("// kernel, changed\n")
    changed = _run_fake(repo, "--source-hash").stdout
    (repo / "csrc" / "kernel.cu").rename(repo / "csrc" / "renamed.cu")
    renamed = _run_fake(repo, "--source-hash").stdout
    (repo / "setup.py").write_text(_FAKE_SETUP + "# changed\n")
    assert len({first, changed, renamed, _run_fake(repo, "--source-hash").stdout}) == 4


def test_prebuilt_module_stands_for_the_build(tmp_path):
    repo = _fake_repo(tmp_path)
    _stamp(repo)
    proc = _run_fake(repo, "--stages", "build")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stage = _build_stage(repo)
    assert stage["status"] == "ok" and stage["note"].startswith("prebuilt module used"), stage
    assert not (repo / "compiled.mark").exists()
    assert "matches these sources" in (repo / "out" / "build.log").read_text()


@pytest.mark.parametrize("change, reason", [
    ("sources", "the sources changed"),
    ("no_stamp", "no lidvae_ext/_gpu_prebuilt.txt"),
    ("opt_out", "GPU_CHECK_PREBUILT=0"),
    ("cpu_only", "no CUDA kernels"),
    ("not_loading", "does not load"),
])
def test_prebuilt_module_rejected(tmp_path, change, reason):
    repo = _fake_repo(tmp_path)
    _stamp(repo)
    env = {}
    if change == "sources":
        (repo / "csrc" / "kernel.cu").write_text("// edited after the prebuild\n")
    elif change == "no_stamp":
        (repo / "lidvae_ext" / "_gpu_prebuilt.txt").unlink()
    elif change == "opt_out":
        env["GPU_CHECK_PREBUILT"] = "0"
    elif change == "cpu_only":
        env["FAKE_WITH_CUDA"] = "0"
    else:
        env["FAKE_NOT_BUILT"] = "1"
    proc = _run_fake(repo, "--stages", "build", **env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (repo / "compiled.mark").exists(), proc.stdout   # the build stage compiled
    assert _build_stage(repo)["status"] == "ok"
    (line,) = [l for l in proc.stdout.splitlines() if l.startswith("== build: compiling (")]
    assert reason in line, proc.stdout


def test_stages_see_the_in_place_build(tmp_path):
    # benchmarks/run.py runs with benchmarks/ first on sys.path, where lidvae_ext is not: the script
    # exports the repository root on PYTHONPATH so that such scripts (and the sanitizer's child
    # process) import the in-place build, which is not installed on the GPU machine
    repo = _fake_repo(tmp_path)
    (repo / "benchmarks").mkdir()
    (repo / "benchmarks" / "run.py").write_text(
        "import os, sys\nimport lidvae_ext\n"   # the repository's, not an installed one
        "sys.exit(0 if os.path.abspath(lidvae_ext.__file__).startswith(os.getcwd() + os.sep) else 1)\n")
    proc = _run_fake(repo, "--skip-build")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    env = json.loads((repo / "out" / "results.json").read_text())["env"]
    assert "preflight: benchmarks/run.py imports lidvae_ext: ok" in env, env


def test_check_prebuilt_only_reports(tmp_path):
    # gpu_prebuild.sh checks its module with this, the same test the build stage applies
    repo = _fake_repo(tmp_path)
    _stamp(repo)
    ok = _run_fake(repo, "--check-prebuilt")
    assert ok.returncode == 0 and "prebuilt module usable" in ok.stdout, ok.stdout + ok.stderr
    bad = _run_fake(repo, "--check-prebuilt", FAKE_WITH_CUDA="0")
    assert bad.returncode == 1 and "not usable: the prebuilt module has no CUDA kernels" in bad.stderr, bad.stderr
    assert not (repo / "out").exists() and not (repo / "compiled.mark").exists()   # nothing else ran


# --- the wheel (scripts/gpu_prebuild.sh -> scripts/build_wheel.sh), in a stand-in repository ---

def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _fake_wheel(repo: Path, *, sources: str | None = None, torch_version: str | None = None,
                with_cuda: bool = True, arch: str = "8.0;9.0", package: str = _FAKE_PACKAGE) -> Path:
    """A minimal wheel in repo/dist/ shaped like build_wheel.sh's (the fake package, a build configuration)."""
    sources = sources or _run_fake(repo, "--source-hash").stdout.strip()
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    config = (f"TORCH_VERSION = {torch_version or torch.__version__!r}\nWITH_CUDA = {with_cuda!r}\n"
              f"CUDA_ARCH_LIST = {arch!r}\nCUDA_VERSION = '13.0'\nABI = 'stable'\nTORCH_MIN = '2.10'\nSOURCE_HASH = {sources!r}\n")
    info = "lidvae_ext-0.1.0+cu130.dist-info"
    files = {
        "lidvae_ext/__init__.py": package.encode(),
        "lidvae_ext/_build_config.py": config.encode(),
        f"{info}/METADATA": b"Metadata-Version: 2.1\nName: lidvae_ext\nVersion: 0.1.0+cu130\n",
        f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: {tag}-{tag}-linux_x86_64\n".encode(),
    }
    record = "\n".join([*(_record_line(n, d) for n, d in files.items()), f"{info}/RECORD,,"]) + "\n"
    (repo / "dist").mkdir(exist_ok=True)
    path = repo / "dist" / f"lidvae_ext-0.1.0+cu130-{tag}-{tag}-linux_x86_64.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr(f"{info}/RECORD", record)
    return path


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the wheel route needs PYTHONSAFEPATH (Python 3.11)")
def test_wheel_stands_for_the_build(tmp_path):
    repo = _fake_repo(tmp_path)
    (repo / "benchmarks").mkdir()
    (repo / "benchmarks" / "run.py").write_text(   # the stages must import the installed wheel
        "import os, sys\nimport lidvae_ext\n"
        "sys.exit(1 if os.path.abspath(lidvae_ext.__file__).startswith(os.getcwd() + os.sep) else 0)\n")
    wheel = _fake_wheel(repo)
    checked = _run_fake(repo, "--check-wheel")
    assert checked.returncode == 0 and f"wheel usable: dist/{wheel.name}" in checked.stdout, checked.stderr
    proc = _run_fake(repo, "--stages", "build")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stage = _build_stage(repo)
    assert stage["status"] == "ok" and stage["note"] == f"wheel installed ({wheel.name})", stage
    assert not (repo / "compiled.mark").exists()
    log = (repo / "out" / "build.log").read_text()
    assert "lidvae_ext imported from" in log and str(repo / "lidvae_ext") not in log, log
    env = json.loads((repo / "out" / "results.json").read_text())["env"]
    assert "preflight: benchmarks/run.py imports lidvae_ext: ok" in env, env


@pytest.mark.parametrize("change, reason", [
    ("sources", "built from other sources"),
    ("torch", "for torch 0.0.1"),
    ("cpu_only", "no CUDA kernels"),
    ("arch", "no kernels for 9.0 (has '8.0')"),
    ("python", "its Python files differ"),
    ("opt_out", "GPU_CHECK_WHEEL=0"),
    ("none", "no lidvae_ext wheel for cp"),
])
def test_wheel_rejected(tmp_path, change, reason):
    repo = _fake_repo(tmp_path)
    env = {}
    kwargs = {"sources": "0" * 64} if change == "sources" else {"torch_version": "0.0.1"} if change == "torch" \
        else {"with_cuda": False} if change == "cpu_only" else {"arch": "8.0"} if change == "arch" else {}
    if change != "none":
        _fake_wheel(repo, **kwargs)
    if change == "python":
        (repo / "lidvae_ext" / "__init__.py").write_text(_FAKE_PACKAGE + "# edited after the wheel\n")
    elif change == "opt_out":
        env["GPU_CHECK_WHEEL"] = "0"
    checked = _run_fake(repo, "--check-wheel", **env)
    assert checked.returncode == 1 and reason in checked.stderr, checked.stdout + checked.stderr
    proc = _run_fake(repo, "--stages", "build", **env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (repo / "compiled.mark").exists(), proc.stdout   # the build stage compiled instead
    (line,) = [l for l in proc.stdout.splitlines() if l.startswith("== build: wheel not used (")]
    assert reason in line, proc.stdout


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the wheel route needs PYTHONSAFEPATH (Python 3.11)")
def test_wheel_unpacked_where_python_has_no_pip(tmp_path):
    repo = _fake_repo(tmp_path)
    wheel = _fake_wheel(repo)
    no_pip = tmp_path / "python-without-pip"
    no_pip.write_text(f'#!/bin/sh\n[ "$1 $2" = "-m pip" ] && exit 1\nexec {sys.executable} "$@"\n')
    no_pip.chmod(0o755)
    proc = _run_fake(repo, "--stages", "build", PYTHON=str(no_pip))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _build_stage(repo)["note"] == f"wheel installed ({wheel.name})"
    log = (repo / "out" / "build.log").read_text()
    assert "no pip for" in log and "lidvae_ext imported from" in log, log
    assert not (repo / "compiled.mark").exists()
