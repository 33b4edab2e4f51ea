#!/usr/bin/env bash
# Configure, build and run the C++ tests (CMakeLists.txt, cpp_tests/) against
# the libtorch of the torch installed for ${PYTHON:-python}.
#
#   PYTHON=.venv/bin/python bash scripts/run_ctest.sh
#
# Environment: PYTHON (interpreter with torch), BUILD_DIR (default
# build/cmake), BUILD_TYPE (default Release), JOBS (default 2),
# CMAKE_ARGS (extra configure arguments, e.g. -DLIDVAE_WITH_CUDA=ON).
# Exits non-zero when configuring, building or any test fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
BUILD_DIR="${BUILD_DIR:-${ROOT}/build/cmake}"
BUILD_TYPE="${BUILD_TYPE:-Release}"
JOBS="${JOBS:-2}"

if ! TORCH_PREFIX="$("${PYTHON}" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')"; then
  echo "run_ctest.sh: '${PYTHON}' cannot import torch; set PYTHON=/path/to/python-with-torch" >&2
  exit 2
fi

GENERATOR=()
if [[ ! -f "${BUILD_DIR}/CMakeCache.txt" ]] && command -v ninja >/dev/null 2>&1; then
  GENERATOR=(-G Ninja)  # an existing build dir keeps the generator it was made with
fi

echo "run_ctest.sh: torch CMake prefix ${TORCH_PREFIX}"
start=$(date +%s)
# shellcheck disable=SC2086  # CMAKE_ARGS is a list of words on purpose
cmake -S "${ROOT}" -B "${BUILD_DIR}" "${GENERATOR[@]}" \
  -DCMAKE_BUILD_TYPE="${BUILD_TYPE}" \
  -DCMAKE_PREFIX_PATH="${TORCH_PREFIX}" \
  ${CMAKE_ARGS:-}
cmake --build "${BUILD_DIR}" -j "${JOBS}"
echo "run_ctest.sh: configure + build took $(( $(date +%s) - start )) s"

cd "${BUILD_DIR}"
ctest --output-on-failure
