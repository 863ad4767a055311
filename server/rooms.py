"""Rooms and segments as IT edits them: add, rename, delete (issue 14, item 3).

Plain functions for the dashboard and the CLI: they check their values, change the caller's
session, audit, and flush; the caller commits, and the change feed (`server/changes.py`) has the
gateways' policies compiled again (rooms and segments are in it). A refusal is a `FieldError`
naming the field.

A room that lessons, segments or running/planned exceptions use is not deleted: the refusal says
what uses it. Lessons come from the timetable (deleting their room would only last until the next
import puts it back) and a segment's rooms decide what is blocked where, so silently unlinking
them would change blocking without anyone choosing it. IT removes the room from the segment
first (the segment page), or fixes the timetable.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select

from . import audit
from .extensions import db
from .fields import N_, FieldError
from .models import (ExceptionGrant, Lesson, Person, Room, School, Segment, lesson_rooms,
                     segment_rooms, utcnow)

ROOM_CODE_MAX = 64
ROOM_NAME_MAX = 200
SEGMENT_NAME_MAX = 100


def _room_code(school: School, code: str, room: Room | None = None) -> str:
    code = (code or "").strip()
    if not code:
        raise FieldError("code", N_("A room needs a code, such as 2.14."))
    if len(code) > ROOM_CODE_MAX:
        raise FieldError("code", N_("At most %(n)d characters."), n=ROOM_CODE_MAX)
    other = db.session.scalar(select(Room).where(Room.school_id == school.id, Room.code == code))
    if other is not None and other is not room:
        raise FieldError("code", N_("This school has a room with this code already."))
    return code


def _room_name(name: str | None) -> str | None:
    name = (name or "").strip()
    if len(name) > ROOM_NAME_MAX:
        raise FieldError("name", N_("At most %(n)d characters."), n=ROOM_NAME_MAX)
    return name or None


def add_room(school: School, code: str, name: str | None = None, *,
             actor: Person | str) -> Room:
    """Create a room of `school`."""
    code = _room_code(school, code)
    room = Room(school_id=school.id, code=code, name=_room_name(name))
    db.session.add(room)
    db.session.flush()
    audit.record("room.create", school_id=school.id, actor=actor, object_type="room",
                 object_id=room.id, code=room.code)
    return room


def rename_room(room: Room, code: str, name: str | None = None, *, actor: Person | str) -> Room:
    """Give `room` a new code and/or name. The timetable names rooms by code: a room renamed
    here gets lessons again only when the timetable uses the new code."""
    new_code = _room_code(room.school, code, room)
    new_name = _room_name(name)
    if (new_code, new_name) != (room.code, room.name):
        audit.record("room.update", school_id=room.school_id, actor=actor, object_type="room",
                     object_id=room.id, code=new_code, name=new_name, old_code=room.code,
                     old_name=room.name)
        room.code, room.name = new_code, new_name
        db.session.flush()
    return room


def room_uses(room: Room, now: datetime | None = None) -> dict[str, list[str]]:
    """What keeps `room` from being deleted: segment names, lesson count, exceptions."""
    now = now or utcnow()
    segments = list(db.session.scalars(
        select(Segment.name).join(segment_rooms, segment_rooms.c.segment_id == Segment.id)
        .where(segment_rooms.c.room_id == room.id).order_by(Segment.name)))
    lessons = db.session.scalar(
        select(func.count()).select_from(lesson_rooms).join(Lesson)
        .where(lesson_rooms.c.room_id == room.id)) or 0
    exceptions = db.session.scalar(
        select(func.count()).select_from(ExceptionGrant)
        .where(ExceptionGrant.room_id == room.id, ExceptionGrant.revoked_at.is_(None),
               ExceptionGrant.end > now)) or 0
    return {"segments": segments, "lessons": [str(lessons)] if lessons else [],
            "exceptions": [str(exceptions)] if exceptions else []}


def delete_room(room: Room, *, actor: Person | str, now: datetime | None = None) -> None:
    """Delete `room`; refused, saying what uses it, while segments, lessons or running or
    planned exceptions do (see the module's text)."""
    uses = room_uses(room, now)
    if uses["segments"]:
        raise FieldError("room", N_("Room %(code)s belongs to segment %(segments)s: remove it "
                                    "there first."),
                         code=room.code, segments=", ".join(uses["segments"]))
    if uses["lessons"]:
        raise FieldError("room", N_("Room %(code)s has %(n)s lessons in the timetable: it comes "
                                    "back with the next import. Change the timetable first."),
                         code=room.code, n=uses["lessons"][0])
    if uses["exceptions"]:
        raise FieldError("room", N_("Room %(code)s has %(n)s running or planned exceptions: "
                                    "stop them first."),
                         code=room.code, n=uses["exceptions"][0])
    audit.record("room.delete", school_id=room.school_id, actor=actor, object_type="room",
                 object_id=room.id, code=room.code)
    db.session.delete(room)
    db.session.flush()


def _segment_name(segment: Segment | None, gateway_id: str, name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise FieldError("name", N_("A segment needs a name."))
    if len(name) > SEGMENT_NAME_MAX:
        raise FieldError("name", N_("At most %(n)d characters."), n=SEGMENT_NAME_MAX)
    other = db.session.scalar(select(Segment).where(Segment.gateway_id == gateway_id,
                                                    Segment.name == name))
    if other is not None and other is not segment:
        raise FieldError("name", N_("This gateway has a segment with this name already."))
    return name


def existing_rooms(school: School, codes: list[str]) -> list[Room]:
    """The rooms of `school` with `codes`, in that order; FieldError on `rooms` naming a code
    that is not a room (a typo must not become a room)."""
    rooms = []
    for code in codes:
        room = db.session.scalar(select(Room).where(Room.school_id == school.id,
                                                    Room.code == code))
        if room is None:
            raise FieldError("rooms", N_("There is no room %(code)s. Choose one from the list, "
                                         "or add it under Rooms first."), code=code)
        rooms.append(room)
    return rooms


def update_segment(segment: Segment, name: str, room_codes: list[str], *,
                   actor: Person | str) -> Segment:
    """Rename `segment` and set the rooms it serves (existing rooms only, at least one)."""
    new_name = _segment_name(segment, segment.gateway_id, name)
    codes = list(dict.fromkeys(c.strip() for c in room_codes if c.strip()))
    if not codes:
        raise FieldError("rooms", N_("A segment serves at least one room."))
    rooms = existing_rooms(segment.gateway.school, codes)
    old_codes = [r.code for r in segment.rooms]
    if new_name != segment.name or sorted(codes) != sorted(old_codes):
        audit.record("segment.update", school_id=segment.school_id, actor=actor,
                     object_type="segment", object_id=segment.id, name=new_name,
                     old_name=segment.name, rooms=sorted(codes), old_rooms=sorted(old_codes))
        segment.name = new_name
        segment.rooms = rooms
        db.session.flush()
    return segment


def delete_segment(segment: Segment, *, actor: Person | str) -> None:
    """Delete `segment` (its rooms stay; its networks are no longer blocked)."""
    audit.record("segment.delete", school_id=segment.school_id, actor=actor,
                 object_type="segment", object_id=segment.id, name=segment.name,
                 cidrs=segment.cidr_strings)
    db.session.delete(segment)
    db.session.flush()
