"""`lesfocus demo`: a demo school with rooms, segments, people and a timetable for this week.

Idempotent: running it again refreshes the same school (slug `demo`) instead of adding a second
one. The timetable follows the period grid of `data/lestijden.json`, so during school hours
lessons are running; when nothing runs (evenings, weekends, study days) one lesson is added that
runs now, so the dashboard always has something live to show.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from . import audit
from .extensions import db
from .gateways import create_gateway
from .grants import grant_exception
from .models import ExceptionGrant, Gateway, Group, Lesson, Person, Room, School, Segment
from .network import add_segment
from .passwords import hash_password, verify_password
from .seed import seed_reminders, seed_services

DEMO_SLUG = "demo"
DEMO_NAME = "Demo College"
DEMO_TIMEZONE = "Europe/Amsterdam"
GATEWAY_NAME = "gw-hoofdgebouw"
ACTOR = "lesfocus demo"
EXAMPLE_REASON = "Uitlegvideo bij de les (demo)"
DATA_FILE = Path(__file__).parent / "data" / "lestijden.json"

# Fixed passwords, printed by `lesfocus demo`: acceptable only because this is a throwaway demo.
TEACHER_PASSWORD = "docent-demo"
LEADER_PASSWORD = "leiding-demo"
ADMIN_PASSWORD = "beheer-demo"

# (code, name): the first six are the teachers' own rooms, the next eight are shared, and the
# study room is kept free for the lesson added outside school hours.
ROOMS = [("1.01", "Lokaal 1.01"), ("1.02", "Lokaal 1.02"), ("1.03", "Lokaal 1.03"),
         ("2.11", "Lokaal 2.11"), ("2.12", "Lokaal 2.12"), ("2.14", "Lokaal 2.14"),
         ("0.05", "Practicumlokaal 0.05"), ("0.06", "Practicumlokaal 0.06"),
         ("1.10", "Computerlokaal 1.10"), ("1.11", "Lokaal 1.11"), ("2.20", "Lokaal 2.20"),
         ("2.21", "Lokaal 2.21"), ("3.01", "Tekenlokaal 3.01"), ("3.02", "Muzieklokaal 3.02"),
         ("0.01", "Studiezaal")]
STUDY_ROOM = "0.01"
SHARED_ROOMS = [code for code, _ in ROOMS[6:14]]
GROUPS = {"onderbouw": ["1a", "1b", "1c", "2a", "2b", "3h", "3v"],
          "bovenbouw": ["4h", "4v", "5h", "5v", "6v"]}
# (teacher code, username, display name, subject, period grid of the groups they teach)
TEACHERS = [("JANS", "demo.jans", "M. Jansen", "biologie", "onderbouw"),
            ("BAKK", "demo.bakk", "S. Bakker", "Nederlands", "onderbouw"),
            ("VDBE", "demo.vdbe", "R. van den Berg", "wiskunde", "onderbouw"),
            ("DEVR", "demo.devr", "L. de Vries", "geschiedenis", "bovenbouw"),
            ("MEIJ", "demo.meij", "A. Meijer", "Engels", "bovenbouw"),
            ("SMIT", "demo.smit", "K. Smit", "informatica", "bovenbouw")]
LEADER = ("demo.leiding", "E. Visser (schoolleiding)", ["leader"], LEADER_PASSWORD)
ADMIN = ("demo.ict", "T. de Boer (ICT)", ["it_admin"], ADMIN_PASSWORD)


@dataclass(frozen=True)
class DemoInfo:
    """What `build_demo` made, for printing."""

    school_slug: str
    school_name: str
    gateway_name: str
    logins: tuple[tuple[str, str, str], ...]  # (username, password, role)
    rooms: int
    segments: int
    lessons_this_week: int
    live_lesson: str | None

    def describe(self, url: str) -> str:
        """Text for the terminal: where the dashboard is and how to sign in."""
        lines = [f"lesfocus demo: {self.school_name} (school slug {self.school_slug!r})",
                 f"  {self.rooms} rooms with a segment each behind gateway {self.gateway_name!r}, "
                 f"{self.lessons_this_week} lessons this week",
                 f"  dashboard: {url}"]
        if self.live_lesson:
            lines.append(f"  running now outside the timetable: {self.live_lesson}")
        lines.append("  logins (fixed demo passwords: for this demo only, never in production):")
        width = max(len(u) for u, _, _ in self.logins)
        lines += [f"    {user:<{width}}  {password:<13} {role}"
                  for user, password, role in self.logins]
        return "\n".join(lines)


@cache
def period_grid() -> dict[str, Any]:
    """The period grid of `data/lestijden.json` (invented sample data; see its `_comment`)."""
    return json.loads(DATA_FILE.read_text())


def _periods(scheme: str) -> list[tuple[int, time, time]]:
    return [(p["period"], time.fromisoformat(p["start"]), time.fromisoformat(p["end"]))
            for p in period_grid()["schemes"][scheme] if "period" in p]


def _scheme_of_day(day: date, teacher_scheme: str) -> str | None:
    for special in period_grid().get("special_days", []):
        if special["date"] == day.isoformat():
            return special["scheme"]
    return teacher_scheme


def planned_lessons(week_monday: date) -> list[dict[str, Any]]:
    """The demo timetable of the week starting on `week_monday` (local times), as plain values.

    Each teacher teaches their groups in turn, alternating their own room and a shared room and
    keeping two free periods a day; no room, teacher or group is booked twice at once.
    """
    planned = []
    for day_index in range(5):
        day = week_monday + timedelta(days=day_index)
        for i, (code, _, _, subject, teacher_scheme) in enumerate(TEACHERS):
            scheme = _scheme_of_day(day, teacher_scheme)
            if scheme is None:
                continue
            groups = GROUPS[teacher_scheme]
            for period, start, end in _periods(scheme):
                if (period + i + day_index) % 4 == 0:
                    continue  # a free period
                room = ROOMS[i][0] if period % 2 == 0 else SHARED_ROOMS[(i + period) % 8]
                planned.append({
                    "source_id": f"{day.isoformat()}-{code}-p{period}",
                    "day": day, "start": start, "end": end, "room": room, "teacher": code,
                    "group": groups[(i + period + day_index) % len(groups)], "subject": subject})
    return planned


def _school() -> School:
    school = db.session.scalar(select(School).where(School.slug == DEMO_SLUG))
    if school is None:
        school = School(slug=DEMO_SLUG, name=DEMO_NAME, timezone=DEMO_TIMEZONE,
                        aliases=["Demo", "het Demo"])
        db.session.add(school)
        db.session.flush()
        audit.record("school.create", school_id=school.id, actor=ACTOR, object_type="school",
                     object_id=school.id, slug=DEMO_SLUG)
    school.name, school.timezone = DEMO_NAME, DEMO_TIMEZONE
    return school


def _person(school: School, username: str, display_name: str, roles: list[str],
            password: str, teacher_code: str | None = None) -> Person:
    person = db.session.scalar(select(Person).where(Person.username == username))
    if person is not None and person.school_id != school.id:
        raise ValueError(f"username {username!r} belongs to another school; the demo needs it")
    if person is None and teacher_code is not None:
        # A teacher with this code may exist already, imported from a timetable without a login.
        person = db.session.scalar(select(Person).where(Person.school_id == school.id,
                                                        Person.teacher_code == teacher_code))
    if person is None:
        person = Person(school_id=school.id, username=username)
        db.session.add(person)
        db.session.flush()
        audit.record("user.create", school_id=school.id, actor=ACTOR, object_type="person",
                     object_id=person.id, username=username, roles=roles)
    person.username, person.display_name, person.roles = username, display_name, roles
    person.teacher_code, person.active = teacher_code, True
    # Reset the printed password when someone changed it, so the printed logins always work.
    if not _password_matches(person.password_hash, password):
        person.password_hash = _demo_hash(password)
    return person


# Argon2 is slow on purpose; the demo's people share a few passwords, so hash and check each once.
_hashes: dict[str, str] = {}


def _demo_hash(password: str) -> str:
    if password not in _hashes:
        _hashes[password] = hash_password(password)
    return _hashes[password]


def _password_matches(stored: str | None, password: str) -> bool:
    if stored is None:
        return False
    if _hashes.get(password) == stored:
        return True
    if verify_password(stored, password):
        _hashes[password] = stored
        return True
    return False


def _network(school: School) -> tuple[Gateway, dict[str, Room]]:
    gateway = db.session.scalar(select(Gateway).where(Gateway.school_id == school.id,
                                                      Gateway.name == GATEWAY_NAME))
    if gateway is None:
        gateway = create_gateway(school, GATEWAY_NAME, actor=ACTOR)
    rooms = {r.code: r for r in db.session.scalars(select(Room).where(
        Room.school_id == school.id))}
    for code, name in ROOMS:
        if code not in rooms:
            rooms[code] = Room(school_id=school.id, code=code)
            db.session.add(rooms[code])
        rooms[code].name = name
    db.session.flush()
    have = set(db.session.scalars(select(Segment.name).where(Segment.gateway_id == gateway.id)))
    for n, (code, _) in enumerate(ROOMS, start=1):
        name = f"lokaal-{code}"
        if name not in have:
            # Private (RFC 1918) and unique-local (RFC 4193) ranges: data only, nothing is sent.
            add_segment(school, gateway, name, [f"10.20.{n}.0/24", f"fd00:20:{n}::/64"], [code],
                        actor=ACTOR)
    return gateway, rooms


def _upsert_lesson(school: School, existing: dict[str, Lesson], source_id: str, start: datetime,
                   end: datetime, subject: str, room: Room, group: Group,
                   teacher: Person) -> Lesson:
    lesson = existing.get(source_id)
    if lesson is None:
        lesson = Lesson(school_id=school.id, source="demo", source_id=source_id)
        db.session.add(lesson)
        existing[source_id] = lesson
    lesson.start, lesson.end, lesson.subject, lesson.cancelled = start, end, subject, False
    # Assign only what changed, so a refresh leaves unchanged lessons untouched.
    for attribute, value in (("rooms", [room]), ("groups", [group]), ("teachers", [teacher])):
        if getattr(lesson, attribute) != value:
            setattr(lesson, attribute, value)
    return lesson


def build_demo(now: datetime | None = None) -> DemoInfo:
    """Create or refresh the demo school around `now`; flushes, the caller commits."""
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    zone = ZoneInfo(DEMO_TIMEZONE)
    seed_services()
    school = _school()
    seed_reminders(school)
    gateway, rooms = _network(school)

    groups = {g.name: g for g in db.session.scalars(select(Group).where(
        Group.school_id == school.id))}
    for name in GROUPS["onderbouw"] + GROUPS["bovenbouw"]:
        if name not in groups:
            groups[name] = Group(school_id=school.id, name=name)
            db.session.add(groups[name])
    teachers = {code: _person(school, username, display, ["teacher"], TEACHER_PASSWORD, code)
                for code, username, display, _, _ in TEACHERS}
    _person(school, *LEADER)
    _person(school, *ADMIN)
    db.session.flush()

    local_today = now.astimezone(zone).date()
    monday = local_today - timedelta(days=local_today.weekday())
    existing = {lesson.source_id: lesson for lesson in db.session.scalars(
        select(Lesson).where(Lesson.school_id == school.id, Lesson.source == "demo")
        .options(selectinload(Lesson.rooms), selectinload(Lesson.groups),
                 selectinload(Lesson.teachers)))}
    week: list[Lesson] = []
    for item in planned_lessons(monday):
        start = datetime.combine(item["day"], item["start"], zone).astimezone(timezone.utc)
        end = datetime.combine(item["day"], item["end"], zone).astimezone(timezone.utc)
        week.append(_upsert_lesson(school, existing, item["source_id"], start, end,
                                   item["subject"], rooms[item["room"]], groups[item["group"]],
                                   teachers[item["teacher"]]))
    db.session.flush()

    live = _live_lesson(school, existing, week, now, rooms, groups, teachers)
    _example_exception(school, week, now)
    audit.record("demo.build", school_id=school.id, actor=ACTOR, object_type="school",
                 object_id=school.id, week=monday.isoformat())
    db.session.flush()
    return DemoInfo(
        school_slug=DEMO_SLUG, school_name=school.name, gateway_name=gateway.name,
        logins=tuple([(username, TEACHER_PASSWORD, f"teacher {code}")
                      for code, username, _, _, _ in TEACHERS]
                     + [(LEADER[0], LEADER_PASSWORD, "leader"),
                        (ADMIN[0], ADMIN_PASSWORD, "it_admin")]),
        rooms=len(ROOMS), lessons_this_week=len(week),
        segments=len(db.session.scalars(select(Segment.id).where(
            Segment.gateway_id == gateway.id)).all()),
        live_lesson=live)


def _live_lesson(school: School, existing: dict[str, Lesson], week: list[Lesson], now: datetime,
                 rooms: dict[str, Room], groups: dict[str, Group],
                 teachers: dict[str, Person]) -> str | None:
    """Add a lesson in the study room running at `now` when no demo lesson runs then."""
    zone = ZoneInfo(DEMO_TIMEZONE)
    now_running = [lesson for lesson in existing.values()
                   if not lesson.cancelled and lesson.start <= now < lesson.end]
    for lesson in now_running:
        if lesson.source_id.startswith("live-"):
            return _describe_live(lesson, zone)
    if now_running:
        return None
    local = now.astimezone(zone)
    # From the full hour, or from the end of the last lesson if that was later.
    start = max([now.replace(minute=0, second=0, microsecond=0)]
                + [lesson.end for lesson in week if lesson.end <= now])
    end = start + timedelta(hours=2)
    # End before the next timetable lesson, so no teacher or group is booked twice.
    later = [lesson.start for lesson in week if lesson.start > now]
    if later:
        end = min(end, min(later))
    subject = "Avondstudie" if local.hour >= 17 or local.hour < 7 else "Studie-uur"
    source_id = f"live-{local.strftime('%Y-%m-%dT%H')}"
    lesson = _upsert_lesson(school, existing, source_id, start, end, subject,
                            rooms[STUDY_ROOM], groups["5v"], teachers[TEACHERS[0][0]])
    db.session.flush()
    return _describe_live(lesson, zone)


def _describe_live(lesson: Lesson, zone: ZoneInfo) -> str:
    return (f"{lesson.subject} in room {STUDY_ROOM}, {lesson.start.astimezone(zone):%H:%M}-"
            f"{lesson.end.astimezone(zone):%H:%M} {DEMO_TIMEZONE}")


def _example_exception(school: School, week: list[Lesson], now: datetime) -> None:
    """Add one exception a teacher granted earlier this week (once per week)."""
    week_ids = [lesson.id for lesson in week]
    if not week_ids or db.session.scalar(select(ExceptionGrant.id).where(
            ExceptionGrant.school_id == school.id, ExceptionGrant.reason == EXAMPLE_REASON,
            ExceptionGrant.lesson_id.in_(week_ids)).limit(1)) is not None:
        return
    # The latest lesson that had been running for ten minutes by now; else the week's first.
    begun = [lesson for lesson in week if lesson.start + timedelta(minutes=10) <= now]
    lesson = max(begun, key=lambda item: item.start) if begun else min(week,
                                                                      key=lambda item: item.start)
    granted_at = lesson.start + timedelta(minutes=10) if begun else now
    grant_exception(lesson.teachers[0], scope="lesson", lesson=lesson, services=["youtube"],
                    start=lesson.start + timedelta(minutes=10), minutes=20,
                    reason=EXAMPLE_REASON, now=granted_at)
