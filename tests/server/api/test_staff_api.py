"""Endpoints for dashboard users and scripts: API tokens, role checks, the school's resources."""

from __future__ import annotations

import time

import jwt
import pytest
from tests.support.api import (PASSWORD, add_lesson, add_person, bearer, count_rows, login,
                         minutes, new_gateway, now_utc, school_id)
from sqlalchemy import select

from server.extensions import db
from server.models import (AuditEvent, EnrollmentToken, ExceptionGrant, Gateway, Reminder, Room,
                           School, Segment)
from server.policy import gateway_policy
from server.tokens import API_TOKEN_AUDIENCE


@pytest.fixture
def staff(app):
    """A teacher, a leader and an IT admin of school `test`."""
    add_person(app, "jans", "teacher", teacher_code="JANS")
    add_person(app, "boss", "leader")
    add_person(app, "it", "it_admin")
    return {"teacher": "jans", "leader": "boss", "it_admin": "it"}


# --- auth/token ---------------------------------------------------------------------------------

def test_api_token_is_a_short_lived_eddsa_jwt_with_its_own_audience(app, client, staff):
    response = client.post("/api/v1/auth/token", json={"username": "jans", "password": PASSWORD})
    assert response.status_code == 200
    body = response.get_json()
    assert jwt.get_unverified_header(body["token"])["alg"] == "EdDSA"
    claims = jwt.decode(body["token"], app.extensions["lesfocus.signing_key"].public,
                        algorithms=["EdDSA"], audience=API_TOKEN_AUDIENCE)
    assert claims["exp"] - claims["iat"] == 15 * 60
    assert body["expires_at"].endswith("Z")


@pytest.mark.parametrize("body, status", [
    ({"username": "jans", "password": "wrong password!"}, 401),
    ({"username": "nobody", "password": PASSWORD}, 401),
    ({"username": "jans"}, 400),
    ({"username": ["jans"], "password": PASSWORD}, 400),
])
def test_bad_login_is_refused(client, staff, body, status):
    response = client.post("/api/v1/auth/token", json=body)
    assert response.status_code == status
    assert "token" not in response.get_json()


def test_repeated_failed_logins_are_throttled_per_username_and_address(client, staff):
    for _ in range(5):
        assert client.post("/api/v1/auth/token", json={
            "username": "jans", "password": "wrong password!"}).status_code == 401
    blocked = client.post("/api/v1/auth/token", json={"username": "jans", "password": PASSWORD})
    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) > 0
    # Another address is not blocked by these failures.
    elsewhere = client.post("/api/v1/auth/token", json={"username": "jans", "password": PASSWORD},
                            environ_base={"REMOTE_ADDR": "192.0.2.9"})
    assert elsewhere.status_code == 200


def test_policy_jws_is_not_accepted_as_an_api_token(app, client, staff):
    gateway_id, _ = new_gateway(app, "gw")
    with app.app_context():
        jws = gateway_policy(db.session.get(Gateway, gateway_id)).token()
    response = client.get("/api/v1/rooms", headers={"Authorization": f"Bearer {jws}"})
    assert response.status_code == 401


def test_a_new_password_refuses_the_api_tokens_issued_before_it(app, client, staff):
    from server.models import Person
    from server.passwords import hash_password
    headers = login(client, "jans")
    assert client.get("/api/v1/rooms", headers=headers).status_code == 200
    with app.app_context():
        person = db.session.scalar(select(Person).where(Person.username == "jans"))
        person.password_hash = hash_password("een-nieuw-wachtwoord")
        db.session.commit()
    refused = client.get("/api/v1/rooms", headers=headers)
    assert refused.status_code == 401
    assert "password changed" in refused.get_json()["message"]
    fresh = client.post("/api/v1/auth/token", json={"username": "jans",
                                                    "password": "een-nieuw-wachtwoord"})
    assert client.get("/api/v1/rooms", headers={
        "Authorization": f"Bearer {fresh.get_json()['token']}"}).status_code == 200


def test_expired_api_token_is_refused(app, client, staff):
    from server.tokens import issue_api_token
    with app.app_context():
        token, _ = issue_api_token(app.extensions["lesfocus.signing_key"], person_id=1,
                                   school_id=school_id(app), minutes=1, issuer="x",
                                   password="", now=time.time() - 3600)
    assert client.get("/api/v1/rooms", headers={"Authorization": f"Bearer {token}"}
                      ).status_code == 401


def test_disabled_account_token_stops_working(app, client, staff):
    headers = login(client, "jans")
    from server.models import Person
    with app.app_context():
        db.session.scalar(select(Person).where(Person.username == "jans")).active = False
        db.session.commit()
    assert client.get("/api/v1/rooms", headers=headers).status_code == 401


# --- role checks --------------------------------------------------------------------------------

ENDPOINTS = [
    # method, path, body, roles allowed
    ("get", "/api/v1/lessons", None, {"teacher", "leader", "it_admin"}),
    ("get", "/api/v1/exceptions", None, {"teacher", "leader", "it_admin"}),
    ("post", "/api/v1/exceptions", {"scope": "school", "minutes": 5}, {"leader"}),
    ("delete", "/api/v1/exceptions/999999", None, {"teacher", "leader"}),
    ("get", "/api/v1/rooms", None, {"teacher", "leader", "it_admin"}),
    ("post", "/api/v1/rooms", {"code": "9.99"}, {"it_admin"}),
    ("get", "/api/v1/segments", None, {"teacher", "leader", "it_admin"}),
    ("post", "/api/v1/segments", {"name": "x", "gateway_id": "none", "cidrs": ["10.9.0.0/24"],
                                  "rooms": ["9.99"]}, {"it_admin"}),
    ("delete", "/api/v1/segments/999999", None, {"it_admin"}),
    ("get", "/api/v1/gateways", None, {"it_admin"}),
    ("post", "/api/v1/gateways", {"name": "gw-roles"}, {"it_admin"}),
    ("post", "/api/v1/gateways/none/enrollment-token", None, {"it_admin"}),
    ("get", "/api/v1/services", None, {"teacher", "leader", "it_admin"}),
    ("put", "/api/v1/services/blocked", {"services": None}, {"it_admin"}),
    ("get", "/api/v1/reminders/999999", None, {"it_admin"}),
    ("put", "/api/v1/reminders/999999", {"enabled": True}, {"it_admin"}),
    ("get", "/api/v1/audit", None, {"leader", "it_admin"}),
]


@pytest.mark.parametrize("method, path, body, allowed", ENDPOINTS,
                         ids=[f"{m} {p}" for m, p, _, _ in ENDPOINTS])
def test_staff_endpoint_needs_a_token_and_the_right_role(client, staff, method, path, body,
                                                         allowed):
    call = getattr(client, method)
    anonymous = call(path, json=body)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert call(path, json=body, headers={"Authorization": "Bearer not.a.token"}
                ).status_code == 401
    for role, username in staff.items():
        response = call(path, json=body, headers=bearer(client, username))
        if role in allowed:
            assert response.status_code not in (401, 403), (role, response.get_json())
        else:
            assert response.status_code == 403, (role, response.get_json())
            assert response.get_json()["error"] == "Forbidden"


def test_objects_of_another_school_are_not_found(app, client, staff):
    with app.app_context():
        other = School(slug="other", name="Other", aliases=[])
        db.session.add(other)
        db.session.flush()
        room = Room(school_id=other.id, code="X.1")
        reminder = Reminder(school_id=other.id, article="A1", audience="all", trigger="always",
                            texts={"nl": "x"})
        db.session.add_all([room, reminder])
        db.session.commit()
        reminder_id = reminder.id
    headers = bearer(client, "it")
    assert client.get(f"/api/v1/reminders/{reminder_id}", headers=headers).status_code == 404
    rooms = client.get("/api/v1/rooms", headers=headers).get_json()["rooms"]
    assert "X.1" not in {r["code"] for r in rooms}


# --- request bodies -----------------------------------------------------------------------------

def test_oversized_json_body_is_413_and_writes_nothing(app, client, staff):
    headers = bearer(client, "it")
    app.config["LESFOCUS_MAX_JSON_BODY"] = 512
    before = count_rows(app, Room)
    response = client.post("/api/v1/rooms", headers=headers,
                           json={"code": "1.01", "name": "x" * 1000})
    assert response.status_code == 413
    assert set(response.get_json()) == {"error", "message"}
    assert count_rows(app, Room) == before


@pytest.mark.parametrize("data, content_type", [
    ("code=1.01", "application/x-www-form-urlencoded"),
    ("{not json", "application/json"),
    ('["a list"]', "application/json"),
    ("", "application/json"),
])
def test_non_json_body_is_400_and_writes_nothing(app, client, staff, data, content_type):
    headers = bearer(client, "it")
    before = count_rows(app, Room)
    response = client.post("/api/v1/rooms", headers={**headers, "Content-Type": content_type},
                           data=data)
    assert response.status_code == 400
    assert count_rows(app, Room) == before


@pytest.mark.parametrize("body, field", [
    ({}, "code"), ({"code": 5}, "code"), ({"code": "  "}, "code"), ({"code": "x" * 65}, "code"),
    ({"code": "1.01", "name": ["x"]}, "name"),
])
def test_wrong_types_are_400_with_the_field(app, client, staff, body, field):
    response = client.post("/api/v1/rooms", headers=bearer(client, "it"), json=body)
    assert response.status_code == 400
    assert response.get_json()["field"] == field
    assert count_rows(app, Room) == 0


# --- lessons ------------------------------------------------------------------------------------

def test_lessons_filter_by_time_room_and_mine(app, client, staff):
    from server.models import Person
    with app.app_context():
        teacher_id = db.session.scalar(select(Person.id).where(Person.username == "jans"))
    start = now_utc().replace(minute=0) - minutes(60)
    mine = add_lesson(app, "2.14", start, start + minutes(50), teacher_id=teacher_id)
    other = add_lesson(app, "3.01", start, start + minutes(50))
    later = add_lesson(app, "2.14", start + minutes(60 * 24 * 3), start + minutes(60 * 24 * 3 + 50))
    headers = bearer(client, "jans")
    window = {"from": (start - minutes(1)).isoformat(), "to": (start + minutes(120)).isoformat()}

    def ids(**params):
        response = client.get("/api/v1/lessons", headers=headers, query_string={**window, **params})
        assert response.status_code == 200, response.get_json()
        return {lesson["id"] for lesson in response.get_json()["lessons"]}

    assert ids() == {mine, other}
    assert ids(room="2.14") == {mine}
    assert ids(mine="true") == {mine}
    assert later not in ids()


@pytest.mark.parametrize("query, field", [
    ({"from": "yesterday"}, "from"),
    ({"from": "2026-11-23T10:00:00Z", "to": "2026-11-23T09:00:00Z"}, "to"),
    ({"from": "2026-01-01T00:00:00Z", "to": "2026-06-01T00:00:00Z"}, "to"),
    ({"room": "no-such-room"}, "room"),
    ({"mine": "perhaps"}, "mine"),
])
def test_bad_lesson_filters_name_the_parameter(client, staff, query, field):
    response = client.get("/api/v1/lessons", headers=bearer(client, "jans"), query_string=query)
    assert 400 <= response.status_code < 500
    assert response.get_json()["field"] == field


# --- exceptions ---------------------------------------------------------------------------------

@pytest.fixture
def lesson_of_jans(app, staff):
    from server.models import Person
    with app.app_context():
        teacher_id = db.session.scalar(select(Person.id).where(Person.username == "jans"))
    start = now_utc() - minutes(10)
    return add_lesson(app, "2.14", start, start + minutes(50), teacher_id=teacher_id,
                      group="3havo-b")


def test_teacher_grants_and_revokes_an_exception_for_their_lesson(app, client, lesson_of_jans):
    headers = bearer(client, "jans")
    granted = client.post("/api/v1/exceptions", headers=headers, json={
        "scope": "lesson", "lesson_id": lesson_of_jans, "services": ["youtube"], "minutes": 10,
        "reason": "filmpje"})
    assert granted.status_code == 201, granted.get_json()
    grant = granted.get_json()
    assert grant["services"] == ["youtube"]
    assert grant["active"] is True
    listed = client.get("/api/v1/exceptions?active=true", headers=headers).get_json()
    assert [e["id"] for e in listed["exceptions"]] == [grant["id"]]
    revoked = client.delete(f"/api/v1/exceptions/{grant['id']}", headers=headers,
                            json={"reason": "klaar"})
    assert revoked.status_code == 200
    assert revoked.get_json()["revoked_at"] is not None
    again = client.delete(f"/api/v1/exceptions/{grant['id']}", headers=headers)
    assert again.status_code == 409
    with app.app_context():
        actions = db.session.scalars(select(AuditEvent.action).where(
            AuditEvent.object_type == "exception")).all()
    assert sorted(actions) == ["exception.grant", "exception.revoke"]


@pytest.mark.parametrize("body, status, field", [
    ({"scope": "lesson", "lesson_id": "LESSON", "services": ["no-such-service"]}, 400,
     "services"),
    ({"scope": "lesson", "lesson_id": "LESSON", "end": "PAST"}, 400, "end"),
    ({"scope": "lesson", "lesson_id": "LESSON", "minutes": 0}, 400, "minutes"),
    ({"scope": "lesson", "lesson_id": "LESSON", "minutes": "ten"}, 400, "minutes"),
    ({"scope": "lesson", "lesson_id": "LESSON", "end": "not a time"}, 400, "end"),
    ({"scope": "lesson", "lesson_id": 999999}, 400, "lesson_id"),
    ({"scope": "lesson"}, 400, "lesson_id"),
    ({"scope": "universe"}, 400, "scope"),
    ({"scope": "school", "minutes": 10}, 403, None),
    ({"scope": "lesson", "lesson_id": "OTHER"}, 403, None),
    ({"scope": "lesson", "lesson_id": "LESSON", "services": "youtube"}, 400, "services"),
    ({"scope": "lesson", "lesson_id": "LESSON", "reason": "x" * 201}, 400, "reason"),
])
def test_bad_exception_requests_are_refused_and_write_nothing(app, client, lesson_of_jans, body,
                                                              status, field):
    other = add_lesson(app, "3.01", now_utc() - minutes(5), now_utc() + minutes(40))
    body = {k: (lesson_of_jans if v == "LESSON" else other if v == "OTHER" else
                (now_utc() - minutes(1)).isoformat() if v == "PAST" else v)
            for k, v in body.items()}
    audit_before = count_rows(app, AuditEvent)
    response = client.post("/api/v1/exceptions", headers=bearer(client, "jans"), json=body)
    assert response.status_code == status, response.get_json()
    assert response.get_json().get("field") == field
    assert count_rows(app, ExceptionGrant) == 0
    assert count_rows(app, AuditEvent) == audit_before


def test_teacher_exception_is_capped_at_the_end_of_the_lesson(app, client, lesson_of_jans):
    response = client.post("/api/v1/exceptions", headers=bearer(client, "jans"), json={
        "scope": "lesson", "lesson_id": lesson_of_jans, "minutes": 500})
    assert response.status_code == 201
    lessons = client.get("/api/v1/lessons", headers=bearer(client, "jans")).get_json()["lessons"]
    lesson = next(item for item in lessons if item["id"] == lesson_of_jans)
    assert response.get_json()["end"] == lesson["end"]


def test_leader_grants_a_group_exception_by_name(client, lesson_of_jans):
    response = client.post("/api/v1/exceptions", headers=bearer(client, "boss"), json={
        "scope": "group", "group": "3havo-b", "minutes": 90, "reason": "projectweek"})
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["group"]["name"] == "3havo-b"


def test_teacher_cannot_revoke_a_leaders_school_exception(client, lesson_of_jans):
    granted = client.post("/api/v1/exceptions", headers=bearer(client, "boss"),
                          json={"scope": "school", "minutes": 30}).get_json()
    response = client.delete(f"/api/v1/exceptions/{granted['id']}",
                             headers=bearer(client, "jans"))
    assert response.status_code == 403


# --- rooms, segments, gateways ------------------------------------------------------------------

def test_it_adds_a_room_and_a_duplicate_is_409(client, staff):
    headers = bearer(client, "it")
    created = client.post("/api/v1/rooms", headers=headers, json={"code": "1.01", "name": "Lab"})
    assert created.status_code == 201
    duplicate = client.post("/api/v1/rooms", headers=headers, json={"code": "1.01"})
    assert duplicate.status_code == 409
    assert duplicate.get_json()["field"] == "code"
    codes = [r["code"] for r in client.get("/api/v1/rooms", headers=headers).get_json()["rooms"]]
    assert codes == ["1.01"]


def test_it_creates_a_gateway_and_its_token_enrols_once(app, client, staff):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from server.tokens import public_jwk
    headers = bearer(client, "it")
    created = client.post("/api/v1/gateways", headers=headers, json={"name": "gw-north"})
    assert created.status_code == 201
    token = created.get_json()["enrollment_token"]
    key = public_jwk(Ed25519PrivateKey.generate().public_key())
    assert client.post("/api/v1/gateways/enroll",
                       json={"token": token, "public_key": key}).status_code == 201
    assert client.post("/api/v1/gateways/enroll",
                       json={"token": token, "public_key": key}).status_code == 403
    listed = client.get("/api/v1/gateways", headers=headers).get_json()["gateways"]
    assert [(g["name"], g["enrolled"]) for g in listed] == [("gw-north", True)]
    duplicate = client.post("/api/v1/gateways", headers=headers, json={"name": "gw-north"})
    assert duplicate.status_code == 400
    assert duplicate.get_json()["field"] == "name"
    # A token for an enrolled gateway only through the explicit re-enrolment.
    implicit = client.post(f"/api/v1/gateways/{listed[0]['id']}/enrollment-token",
                           headers=headers)
    assert implicit.status_code == 409 and implicit.get_json()["field"] == "reenrol"
    renewed = client.post(f"/api/v1/gateways/{listed[0]['id']}/enrollment-token",
                          headers=headers, json={"reenrol": True})
    assert renewed.status_code == 201
    assert count_rows(app, EnrollmentToken) == 2


@pytest.mark.parametrize("cidrs, field", [
    (["10.1.0.0/33"], "cidrs[0]"),
    (["10.1.0.0/24", "10.1.0.1/24"], "cidrs[1]"),
    (["10.1.0.0"], "cidrs[0]"),
    (["2001:db8::/129"], "cidrs[0]"),
    (["10.1.0.0/24", "10.1.0.128/25"], "cidrs"),
    (["10.0.0.0/8"], "cidrs"),  # overlaps the existing segment behind the same gateway
    ([], "cidrs"),
    ("10.1.0.0/24", "cidrs"),
    ([17], "cidrs[0]"),
])
def test_bad_segment_cidrs_are_400_with_field_and_write_nothing(app, client, staff, cidrs,
                                                                field):
    headers = bearer(client, "it")
    gateway_id, _ = new_gateway(app, "gw")
    first = client.post("/api/v1/segments", headers=headers, json={
        "name": "existing", "gateway_id": gateway_id, "cidrs": ["10.200.0.0/16"],
        "rooms": ["1.01"]})
    assert first.status_code == 201, first.get_json()
    segments, rooms = count_rows(app, Segment), count_rows(app, Room)
    response = client.post("/api/v1/segments", headers=headers, json={
        "name": "new", "gateway_id": gateway_id, "cidrs": cidrs, "rooms": ["2.02"]})
    assert response.status_code == 400
    assert response.get_json()["field"] == field
    assert (count_rows(app, Segment), count_rows(app, Room)) == (segments, rooms)


def test_segment_lifecycle_changes_lesson_status(app, client, staff, enrolled):
    agent = enrolled("gw")
    headers = bearer(client, "it")
    start = now_utc() - minutes(10)
    add_lesson(app, "4.04", start, start + minutes(50))
    created = client.post("/api/v1/segments", headers=headers, json={
        "name": "4e verdieping", "gateway_id": agent.gateway_id,
        "cidrs": ["10.4.0.0/24", "2001:db8:4::/64"], "rooms": ["4.04"]})
    assert created.status_code == 201, created.get_json()
    segment = created.get_json()
    assert segment["cidrs"] == ["10.4.0.0/24", "2001:db8:4::/64"]
    status = client.get("/api/v1/lesson-status", environ_base={"REMOTE_ADDR": "10.4.0.8"})
    assert status.get_json()["in_lesson"] is True
    deleted = client.delete(f"/api/v1/segments/{segment['id']}", headers=headers)
    assert deleted.status_code == 200
    status = client.get("/api/v1/lesson-status", environ_base={"REMOTE_ADDR": "10.4.0.8"})
    assert status.get_json()["in_lesson"] is False
    assert client.get("/api/v1/segments", headers=headers).get_json()["segments"] == []


# --- services and reminders ---------------------------------------------------------------------

def test_it_sets_the_blocked_services_and_the_policy_follows(app, client, staff, enrolled):
    agent = enrolled("gw", cidrs=["10.1.0.0/24"], rooms=["2.14"])
    start = now_utc() - minutes(10)
    add_lesson(app, "2.14", start, start + minutes(50))
    headers = bearer(client, "it")
    response = client.put("/api/v1/services/blocked", headers=headers,
                          json={"services": ["tiktok", "instagram"]})
    assert response.status_code == 200
    body = response.get_json()
    assert body["blocked"] == ["instagram", "tiktok"]
    assert {s["id"] for s in body["services"] if s["blocked"]} == {"instagram", "tiktok"}
    status = client.get("/api/v1/lesson-status", environ_base={"REMOTE_ADDR": "10.1.0.8"})
    assert status.get_json()["blocked_services"] == ["instagram", "tiktok"]
    assert client.get("/api/v1/gateways/self/policy", headers=agent.headers()).status_code == 200


@pytest.mark.parametrize("body, field", [({}, "services"), ({"services": ["nope"]}, "services[0]"),
                                         ({"services": "tiktok"}, "services")])
def test_bad_blocked_services_are_refused(app, client, staff, body, field):
    response = client.put("/api/v1/services/blocked", headers=bearer(client, "it"), json=body)
    assert response.status_code == 400
    assert response.get_json()["field"] == field
    with app.app_context():
        assert db.session.scalar(select(School.blocked_services)) is None


def test_it_edits_a_reminder_text_and_it_is_audited(app, client, staff):
    headers = bearer(client, "it")
    with app.app_context():
        reminder_id = db.session.scalar(select(Reminder.id).order_by(Reminder.id))
    response = client.put(f"/api/v1/reminders/{reminder_id}", headers=headers,
                          json={"texts": {"en": "Think before you post."}})
    assert response.status_code == 200
    assert response.get_json()["texts"]["en"] == "Think before you post."
    assert client.get(f"/api/v1/reminders/{reminder_id}", headers=headers
                      ).get_json()["texts"]["en"] == "Think before you post."
    events = client.get("/api/v1/audit?action=reminder.edit", headers=headers).get_json()
    assert [e["object_id"] for e in events["events"]] == [str(reminder_id)]


@pytest.mark.parametrize("body, field", [
    ({"texts": {"de": "Hallo"}}, "texts.de"), ({"texts": {"nl": ""}}, "texts.nl"),
    ({"texts": "hallo"}, "texts"), ({"enabled": "yes"}, "enabled"), ({"article": "A9"}, "article"),
])
def test_bad_reminder_edits_are_refused(app, client, staff, body, field):
    with app.app_context():
        reminder = db.session.scalar(select(Reminder).order_by(Reminder.id))
        reminder_id, texts = reminder.id, dict(reminder.texts)
    response = client.put(f"/api/v1/reminders/{reminder_id}", headers=bearer(client, "it"),
                          json=body)
    assert response.status_code == 400
    assert response.get_json()["field"] == field
    with app.app_context():
        assert db.session.get(Reminder, reminder_id).texts == texts


# --- audit --------------------------------------------------------------------------------------

def test_audit_log_pages_newest_first_with_filters(client, staff):
    headers = bearer(client, "it")
    for code in ("a", "b", "c"):
        client.post("/api/v1/rooms", headers=headers, json={"code": code})
    first = client.get("/api/v1/audit?action=room.create&limit=2", headers=headers).get_json()
    assert [e["details"]["code"] for e in first["events"]] == ["c", "b"]
    rest = client.get(f"/api/v1/audit?action=room.create&before={first['next_before']}",
                      headers=headers).get_json()
    assert [e["details"]["code"] for e in rest["events"]] == ["a"]
    assert rest["next_before"] is None
    assert client.get("/api/v1/audit?from=garbage", headers=headers).status_code == 400
