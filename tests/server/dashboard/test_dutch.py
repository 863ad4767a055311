"""Dutch everywhere in the Dutch interface (issue 14, item 5): every page as each role, the
refusals of forms, rule modules and importers, error pages and flash messages."""

from __future__ import annotations

import ast
import html
import re
from pathlib import Path

import pytest
from babel.messages.pofile import read_po
from babel.support import Translations
from flask import Flask
from sqlalchemy import select

from tests.support.dashboard import csrf_token, sign_in

from server.extensions import db
from server.models import ImportJob, Room, School
from server.timetable.messages import translate

SERVER = Path(__file__).resolve().parents[3] / "server"
CATALOG = SERVER / "translations" / "nl" / "LC_MESSAGES" / "messages.po"
# Words that are English and not Dutch: a page in Dutch has none of them.
ENGLISH_WORDS = {"the", "and", "must", "with", "should", "cannot", "overlaps", "formerly",
                 "found", "expected", "invalid", "please", "not", "your", "which", "there",
                 "been", "have", "has", "lesson", "lessons", "room", "rooms", "blocked",
                 "allowed", "until", "from", "only", "this", "that", "already", "needs",
                 "deleted", "person", "added", "saved", "removed", "error", "server", "bytes"}
# English that may stand in a Dutch page: product, format and protocol names.
ALLOWED = {"lesfocus", "ical", "icalendar", "zermelo", "untis", "webuntis", "csv", "json",
           "gateway", "gateways", "segment", "segmenten", "cidr", "ipv4", "ipv6", "vlan",
           "wifi", "it"}
_SCRIPT = re.compile(r"<(script|style)\b.*?</\1>", re.S | re.I)
_ATTRS = re.compile(r'\b(?:aria-label|placeholder|title|data-confirm|alt)="([^"]*)"')
_TAG = re.compile(r"<[^>]+>")
# What a page shows in English on purpose: the English reminder texts, the language switch.
_ENGLISH_ON_PURPOSE = re.compile(r"<(\w+)\b[^>]*\blang=\"en\"[^>]*>.*?</\1>", re.S)

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _catalog() -> list[tuple[str, str]]:
    with open(CATALOG, "rb") as handle:
        catalog = read_po(handle)
    pairs = []
    for message in catalog:
        if not message.id:
            continue
        ids = [message.id] if isinstance(message.id, str) else list(message.id)
        strings = [message.string] if isinstance(message.string, str) else list(message.string)
        pairs += [(msgid, string) for msgid, string in zip(ids, strings)]
    return pairs


def _english_fragments() -> list[str]:
    """The literal pieces (12+ characters) of msgids whose Dutch differs from the English."""
    fragments = set()
    for msgid, string in _catalog():
        if msgid == string:
            continue
        for piece in re.split(r"%\(\w+\)[sd]|%[sd]", msgid):
            piece = piece.strip(" .,:;()")
            if len(piece) >= 12 and piece not in string:
                fragments.add(piece)
    return sorted(fragments)


def _visible_text(page: str) -> str:
    page = _ENGLISH_ON_PURPOSE.sub(" ", _SCRIPT.sub(" ", page))
    attributes = " ".join(_ATTRS.findall(page))
    return html.unescape(_TAG.sub(" ", page) + " " + attributes)


def _english_in(text: str, fragments: list[str]) -> list[str]:
    found = [fragment for fragment in fragments if fragment in text]
    words = {word.lower() for word in re.findall(r"[A-Za-z]+", text)}
    found += sorted((words & ENGLISH_WORDS) - ALLOWED)
    return found


def _nl() -> Translations:
    return Translations.load(str(SERVER / "translations"), ["nl"])


def _nl_gettext(msgid: str, **values: str) -> str:
    text = _nl().ugettext(msgid)
    return text % values if values else text


def _pages(app: Flask, world) -> dict[str, list[str]]:
    with app.app_context():
        school = db.session.scalar(select(School).where(School.slug == "test"))
        room = db.session.scalar(select(Room).where(Room.code == "2.14"))
        job = ImportJob(school_id=school.id, requested_by_label="deleted person",
                        filename="rooster.ics", size=10, state="failed",
                        error="event UID 'x' (line 4): DTEND (2026-01-01T10:00:00+00:00) is not "
                              "after DTSTART (2026-01-01T11:00:00+00:00)")
        done = ImportJob(school_id=school.id, requested_by_label="ict", filename="r.csv",
                         size=10, state="done",
                         report={"counts": {"created": 1}, "notes": [
                             "ignored 2 columns: teacher, notes",
                             "line 3 replaces line 2 (same id 'l1')"]})
        db.session.add_all([job, done])
        db.session.commit()
        room_id, job_id, done_id = room.id, job.id, done.id
    return {
        "docent": ["/nu", "/week"],
        "leiding": ["/leiding", "/audit"],
        "ict": ["/it/lokalen", f"/it/lokalen/{room_id}", "/it/segmenten",
                f"/it/segmenten/{world.segment}", "/it/gateways", f"/it/gateways/{world.gateway}",
                "/it/rooster", f"/it/rooster/{job_id}", f"/it/rooster/{done_id}", "/it/diensten",
                "/it/herinneringen", f"/it/herinneringen/{world.reminder}", "/it/mensen",
                f"/it/mensen/{world.people['docent']}", "/audit", "/it/bestaat-niet"],
        "niemand": ["/no-role"],
    }


@SQLITE
def test_every_page_as_each_role_is_dutch(app: Flask, world) -> None:
    fragments = _english_fragments()
    found = {}
    anonymous = app.test_client()
    for path in ("/login", "/bestaat-niet"):
        text = _visible_text(anonymous.get(path).get_data(as_text=True))
        if _english_in(text, fragments):
            found[f"anonymous {path}"] = _english_in(text, fragments)
    for role, paths in _pages(app, world).items():
        client = app.test_client()
        sign_in(client, role)
        for path in paths:
            response = client.get(path)
            assert response.status_code in (200, 404), (role, path, response.status_code)
            english = _english_in(_visible_text(response.get_data(as_text=True)), fragments)
            if english:
                found[f"{role} {path}"] = english
    assert not found, "\n".join(f"{k}: {v}" for k, v in found.items())


@SQLITE
def test_form_refusals_and_flash_messages_are_dutch(app: Flask, world) -> None:
    fragments = _english_fragments()
    client = app.test_client()
    sign_in(client, "ict")
    token = csrf_token(client, "/it/segmenten")
    posts = [
        ("/it/segmenten", {"name": "x", "gateway": world.gateway, "cidrs": "10.2.14.128/25",
                           "new_rooms": "9.99"}),
        ("/it/segmenten", {"name": "x", "gateway": world.gateway, "cidrs": "10.9.0.1/24",
                           "new_rooms": "9.99"}),
        ("/it/segmenten", {"name": "x", "gateway": world.gateway, "cidrs": "lokaal",
                           "rooms": "4.O1"}),
        ("/it/gateways", {"name": "gw-1"}),
        ("/it/lokalen", {"code": "2.14"}),
        (f"/it/gateways/{world.gateway}/naam", {"name": ""}),
        ("/it/rooster", {}),
    ]
    found = {}
    for path, form in posts:
        response = client.post(path, data={**form, "csrf_token": token}, follow_redirects=True)
        english = _english_in(_visible_text(response.get_data(as_text=True)), fragments)
        if english:
            found[path + repr(form)] = english
    upload = client.post("/it/rooster", data={"csrf_token": token, "format": "csv",
                                              "file": (__import__("io").BytesIO(b"x;y\n1;2\n"),
                                                       "r.csv")},
                         content_type="multipart/form-data")
    assert upload.status_code == 303
    from server.imports import run_next_import
    with app.app_context():
        assert run_next_import()
    job_page = client.get(upload.headers["Location"]).get_data(as_text=True)
    assert "regel 1: de kopregel mist de kolom(men)" in job_page, job_page
    # A flash after a redirect: the room added, in Dutch.
    page = client.post("/it/lokalen", data={"code": "7.01", "csrf_token": token},
                       follow_redirects=True).get_data(as_text=True)
    assert "Lokaal 7.01 toegevoegd." in page
    assert not found, "\n".join(f"{k}: {v}" for k, v in found.items())


def test_every_flash_message_has_its_own_dutch_text() -> None:
    texts = dict(_catalog())
    flashed = []
    for path in sorted((SERVER / "dashboard").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "flash"
                    and node.args and isinstance(node.args[0], ast.Call)
                    and getattr(node.args[0].func, "id", "") == "gettext"):
                flashed.append(node.args[0].args[0].value)
    assert len(flashed) > 10
    untranslated = [m for m in flashed if not texts.get(m) or texts[m] == m]
    assert untranslated == []


def _timetable_messages() -> list[tuple[str, int, str]]:
    """Every importer message of server/timetable/ as the code builds it, values filled in."""
    found = []
    for path in sorted((SERVER / "timetable").glob("*.py")):
        if path.name == "messages.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", "")
            arg = node.args[-1] if name == "insert" else node.args[0]
            if name not in ("TimetableError", "append", "insert", "ValueError"):
                continue
            if isinstance(arg, ast.JoinedStr):
                text = "".join(part.value if isinstance(part, ast.Constant) else f"V{index}"
                               for index, part in enumerate(arg.values))
            elif isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                text = arg.value
            else:
                continue
            if name in ("append", "insert") and not re.match(
                    r"(V\d+|ignored|left out|skipped|joined|created|the file)", text):
                continue
            found.append((path.name, node.lineno, text))
    return found


def test_every_importer_message_has_a_dutch_translation() -> None:
    messages = _timetable_messages()
    assert len(messages) > 100
    # Built from parse_day's two refusals, translated as whole messages (asserted below).
    composed = {("csv.py", "V0: V2 V4 is V6")}
    untranslated = [(name, line, text) for name, line, text in messages
                    if translate(text, _nl_gettext) == text and (name, text) not in composed]
    assert untranslated == []
    assert translate("line 4: date '31-02-2026' is not a valid date", _nl_gettext) == \
        "regel 4: date '31-02-2026' is geen geldige datum"
    assert translate("line 3: the header names the room column twice", _nl_gettext) == \
        "regel 3: de kopregel noemt de kolom room twee keer"
    assert translate("ignored 2 repeated lessons", _nl_gettext) == "2 herhaalde lessen overgeslagen"
    assert translate("something new", _nl_gettext) == "something new"


def test_every_grant_refusal_has_a_dutch_translation() -> None:
    from server.dashboard.grant_texts import GRANT_MESSAGES
    source = (SERVER / "grants.py").read_text(encoding="utf-8")
    refusals = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "GrantError"
                and len(node.args) == 2):
            arg = node.args[1]
            if isinstance(arg, ast.JoinedStr):
                refusals.append("".join(p.value if isinstance(p, ast.Constant) else f"V{i}"
                                        for i, p in enumerate(arg.values)))
            elif isinstance(arg, ast.Constant):
                refusals.append(arg.value)
    assert len(refusals) > 20
    untranslated = [text for text in refusals
                    if translate(text, _nl_gettext, messages=GRANT_MESSAGES) == text]
    assert untranslated == []
