#!/usr/bin/env bash
# Install what building and checking the documentation site needs:
# the [docs] extra (Sphinx, myst-nb, the book theme, MathJax, Selenium) and Debian's
# Chromium with its driver for the browser check (tests/test_docs.py).
#   bash docs/install.sh && python -m pytest tests/test_docs.py
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq chromium chromium-driver
fi
pip install -e ".[docs]"
