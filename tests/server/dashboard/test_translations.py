"""The Dutch catalog covers every text of the dashboard and the committed .mo matches it."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo

SERVER = Path(__file__).resolve().parents[3] / "server"
METHOD_MAP = [("dashboard/**.py", "python"), ("templates/**.html", "jinja2")]


def _source_msgids() -> set[str]:
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
            str(SERVER), METHOD_MAP):
        found.add(message[0] if isinstance(message, tuple) else message)
    return found


def test_every_dashboard_text_has_a_dutch_translation_in_the_compiled_catalog() -> None:
    with open(SERVER / "translations" / "nl" / "LC_MESSAGES" / "messages.mo", "rb") as handle:
        catalog = read_mo(handle)
    translated = {(m.id[0] if isinstance(m.id, (list, tuple)) else m.id) for m in catalog
                  if m.id and m.string}
    missing = _source_msgids() - translated
    assert not missing, f"run server/translations/update.sh; untranslated: {sorted(missing)}"
