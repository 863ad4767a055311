"""Lessons of the school, for the dashboard's "now" view and for scripts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from flask import Response, g, jsonify, request
from sqlalchemy import select

from ..auth import require_user
from ..errors import abort_json
from ..extensions import db
from ..models import Lesson, Room, School, lesson_rooms, lesson_teachers
from . import bp
from .common import iso, parse_datetime, query_bool, query_int, query_str

MAX_RANGE = timedelta(days=31)


def lesson_json(lesson: Lesson) -> dict[str, Any]:
    """A lesson with its rooms, groups and teachers."""
    return {
        "id": lesson.id, "start": iso(lesson.start), "end": iso(lesson.end),
        "subject": lesson.subject, "cancelled": lesson.cancelled,
        "rooms": [{"id": r.id, "code": r.code} for r in lesson.rooms],
        "groups": [{"id": gr.id, "name": gr.name} for gr in lesson.groups],
        "teachers": [{"id": t.id, "code": t.teacher_code, "name": t.label}
                     for t in lesson.teachers],
        "source": lesson.source,
    }


@bp.get("/lessons")
@require_user("teacher", "leader", "it_admin")
def list_lessons() -> Response:
    """Lessons overlapping [from, to) (default: today, school time); filters room and mine."""
    school = db.session.get(School, g.person.school_id)
    tz = school.timezone if school else "UTC"
    if request.args.get("from"):
        start = parse_datetime(request.args["from"], "from", tz=tz)
    else:
        local_today = datetime.now(ZoneInfo(tz)).replace(hour=0, minute=0, second=0,
                                                          microsecond=0)
        start = local_today.astimezone(timezone.utc)
    end = (parse_datetime(request.args["to"], "to", tz=tz) if request.args.get("to")
           else start + timedelta(days=1))
    if end <= start:
        abort_json(400, "to must be after from", field="to")
    if end - start > MAX_RANGE:
        abort_json(400, f"ask for at most {MAX_RANGE.days} days at a time", field="to")
    limit = query_int("limit", default=1000, minimum=1, maximum=5000)
    query = (select(Lesson).where(Lesson.school_id == g.person.school_id, Lesson.start < end,
                                  Lesson.end > start)
             .order_by(Lesson.start, Lesson.id).limit(limit))
    room_code = query_str("room")
    if room_code:
        room_id = db.session.scalar(select(Room.id).where(Room.school_id == g.person.school_id,
                                                          Room.code == room_code))
        if room_id is None:
            abort_json(404, f"no room {room_code!r} in your school", field="room")
        query = query.where(Lesson.id.in_(select(lesson_rooms.c.lesson_id)
                                          .where(lesson_rooms.c.room_id == room_id)))
    if query_bool("mine"):
        query = query.where(Lesson.id.in_(select(lesson_teachers.c.lesson_id)
                                          .where(lesson_teachers.c.person_id == g.person.id)))
    lessons = db.session.scalars(query).all()
    return jsonify({"from": iso(start), "to": iso(end),
                    "lessons": [lesson_json(lesson) for lesson in lessons]})
