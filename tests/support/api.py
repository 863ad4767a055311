"""Helpers for the API tests: people with roles and API tokens, gateways, agent tokens, lessons."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from server.extensions import db
from server.gateways import create_gateway, issue_enrollment_token
from server.models import Group, Lesson, Person, Room, School
from server.network import add_segment
from server.passwords import hash_password, password_marker
from server.tokens import issue_api_token

PASSWORD = "correct horse battery"
AUDIENCE = "http://lesfocus.test"


def count_rows(app: Flask, model: type) -> int:
    """How many rows a table holds."""
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model)) or 0


def school_id(app: Flask, slug: str = "test") -> int:
    """The id of the school with `slug`."""
    with app.app_context():
        return db.session.scalar(select(School.id).where(School.slug == slug))


@cache
def password_hash() -> str:
    """The hash of PASSWORD, computed once (Argon2 takes ~0.15 s a time on a busy machine)."""
    return hash_password(PASSWORD)


def add_person(app: Flask, username: str, *roles: str, slug: str = "test",
               teacher_code: str | None = None) -> int:
    """Create a person with a password and roles; returns the id."""
    with app.app_context():
        person = Person(school_id=school_id(app, slug), username=username,
                        display_name=username.title(), roles=list(roles),
                        teacher_code=teacher_code, password_hash=password_hash())
        db.session.add(person)
        db.session.commit()
        return person.id


def login(client: FlaskClient, username: str) -> dict[str, str]:
    """Authorization headers of an API token for `username`, got through POST /auth/token."""
    response = client.post("/api/v1/auth/token",
                           json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.get_json()
    return {"Authorization": f"Bearer {response.get_json()['token']}"}


def bearer(client: FlaskClient, username: str) -> dict[str, str]:
    """Authorization headers of an API token for `username`, issued directly (no password check)."""
    app = client.application
    with app.app_context():
        person = db.session.scalar(select(Person).where(Person.username == username))
        token, _ = issue_api_token(app.extensions["lesfocus.signing_key"], person_id=person.id,
                                   school_id=person.school_id, minutes=15,
                                   issuer="http://lesfocus.test",
                                   password=password_marker(person.password_hash))
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Agent:
    """An enrolled gateway and the private key of its agent."""

    gateway_id: str
    key: Ed25519PrivateKey
    segment_ids: list[int]

    def token(self, *, lifetime: int = 120, aud: str = AUDIENCE, sub: str | None = None,
              key: Any = None, algorithm: str = "EdDSA", now: float | None = None,
              **extra: Any) -> str:
        """An agent request token (claims can be bent for the bad-input tests)."""
        issued = int(time.time() if now is None else now)
        claims = {"sub": sub or self.gateway_id, "aud": aud, "iat": issued,
                  "exp": issued + lifetime, "jti": uuid.uuid4().hex, **extra}
        return jwt.encode(claims, key or self.key, algorithm=algorithm)

    def headers(self, **kwargs: Any) -> dict[str, str]:
        """Authorization header with a fresh token."""
        return {"Authorization": f"Bearer {self.token(**kwargs)}"}


def new_gateway(app: Flask, name: str, slug: str = "test") -> tuple[str, str]:
    """Create a gateway; returns (gateway id, one-time enrolment token)."""
    with app.app_context():
        school = db.session.scalar(select(School).where(School.slug == slug))
        gateway = create_gateway(school, name, actor="test")
        token = issue_enrollment_token(gateway, actor="test")
        db.session.commit()
        return gateway.id, token


def add_segment_for(app: Flask, gateway_id: str, name: str, cidrs: list[str],
                    rooms: list[str], slug: str = "test") -> int:
    """A segment behind a gateway; returns its id."""
    from server.models import Gateway
    with app.app_context():
        school = db.session.scalar(select(School).where(School.slug == slug))
        gateway = db.session.get(Gateway, gateway_id)
        segment = add_segment(school, gateway, name, cidrs, rooms, actor="test")
        db.session.commit()
        return segment.id


def add_lesson(app: Flask, room_code: str, start: datetime, end: datetime, *,
               teacher_id: int | None = None, group: str | None = None,
               cancelled: bool = False) -> int:
    """A lesson in a room (and optionally taught by a person, with a group); returns its id."""
    with app.app_context():
        sid = school_id(app)
        room = db.session.scalar(select(Room).where(Room.school_id == sid,
                                                    Room.code == room_code))
        if room is None:
            room = Room(school_id=sid, code=room_code)
            db.session.add(room)
        lesson = Lesson(school_id=sid, start=start, end=end, subject="ne", cancelled=cancelled,
                        source="manual", source_id=uuid.uuid4().hex, rooms=[room])
        if teacher_id is not None:
            lesson.teachers = [db.session.get(Person, teacher_id)]
        if group is not None:
            grp = db.session.scalar(select(Group).where(Group.school_id == sid,
                                                        Group.name == group))
            lesson.groups = [grp or Group(school_id=sid, name=group)]
        db.session.add(lesson)
        db.session.commit()
        return lesson.id


def now_utc() -> datetime:
    """Now, aware UTC, whole seconds."""
    return datetime.now(timezone.utc).replace(microsecond=0)


def minutes(n: float) -> timedelta:
    """A timedelta of n minutes."""
    return timedelta(minutes=n)
