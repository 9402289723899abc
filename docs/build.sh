#!/usr/bin/env bash
# Build the documentation site into docs/_build/html (offline; warnings are errors).
#   pip install -e ".[docs]" && bash docs/build.sh
# The tutorials are executed during the build; a failing cell fails it.
# PYTHON names the interpreter (default: python on PATH); DOCS_JOBS the processes (2).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/_build/html}"
exec "${PYTHON:-python}" -m sphinx -W --keep-going -n -j "${DOCS_JOBS:-2}" -b html docs "$out"
