"""IT renames and deletes rooms, segments, gateways and people (issue 14, item 3)."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from sqlalchemy import select

from tests.support.dashboard import csrf_token, sign_in

from server import changes
from server.extensions import db
from server.fields import FieldError
from server.models import (AuditEvent, DashboardSession, ExceptionGrant, Gateway, Lesson, Person,
                           Room, School, Segment)
from server.people import DELETED_PERSON, delete_person
from server.policy import gateway_policy
from server.rooms import add_room, delete_room, rename_room, update_segment


# SQLite only, except the deletion of a person (plain UPDATEs of JSON columns) and the CSV
# export: the rest is the same SQL on both (test-time budget, docs/testing.md).
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _client(app: Flask, username: str):
    client = app.test_client()
    sign_in(client, username)
    return client


def _school(app: Flask) -> School:
    return db.session.scalar(select(School).where(School.slug == "test"))




@SQLITE
def test_renaming_a_room_checks_the_code_and_recompiles_the_same_policy(app: Flask, world) -> None:
    with app.app_context():
        school = _school(app)
        generation = changes.generation(school.id)
        room = db.session.scalar(select(Room).where(Room.code == "2.14"))
        with pytest.raises(FieldError) as err:
            rename_room(room, "2.15", actor="pytest")
        assert err.value.field == "code" and "already" in str(err.value)
        with pytest.raises(FieldError) as err:
            rename_room(room, "x" * 65, actor="pytest")
        assert err.value.field == "code" and "64" in str(err.value)
        db.session.rollback()
        before = gateway_policy(db.session.get(Gateway, world.gateway)).version
        room = db.session.scalar(select(Room).where(Room.code == "2.14"))
        rename_room(room, "2.14a", "Biologielokaal", actor="pytest")
        db.session.commit()
        assert changes.generation(school.id) > generation
        after = gateway_policy(db.session.get(Gateway, world.gateway)).version
        # Recompiled (the generation moved), and the same: the policy knows rooms by id, so
        # the lessons in the renamed room are blocked as before.
        assert after == before
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "room.update"))
        assert event.details["old_code"] == "2.14" and event.details["code"] == "2.14a"


@SQLITE
def test_a_room_in_use_is_not_deleted_and_the_page_says_what_uses_it(app: Flask, world) -> None:
    client = _client(app, "ict")
    with app.app_context():
        room_id = db.session.scalar(select(Room.id).where(Room.code == "2.14"))
    page = client.get(f"/it/lokalen/{room_id}").get_data(as_text=True)
    assert "vleugel B" in page and 'value="delete"' not in page
    response = client.post(f"/it/lokalen/{room_id}", data={
        "action": "delete", "csrf_token": csrf_token(client, f"/it/lokalen/{room_id}")})
    assert response.status_code == 400
    assert "hoort bij segment vleugel B" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Room, room_id) is not None
        db.session.get(Room, room_id)
        segment = db.session.get(Segment, world.segment)
        update_segment(segment, segment.name, ["2.15"], actor="pytest")
        db.session.commit()
        with pytest.raises(FieldError) as err:
            delete_room(db.session.get(Room, room_id), actor="pytest")
        assert err.value.field == "room" and "1 lessons" in str(err.value)


@SQLITE
def test_an_unused_room_is_deleted_from_the_dashboard(app: Flask, world) -> None:
    with app.app_context():
        room_id = add_room(_school(app), "4.O1", actor="pytest").id
        db.session.commit()
        generation = changes.generation(_school(app).id)
    client = _client(app, "ict")
    page = client.get(f"/it/lokalen/{room_id}").get_data(as_text=True)
    assert 'maxlength="64"' in page and "hoogstens 64 tekens" in page
    response = client.post(f"/it/lokalen/{room_id}", data={
        "action": "delete", "csrf_token": csrf_token(client, f"/it/lokalen/{room_id}")})
    assert response.status_code == 302
    with app.app_context():
        assert db.session.get(Room, room_id) is None
        assert changes.generation(_school(app).id) > generation
        assert db.session.scalar(select(AuditEvent).where(AuditEvent.action == "room.delete"))


@SQLITE
def test_segment_rename_and_room_choice_change_the_policy(app: Flask, world) -> None:
    client = _client(app, "ict")
    with app.app_context():
        before = gateway_policy(db.session.get(Gateway, world.gateway)).policy
    token = csrf_token(client, f"/it/segmenten/{world.segment}")
    page = client.get(f"/it/segmenten/{world.segment}").get_data(as_text=True)
    assert 'name="rooms" value="2.14" checked' in page and 'maxlength="100"' in page
    response = client.post(f"/it/segmenten/{world.segment}", data={
        "name": "vleugel B", "rooms": ["2.14", "4.O1"], "csrf_token": token})
    assert response.status_code == 400
    assert "Er is geen lokaal 4.O1" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(Room).where(Room.code == "4.O1")) is None
    response = client.post(f"/it/segmenten/{world.segment}", data={
        "name": "wifi B", "rooms": ["2.15"], "csrf_token": token})
    assert response.status_code == 302
    with app.app_context():
        after = gateway_policy(db.session.get(Gateway, world.gateway)).policy
        segment = db.session.get(Segment, world.segment)
        assert segment.name == "wifi B" and [r.code for r in segment.rooms] == ["2.15"]
    assert [s.name for s in before.segments] == ["vleugel B"]
    assert [s.name for s in after.segments] == ["wifi B"]
    assert before.segments[0].blocks != after.segments[0].blocks  # 2.14's lesson no longer in it
    response = client.post(f"/it/segmenten/{world.segment}/verwijderen",
                           data={"csrf_token": token})
    assert response.status_code == 302
    with app.app_context():
        assert gateway_policy(db.session.get(Gateway, world.gateway)).policy.segments == ()


@SQLITE
def test_gateway_rename_refuses_a_taken_name_at_the_field(app: Flask, world) -> None:
    from server.gateways import create_gateway
    with app.app_context():
        create_gateway(_school(app), "gw-2", actor="pytest")
        db.session.commit()
    client = _client(app, "ict")
    token = csrf_token(client, f"/it/gateways/{world.gateway}")
    response = client.post(f"/it/gateways/{world.gateway}/naam",
                           data={"name": "gw-2", "csrf_token": token})
    assert response.status_code == 400 and 'id="e-name"' in response.get_data(as_text=True)
    response = client.post(f"/it/gateways/{world.gateway}/naam",
                           data={"name": "hoofdgebouw", "csrf_token": token})
    assert response.status_code == 302
    with app.app_context():
        assert db.session.get(Gateway, world.gateway).name == "hoofdgebouw"


def test_deleting_a_person_removes_their_data_and_keeps_the_audit_readable(
        app: Flask, world) -> None:
    collega = _client(app, "collega")  # a session of theirs, which must go
    leider = _client(app, "leiding")
    with app.app_context():
        exception = db.session.get(ExceptionGrant, world.exception)
        from server.grants import revoke_exception
        revoke_exception(db.session.get(Person, world.people["collega"]), exception, now=None)
        db.session.commit()
    ict = _client(app, "ict")
    token = csrf_token(ict, f"/it/mensen/{world.people['collega']}")
    # An audit event about them that holds their name and username.
    edited = ict.post(f"/it/mensen/{world.people['collega']}", data={
        "display_name": "Carla Collega", "username": "collega", "teacher_code": "COLL",
        "roles": ["teacher"], "active": "on", "csrf_token": token})
    assert edited.status_code == 302
    own = ict.post(f"/it/mensen/{world.people['ict']}/verwijderen", data={"csrf_token": token})
    assert own.status_code == 302
    with app.app_context():
        assert db.session.get(Person, world.people["ict"]) is not None
    response = ict.post(f"/it/mensen/{world.people['collega']}/verwijderen",
                        data={"csrf_token": token})
    assert response.status_code == 302
    with app.app_context():
        assert db.session.get(Person, world.people["collega"]) is None
        assert db.session.scalar(select(DashboardSession).where(
            DashboardSession.person_id == world.people["collega"])) is None
        events = db.session.scalars(select(AuditEvent)).all()
        dumped = repr([(e.actor_label, e.details) for e in events])
        assert "collega" not in dumped.lower() and "COLL" not in dumped, dumped
        assert any(e.action == "person.update" for e in events)
        assert any(e.actor_label == DELETED_PERSON and e.action == "exception.revoke"
                   for e in events)
        lesson = db.session.get(Lesson, world.other_lesson)
        assert lesson is not None and lesson.teachers == []
        assert db.session.get(ExceptionGrant, world.exception).granted_by_id is None
    assert collega.get("/nu").status_code in (302, 303)  # signed out
    audit = leider.get("/audit").get_data(as_text=True)
    assert "verwijderde persoon" in audit
    with app.app_context():
        with pytest.raises(FieldError):
            ict_person = db.session.get(Person, world.people["ict"])
            delete_person(ict_person, actor=ict_person)


def test_audit_csv_is_for_leader_and_it_and_no_cell_starts_a_formula(app: Flask, world) -> None:
    import csv
    import io
    from server.dashboard.leader import csv_cell
    with app.app_context():
        for index, name in enumerate(("=HYPERLINK(\"http://x\")", "+1", "-2", "@SUM(A1)")):
            actor = Person(school_id=_school(app).id, display_name=name, roles=["it_admin"])
            db.session.add(actor)
            room = add_room(_school(app), f"R{index}", actor="pytest")
            rename_room(room, name, actor=actor)
        db.session.commit()
    assert _client(app, "docent").get("/audit.csv").status_code == 403
    for who in ("leiding", "ict"):
        response = _client(app, who).get("/audit.csv?action=room.update")
        assert response.status_code == 200 and response.mimetype == "text/csv"
        text = response.get_data(as_text=True)
        assert text.startswith("\ufeff")
        rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff")), delimiter=";"))
        assert rows[0][:4] == ["Wanneer", "Wie", "Wat", "Omschrijving"]
        assert len(rows) == 5
        cells = [cell for row in rows for cell in row]
        assert all(not cell.startswith(("=", "+", "-", "@")) for cell in cells), cells
        assert any("hernoemde lokaal R0 naar =HYPERLINK" in cell for cell in cells)
        assert sorted(row[1] for row in rows[1:]) == [
            "'+1", "'-2", "'=HYPERLINK(\"http://x\")", "'@SUM(A1)"]  # who: shown as text
    assert csv_cell("-5") == "'-5" and csv_cell("\tx") == "'\tx" and csv_cell("a=b") == "a=b"


@SQLITE
def test_reminder_preview_names_the_article_once_as_the_extension_does(app: Flask, world) -> None:
    client = _client(app, "ict")
    page = client.get(f"/it/herinneringen/{world.reminder}").get_data(as_text=True)
    previews = re.findall(r'<p class="rp-text">([^<]*)</p>', page)
    assert previews and not any(re.search(r"\((artikel|article) [A-Z]\d\)", p) for p in previews)
    assert 'class="rp-article"' in page
