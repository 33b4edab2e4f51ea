#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer run of the CPU kernels:
#
#   1. builds the extension (setup.py, CPU only) with -fsanitize=address,undefined
#      into build/asan (never in place: an installed or in-place _C stays untouched);
#   2. builds and runs the C++ ctest (scripts/run_ctest.sh) with the same flags in
#      build/cmake-asan;
#   3. runs the op tests under the sanitized _C, with the ASan runtime preloaded
#      into the Python interpreter.
#
# Any ASan or UBSan report aborts the process that hit it (UBSan errors are made
# fatal with -fno-sanitize-recover=all and halt_on_error=1), so the script exits
# non-zero on the first report. docs/sanitizers.md explains the options.
#
#   PYTHON=.venv/bin/python bash scripts/sanitize.sh            # everything
#   PYTHON=.venv/bin/python bash scripts/sanitize.sh tests/test_positivity.py   # other tests
#
# Environment: PYTHON (interpreter with torch and the test dependencies;
# default python), CXX (default g++, must be the compiler setup.py uses),
# MAX_JOBS (default 2), ASAN_BUILD (default build/asan, relative to the repository),
# SANITIZE_SKIP_CTEST=1 (skip step 2). Arguments replace the default test list.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python}"
CXX="${CXX:-g++}"
export MAX_JOBS="${MAX_JOBS:-2}"
ASAN_BUILD="${ASAN_BUILD:-build/asan}"
if [ "$#" -gt 0 ]; then
  TESTS=("$@")
else
  TESTS=(tests/test_ops.py tests/test_ops_cuda.py tests/test_positivity.py tests/test_transforms.py)
fi

# The runtime the compiler links -fsanitize=address against; Python must load it first.
# libstdc++ is preloaded with it: python itself does not link libstdc++, so when libasan
# starts it cannot find the real __cxa_throw, and the first C++ exception thrown in _C
# (any TORCH_CHECK that fails) dies with "CHECK failed: ... real___cxa_throw != 0" (GCC bug 84428).
LIBASAN="$("$CXX" -print-file-name=libasan.so)"
LIBSTDCXX="$("$CXX" -print-file-name=libstdc++.so)"
for lib in "$LIBASAN" "$LIBSTDCXX"; do
  if [[ "$lib" != /* || ! -e "$lib" ]]; then
    echo "sanitize.sh: $CXX has no $(basename "$lib") (the AddressSanitizer runtime needs libasan and libstdc++; Debian: gcc's -dev package)" >&2
    exit 2
  fi
done
PRELOAD="$LIBASAN $LIBSTDCXX"

# -fno-wrapv: Python's own CFLAGS (setup.py's default compile flags) contain -fwrapv, which
# makes signed overflow defined and turns UBSan's signed-integer-overflow check off. Whether
# CFLAGS below replaces Python's flags (setuptools here) or is appended to them, the check
# stays on.
SAN_FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -fno-wrapv -g"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:exitcode=86:check_initialization_order=1:strict_init_order=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=87"
start=$(date +%s)

mkdir -p "$(dirname "$ASAN_BUILD")"
echo "== sanitize: building lidvae_ext._C with ASan+UBSan into $ASAN_BUILD (CPU only)"
# CFLAGS/LDFLAGS reach the compile and link lines of setup.py's build; setup.py's own
# flags (-O3 -fopenmp ...) come after them and stay.
CFLAGS="$SAN_FLAGS" LDFLAGS="-fsanitize=address,undefined" FORCE_ONLY_CPU=1 CXX="$CXX" \
  "$PY" setup.py -q build --build-base "$ASAN_BUILD" >"$ASAN_BUILD.log" 2>&1 || {
    tail -n 40 "$ASAN_BUILD.log" >&2
    echo "sanitize.sh: the sanitized build failed (full log: $ASAN_BUILD.log)" >&2
    exit 1
  }
LIB_DIR="$(ls -d "$ROOT/$ASAN_BUILD"/lib.* | head -n 1)"
echo "sanitize: built in $(( $(date +%s) - start )) s: $LIB_DIR"

if [ "${SANITIZE_SKIP_CTEST:-0}" != 1 ]; then
  echo "== sanitize: C++ tests (ctest) with ASan+UBSan in build/cmake-asan"
  t0=$(date +%s)
  # A fresh cache directory: CMake reads CXXFLAGS/LDFLAGS only when it first configures.
  CXXFLAGS="$SAN_FLAGS" LDFLAGS="-fsanitize=address,undefined" CXX="$CXX" PYTHON="$PY" \
    BUILD_DIR="$ROOT/build/cmake-asan" BUILD_TYPE=RelWithDebInfo JOBS="$MAX_JOBS" \
    ASAN_OPTIONS="${ASAN_OPTIONS/detect_leaks=0/detect_leaks=1}" \
    bash scripts/run_ctest.sh
  echo "sanitize: ctest stage took $(( $(date +%s) - t0 )) s"
fi

echo "== sanitize: op tests under the sanitized _C (LD_PRELOAD=$PRELOAD)"
# -P: no current directory on sys.path, as for the pytest script below, so the check
# sees the module the tests will import (not a source-tree lidvae_ext/).
PYTHONPATH="$LIB_DIR" LD_PRELOAD="$PRELOAD" "$PY" -P -c '
import sys
import lidvae_ext._C as c
if not c.__file__.startswith(sys.argv[1] + "/"):
    sys.exit(f"sanitize.sh: imported {c.__file__}, not the sanitized build in {sys.argv[1]}")
print("sanitize: _C =", c.__file__)
' "$LIB_DIR"
PYTEST="$(dirname "$PY")/pytest"
[ -x "$PYTEST" ] || PYTEST="pytest"
t0=$(date +%s)
set +e
# --capture=sys: pytest captures Python's sys.stdout/stderr only, not file descriptor 2, so a
# sanitizer report (written to fd 2 by a process that then exits) reaches the log; with the
# default fd capture it would vanish with the dying process.
PYTHONPATH="$LIB_DIR" LD_PRELOAD="$PRELOAD" LIDVAE_EXT_REQUIRE_C=1 OMP_NUM_THREADS=2 \
  "$PYTEST" -q --capture=sys -p no:cacheprovider "${TESTS[@]}"
rc=$?
set -e
echo "sanitize: op tests took $(( $(date +%s) - t0 )) s (pytest exit $rc); total $(( $(date +%s) - start )) s"
case "$rc" in
  0) echo "sanitize: no ASan/UBSan report" ;;
  86) echo "sanitize: AddressSanitizer report (see above)" >&2 ;;
  87) echo "sanitize: UndefinedBehaviorSanitizer report (see above)" >&2 ;;
  5) echo "sanitize: pytest collected no tests" >&2; rc=1 ;;
esac
exit "$rc"
