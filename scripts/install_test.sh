#!/usr/bin/env bash
# Install test of the built wheels, as a user without a compiler would install them
# (CI runs it after scripts/setup.sh; docs/wheel.md):
#
#   bash scripts/install_test.sh                  # torches 2.13.0 and 2.11.0
#   TORCHES="2.13.0" bash scripts/install_test.sh
#
# ONE wheel for this Python: the stable-ABI wheel in dist/ (Requires-Dist: torch>=2.10, no
# local label; setup.sh's), else one built now with scripts/build_wheel.sh (CPU kernels,
# FORCE_ONLY_CPU=1) against .venv's torch. Then, for each torch release T in TORCHES:
#   1. (the same wheel for every T: the operators use the LibTorch stable ABI)
#   2. a fresh virtual environment with torch==T, no compiler reachable: stand-ins for
#      gcc/g++/cc/c++/nvcc/clang/ld come first on PATH (and CC/CXX/CUDA_HOME point at
#      them); each records its call and fails. `pip install <wheel>` (with its
#      dependencies) must succeed without any of them called and without pip building
#      anything, and torch must still be T afterwards (pip kept it);
#   3. from a folder outside the source tree (its tests/ and examples/ copied there, so
#      the installed lidvae_ext is the one imported): the import loads the compiled module
#      (LIDVAE_EXT_REQUIRE_C=1) from site-packages, with no warning on this GPU-less
#      machine but with the "CUDA kernels are absent" warning when a GPU is faked on a
#      CUDA torch for a wheel without CUDA kernels; examples/quickstart.py runs on the
#      fused kernels; tests/test_ops.py passes;
#   4. beside a torch older than 2.10: pip refuses the wheel next to torch==OLD_TORCH
#      (--dry-run, the resolver's conflict), and the import, with an old torch faked (its
#      __version__; installing one would cost gigabytes), is refused with one line naming
#      both torch versions.
# Exit code 0 when every check passed. Prints the seconds each step took.
#
# Environment: PYTHON (the interpreter for the environments; default: the one .venv was
# made from, else python3), TORCHES (default "2.13.0 2.11.0"), OLD_TORCH (default 2.9.1),
# DIST (default dist), PYTEST_ARGS (default "-q -x"), KEEP=1 (leave the environments in $WORK).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIST=${DIST:-dist}
TORCHES=${TORCHES:-2.13.0 2.11.0}
OLD_TORCH=${OLD_TORCH:-2.9.1}
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

# wheel_requires WHEEL: the wheel's torch requirement (">=2.10", "==2.11.0"; empty if none).
wheel_requires() {
  "$PYTHON" - "$1" <<'PY'
import re, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    meta = next(wheel.read(n).decode() for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
req = re.findall(r"^Requires-Dist: torch\s*([<>=!~][^;\s]*)\s*$", meta, re.M)
print(req[0] if len(req) == 1 else "")
PY
}

# stable_wheel: the stable-ABI wheel in $DIST for this Python (torch>=..., no exact pin).
stable_wheel() {
  local w
  for w in "$DIST"/lidvae_ext-*-"$PYTAG"-*.whl; do
    [ -f "$w" ] && case "$(wheel_requires "$w")" in ">="*) echo "$w"; return 0 ;; esac
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

# build_stable: builds the stable-ABI wheel (CPU kernels) with .venv's torch into $DIST.
build_stable() {
  local py=${BUILD_PYTHON:-.venv/bin/python}
  FORCE_ONLY_CPU=1 PYTHON="$py" DIST="$DIST" WHEEL_SRC="$WORK/wheel-src" \
    bash scripts/build_wheel.sh | tail -n 1
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
assert info and info["torch_runtime"] == torch.__version__ and info["abi"] == "stable", info
print(f"install_test: imported {where} (build_info: built with torch {info['torch_version']}, running "
      f"{info['torch_runtime']}, abi {info['abi']}, CUDA kernels {info['with_cuda']})")
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

# check_old_torch VENV WHEEL: the wheel beside a torch older than its floor. pip must refuse
# the pair (resolver conflict, asked with --dry-run: nothing changes), and the import, with
# OLD_TORCH faked in the running torch, must refuse in one line naming both versions.
check_old_torch() {
  local venv=$1 wheel=$2 py="$1/bin/python"
  if no_compiler "$py" -m pip install -q --dry-run "$wheel" "torch==$OLD_TORCH" > "$WORK/refuse.log" 2>&1; then
    fail "pip would install $(basename "$wheel") ($(wheel_requires "$wheel")) beside torch $OLD_TORCH"
  elif grep -qiE "conflict|ResolutionImpossible" "$WORK/refuse.log"; then
    say "pip refuses $(basename "$wheel") beside torch $OLD_TORCH: $(grep -m1 -iE "conflict" "$WORK/refuse.log")"
  else
    fail "pip failed for another reason than the torch requirement: $(tail -n 2 "$WORK/refuse.log")"
  fi
  local message
  message=$(cd "$TREE" && "$py" -c "import torch; torch.__version__ = '$OLD_TORCH'; import lidvae_ext" 2>&1 \
            | tail -n 1 || true)
  case "$message" in
    "ImportError: lidvae_ext was built against torch "*"need torch >= "*"but torch $OLD_TORCH"*"is running"*)
      say "import refuses it beside torch $OLD_TORCH (faked): ${message:0:170}..." ;;
    *) fail "import beside torch $OLD_TORCH (faked) said: $message" ;;
  esac
}

start=$(date +%s)
WHEEL=$(stable_wheel)
if [ -z "$WHEEL" ]; then
  say "no stable-ABI wheel in $DIST for $PYTAG: building one (CPU kernels)"
  WHEEL=$(timed "build" build_stable | tail -n 1) || { fail "building the wheel"; WHEEL=""; }
fi
[ -n "$WHEEL" ] && [ -f "$WHEEL" ] || { say "finished with no wheel to test"; exit 1; }
say "the one wheel for torches $TORCHES: $(basename "$WHEEL") (torch$(wheel_requires "$WHEEL"))"

for T in $TORCHES; do
  say "== torch $T: fresh environment, no compiler"
  venv=$(timed "environment with torch $T" fresh_env "$T" | tail -n 1) || { fail "environment with torch $T"; continue; }
  : > "$CALLS"
  if no_compiler "$venv/bin/python" -m pip install -v "$WHEEL" > "$WORK/install.log" 2>&1; then
    say "pip installed $(basename "$WHEEL") with its dependencies"
  else
    tail -n 20 "$WORK/install.log"; fail "pip install $(basename "$WHEEL")"; continue
  fi
  if grep -qE "Building wheel|Running setup.py|Preparing metadata \(pyproject.toml\)" "$WORK/install.log"; then
    fail "pip built something while installing: $(grep -m1 -E "Building wheel|Running setup.py|Preparing metadata" "$WORK/install.log")"
  fi
  if [ -s "$CALLS" ]; then fail "a compiler was called: $(head -n 3 "$CALLS")"; fi
  now=$("$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')
  [ "$now" = "$T" ] || fail "installing the wheel changed torch $T into $now"
  check_installed "$venv" "$WHEEL"
  if [ -s "$CALLS" ]; then fail "a compiler was called while testing: $(head -n 3 "$CALLS")"; fi
  check_old_torch "$venv" "$WHEEL"
  [ "${KEEP:-0}" = 1 ] || rm -rf "$venv"
done

say "finished in $(( $(date +%s) - start ))s with $failures failure(s)"
[ "$failures" -eq 0 ]
