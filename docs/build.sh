#!/usr/bin/env bash
# Build the documentation site into docs/_build/html (offline; warnings are errors).
#   pip install -e ".[docs]" && bash docs/build.sh
# The tutorials are executed during the build; a failing cell fails it.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/_build/html}"
exec python -m sphinx -W --keep-going -n -j "${DOCS_JOBS:-2}" -b html docs "$out"
