"""`lesfocus demo`: the demo school, its timetable around "now", and idempotence."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timezone

import pytest
from sqlalchemy import func, select

from server.demo import DEMO_SLUG, build_demo, planned_lessons
from server.extensions import db
from server.models import (AuditEvent, ExceptionGrant, Gateway, Group, Lesson, Person, Room,
                           School, Segment, SegmentCidr)
from server.passwords import verify_password
from lesfocus_policy import status_of
from server.policy import compile_policy, gateway_policy, load_policy_inputs

WEDNESDAY_10 = datetime(2026, 11, 25, 9, 0, tzinfo=timezone.utc)  # 10:00 in Amsterdam
SATURDAY_21 = datetime(2026, 11, 28, 20, 0, tzinfo=timezone.utc)  # 21:00 in Amsterdam


def count(model, *where):
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def running(school, at):
    return db.session.scalars(select(Lesson).where(
        Lesson.school_id == school.id, Lesson.cancelled.is_(False), Lesson.start <= at,
        Lesson.end > at)).all()


@pytest.mark.parametrize("now", [WEDNESDAY_10, SATURDAY_21], ids=["wednesday-10h", "saturday-21h"])
def test_demo_twice_gives_one_school_with_a_lesson_running_now(app, now):
    with app.app_context():
        first = build_demo(now)
        db.session.commit()
        counts = [count(m) for m in (School, Room, Segment, Group, Person, Lesson,
                                     ExceptionGrant)]
        second = build_demo(now)
        db.session.commit()
        assert [count(m) for m in (School, Room, Segment, Group, Person, Lesson,
                                   ExceptionGrant)] == counts
        assert first == second

        school = db.session.scalar(select(School).where(School.slug == DEMO_SLUG))
        assert (school.name, school.timezone) == ("Demo College", "Europe/Amsterdam")
        assert count(Room, Room.school_id == school.id) >= 12
        gateway = db.session.scalar(select(Gateway).where(Gateway.school_id == school.id))
        assert gateway.name == "gw-hoofdgebouw"
        segments = db.session.scalars(select(Segment).where(Segment.school_id == school.id)).all()
        assert len(segments) == count(Room, Room.school_id == school.id)
        assert all(len(s.rooms) == 1 and s.gateway_id == gateway.id for s in segments)
        cidrs = db.session.scalars(select(SegmentCidr.cidr)).all()
        assert sum(c.startswith("10.20.") for c in cidrs) == len(segments)
        assert sum(c.startswith("fd00:20:") for c in cidrs) == len(segments)
        people = db.session.scalars(select(Person).where(Person.school_id == school.id)).all()
        teachers = [p for p in people if p.has_role("teacher")]
        assert len(teachers) == 6 and all(p.teacher_code and p.username for p in teachers)
        assert sum(p.has_role("leader") for p in people) == 1
        assert sum(p.has_role("it_admin") for p in people) == 1
        assert count(Group, Group.school_id == school.id) >= 6
        for username, password, _ in first.logins:
            person = db.session.scalar(select(Person).where(Person.username == username))
            assert len(password) >= 10 and verify_password(person.password_hash, password)

        live = running(school, now)
        assert live, "no lesson is running at the chosen now"
        assert count(Lesson, Lesson.school_id == school.id, Lesson.source == "demo") >= 100
        assert count(ExceptionGrant, ExceptionGrant.school_id == school.id) == 1
        assert count(AuditEvent, AuditEvent.action == "exception.grant") == 1
        assert count(AuditEvent, AuditEvent.action == "segment.create") == len(segments)

        # The running lesson blocks social media on its room's segment.
        signed = gateway_policy(gateway, now)
        policy = compile_policy(load_policy_inputs(gateway, now))
        assert policy.version == signed.version
        room_ids = {room.id for lesson in live for room in lesson.rooms}
        blocked = [status_of(policy, s.id, now).blocked for s in segments
                   if s.rooms[0].id in room_ids]
        assert any("instagram" in services for services in blocked)


def test_saturday_evening_adds_avondstudie_and_wednesday_does_not(app):
    with app.app_context():
        assert build_demo(WEDNESDAY_10).live_lesson is None
        info = build_demo(SATURDAY_21)
        assert info.live_lesson is not None and "Avondstudie" in info.live_lesson
        (lesson,) = running(db.session.scalar(select(School).where(School.slug == DEMO_SLUG)),
                            SATURDAY_21)
        assert lesson.subject == "Avondstudie" and lesson.teachers[0].username == "demo.jans"


@pytest.mark.parametrize("monday", [date(2026, 11, 23), date(2026, 11, 9), date(2026, 10, 5)],
                         ids=["normal-week", "study-day-week", "short-day-week"])
def test_timetable_books_no_room_teacher_or_group_twice(monday):
    planned = planned_lessons(monday)
    assert planned
    for key in ("room", "teacher", "group"):
        taken = defaultdict(list)
        for item in planned:
            taken[(item["day"], item[key])].append((item["start"], item["end"]))
        for slots in taken.values():
            slots.sort()
            for (_, end), (start, _) in zip(slots, slots[1:]):
                assert end <= start, f"{key} booked twice"


def test_study_day_has_no_lessons():
    assert not [item for item in planned_lessons(date(2026, 11, 9))
                if item["day"] == date(2026, 11, 11)]


def test_describe_prints_url_and_every_login(app):
    with app.app_context():
        info = build_demo(WEDNESDAY_10)
        text = info.describe("http://127.0.0.1:5000/")
        assert "http://127.0.0.1:5000/" in text and "demo only" in text
        for username, password, _ in info.logins:
            assert username in text and password in text


@pytest.mark.slow
def test_lesfocus_demo_no_serve_builds_the_demo(app, runner):
    result = runner.invoke(args=["demo", "--no-serve"])
    assert result.exit_code == 0, result.output
    assert "demo.leiding" in result.output and "http://127.0.0.1:5000/" in result.output
    with app.app_context():
        school = db.session.scalar(select(School).where(School.slug == DEMO_SLUG))
        assert running(school, datetime.now(timezone.utc))
