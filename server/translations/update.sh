#!/usr/bin/env bash
# The one command after changing texts: extract every msgid from the code (messages.pot), merge it
# into the Dutch catalog that translators edit (nl/LC_MESSAGES/messages.po, pybabel update), and
# compile it (messages.mo). All three are committed, so running the server needs no build step.
# Exits non-zero, listing them, while msgids have no Dutch text yet: write it in messages.po
# (msgstr "" under the msgid) and run this again.
set -euo pipefail
cd "$(dirname "$0")/.."
BABEL=../.venv/bin/pybabel
PO=translations/nl/LC_MESSAGES/messages.po
"$BABEL" extract -F translations/babel.cfg -k N_ -o translations/messages.pot \
    --no-location --omit-header --sort-output --width 100 --project lesfocus --version 0.1 \
    . >/dev/null 2>&1
"$BABEL" update -i translations/messages.pot -d translations -D messages -l nl \
    --no-fuzzy-matching --ignore-obsolete --width 100 --ignore-pot-creation-date >/dev/null
"$BABEL" compile -d translations -D messages -l nl >/dev/null
../.venv/bin/python - "$PO" <<'PY'
import sys
from babel.messages.pofile import read_po

with open(sys.argv[1], "rb") as handle:
    catalog = read_po(handle)
missing = [m.id if isinstance(m.id, str) else m.id[0] for m in catalog
           if m.id and not (m.string if isinstance(m.string, str) else all(m.string))]
if missing:
    sys.exit(f"{sys.argv[1]}: no Dutch text yet for:\n  " + "\n  ".join(missing))
PY
