#!/usr/bin/env bash
# Build the documentation as HTML with warnings as errors: docs/*.md (MyST) and the API
# reference generated from the docstrings (autodoc + napoleon, NumPy style; docs/conf.py).
# A missing or malformed docstring, a broken link or anchor between the pages, or a heading
# out of order fails the build. CI runs it after the test suite (.ci/run).
#
#   bash scripts/build_docs.sh [OUTDIR]     # default OUTDIR: build/docs-html
#
# Environment: PYTHON (default .venv/bin/python, the environment scripts/setup.sh made, with
# the compiled package installed from its wheel); DOCS_INSTALL=0 skips installing the `docs`
# extra of pyproject.toml (Sphinx, MyST; needs Python >= 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-.venv/bin/python}
PY_ABS="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
OUT=${1:-build/docs-html}
mkdir -p "$OUT"
OUT_ABS=$(cd "$OUT" && pwd)
# autodoc imports lidvae_ext: document the compiled package, never a tree without _C.
export LIDVAE_EXT_REQUIRE_C=${LIDVAE_EXT_REQUIRE_C:-1}

if [ "${DOCS_INSTALL:-1}" = 1 ]; then
  # only the extra's requirements, read from pyproject.toml (not `pip install .[docs]`, which
  # would rebuild and reinstall the package itself)
  "$PY_ABS" -m pip install -q $("$PY_ABS" -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['docs']))")
fi

start=$(date +%s)
# From outside the source tree: `python -m` puts the working directory first on sys.path, and
# there the uncompiled lidvae_ext/ would shadow the installed package.
cd "$(mktemp -d)"
"$PY_ABS" -c "import lidvae_ext, sphinx; print('docs: lidvae_ext', lidvae_ext.__version__, 'from', lidvae_ext.__file__, '| compiled:', lidvae_ext._extension.loaded(), '| sphinx', sphinx.__version__)"
# -E: read every page and docstring afresh (Sphinx does not notice a changed docstring)
"$PY_ABS" -m sphinx -E -W --keep-going -q -b html "$ROOT/docs" "$OUT_ABS"
echo "docs: built $OUT_ABS/index.html in $(( $(date +%s) - start ))s (warnings are errors)"
