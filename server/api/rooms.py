"""Rooms of the school: everyone signed in reads them, IT adds them."""

from __future__ import annotations

from typing import Any

from flask import Response, g, jsonify
from sqlalchemy import select

from .. import audit
from ..auth import require_user
from ..errors import abort_json
from ..extensions import db
from ..models import Room
from . import bp
from .common import get_str, json_body


def room_json(room: Room) -> dict[str, Any]:
    """A room and the segments that serve it."""
    return {"id": room.id, "code": room.code, "name": room.name,
            "segments": [{"id": s.id, "name": s.name} for s in room.segments]}


@bp.get("/rooms")
@require_user("teacher", "leader", "it_admin")
def list_rooms() -> Response:
    """The school's rooms, by code."""
    rooms = db.session.scalars(select(Room).where(Room.school_id == g.person.school_id)
                               .order_by(Room.code))
    return jsonify({"rooms": [room_json(room) for room in rooms]})


@bp.post("/rooms")
@require_user("it_admin")
def create_room() -> Any:
    """Add a room (code unique in the school); audited."""
    body = json_body()
    code = get_str(body, "code", max_len=64)
    name = get_str(body, "name", required=False, max_len=200)
    if db.session.scalar(select(Room.id).where(Room.school_id == g.person.school_id,
                                               Room.code == code)) is not None:
        abort_json(409, f"room {code!r} exists already", field="code")
    room = Room(school_id=g.person.school_id, code=code, name=name)
    db.session.add(room)
    db.session.flush()
    audit.record("room.create", school_id=room.school_id, actor=g.person, object_type="room",
                 object_id=room.id, code=code)
    db.session.commit()
    return jsonify(room_json(room)), 201
