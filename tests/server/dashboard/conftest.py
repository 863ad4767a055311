"""Fixtures for the dashboard: a school with people of every role, a network, running lessons."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import select

from server.extensions import db
from server.gateways import create_gateway
from server.models import ExceptionGrant, Group, Lesson, Person, Reminder, School, utcnow
from server.network import add_segment
from server.passwords import hash_password

from tests.support.dashboard import PASSWORD

_HASHES: dict[str, str] = {}


def _password_hash() -> str:
    # Argon2 is slow on purpose; one hash serves every test's people.
    if PASSWORD not in _HASHES:
        _HASHES[PASSWORD] = hash_password(PASSWORD)
    return _HASHES[PASSWORD]


@dataclass
class World:
    """Ids of what the `world` fixture made."""

    people: dict[str, int]
    own_lesson: int
    other_lesson: int
    exception: int
    gateway: str
    segment: int
    reminder: int


@pytest.fixture
def world(app: Flask) -> World:
    """Teacher `docent` (lesson now in 2.14), teacher `collega` (lesson now in 2.15), leader,
    IT admin, a login without roles, a gateway with one segment, and an exception for `collega`."""
    with app.app_context():
        school = db.session.scalar(select(School).where(School.slug == "test"))
        password_hash = _password_hash()
        people = {}
        for username, roles, code in (("docent", ["teacher"], "DOCE"),
                                      ("collega", ["teacher"], "COLL"),
                                      ("leiding", ["leader"], None),
                                      ("ict", ["it_admin"], None),
                                      ("niemand", [], None)):
            person = Person(school_id=school.id, username=username, display_name=username.title(),
                            roles=roles, teacher_code=code, password_hash=password_hash)
            db.session.add(person)
            db.session.flush()
            people[username] = person
        gateway = create_gateway(school, "gw-1", actor="pytest")
        segment = add_segment(school, gateway, "vleugel B", ["10.2.14.0/24", "10.2.15.0/24"],
                              ["2.14", "2.15"], actor="pytest")
        group = Group(school_id=school.id, name="3havo-b")
        db.session.add(group)
        now = utcnow().replace(microsecond=0)
        rooms = {room.code: room for room in segment.rooms}
        lessons = []
        for index, (teacher, room) in enumerate((("docent", "2.14"), ("collega", "2.15"))):
            lesson = Lesson(school_id=school.id, start=now - timedelta(minutes=10),
                            end=now + timedelta(minutes=40), subject=f"vak{index}",
                            source="manual", source_id=f"l{index}", rooms=[rooms[room]],
                            groups=[group], teachers=[people[teacher]])
            db.session.add(lesson)
            lessons.append(lesson)
        db.session.flush()
        exception = ExceptionGrant(school_id=school.id, scope="lesson", lesson_id=lessons[1].id,
                                   services=["youtube"], start=now - timedelta(minutes=5),
                                   end=now + timedelta(minutes=20), reason="",
                                   granted_by_id=people["collega"].id)
        db.session.add(exception)
        reminder = db.session.scalar(select(Reminder).where(Reminder.school_id == school.id))
        db.session.commit()
        return World(people={k: v.id for k, v in people.items()}, own_lesson=lessons[0].id,
                     other_lesson=lessons[1].id, exception=exception.id, gateway=gateway.id,
                     segment=segment.id, reminder=reminder.id)


