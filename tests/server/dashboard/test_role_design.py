"""The it_admin's powers beyond its role (issue 13, item 12; docs/security.md): kept on purpose,
and each one leaves an audit event that leaders read, naming the it_admin."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import select

from server.extensions import db
from server.models import AuditEvent, Person, School

from tests.support.dashboard import csrf_token, sign_in


def _events(app: Flask, action: str) -> list[AuditEvent]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def _person(app: Flask, username: str) -> Person:
    with app.app_context():
        return db.session.scalar(select(Person).where(Person.username == username))


def _save_person(client, person: Person, **changes) -> int:
    form = {"username": person.username, "display_name": person.display_name,
            "teacher_code": person.teacher_code or "", "roles": list(person.roles),
            "password": "", "active": "on", **changes}
    form["csrf_token"] = csrf_token(client, f"/it/mensen/{person.id}")
    return client.post(f"/it/mensen/{person.id}", data=form).status_code


def test_it_can_make_itself_leader_reset_a_password_and_unblock_everything_all_audited(
        app: Flask, world) -> None:
    it = app.test_client()
    sign_in(it, "ict")
    me = _person(app, "ict")
    assert _save_person(it, me, roles=["it_admin", "leader"]) == 302
    assert _person(app, "ict").roles == ["it_admin", "leader"]
    [event] = _events(app, "person.update")
    assert event.actor_label == "ict" and event.object_id == str(me.id)

    leader = app.test_client()
    sign_in(leader, "leiding")
    assert leader.get("/leiding").status_code == 200
    other = _person(app, "leiding")
    assert _save_person(it, other, password="a new password for leiding") == 302
    reset = [e for e in _events(app, "person.update") if e.object_id == str(other.id)]
    assert reset and reset[0].details["password_changed"] is True
    assert leader.get("/leiding").status_code == 302  # the reset ended the leader's session

    token = csrf_token(it, "/it/diensten")
    assert it.post("/it/diensten", data={"csrf_token": token}).status_code == 302
    with app.app_context():
        assert db.session.scalar(select(School.blocked_services)) == []
    [unblocked] = _events(app, "school.blocked_services")
    assert unblocked.actor_label == "ict" and unblocked.details["services"] == []
    # The leader (signed in again) reads all three in the audit log.
    sign_in(leader, "leiding", "a new password for leiding")
    answer = leader.get("/api/v1/audit?actor=ict").get_json()
    actions = [e["action"] for e in answer["events"]]
    assert actions.count("person.update") == 2 and "school.blocked_services" in actions
