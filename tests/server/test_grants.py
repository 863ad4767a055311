"""Granting and revoking exceptions: the rules of SPEC §3, and an audit event for each change."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, update

from server.extensions import db
from server.grants import (GrantError, GrantForbidden, active_exceptions, cap_exception_to_lesson,
                           extend_exception, grant_exception, overlapping_exceptions,
                           plan_exception, revoke_exception, week_bounds, widen_exception)
from server.models import AuditEvent, ExceptionGrant, Group, Lesson, Person, Room, School

NOW = datetime(2026, 11, 23, 9, 40, tzinfo=timezone.utc)
LESSON_START = datetime(2026, 11, 23, 9, 20, tzinfo=timezone.utc)
LESSON_END = datetime(2026, 11, 23, 10, 10, tzinfo=timezone.utc)


@pytest.fixture
def world(app):
    """Two teachers, a leader, an IT admin; a running lesson of teacher `jans` in room 2.14."""
    with app.app_context():
        school = db.session.scalar(select(School).where(School.slug == "test"))
        room = Room(school_id=school.id, code="2.14")
        group = Group(school_id=school.id, name="3havo-b")

        def person(name, *roles, code=None):
            p = Person(school_id=school.id, username=name, display_name=name.title(),
                       teacher_code=code, roles=list(roles))
            db.session.add(p)
            return p
        jans = person("jans", "teacher", code="JANS")
        bakk = person("bakk", "teacher", code="BAKK")
        leader = person("leider", "leader")
        admin = person("ict", "it_admin")
        lesson = Lesson(school_id=school.id, start=LESSON_START, end=LESSON_END,
                        subject="biologie", source="manual", source_id="les-1", rooms=[room],
                        groups=[group], teachers=[jans])
        db.session.add_all([room, group, lesson])
        db.session.commit()
        ids = {"school": school.id, "room": room.id, "group": group.id, "lesson": lesson.id,
               "jans": jans.id, "bakk": bakk.id, "leader": leader.id, "ict": admin.id}
        yield ids
        db.session.rollback()


def get(model, id_):
    return db.session.get(model, id_)


def counts():
    return (db.session.scalar(select(func.count()).select_from(ExceptionGrant)),
            db.session.scalar(select(func.count()).select_from(AuditEvent).where(
                AuditEvent.action.like("exception.%"))))


def grant_as(world, who, **kwargs):
    kwargs.setdefault("scope", "lesson")
    if kwargs["scope"] == "lesson":
        kwargs.setdefault("lesson", get(Lesson, world["lesson"]))
    kwargs.setdefault("now", NOW)
    return grant_exception(get(Person, world[who]), **kwargs)


def test_teacher_grants_rest_of_own_lesson_and_it_is_audited(app, world):
    with app.app_context():
        grant = grant_as(world, "jans", reason="filmpje bij de les")
        db.session.commit()
        assert (grant.scope, grant.start, grant.end) == ("lesson", NOW, LESSON_END)
        assert grant.services is None and grant.granted_by_id == world["jans"]
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "exception.grant"))
        assert event.actor_id == world["jans"] and event.object_id == str(grant.id)
        assert event.details["reason"] == "filmpje bij de les"
        assert event.details["end"] == LESSON_END.isoformat()
        assert event.at == NOW


def test_teacher_grants_minutes_for_some_services(app, world):
    with app.app_context():
        grant = grant_as(world, "jans", minutes=15, services=["youtube", "tiktok", "youtube"])
        assert grant.end == NOW + timedelta(minutes=15)
        assert grant.services == ["tiktok", "youtube"]


def test_minutes_past_the_lesson_end_are_capped_to_the_lesson_end(app, world):
    with app.app_context():
        assert grant_as(world, "jans", minutes=90).end == LESSON_END


def test_minutes_granted_before_the_lesson_count_from_its_start(app, world):
    with app.app_context():
        early = LESSON_START - timedelta(minutes=5)
        grant = grant_as(world, "jans", minutes=10, now=early)
        assert (grant.start, grant.end) == (early, LESSON_START + timedelta(minutes=10))


def test_cap_exception_to_lesson_never_passes_the_end(app, world):
    with app.app_context():
        lesson = get(Lesson, world["lesson"])
        assert cap_exception_to_lesson(NOW, LESSON_END + timedelta(hours=1), lesson) == LESSON_END
        assert cap_exception_to_lesson(NOW, NOW + timedelta(minutes=5), lesson) == NOW + timedelta(
            minutes=5)


@pytest.mark.parametrize("who, kwargs", [
    ("bakk", {}),  # another teacher's lesson
    ("ict", {}),  # IT admin alone may not grant
    ("jans", {"scope": "room", "room": "room", "end": NOW + timedelta(minutes=10)}),
    ("jans", {"scope": "school", "minutes": 10}),
    ("jans", {"scope": "group", "group": "group", "minutes": 10}),
], ids=["other-teachers-lesson", "it-admin", "teacher-room", "teacher-school", "teacher-group"])
def test_forbidden_grants_write_nothing(app, world, who, kwargs):
    with app.app_context():
        for key in ("room", "group"):
            if kwargs.get(key) == key:
                kwargs[key] = get({"room": Room, "group": Group}[key], world[key])
        before = counts()
        with pytest.raises(GrantForbidden):
            grant_as(world, who, **kwargs)
        db.session.commit()
        assert counts() == before == (0, 0)


@pytest.mark.parametrize("kwargs, field", [
    ({"end": LESSON_END + timedelta(minutes=1)}, "end"),  # past the lesson: refused, not capped
    ({"start": NOW, "end": NOW - timedelta(minutes=1)}, "end"),
    ({"start": NOW + timedelta(minutes=5), "end": NOW + timedelta(minutes=5)}, "end"),
    ({"services": ["myspace"]}, "services"),
    ({"services": []}, "services"),
    ({"services": "youtube"}, "services"),
    ({"minutes": 0}, "minutes"),
    ({"minutes": -5}, "minutes"),
    ({"minutes": 10, "end": NOW + timedelta(minutes=10)}, "minutes"),
    ({"reason": "x" * 201}, "reason"),
    ({"scope": "classroom"}, "scope"),
    ({"lesson": None}, "lesson_id"),
    ({"now": LESSON_END}, "lesson_id"),  # the lesson is over
    ({"start": LESSON_END}, "start"),
], ids=["past-lesson-end", "end-before-start", "empty", "unknown-service", "no-services",
        "services-not-a-list", "zero-minutes", "negative-minutes", "end-and-minutes",
        "long-reason", "bad-scope", "no-lesson", "lesson-over", "start-after-lesson"])
def test_bad_grants_name_the_field_and_write_nothing(app, world, kwargs, field):
    with app.app_context():
        with pytest.raises(GrantError) as caught:
            grant_as(world, "jans", **kwargs)
        assert caught.value.field == field
        db.session.commit()
        assert counts() == (0, 0)


def test_cancelled_lesson_cannot_get_an_exception(app, world):
    with app.app_context():
        get(Lesson, world["lesson"]).cancelled = True
        with pytest.raises(GrantError, match="cancelled"):
            grant_as(world, "jans")


def test_service_the_school_does_not_block_is_refused(app, world):
    with app.app_context():
        get(School, world["school"]).blocked_services = ["tiktok"]
        with pytest.raises(GrantError) as caught:
            grant_as(world, "jans", services=["youtube"])
        assert caught.value.field == "services"
        assert grant_as(world, "jans", services=["tiktok"]).services == ["tiktok"]


def test_leader_grants_school_wide_for_days(app, world):
    with app.app_context():
        end = NOW + timedelta(days=3)
        grant = grant_as(world, "leader", scope="school", end=end, reason="projectweek")
        db.session.commit()
        assert (grant.scope, grant.start, grant.end, grant.lesson_id) == ("school", NOW, end, None)
        assert counts() == (1, 1)
        assert [g.id for g in active_exceptions(world["school"], NOW + timedelta(days=1))] == [
            grant.id]


@pytest.mark.parametrize("scope, target", [("room", "room"), ("group", "group")])
def test_leader_grants_room_and_group_scope(app, world, scope, target):
    with app.app_context():
        obj = get({"room": Room, "group": Group}[target], world[target])
        grant = grant_as(world, "leader", scope=scope, minutes=120, **{target: obj})
        assert getattr(grant, f"{target}_id") == world[target]
        assert grant.end == NOW + timedelta(minutes=120)


def test_leader_needs_an_end_for_school_scope(app, world):
    with app.app_context():
        with pytest.raises(GrantError) as caught:
            grant_as(world, "leader", scope="school")
        assert caught.value.field == "end"


def test_leader_may_grant_for_any_teachers_lesson(app, world):
    with app.app_context():
        assert grant_as(world, "leader").end == LESSON_END


def test_object_of_another_school_is_forbidden(app, world):
    with app.app_context():
        other = School(slug="ander", name="Ander college")
        db.session.add(other)
        db.session.flush()
        room = Room(school_id=other.id, code="1.01")
        db.session.add(room)
        db.session.flush()
        with pytest.raises(GrantForbidden):
            grant_as(world, "leader", scope="room", room=room, minutes=10)


# --- Revocation --------------------------------------------------------------------------------

def test_teacher_revokes_exception_of_own_lesson_granted_by_leader(app, world):
    with app.app_context():
        grant = grant_as(world, "leader")
        revoked = revoke_exception(get(Person, world["jans"]), grant, reason="toch niet",
                                   now=NOW + timedelta(minutes=5))
        db.session.commit()
        assert revoked.revoked_at == NOW + timedelta(minutes=5)
        assert revoked.revoked_by_id == world["jans"]
        event = db.session.scalar(select(AuditEvent).where(
            AuditEvent.action == "exception.revoke"))
        assert (event.actor_id, event.details["reason"]) == (world["jans"], "toch niet")
        assert active_exceptions(world["school"], NOW + timedelta(minutes=6)) == []
        assert [g.id for g in active_exceptions(world["school"], NOW + timedelta(minutes=4))] == [
            grant.id]


def test_of_two_revocations_at_once_the_second_is_told_and_writes_nothing(app, world):
    with app.app_context():
        grant = grant_as(world, "jans")
        db.session.commit()
        assert grant.revoked_at is None  # loaded here: what this request sees
        # Meanwhile another request (another process) revokes it and commits.
        with db.engine.begin() as other:
            other.execute(update(ExceptionGrant).where(ExceptionGrant.id == grant.id).values(
                revoked_at=NOW, revoked_by_id=world["leader"]))
        assert grant.revoked_at is None  # still the stale view of this session
        with pytest.raises(GrantError, match="revoked already"):
            revoke_exception(get(Person, world["jans"]), grant, now=NOW)
        db.session.commit()
        assert get(ExceptionGrant, grant.id).revoked_by_id == world["leader"]
        assert counts() == (1, 1)  # the grant's audit event; no second revocation


def test_leader_revokes_any_exception(app, world):
    with app.app_context():
        grant = grant_as(world, "jans")
        assert revoke_exception(get(Person, world["leader"]), grant, now=NOW).revoked_at == NOW


@pytest.mark.parametrize("who", ["bakk", "ict"])
def test_others_may_not_revoke_and_nothing_is_written(app, world, who):
    with app.app_context():
        grant = grant_as(world, "jans")
        db.session.commit()
        with pytest.raises(GrantForbidden):
            revoke_exception(get(Person, world[who]), grant, now=NOW)
        db.session.commit()
        assert get(ExceptionGrant, grant.id).revoked_at is None
        assert counts() == (1, 1)


def test_teacher_may_revoke_what_they_granted(app, world):
    with app.app_context():
        jans = get(Person, world["jans"])
        jans.roles = ["teacher", "leader"]
        grant = grant_as(world, "jans", scope="school", minutes=60)
        jans.roles = ["teacher"]
        assert revoke_exception(jans, grant, now=NOW).revoked_by_id == jans.id


@pytest.mark.parametrize("when, first_revoke, message", [
    (NOW + timedelta(minutes=1), True, "revoked already"),
    (LESSON_END, False, "over already"),
], ids=["twice", "ended"])
def test_revoking_a_revoked_or_ended_exception_is_refused(app, world, when, first_revoke,
                                                          message):
    with app.app_context():
        grant = grant_as(world, "jans")
        jans = get(Person, world["jans"])
        if first_revoke:
            revoke_exception(jans, grant, now=NOW)
        db.session.commit()
        before = counts()
        with pytest.raises(GrantError, match=message) as caught:
            revoke_exception(jans, grant, now=when)
        assert caught.value.field == "exception"
        db.session.commit()
        assert counts() == before


# --- "+5 min" and planning a later lesson of this week (issue 14) -----------------------------

def test_extending_moves_the_end_and_is_capped_at_the_lessons_end(app, world):
    with app.app_context():
        jans = get(Person, world["jans"])
        grant = grant_as(world, "jans", minutes=26)  # 09:40 -> 10:06, the lesson ends 10:10
        extend_exception(jans, grant, now=NOW + timedelta(minutes=1))
        assert grant.end == LESSON_END  # 10:11 capped to 10:10
        event = db.session.scalar(select(AuditEvent).where(
            AuditEvent.action == "exception.extend"))
        assert event.details == {"scope": "lesson", "end": LESSON_END.isoformat(),
                                 "previous_end": (NOW + timedelta(minutes=26)).isoformat()}
        assert event.at == NOW + timedelta(minutes=1)
        before = counts()
        with pytest.raises(GrantError, match="end of the lesson already") as caught:
            extend_exception(jans, grant, now=NOW + timedelta(minutes=2))
        assert caught.value.field == "minutes"
        assert counts() == before and grant.end == LESSON_END


def test_a_leaders_school_wide_exception_extends_without_a_lesson_cap(app, world):
    with app.app_context():
        grant = grant_as(world, "leader", scope="school", minutes=60)
        extend_exception(get(Person, world["leader"]), grant, minutes=30, now=NOW)
        assert grant.end == NOW + timedelta(minutes=90)


@pytest.mark.parametrize("who", ["bakk", "ict"])
def test_only_the_lessons_teacher_or_a_leader_may_extend(app, world, who):
    with app.app_context():
        grant = grant_as(world, "jans", minutes=10)
        db.session.commit()
        with pytest.raises(GrantForbidden):
            extend_exception(get(Person, world[who]), grant, now=NOW)
        assert get(ExceptionGrant, grant.id).end == NOW + timedelta(minutes=10)
        extend_exception(get(Person, world["leader"]), grant, now=NOW)
        assert grant.end == NOW + timedelta(minutes=15)


@pytest.mark.parametrize("minutes", [0, -5, 1441, True, "5"])
def test_extending_by_a_bad_number_of_minutes_is_refused(app, world, minutes):
    with app.app_context():
        grant = grant_as(world, "jans", minutes=10)
        with pytest.raises(GrantError) as caught:
            extend_exception(get(Person, world["jans"]), grant, minutes=minutes, now=NOW)
        assert caught.value.field == "minutes"


AMSTERDAM = ZoneInfo("Europe/Amsterdam")


def test_week_bounds_are_monday_to_monday_in_the_schools_timezone():
    # Sunday 23:30 UTC is already Monday 00:30 in Amsterdam: the next week.
    start, end = week_bounds(datetime(2026, 11, 29, 23, 30, tzinfo=timezone.utc), AMSTERDAM)
    assert (start.isoformat(), end.isoformat()) == ("2026-11-30T00:00:00+01:00",
                                                    "2026-12-07T00:00:00+01:00")


def _later(world, days: int) -> Lesson:
    start = LESSON_START + timedelta(days=days)
    lesson = Lesson(school_id=world["school"], start=start, end=start + timedelta(minutes=50),
                    subject="later", source="manual", source_id=f"later-{days}",
                    teachers=[get(Person, world["jans"])])
    db.session.add(lesson)
    db.session.flush()
    return lesson


def test_planning_a_later_lesson_starts_at_its_start_and_stays_within_it(app, world):
    with app.app_context():
        lesson = _later(world, days=4)  # Friday of the same week (NOW is a Monday)
        jans = get(Person, world["jans"])
        grant = plan_exception(jans, lesson, zone=AMSTERDAM, minutes=90, now=NOW)
        assert (grant.start, grant.end) == (lesson.start, lesson.end)
        grant = plan_exception(jans, lesson, zone=AMSTERDAM, minutes=10, services=["youtube"],
                               now=NOW)
        assert grant.end == lesson.start + timedelta(minutes=10)


def test_planning_a_lesson_of_next_week_is_refused(app, world):
    with app.app_context():
        lesson = _later(world, days=7)
        before = counts()
        with pytest.raises(GrantError, match="this week") as caught:
            plan_exception(get(Person, world["jans"]), lesson, zone=AMSTERDAM, now=NOW)
        assert caught.value.field == "lesson_id" and counts() == before


def test_a_leader_widens_a_planned_exception_instead_of_adding_a_duplicate(app, world):
    with app.app_context():
        leader = get(Person, world["leader"])
        later = NOW + timedelta(hours=2)
        grant = grant_as(world, "leader", scope="school", start=later,
                         end=later + timedelta(hours=1))
        found = overlapping_exceptions(world["school"], scope="school", start=NOW,
                                       end=later + timedelta(minutes=30))
        assert found == [grant]
        assert overlapping_exceptions(world["school"], scope="room", room_id=world["room"],
                                      start=NOW, end=later) == []
        # Starts earlier (but not before now) and ends later; never shorter.
        widen_exception(leader, grant, start=NOW - timedelta(hours=1),
                        end=later + timedelta(minutes=30), now=NOW)
        assert (grant.start, grant.end) == (NOW, later + timedelta(hours=1))
        with pytest.raises(GrantForbidden):
            widen_exception(get(Person, world["jans"]), grant, start=NOW,
                            end=later + timedelta(hours=3), now=NOW)
        with pytest.raises(GrantError):  # neither overlapping nor touching
            widen_exception(leader, grant, start=later + timedelta(hours=5),
                            end=later + timedelta(hours=6), now=NOW)
        assert grant.end == later + timedelta(hours=1)
