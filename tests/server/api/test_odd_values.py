"""Odd values never end in a 500 and change nothing (issue 13, item 3).

Families, not single cases: ids at and past the database's integer range in bodies, paths and
queries; digits that are not ASCII; date-times at the years' edges with offsets that push them
over; lone surrogates anywhere in a body; bodies nested past the limit. Each is refused (400, or
404 for an id in a path) naming the field where a field is to blame, and no row is written.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from server.bounds import MAX_ID
from server.models import AuditEvent, ExceptionGrant, Gateway, Room, Segment
from tests.support.api import add_lesson, add_person, bearer, count_rows, minutes, now_utc
from tests.support.dashboard import csrf_token, sign_in

TOO_BIG = [MAX_ID + 1, 2**40, 2**63, 2**64, 2**70, 10**40]
NOT_ASCII_DIGITS = ["²³", "٣", "１２", "߁", "௧"]
# Outside the years 2000-2199, or pushed outside by their offset.
ODD_TIMES = ["0001-01-01T00:00:00+05:00", "1999-12-31T23:59:59Z", "2199-12-31T23:00:00-05:00x",
             "9999-12-31T23:00:00-05:00", "9999-12-31T23:59:59", "0202-09-01T08:30:00"]
SURROGATES = ["\ud800", "a\udfffb", "\udcff" * 3]


@pytest.fixture
def leader(app: Flask, client: FlaskClient) -> dict[str, str]:
    add_person(app, "rector", "leader", "it_admin", "teacher")
    return bearer(client, "rector")


def _rows(app: Flask) -> dict[str, int]:
    return {model.__name__: count_rows(app, model)
            for model in (ExceptionGrant, Room, Gateway, Segment)}


def _refused(answer: Any, status: int = 400, field: str | None = None) -> None:
    assert answer.status_code == status, (answer.status_code, answer.get_data(as_text=True))
    body = answer.get_json()
    assert body is not None and body["message"]
    if field is not None:
        assert body.get("field") == field, body


def test_ids_past_the_integer_range_in_a_body_are_refused_naming_the_field(
        app: Flask, client: FlaskClient, leader: dict[str, str]) -> None:
    before = _rows(app)
    for field, scope in (("lesson_id", "lesson"), ("room_id", "room"), ("group_id", "group")):
        for value in [*TOO_BIG, MAX_ID]:
            answer = client.post("/api/v1/exceptions", headers=leader,
                                 json={"scope": scope, field: value, "minutes": 5})
            _refused(answer, 400, field)
    assert _rows(app) == before


def test_ids_past_the_integer_range_in_a_path_are_not_found(
        app: Flask, client: FlaskClient, leader: dict[str, str]) -> None:
    before = _rows(app)
    for method, template in (("delete", "/api/v1/exceptions/{}"), ("get", "/api/v1/reminders/{}"),
                             ("put", "/api/v1/reminders/{}"), ("delete", "/api/v1/segments/{}")):
        for value in TOO_BIG:
            answer = getattr(client, method)(template.format(value), headers=leader, json={})
            _refused(answer, 404)
    assert _rows(app) == before


def test_query_ids_in_other_digits_or_out_of_range_are_refused(
        client: FlaskClient, leader: dict[str, str]) -> None:
    for value in [*NOT_ASCII_DIGITS, str(MAX_ID + 1), "-1", "0", "1e3"]:
        _refused(client.get("/api/v1/exceptions", headers=leader,
                            query_string={"lesson": value}), 400, "lesson")


def test_query_times_outside_the_years_are_refused_naming_the_parameter(
        client: FlaskClient, leader: dict[str, str]) -> None:
    for path, name in (("/api/v1/lessons", "from"), ("/api/v1/lessons", "to"),
                       ("/api/v1/exceptions", "from"), ("/api/v1/audit", "from")):
        for value in ODD_TIMES:
            _refused(client.get(path, headers=leader, query_string={name: value}), 400, name)


def test_exception_times_outside_the_years_are_refused_and_the_audit_page_stays_readable(
        app: Flask, client: FlaskClient, leader: dict[str, str]) -> None:
    before = _rows(app), count_rows(app, AuditEvent)
    for name in ("start", "end"):
        for value in ODD_TIMES:
            body = {"scope": "school", "start": "2026-12-01T08:00:00Z",
                    "end": "2026-12-01T09:00:00Z", name: value}
            _refused(client.post("/api/v1/exceptions", headers=leader, json=body), 400, name)
    assert (_rows(app), count_rows(app, AuditEvent)) == before
    assert client.get("/api/v1/audit", headers=leader).status_code == 200


SURROGATE_PLACES = [
    ("/api/v1/rooms", {"code": "{}"}, "code"),
    ("/api/v1/gateways", {"name": "{}"}, "name"),
    ("/api/v1/auth/token", {"username": "{}", "password": "x"}, "username"),
    ("/api/v1/auth/token", {"username": "rector", "password": "{}"}, "password"),
    ("/api/v1/exceptions", {"scope": "school", "minutes": 5, "reason": "{}"}, "reason"),
    ("/api/v1/exceptions", {"scope": "school", "minutes": 5, "services": ["youtube", "{}"]},
     "services[1]"),
    ("/api/v1/exceptions", {"scope": "school", "minutes": 5, "{}": 1}, "{}"),
]


def test_lone_surrogates_anywhere_in_a_body_are_refused_naming_where(
        app: Flask, client: FlaskClient, leader: dict[str, str]) -> None:
    before = _rows(app)
    for path, body, field in SURROGATE_PLACES:
        for text in SURROGATES:
            raw = json.dumps(body).replace("{}", json.dumps(text)[1:-1])
            answer = client.post(path, headers=leader, data=raw,
                                 content_type="application/json")
            _refused(answer, 400, field.replace("{}", text))
    assert _rows(app) == before


def test_bodies_nested_past_the_limit_are_refused(
        app: Flask, client: FlaskClient, leader: dict[str, str]) -> None:
    for opening, closing in (("[", "]"), ('{"a":', "}")):
        for depth in (33, 200, 5_000, 100_000):
            raw = ('{"scope": "school", "minutes": 5, "x": ' + opening * depth + "1"
                   + closing * depth + "}")
            answer = client.post("/api/v1/exceptions", headers=leader, data=raw,
                                 content_type="application/json")
            _refused(answer, 400 if len(raw) <= 256 * 1024 else 413)
    assert count_rows(app, ExceptionGrant) == 0


def test_a_body_nested_within_the_limit_is_read(client: FlaskClient,
                                                leader: dict[str, str]) -> None:
    raw = '{"scope": "school", "minutes": 5, "x": ' + "[" * 30 + "]" * 30 + "}"
    answer = client.post("/api/v1/exceptions", headers=leader, data=raw,
                         content_type="application/json")
    assert answer.status_code == 201, answer.get_json()


# --- the dashboard's forms -------------------------------------------------------------------

def test_the_teachers_grant_form_with_odd_values_writes_nothing(
        app: Flask, client: FlaskClient) -> None:
    add_person(app, "docent", "teacher")
    lesson_id = add_lesson(app, "2.14", now_utc() - minutes(5), now_utc() + minutes(40))
    sign_in(client, "docent")
    token = csrf_token(client, "/nu")
    for odd_id in [*(str(v) for v in TOO_BIG), *NOT_ASCII_DIGITS]:
        answer = client.post("/nu/grant", data={"lesson_id": odd_id, "duration": "15",
                                                "csrf_token": token})
        assert answer.status_code == 404, odd_id
    for duration in [*NOT_ASCII_DIGITS, "1" * 400, "-15", "15.0"]:
        answer = client.post("/nu/grant", data={"lesson_id": str(lesson_id),
                                                "duration": duration, "csrf_token": token})
        assert answer.status_code == 400, duration  # "choose the rest of the lesson, ..."
    assert count_rows(app, ExceptionGrant) == 0


def test_the_leaders_form_with_odd_values_is_refused_and_writes_nothing(
        app: Flask, client: FlaskClient) -> None:
    add_person(app, "rector", "leader")
    sign_in(client, "rector")
    token = csrf_token(client, "/leiding")
    for form in ({"scope": "room", "room": str(2**70)}, {"scope": "group", "group": "²"},
                 {"scope": "school", "start": "9999-12-31T23:00"},
                 {"scope": "school", "end": "0001-01-01T00:00"}):
        data = {"start": "2026-12-01T08:00", "end": "2026-12-01T09:00", **form,
                "csrf_token": token}
        answer = client.post("/leiding/uitzonderingen", data=data)
        assert answer.status_code == 400, form
    assert count_rows(app, ExceptionGrant) == 0
