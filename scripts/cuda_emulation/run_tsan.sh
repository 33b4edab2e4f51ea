#!/usr/bin/env bash
# Runs the CUDA sources (csrc/cuda, unchanged) on the CPU emulation under
# ThreadSanitizer: any missing __syncwarp/__syncthreads in the kernels shows up
# as a data race, and the fused and generic paths must agree to 1e-12.
# Needs g++ >= 12 with libtsan; takes a few minutes. Usage:
#   PYTHON=.venv/bin/python bash scripts/cuda_emulation/run_tsan.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
CXX=${CXX:-g++}
read -r TORCH_INC TORCH_LIB < <("$PY" -c 'import os, torch; r = os.path.dirname(torch.__file__); print(os.path.join(r, "include"), os.path.join(r, "lib"))')
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
echo "cuda_emulation: building the TSan driver"
"$CXX" -std=c++20 -O1 -g -fsanitize=thread -pthread -DLIDVAE_CUDA_EMULATION -Icsrc -Iscripts/cuda_emulation \
  -isystem "$TORCH_INC" -isystem "$TORCH_INC/torch/csrc/api/include" -Wall -Wextra -Wno-unknown-pragmas -Werror -fvisibility=hidden \
  scripts/cuda_emulation/tsan_main.cpp scripts/cuda_emulation/emulated_kernels.cpp csrc/icnn_checks.cpp \
  -o "$OUT/tsan_main" \
  -L"$TORCH_LIB" -Wl,-rpath,"$TORCH_LIB" -Wl,--no-as-needed -ltorch -ltorch_cpu -lc10
echo "cuda_emulation: running under ThreadSanitizer"
TSAN_OPTIONS="halt_on_error=1 report_signal_unsafe=0" OMP_NUM_THREADS=1 "$OUT/tsan_main"
