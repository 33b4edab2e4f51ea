#!/usr/bin/env bash
# One prepared, time-boxed command for a lent GPU machine (see docs/cuda.md):
# build the extension in place against that machine's torch, record the
# environment, then run staged checks, each under its own timeout, so that a
# failing or hanging stage still leaves the other stages' results.
#
#   OUT=/some/dir bash scripts/gpu_check.sh            # all stages
#   bash scripts/gpu_check.sh --skip-build --stages tests,bench
#
# Stages, most valuable first:
#   build      the first that applies:
#              1. the wheel in dist/ built by scripts/gpu_prebuild.sh (scripts/build_wheel.sh),
#                 when it is for this Python, this torch, has CUDA kernels for TORCH_CUDA_ARCH_LIST
#                 and was built from these very sources (its _build_config.SOURCE_HASH and Python
#                 files): installed with pip (--no-deps --no-index --target, nothing compiled),
#                 and the stages import it (PYTHONPATH=that folder, PYTHONSAFEPATH=1 so the
#                 source tree's lidvae_ext does not shadow it; Python >= 3.11);
#              2. nothing, when an in-place prebuilt module (lidvae_ext/_gpu_prebuilt.txt) matches
#                 these sources and loads with CUDA kernels for that torch and architecture;
#              3. python setup.py build_ext --inplace (TORCH_CUDA_ARCH_LIST=9.0, MAX_JOBS=16)
#   tests      pytest tests/test_ops_cuda.py -m "not slow" -k "not torch_compile" (-v: a killed
#              stage still shows which tests passed; pytest-timeout, where installed, ends a
#              hung test after PYTEST_TIMEOUT s and dumps its stack)
#   bench      benchmarks/run.py --device cuda --memory: fused (auto), fused-generic
#              (LIDVAE_CUDA_FUSED=0), JAX jit, official-style eager, reference on C1–C4,
#              C1L, C3L in float32, then C3 in float64 (rows appended to bench.json)
#   sanitizer  compute-sanitizer memcheck + racecheck on one fused and one
#              generic shape, forward and backward (the slow test in test_ops_cuda.py)
#   compile    the torch.compile / CUDA-graph tests of test_ops_cuda.py, then
#              benchmarks/run.py --device cuda --compile (torch.compile column; slow to compile)
#
# Writes at most 8 files under $OUT: build.log, tests.log, bench.log, bench.json,
# sanitizer.log, compile.log, compile.json, results.json. results.json is
# rewritten after every stage (so a killed run still has the finished stages):
# the environment (python, torch, nvcc, nvidia-smi, build_info) and per stage
# its status (ok / failed / timeout / skipped), exit code, seconds and the
# pytest summary line. Exit code: 0 when every stage that ran passed, 1 otherwise.
#
# Environment: PYTHON (default python3), OUT (default ./gpu_check_out),
# DEADLINE_S (whole script, default 540), T_BUILD/T_TESTS/T_BENCH/T_SANITIZER/
# T_COMPILE (per stage, seconds), PYTEST_TIMEOUT (per test, default 120),
# BENCH_ARGS (extra benchmarks/run.py arguments),
# GPU_CHECK_WHEEL=0 (never install a wheel from dist/), GPU_CHECK_PREBUILT=0 (never use an
# in-place prebuilt module; with GPU_CHECK_WHEEL=0: always compile),
# GPU_CHECK_NO_GPU=1 (treat the machine as having no GPU: GPU stages are
# skipped; used to test this script's logic on a CPU machine).
# `gpu_check.sh --source-hash` prints the hash of the sources a build depends on;
# `gpu_check.sh --check-prebuilt` says whether the module in place would stand for
# the build stage (exit 0) or why not (exit 1), and runs nothing else;
# `gpu_check.sh --check-wheel` says the same of the wheels in dist/ (prints the usable one).
set -uo pipefail
cd "$(dirname "$0")/.."
# The stages run scripts (benchmarks/run.py, the sanitizer's child process) whose
# sys.path[0] is not the repository root: the in-place build must still be the
# lidvae_ext they import.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# source_hash: SHA-256 over the files a build of _C depends on (names and contents).
source_hash() {
  { find csrc -type f; echo setup.py; } | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1
}

PYTHON=${PYTHON:-python3}
OUT=${OUT:-gpu_check_out}
DEADLINE_S=${DEADLINE_S:-540}
T_BUILD=${T_BUILD:-300}
T_TESTS=${T_TESTS:-180}
T_BENCH=${T_BENCH:-240}
T_SANITIZER=${T_SANITIZER:-150}
T_COMPILE=${T_COMPILE:-200}
BENCH_ARGS=${BENCH_ARGS:-}
STAGES="build,tests,bench,sanitizer,compile"
SKIP_BUILD=0
CHECK_PREBUILT=0
CHECK_WHEEL=0

while [ $# -gt 0 ]; do
  case "$1" in
    --skip-build) SKIP_BUILD=1 ;;
    --stages) shift; STAGES="$1" ;;
    --stages=*) STAGES="${1#--stages=}" ;;
    --source-hash) source_hash; exit 0 ;;
    --check-prebuilt) CHECK_PREBUILT=1 ;;
    --check-wheel) CHECK_WHEEL=1 ;;
    -h|--help) sed -n '2,53p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for s in ${STAGES//,/ }; do
  case "$s" in build|tests|bench|sanitizer|compile) ;; *)
    echo "gpu_check.sh: unknown stage '$s' in --stages (known: build,tests,bench,sanitizer,compile)" >&2; exit 2 ;;
  esac
done
[ "$SKIP_BUILD" = 1 ] && STAGES=$(echo ",$STAGES," | sed 's/,build,/,/; s/^,//; s/,$//')

ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
PREBUILT_STAMP=lidvae_ext/_gpu_prebuilt.txt

# prebuilt_usable: whether the module in place can stand for the build stage (why not, on stdout).
prebuilt_usable() {
  if [ "${GPU_CHECK_PREBUILT:-auto}" = 0 ]; then echo "GPU_CHECK_PREBUILT=0"; return 1; fi
  if [ ! -f "$PREBUILT_STAMP" ]; then echo "no $PREBUILT_STAMP"; return 1; fi
  local hash
  hash=$(source_hash)
  if ! grep -qx "sources $hash" "$PREBUILT_STAMP"; then
    echo "the sources changed since the prebuilt module was built (now $hash)"; return 1
  fi
  "$PYTHON" - "$ARCH_LIST" <<'PY'
import sys
import torch
import lidvae_ext
info = lidvae_ext.build_info()
arch = sys.argv[1]
if not info:
    sys.exit("the prebuilt module does not load (build_info() is empty)")
if not info.get("with_cuda"):
    sys.exit("the prebuilt module has no CUDA kernels")
if info.get("torch_version") != torch.__version__:
    sys.exit(f"the prebuilt module is for torch {info.get('torch_version')}, this is {torch.__version__}")
if info.get("cuda_arch_list") != arch:
    sys.exit(f"the prebuilt module is for TORCH_CUDA_ARCH_LIST={info.get('cuda_arch_list')!r}, not {arch!r}")
PY
}

# wheel_usable: the path of a wheel in dist/ that can stand for the build stage (stdout), or why
# none can (last line on stderr). The wheel's build configuration is read as data
# (ast.literal_eval), never run.
wheel_usable() {
  if [ "${GPU_CHECK_WHEEL:-auto}" = 0 ]; then echo "GPU_CHECK_WHEEL=0" >&2; return 1; fi
  "$PYTHON" - "$ARCH_LIST" "$(source_hash)" <<'PY'
import ast, glob, os, sys, zipfile
import torch
arch, sources = sys.argv[1:3]
if sys.version_info < (3, 11):
    sys.exit("Python < 3.11 has no PYTHONSAFEPATH to keep the source tree's lidvae_ext off sys.path")
tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
tree = {os.path.relpath(p): open(p, "rb").read() for p in glob.glob("lidvae_ext/**/*.py", recursive=True)
        if os.path.basename(p) != "_build_config.py"}

def why_not(wheel):
    names = set(wheel.namelist())
    if "lidvae_ext/_build_config.py" not in names:
        return "no lidvae_ext/_build_config.py"
    config = {}
    for line in wheel.read("lidvae_ext/_build_config.py").decode().splitlines():
        key, sep, value = line.partition(" = ")
        if sep and key.isidentifier():
            config[key] = ast.literal_eval(value)
    if config.get("SOURCE_HASH") != sources:
        return "built from other sources (csrc/, setup.py)"
    if config.get("TORCH_VERSION") != torch.__version__:
        return f"for torch {config.get('TORCH_VERSION')}, this is {torch.__version__}"
    if not config.get("WITH_CUDA"):
        return "no CUDA kernels"
    missing = set(arch.split(";")) - set(str(config.get("CUDA_ARCH_LIST", "")).split(";"))
    if missing:
        return f"no kernels for {';'.join(sorted(missing))} (has {config.get('CUDA_ARCH_LIST')!r})"
    packed = {n for n in names if n.startswith("lidvae_ext/") and n.endswith(".py")} - {"lidvae_ext/_build_config.py"}
    if packed != set(tree) or any(wheel.read(n) != tree[n] for n in packed):
        return "its Python files differ from lidvae_ext/ here"
    return None

reasons = []
for path in sorted(glob.glob(f"dist/lidvae_ext-*-{tag}-*.whl")):
    with zipfile.ZipFile(path) as wheel:
        reason = why_not(wheel)
    if reason is None:
        print(path)
        sys.exit(0)
    reasons.append(f"{os.path.basename(path)}: {reason}")
sys.exit("; ".join(reasons) if reasons else f"no lidvae_ext wheel for {tag} in dist/")
PY
}

if [ "$CHECK_WHEEL" = 1 ]; then
  why=$( { path=$(wheel_usable) && echo "usable $path"; } 2>&1 | tail -n 1)
  case "$why" in
    "usable "*) echo "wheel usable: ${why#usable }"; exit 0 ;;
    *) echo "wheel not usable: $why" >&2; exit 1 ;;
  esac
fi

if [ "$CHECK_PREBUILT" = 1 ]; then
  why=$(prebuilt_usable 2>&1) && { echo "prebuilt module usable"; exit 0; }
  echo "prebuilt module not usable: $(echo "$why" | tail -n 1)" >&2
  exit 1
fi

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
STATUS="$WORK/stages.tsv"   # stage <TAB> status <TAB> rc <TAB> seconds <TAB> note (folded into results.json)
ENV_TXT="$WORK/env.txt"
: > "$STATUS"
rm -f "$OUT/bench.json" "$OUT/compile.json"   # run.py --json appends
start_all=$(date +%s)

remaining() { echo $(( DEADLINE_S - ($(date +%s) - start_all) )); }
want() { case ",$STAGES," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >> "$STATUS"; }

# run_stage NAME LIMIT LOG CMD...: runs CMD under `timeout`, capped by what is
# left of DEADLINE_S (30 s kept for the summary), and records the outcome.
run_stage() {
  local name=$1 limit=$2 log=$3; shift 3
  local left=$(( $(remaining) - 30 ))
  if [ "$left" -lt 20 ]; then
    record "$name" skipped "" 0 "no time left before DEADLINE_S=$DEADLINE_S"
    echo "== $name: skipped (deadline)"; summarize > /dev/null; return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (timeout ${limit}s): $*"
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
  local rc=$?
  local dt=$(( $(date +%s) - t0 ))
  local status=ok
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then status=timeout; elif [ "$rc" -ne 0 ]; then status=failed; fi
  record "$name" "$status" "$rc" "$dt" ""
  echo "   $name: $status (rc=$rc, ${dt}s); last lines of $(basename "$log"):"
  tail -n 5 "$log" | sed 's/^/   | /'
  summarize > /dev/null
}

# summarize: (re)writes results.json from the stage table and the environment.
summarize() {
"$PYTHON" - "$STATUS" "$OUT/results.json" "$ENV_TXT" "$have_gpu" "$(( $(date +%s) - start_all ))" <<'PY'
import json, os, re, sys
status_path, out_path, env_path, have_gpu, seconds = sys.argv[1:6]
stages = []
for line in open(status_path, encoding="utf-8"):
    name, status, rc, secs, note = line.rstrip("\n").split("\t")
    entry = {"stage": name, "status": status, "rc": int(rc) if rc else None,
             "seconds": int(secs), "note": note}
    log = os.path.join(os.path.dirname(out_path), f"{name}.log")
    if name in ("tests", "sanitizer", "compile") and os.path.exists(log):
        summary = [l.strip() for l in open(log, encoding="utf-8", errors="replace")
                   if re.search(r"\d+ (passed|failed|skipped|error)", l)]
        entry["summary"] = summary[-1].strip("= ") if summary else None
    stages.append(entry)
info = None
env_text = open(env_path, encoding="utf-8", errors="replace").read()
for line in env_text.splitlines():
    if line.startswith("build_info "):
        info = json.loads(line[len("build_info "):])
result = {"gpu": have_gpu == "1", "seconds": int(seconds), "build_info": info, "env": env_text, "stages": stages,
          "passed": all(s["status"] in ("ok", "skipped") for s in stages)}
with open(out_path, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
print(json.dumps({s["stage"]: s["status"] for s in stages}))
sys.exit(0 if result["passed"] else 1)
PY
}

have_gpu=0
if [ "${GPU_CHECK_NO_GPU:-0}" != 1 ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  have_gpu=1
fi

{
  echo "date: $(date -u +%FT%TZ)"
  echo "host: $(uname -a)"
  echo "python: $("$PYTHON" --version 2>&1)"
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())" 2>&1
  command -v nvcc >/dev/null 2>&1 && nvcc --version | tail -n 2
  if [ "$have_gpu" = 1 ]; then nvidia-smi; else echo "nvidia-smi: no GPU (GPU stages are skipped)"; fi
} > "$ENV_TXT" 2>&1

# install_wheel WHEEL: pip-installs it into $WORK/site (nothing compiled, nothing fetched) and points
# the stages at it; fails unless the package then imported is that one, with its CUDA kernels.
install_wheel() {
  local site="$WORK/site"
  echo "build: installing $1 (no compile)"
  if "$PYTHON" -m pip --version > /dev/null 2>&1; then
    "$PYTHON" -m pip install --no-deps --no-index --no-compile --target "$site" "$1" || return 1
  else   # a wheel is a zip archive laid out for site-packages: what pip --target would write
    echo "build: no pip for $PYTHON: unpacking the wheel into $site instead"
    "$PYTHON" -m zipfile -e "$1" "$site" || return 1
  fi
  export PYTHONPATH="$site" PYTHONSAFEPATH=1
  "$PYTHON" -c "
import os, sys, lidvae_ext
where = os.path.realpath(lidvae_ext.__file__)
print('build: lidvae_ext imported from', where, lidvae_ext.build_info())
sys.exit(0 if where.startswith(os.path.realpath(sys.argv[1]) + os.sep) and lidvae_ext.build_info().get('with_cuda') else 1)
" "$site"
}

if want build; then
  if wheel=$(wheel_usable 2> "$WORK/wheel.why"); then
    t0=$(date +%s)
    if install_wheel "$wheel" > "$OUT/build.log" 2>&1; then
      record build ok 0 $(( $(date +%s) - t0 )) "wheel installed ($(basename "$wheel"))"
      echo "== build: wheel installed: $(basename "$wheel")"
    else
      record build failed 1 $(( $(date +%s) - t0 )) "wheel $(basename "$wheel") did not install or load"
      echo "== build: installing $(basename "$wheel") failed; last lines of build.log:"
      tail -n 5 "$OUT/build.log" | sed 's/^/   | /'
    fi
    summarize > /dev/null
  elif why=$(prebuilt_usable 2>&1); then
    {
      echo "build: skipped the compile: the prebuilt module in place matches these sources and this torch"
      cat "$PREBUILT_STAMP"
    } > "$OUT/build.log"
    record build ok 0 0 "prebuilt module used ($(sed -n 's/^sources //p' "$PREBUILT_STAMP" | cut -c1-12))"
    echo "== build: prebuilt module used (sources match $PREBUILT_STAMP)"
    summarize > /dev/null
  else
    echo "== build: wheel not used ($(tail -n 1 "$WORK/wheel.why"))"
    echo "== build: compiling ($(echo "$why" | tail -n 1))"
    run_stage build "$T_BUILD" "$OUT/build.log" \
      env TORCH_CUDA_ARCH_LIST="$ARCH_LIST" MAX_JOBS="${MAX_JOBS:-16}" \
      "$PYTHON" setup.py build_ext --inplace
  fi
fi

# build_info() of what will be tested (in place build first on sys.path).
"$PYTHON" -c "import json, lidvae_ext; print('build_info', json.dumps(lidvae_ext.build_info()))" \
  >> "$ENV_TXT" 2>&1 || echo "build_info: lidvae_ext did not import" >> "$ENV_TXT"
# The benchmark script imports lidvae_ext with benchmarks/ first on sys.path: check that it
# finds the in-place build before a stage spends its time finding out.
if [ -f benchmarks/run.py ]; then
  if err=$("$PYTHON" benchmarks/run.py --help 2>&1 >/dev/null); then
    echo "preflight: benchmarks/run.py imports lidvae_ext: ok" >> "$ENV_TXT"
  else
    echo "preflight: benchmarks/run.py failed: $(echo "$err" | tail -n 1)" >> "$ENV_TXT"
  fi
fi

# A hung test (a kernel that never returns, say) would otherwise use up its whole stage.
PYTEST_TIMEOUT_ARGS=()
if "$PYTHON" -c "import pytest_timeout" > /dev/null 2>&1; then
  PYTEST_TIMEOUT_ARGS=(--timeout "${PYTEST_TIMEOUT:-120}" --timeout-method thread)
fi

gpu_stage() {   # gpu_stage NAME: records a skip when there is no GPU
  if [ "$have_gpu" = 1 ]; then return 0; fi
  record "$1" skipped "" 0 "no GPU"; echo "== $1: skipped (no GPU)"; summarize > /dev/null; return 1
}

if want tests && gpu_stage tests; then
  run_stage tests "$T_TESTS" "$OUT/tests.log" \
    "$PYTHON" -m pytest tests/test_ops_cuda.py -m "not slow" -k "not torch_compile" -v \
    -p no:cacheprovider -rfEs "${PYTEST_TIMEOUT_ARGS[@]}"
fi

if want bench && gpu_stage bench; then
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of words on purpose
  run_stage bench "$T_BENCH" "$OUT/bench.log" bash -c \
    "\"\$0\" benchmarks/run.py --device cuda --memory --json \"\$1\" $BENCH_ARGS &&
     \"\$0\" benchmarks/run.py --device cuda --cases C3 --dtype float64 --json \"\$1\" $BENCH_ARGS" \
    "$PYTHON" "$OUT/bench.json"
fi

if want sanitizer && gpu_stage sanitizer; then
  run_stage sanitizer "$T_SANITIZER" "$OUT/sanitizer.log" \
    "$PYTHON" -m pytest tests/test_ops_cuda.py -k compute_sanitizer -m slow -v -p no:cacheprovider -rfEs
fi

if want compile && gpu_stage compile; then
  # shellcheck disable=SC2086
  run_stage compile "$T_COMPILE" "$OUT/compile.log" bash -c \
    "\"\$0\" -m pytest tests/test_ops_cuda.py -k torch_compile -v -p no:cacheprovider -rfEs \${*:2}; tests=\$?
     \"\$0\" benchmarks/run.py --device cuda --compile --no-jax --no-eager --no-generic \
       --cases C1 C2 C3 C4 --json \"\$1\" $BENCH_ARGS; bench=\$?
     exit \$(( tests != 0 ? tests : bench ))" \
    "$PYTHON" "$OUT/compile.json" "${PYTEST_TIMEOUT_ARGS[@]}"
fi

summarize
rc=$?
echo "gpu_check.sh: results in $OUT (results.json), $(( $(date +%s) - start_all ))s"
exit "$rc"
