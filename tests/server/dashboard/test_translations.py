"""The Dutch catalog covers every text of the dashboard, and the committed .mo is the .po
compiled (server/translations/update.sh)."""

from __future__ import annotations

from configparser import RawConfigParser
from pathlib import Path

from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

SERVER = Path(__file__).resolve().parents[3] / "server"
MESSAGES = SERVER / "translations" / "nl" / "LC_MESSAGES"


def _method_map() -> list[tuple[str, str]]:
    parser = RawConfigParser()
    parser.read(SERVER / "translations" / "babel.cfg")
    return [(section.split(":", 1)[1].strip(), section.split(":", 1)[0].strip())
            for section in parser.sections()]


def _source_msgids() -> set[str]:
    keywords = {**DEFAULT_KEYWORDS, "N_": None}
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
            str(SERVER), _method_map(), keywords=keywords):
        found.add(message[0] if isinstance(message, tuple) else message)
    return found


def _ids(catalog) -> set[str]:
    return {(m.id[0] if isinstance(m.id, (list, tuple)) else m.id) for m in catalog
            if m.id and m.string and (isinstance(m.string, str) or all(m.string))}


def _key(value):
    return value if isinstance(value, str) else tuple(value)


def test_every_dashboard_text_has_a_dutch_translation_in_the_compiled_catalog() -> None:
    with open(MESSAGES / "messages.mo", "rb") as handle:
        compiled = read_mo(handle)
    missing = _source_msgids() - _ids(compiled)
    assert not missing, f"run server/translations/update.sh; untranslated: {sorted(missing)}"


def test_the_compiled_catalog_is_the_po_that_translators_edit() -> None:
    with open(MESSAGES / "messages.po", "rb") as handle:
        edited = read_po(handle)
    with open(MESSAGES / "messages.mo", "rb") as handle:
        compiled = read_mo(handle)
    assert not edited.fuzzy, "the .po header is marked fuzzy: pybabel compile would skip it"
    def texts(catalog) -> dict:
        return {_key(m.id): _key(m.string) for m in catalog if m.id}
    assert texts(edited) == texts(compiled), \
        "messages.mo differs from messages.po: run server/translations/update.sh"
    ids = [m.id if isinstance(m.id, str) else m.id[0] for m in edited if m.id]
    assert ids == sorted(ids), "keep messages.po sorted as update.sh writes it"
