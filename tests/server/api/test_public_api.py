"""Public endpoints the extension uses: keys, reminders (ETag, CORS) and lesson-status."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from tests.support.api import (add_lesson, add_person, add_segment_for, bearer, minutes,
                               new_gateway, now_utc)
from sqlalchemy import select

from server.api.common import SHIPPED_EXTENSION_ORIGINS
from server.config import PACKAGE_ROOT
from server.extensions import db
from server.models import Lesson, Reminder, Room, School


def test_keys_is_a_jwks_of_the_signing_key(app, client):
    response = client.get("/api/v1/keys")
    assert response.status_code == 200
    assert response.get_json() == app.extensions["lesfocus.signing_key"].jwks()
    assert response.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("audience, expected", [("student", {"student", "all"}),
                                                 ("staff", {"staff", "all"})])
def test_reminders_for_an_audience_include_those_for_all(client, audience, expected):
    response = client.get(f"/api/v1/reminders?audience={audience}&lang=en")
    assert response.status_code == 200
    body = response.get_json()
    assert body["reminders"], "the seeded school has reminders"
    assert {r["audience"] for r in body["reminders"]} <= expected
    assert all(r["text"] for r in body["reminders"])
    assert body["school"]["slug"] == "test"


def test_reminders_answer_304_for_their_etag_and_change_it_after_an_edit(app, client):
    first = client.get("/api/v1/reminders?audience=student&lang=nl")
    etag = first.headers["ETag"]
    again = client.get("/api/v1/reminders?audience=student&lang=nl",
                       headers={"If-None-Match": etag})
    assert again.status_code == 304
    with app.app_context():
        reminder = db.session.scalar(select(Reminder).where(Reminder.audience == "student"))
        reminder.texts = {**reminder.texts, "nl": "Nieuwe tekst."}
        db.session.commit()
    changed = client.get("/api/v1/reminders?audience=student&lang=nl",
                         headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag


def test_the_reminders_allow_any_origin_and_answer_preflight(client):
    path = "/api/v1/reminders?audience=student"
    response = client.get(path, headers={"Origin": "chrome-extension://abc"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    preflight = client.options(path, headers={"Origin": "chrome-extension://abc",
                                              "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "GET" in preflight.headers["Access-Control-Allow-Methods"]


SHIPPED = "chrome-extension://gakiipjkpedkfbmonjbfkdjfigbnpnbj"
FIREFOX = "moz-extension://3f2a9c1e-7b4d-4e8a-9c0f-1a2b3c4d5e6f"
NOT_THE_EXTENSION = [
    "https://evil.example", "http://lesfocus.test", "null", "chrome-extension://abc",
    "chrome-extension://gakiipjkpedkfbmonjbfkdjfigbnpnbk", SHIPPED + ".evil.example",
    SHIPPED + "/", "moz-extension://not-a-uuid", FIREFOX.upper(), FIREFOX + ".evil.example",
    "moz-extension://3f2a9c1e-7b4d-4e8a-9c0f-1a2b3c4d5e6", "https://" + SHIPPED[19:],
]


@pytest.mark.parametrize("query", ["", "?school=test"])  # the fast path and the Flask view
def test_lesson_status_is_readable_by_the_extension_only(client, query):
    path = f"/api/v1/lesson-status{query}"
    for origin in (SHIPPED, FIREFOX):
        answer = client.get(path, headers={"Origin": origin})
        assert answer.status_code == 200
        assert answer.headers["Access-Control-Allow-Origin"] == origin
        assert answer.headers["Vary"] == "Origin"
        preflight = client.options(path, headers={"Origin": origin,
                                                  "Access-Control-Request-Method": "GET",
                                                  "Access-Control-Request-Headers":
                                                  "if-none-match"})
        assert preflight.headers["Access-Control-Allow-Origin"] == origin
        assert "If-None-Match" in preflight.headers["Access-Control-Allow-Headers"]
    for origin in NOT_THE_EXTENSION:
        answer = client.get(path, headers={"Origin": origin})
        assert answer.status_code == 200  # answered, but a browser keeps it from that page
        assert "Access-Control-Allow-Origin" not in answer.headers, origin
        assert answer.headers["Vary"] == "Origin"
        preflight = client.options(path, headers={"Origin": origin,
                                                  "Access-Control-Request-Method": "GET"})
        assert "Access-Control-Allow-Origin" not in preflight.headers, origin
    assert "Access-Control-Allow-Origin" not in client.get(path).headers


def test_a_schools_own_build_of_the_extension_can_be_allowed(make_app):
    own = "chrome-extension://abcdefghijklmnopabcdefghijklmnop"
    client = make_app(EXTENSION_ORIGINS=f" {own}/ , chrome-extension://second").test_client()
    for path in ("/api/v1/lesson-status", "/api/v1/lesson-status?school=test"):
        assert client.get(path, headers={"Origin": own}).headers[
            "Access-Control-Allow-Origin"] == own
        assert "Access-Control-Allow-Origin" not in client.get(
            path, headers={"Origin": "chrome-extension://third"}).headers


def test_the_shipped_origin_is_the_id_chromium_derives_from_the_manifest_key():
    manifest = json.loads((PACKAGE_ROOT / "extension" / "manifest.json").read_text())
    digest = hashlib.sha256(base64.b64decode(manifest["key"])).hexdigest()[:32]
    extension_id = "".join(chr(ord("a") + int(digit, 16)) for digit in digest)
    assert SHIPPED_EXTENSION_ORIGINS == {f"chrome-extension://{extension_id}"} == {SHIPPED}


def test_staff_endpoints_do_not_allow_other_origins(client):
    response = client.get("/api/v1/lessons", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize("query, field", [("audience=parents", "audience"), ("lang=de", "lang"),
                                          ("school=nope", "school")])
def test_bad_reminder_query_names_the_parameter(client, query, field):
    response = client.get(f"/api/v1/reminders?{query}")
    assert 400 <= response.status_code < 500
    assert response.get_json()["field"] == field


def test_reminders_need_a_school_when_there_are_several(app, client):
    with app.app_context():
        db.session.add(School(slug="other", name="Other", aliases=[]))
        db.session.commit()
    assert client.get("/api/v1/reminders").status_code == 400
    assert client.get("/api/v1/reminders?school=test").status_code == 200


# --- lesson-status ------------------------------------------------------------------------------

def _status(client, address: str, **headers: str):
    return client.get("/api/v1/lesson-status", environ_base={"REMOTE_ADDR": address},
                      headers=headers)


def test_lesson_status_outside_any_segment_is_not_in_lesson(client, enrolled):
    enrolled("gw", cidrs=["10.1.0.0/24"], rooms=["2.14"])
    body = _status(client, "192.0.2.7").get_json()
    assert body == {"in_lesson": False, "blocked_services": [], "until": None,
                    "exception": None, "services": {}, "rooms": []}


def test_lesson_status_during_a_lesson_lists_blocked_services_until_its_end(app, client,
                                                                            enrolled):
    enrolled("gw", cidrs=["10.1.0.0/24", "2001:db8:1::/64"], rooms=["2.14"])
    start = now_utc() - minutes(10)
    add_lesson(app, "2.14", start, start + minutes(50))
    for address in ("10.1.0.99", "2001:db8:1::42", "::ffff:10.1.0.99"):
        body = _status(client, address).get_json()
        assert body["in_lesson"] is True
        assert "tiktok" in body["blocked_services"]
        assert body["until"] == (start + minutes(50)).isoformat().replace("+00:00", "Z")
        assert body["exception"] is None
        assert body["rooms"] == ["2.14"]


def test_lesson_status_shows_the_exception_without_names_and_updates_at_once(app, client,
                                                                             enrolled):
    enrolled("gw", cidrs=["10.1.0.0/24"], rooms=["2.14"])
    teacher = add_person(app, "jans", "teacher", teacher_code="JANS")
    start = now_utc() - minutes(10)
    lesson_id = add_lesson(app, "2.14", start, start + minutes(50), teacher_id=teacher)
    assert _status(client, "10.1.0.5").get_json()["exception"] is None  # fills the cache
    granted = client.post("/api/v1/exceptions", headers=bearer(client, "jans"), json={
        "scope": "lesson", "lesson_id": lesson_id, "services": ["youtube"], "minutes": 20})
    assert granted.status_code == 201, granted.get_json()
    body = _status(client, "10.1.0.5").get_json()
    assert body["in_lesson"] is True
    assert "youtube" not in body["blocked_services"]
    assert "tiktok" in body["blocked_services"]
    assert body["exception"]["services"] == ["youtube"]
    assert set(body["exception"]) == {"services", "until"}
    assert "jans" not in str(body).lower()


def test_lesson_status_all_services_allowed_is_still_in_lesson(app, client, enrolled):
    enrolled("gw", cidrs=["10.1.0.0/24"], rooms=["2.14"])
    add_person(app, "boss", "leader")
    start = now_utc() - minutes(10)
    add_lesson(app, "2.14", start, start + minutes(50))
    response = client.post("/api/v1/exceptions", headers=bearer(client, "boss"), json={
        "scope": "school", "minutes": 30, "reason": "open dag"})
    assert response.status_code == 201, response.get_json()
    body = _status(client, "10.1.0.5").get_json()
    assert body["in_lesson"] is True
    assert body["blocked_services"] == []
    assert body["exception"]["services"] is None


def test_cancelled_lesson_blocks_nothing(app, client, enrolled):
    enrolled("gw", cidrs=["10.1.0.0/24"], rooms=["2.14"])
    start = now_utc() - minutes(10)
    add_lesson(app, "2.14", start, start + minutes(50), cancelled=True)
    body = _status(client, "10.1.0.5").get_json()
    assert body["in_lesson"] is False
    assert body["blocked_services"] == []


def test_lesson_status_answers_from_memory_without_sql(app, client, enrolled, monkeypatch):
    from sqlalchemy import event

    from server import changes
    monkeypatch.setattr(changes, "RECHECK_SECONDS", 3600.0)  # SQLite: no change-log read meanwhile
    enrolled("gw", cidrs=["10.1.0.0/24"], rooms=["2.14"])
    enrolled("gw2", cidrs=["10.2.0.0/24"], rooms=["3.01"])
    start = now_utc() - minutes(10)
    add_lesson(app, "2.14", start, start + minutes(50))
    addresses = [f"10.{net}.0.{host}" for net in (1, 2) for host in range(2, 12)]
    first = {a: _status(client, a).get_json() for a in addresses}  # fills index and answers
    with app.app_context():
        engine = db.engine
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)
    event.listen(engine, "before_cursor_execute", count)
    try:
        again = {a: _status(client, a).get_json() for a in addresses * 3}
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert statements == []
    assert again == first
    assert first["10.1.0.2"]["in_lesson"] and not first["10.2.0.2"]["in_lesson"]


def test_lesson_status_knows_a_new_segment_at_once_and_follows_the_bell(app, client, enrolled):
    import time_machine
    enrolled("gw", cidrs=["10.1.0.0/24"], rooms=["2.14"])
    start = now_utc() - minutes(10)
    add_lesson(app, "2.14", start, start + minutes(50))
    add_lesson(app, "4.02", start, start + minutes(20))
    assert _status(client, "10.4.0.9").get_json()["rooms"] == []  # no segment there yet
    enrolled("gw4", cidrs=["10.4.0.0/24"], rooms=["4.02"])
    body = _status(client, "10.4.0.9").get_json()
    assert body["rooms"] == ["4.02"] and body["in_lesson"] is True
    # After the bell of room 4.02, not of 2.14: the kept answer of one segment ends at its bell.
    assert _status(client, "10.1.0.9").get_json()["in_lesson"] is True
    with time_machine.travel(start + minutes(21), tick=False):
        assert _status(client, "10.4.0.9").get_json()["in_lesson"] is False
        assert _status(client, "10.1.0.9").get_json()["in_lesson"] is True


def test_the_plain_lesson_status_request_and_the_flask_view_answer_alike(app, client, enrolled):
    """The extension's plain GET is answered beside Flask (lesson_status.FastPath); with a query
    string the Flask view answers. Same body, same caching and CORS headers."""
    enrolled("gw", cidrs=["10.1.0.0/24"], rooms=["2.14"])
    start = now_utc() - minutes(10)
    add_lesson(app, "2.14", start, start + minutes(50))
    plain = client.get("/api/v1/lesson-status", environ_base={"REMOTE_ADDR": "10.1.0.5"})
    viewed = client.get("/api/v1/lesson-status?school=test",
                        environ_base={"REMOTE_ADDR": "10.1.0.5"})
    assert plain.status_code == viewed.status_code == 200
    assert plain.get_json() == viewed.get_json() and plain.get_json()["in_lesson"] is True
    for response in (plain, viewed):
        assert response.headers["Cache-Control"] == "no-store"
        assert "Access-Control-Allow-Origin" not in response.headers  # no Origin: no CORS
        assert response.headers["Vary"] == "Origin"
        assert response.mimetype == "application/json"
    assert client.get("/api/v1/lesson-status?school=nope").status_code == 404
    assert client.post("/api/v1/lesson-status").status_code == 405


def test_lesson_status_falls_back_to_the_view_when_the_fast_path_fails(app, client, enrolled,
                                                                      monkeypatch):
    from server.api import lesson_status as module
    enrolled("gw", cidrs=["10.1.0.0/24"], rooms=["2.14"])
    calls = []
    original = module.answer_for

    def failing_once(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("the database went away")
        return original(*args, **kwargs)
    monkeypatch.setattr(module, "answer_for", failing_once)
    response = client.get("/api/v1/lesson-status", environ_base={"REMOTE_ADDR": "10.1.0.5"})
    assert response.status_code == 200 and response.get_json()["rooms"] == ["2.14"]
    assert len(calls) == 2  # the fast path, then the view


# --- one network, several segments (private ranges repeat across schools and sites) ------------

def _second_school(app, slug: str = "other") -> None:
    with app.app_context():
        db.session.add(School(slug=slug, name="Ander College", timezone="Europe/Amsterdam",
                              aliases=[]))
        db.session.commit()


def _lesson_elsewhere(app, slug: str, room_code: str, start, end) -> None:
    with app.app_context():
        school = db.session.scalar(select(School).where(School.slug == slug))
        room = db.session.scalar(select(Room).where(Room.school_id == school.id,
                                                    Room.code == room_code))
        db.session.add(Lesson(school_id=school.id, start=start, end=end, subject="en",
                              source="manual", source_id=f"{slug}-{room_code}", rooms=[room]))
        db.session.commit()


def _two_schools(app, enrolled, here: str, there: str) -> None:
    """Room 2.14 of school "test" on network `here`, room B1 of school "other" on `there`."""
    enrolled("gw", cidrs=[here], rooms=["2.14"])
    _second_school(app)
    gateway_id, _token = new_gateway(app, "gw-other", slug="other")
    add_segment_for(app, gateway_id, "b1", [there], ["B1"], slug="other")


def test_two_schools_with_one_network_each_get_their_own_answer_when_they_say_which(
        app, client, enrolled):
    _two_schools(app, enrolled, "10.1.0.0/24", "10.1.0.0/24")
    start = now_utc() - minutes(10)
    add_lesson(app, "2.14", start, start + minutes(50))  # school "test" has a lesson now
    for query in ("", "?school=test", "?school=other"):
        answers = [client.get(f"/api/v1/lesson-status{query}",
                              environ_base={"REMOTE_ADDR": "10.1.0.77"}) for _ in range(2)]
        assert all(answer.status_code == 200 for answer in answers)
        assert answers[0].get_json() == answers[1].get_json()
    here = _status_of(client, "?school=test")
    assert here["in_lesson"] is True and here["rooms"] == ["2.14"]
    there = _status_of(client, "?school=other")
    assert there["in_lesson"] is False and there["rooms"] == ["B1"]
    # Not saying which: neither school's answer is given to the other's students.
    unnamed = _status_of(client, "")
    assert unnamed["ambiguous"] is True
    assert unnamed["in_lesson"] is False and unnamed["rooms"] == []
    # Once both say the same, that is the answer.
    _lesson_elsewhere(app, "other", "B1", start, start + minutes(50))
    agreed = _status_of(client, "")
    assert "ambiguous" not in agreed
    assert agreed["in_lesson"] is True and agreed["rooms"] == [] and "tiktok" in \
        agreed["blocked_services"]


def test_a_more_specific_network_of_the_named_school_wins_over_a_shared_wider_one(
        app, client, enrolled):
    _two_schools(app, enrolled, "10.0.0.0/16", "10.0.5.0/24")
    assert _status_of(client, "?school=test", "10.0.5.9")["rooms"] == ["2.14"]
    assert _status_of(client, "?school=other", "10.0.5.9")["rooms"] == ["B1"]
    assert _status_of(client, "", "10.0.5.9")["rooms"] == ["B1"]  # the most specific network
    assert _status_of(client, "?school=other", "10.0.6.9")["rooms"] == []


def _status_of(client, query: str, address: str = "10.1.0.77") -> dict:
    response = client.get(f"/api/v1/lesson-status{query}", environ_base={"REMOTE_ADDR": address})
    assert response.status_code == 200
    return response.get_json()
