#!/usr/bin/env bash
# Compile-checks the CUDA sources with nvcc (no GPU and no CUDA build of torch
# needed); any error or warning fails the script.
#
#  1. Kernels: scripts/cuda_instantiate_kernels.cu explicitly instantiates every
#     kernel template of csrc/cuda/icnn_cuda_kernels.cuh (float/double x
#     H in {16,32,64,128} x leaky_relu/softplus, plus the generic kernels) and
#     is compiled with plain nvcc — raw pointers only, no torch headers.
#  2. Host code: every csrc/cuda/*.cu / *.cpp is compiled with nvcc against the
#     torch headers of $PYTHON's torch, with the flags setup.py uses
#     (-DLIDVAE_WITH_CUDA, torch's COMMON_NVCC_FLAGS, -O3 --use_fast_math).
#     torch headers are -isystem (their warnings are not ours). A CPU-only
#     torch wheel lacks c10/cuda/impl/cuda_cmake_macros.h; then
#     -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE stands in for it (it only matters for
#     Windows DLL exports).
#
# Environment: PYTHON (default .venv/bin/python), NVCC (default nvcc),
# CUDA_ARCH (default 90, i.e. sm_90), JOBS (parallel compiles, default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
NVCC=${NVCC:-nvcc}
ARCH=${CUDA_ARCH:-90}
JOBS=${JOBS:-2}

command -v "$NVCC" >/dev/null 2>&1 || { echo "check_cuda_compile: $NVCC not found" >&2; exit 1; }
echo "check_cuda_compile: $("$NVCC" --version | tail -n 1), target sm_$ARCH"

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

WARN_FLAGS=(-Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror -Xptxas -Werror)
COMMON=(-std=c++17 -O3 --use_fast_math -lineinfo -gencode "arch=compute_$ARCH,code=sm_$ARCH" -Icsrc
        "${WARN_FLAGS[@]}")

failures=0
run() {  # run LABEL CMD...: quiet on success, full output on failure
  local label=$1
  shift
  local log="$OUT/$(echo "$label" | tr '/ ' '__').log"
  local start=$SECONDS
  if "$@" >"$log" 2>&1 && [ ! -s "$log" ]; then
    echo "  ok    $label ($((SECONDS - start))s)"
  else
    echo "  FAIL  $label" >&2
    cat "$log" >&2
    return 1
  fi
}

if ! TORCH_INFO=$("$PY" - <<'EOF'
import os
import torch
import torch.utils.cpp_extension as ce
print(" ".join(ce.include_paths()))
print(int(torch._C._GLIBCXX_USE_CXX11_ABI))
print(" ".join(ce.COMMON_NVCC_FLAGS))
print(torch.__version__)
inc = ce.include_paths()[0]
print(int(os.path.exists(os.path.join(inc, "c10", "cuda", "impl", "cuda_cmake_macros.h"))))
EOF
); then
  echo "check_cuda_compile: could not import torch with $PY" >&2
  exit 1
fi
{
  read -r -a TORCH_INCLUDES
  read -r CXX11_ABI
  read -r -a TORCH_NVCC_FLAGS
  read -r TORCH_VERSION
  read -r HAS_CMAKE_MACROS
} <<<"$TORCH_INFO"
HOST=("${COMMON[@]}" "${TORCH_NVCC_FLAGS[@]}" -Xcompiler -fPIC "-D_GLIBCXX_USE_CXX11_ABI=$CXX11_ABI"
      -DLIDVAE_WITH_CUDA "-DLIDVAE_CUDA_ARCH_LIST=\"${ARCH%?}.${ARCH: -1}\""
      "-DLIDVAE_TORCH_VERSION=\"$TORCH_VERSION\"" -DTORCH_EXTENSION_NAME=_cuda
      -DTORCH_TARGET_VERSION=0x020a000000000000 -Xcompiler -fvisibility=hidden)  # as setup.py: stable ABI
for inc in "${TORCH_INCLUDES[@]}"; do HOST+=(-isystem "$inc"); done
if [ "$HAS_CMAKE_MACROS" != 1 ]; then
  HOST+=(-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE)
  echo "  (torch $TORCH_VERSION has no c10/cuda/impl/cuda_cmake_macros.h: -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE)"
fi

shopt -s nullglob
sources=(csrc/cuda/*.cu csrc/cuda/*.cpp)
shopt -u nullglob
if [ "${#sources[@]}" -eq 0 ]; then
  echo "check_cuda_compile: no sources in csrc/cuda" >&2
  exit 1
fi
echo "== compiling ($JOBS at a time): kernels with plain nvcc, host code with nvcc + torch headers"
pids=()
throttle() { while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 1; done; }
run "scripts/cuda_instantiate_kernels.cu (every kernel template, no torch)" \
  "$NVCC" "${COMMON[@]}" -c scripts/cuda_instantiate_kernels.cu -o "$OUT/kernels.o" &
pids+=($!)
for src in "${sources[@]}"; do
  throttle
  run "$src (host code, torch headers)" "$NVCC" "${HOST[@]}" -c "$src" -o "$OUT/$(basename "$src").o" &
  pids+=($!)
done
for pid in "${pids[@]}"; do
  wait "$pid" || failures=$((failures + 1))
done

if [ "$failures" -ne 0 ]; then
  echo "check_cuda_compile: $failures source(s) failed" >&2
  exit 1
fi
# The host code is on the LibTorch stable ABI (docs/wheel.md): its objects may reference torch
# only through the C shim, never a C++ symbol of ATen, c10 or torch.
for obj in "$OUT"/*.cu.o "$OUT"/*.cpp.o; do
  [ -f "$obj" ] || continue
  cxx_torch=$(nm -u "$obj" | awk '{print $2}' | grep -E '^_ZN?K?(2at|3c10|5torch)' | head -n 5 || true)
  if [ -n "$cxx_torch" ]; then
    echo "check_cuda_compile: $(basename "$obj") uses torch's C++ API (not the stable ABI):" >&2
    echo "$cxx_torch" | c++filt >&2
    failures=$((failures + 1))
  fi
done
if [ "$failures" -ne 0 ]; then
  exit 1
fi
echo "check_cuda_compile: all CUDA sources compile cleanly for sm_$ARCH (stable ABI only)"
