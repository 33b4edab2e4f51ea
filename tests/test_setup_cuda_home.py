"""setup.py's CUDA_HOME lookup when the ``nvcc`` on PATH is a wrapper script.

torch guesses CUDA_HOME as the folder above ``nvcc``; for ``/usr/local/bin/nvcc``
calling ``/usr/local/cuda-X.Y/bin/nvcc`` that is ``/usr/local``, where linking
``-lcudart`` fails. ``_locate_cuda_home`` asks nvcc for its real folder. The
function is read out of setup.py (running setup.py would build).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[1] / "setup.py"
pytestmark = pytest.mark.skipif(not SETUP.exists(), reason="setup.py is not in this checkout")


def _locate_cuda_home():
    tree = ast.parse(SETUP.read_text())
    (func,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_locate_cuda_home"]
    namespace = {"os": os, "shutil": shutil, "subprocess": subprocess}
    exec(compile(ast.Module(body=[func], type_ignores=[]), str(SETUP), "exec"), namespace)
    return namespace["_locate_cuda_home"]


def _toolkit(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "include" / "cuda_runtime_api.h").write_text("/* stand-in */\n")
    return root


def _nvcc(folder: Path, here: Path) -> None:
    """A stand-in nvcc whose --dryrun names ``here`` as its folder, like the real one."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvcc"
    script.write_text(f"#!/bin/sh\necho '#$ _NVVM_BRANCH_=nvvm' >&2\necho '#$ _HERE_={here}' >&2\n")
    script.chmod(0o755)


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    return monkeypatch


def test_wrapper_nvcc_points_to_its_toolkit(tmp_path, clean_env):
    toolkit = _toolkit(tmp_path / "cuda-13.0")
    _nvcc(tmp_path / "local" / "bin", here=toolkit / "bin")   # a wrapper outside the toolkit
    clean_env.setenv("PATH", f"{tmp_path / 'local' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    _locate_cuda_home()()
    assert os.environ["CUDA_HOME"] == str(toolkit)


def test_nvcc_inside_a_toolkit_is_left_to_torch(tmp_path, clean_env):
    toolkit = _toolkit(tmp_path / "cuda")
    _nvcc(toolkit / "bin", here=tmp_path / "elsewhere" / "bin")   # never asked: the guess is right
    clean_env.setenv("PATH", f"{toolkit / 'bin'}{os.pathsep}{os.environ['PATH']}")
    _locate_cuda_home()()
    assert "CUDA_HOME" not in os.environ


def test_explicit_cuda_home_is_kept(tmp_path, clean_env):
    toolkit = _toolkit(tmp_path / "cuda-13.0")
    _nvcc(tmp_path / "local" / "bin", here=toolkit / "bin")
    clean_env.setenv("PATH", f"{tmp_path / 'local' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    clean_env.setenv("CUDA_HOME", "/chosen/by/the/user")
    _locate_cuda_home()()
    assert os.environ["CUDA_HOME"] == "/chosen/by/the/user"


def test_no_toolkit_behind_the_wrapper_changes_nothing(tmp_path, clean_env):
    _nvcc(tmp_path / "local" / "bin", here=tmp_path / "missing" / "bin")
    clean_env.setenv("PATH", f"{tmp_path / 'local' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    _locate_cuda_home()()
    assert "CUDA_HOME" not in os.environ
