#!/usr/bin/env bash
# Re-extract the dashboard's texts and rebuild the Dutch catalog (po + compiled mo, both committed).
set -euo pipefail
cd "$(dirname "$0")/.."
../.venv/bin/pybabel extract -F translations/babel.cfg -o translations/messages.pot \
    --no-location --omit-header . >/dev/null 2>&1
../.venv/bin/python translations/nl.py
