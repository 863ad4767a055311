"""Exceptions to article A4: list, grant (teachers for their lessons, leaders any) and revoke."""

from __future__ import annotations

from typing import Any

from flask import Response, g, jsonify, request
from sqlalchemy import or_, select

from ..bounds import parse_id
from ..auth import require_user
from ..errors import abort_json
from ..extensions import db
from ..models import EXCEPTION_SCOPES, ExceptionGrant, Group, Lesson, Room, School, utcnow
from . import bp
from .common import (get_datetime, get_int, get_object, get_str, get_str_list, iso, json_body,
                     parse_datetime, query_bool, query_int)


def exception_json(grant: ExceptionGrant) -> dict[str, Any]:
    """An exception with who granted and revoked it (staff only see this)."""
    return {
        "id": grant.id, "scope": grant.scope, "lesson_id": grant.lesson_id,
        "room": {"id": grant.room.id, "code": grant.room.code} if grant.room else None,
        "group": {"id": grant.group.id, "name": grant.group.name} if grant.group else None,
        "services": grant.services, "start": iso(grant.start), "end": iso(grant.end),
        "reason": grant.reason,
        "granted_by": grant.granted_by.label if grant.granted_by else None,
        "granted_at": iso(grant.granted_at), "revoked_at": iso(grant.revoked_at),
        "revoked_by": grant.revoked_by.label if grant.revoked_by else None,
        "active": grant.is_active(utcnow()),
    }


@bp.get("/exceptions")
@require_user("teacher", "leader", "it_admin")
def list_exceptions() -> Response:
    """The school's exceptions, newest first; filters active, lesson, from, to."""
    school_id = g.person.school_id
    query = select(ExceptionGrant).where(ExceptionGrant.school_id == school_id)
    now = utcnow()
    if query_bool("active"):
        query = query.where(ExceptionGrant.start <= now, ExceptionGrant.end > now,
                            or_(ExceptionGrant.revoked_at.is_(None),
                                ExceptionGrant.revoked_at > now))
    lesson_id = request.args.get("lesson")
    if lesson_id:
        wanted = parse_id(lesson_id)
        if wanted is None:
            abort_json(400, "lesson must be a lesson id", field="lesson")
        query = query.where(ExceptionGrant.lesson_id == wanted)
    if request.args.get("from"):
        query = query.where(ExceptionGrant.end > parse_datetime(request.args["from"], "from"))
    if request.args.get("to"):
        query = query.where(ExceptionGrant.start < parse_datetime(request.args["to"], "to"))
    limit = query_int("limit", default=200, minimum=1, maximum=1000)
    grants = db.session.scalars(query.order_by(ExceptionGrant.id.desc()).limit(limit)).all()
    return jsonify({"exceptions": [exception_json(grant) for grant in grants]})


def _lookup(model: type, body: dict[str, Any], id_field: str, name_field: str,
            column: Any, school_id: int, what: str) -> Any:
    """The object named by `<id_field>` (an id) or `<name_field>` (a code/name) of the body."""
    if body.get(id_field) is not None:
        object_id = get_int(body, id_field, minimum=1)
        obj = db.session.get(model, object_id)
        if obj is None or obj.school_id != school_id:
            abort_json(400, f"no {what} {object_id} in your school", field=id_field)
        return obj
    name = get_str(body, name_field, required=False, max_len=64)
    if name is None:
        return None
    obj = db.session.scalar(select(model).where(model.school_id == school_id, column == name))
    if obj is None:
        abort_json(400, f"no {what} {name!r} in your school", field=name_field)
    return obj


@bp.post("/exceptions")
@require_user("teacher", "leader")
def create_exception() -> Any:
    """Grant an exception: scope lesson/room/group/school, services (all when absent), times."""
    from ..grants import GrantError, GrantForbidden, grant_exception
    body = json_body()
    school_id = g.person.school_id
    school = db.session.get(School, school_id)
    tz = school.timezone if school else "UTC"
    scope = get_str(body, "scope", max_len=16)
    if scope not in EXCEPTION_SCOPES:
        abort_json(400, f"scope must be one of {', '.join(EXCEPTION_SCOPES)}", field="scope")
    lesson = _lookup(Lesson, body, "lesson_id", "lesson_source_id", Lesson.source_id, school_id,
                     "lesson")
    room = _lookup(Room, body, "room_id", "room", Room.code, school_id, "room")
    group = _lookup(Group, body, "group_id", "group", Group.name, school_id, "group")
    services = get_str_list(body, "services", required=False, nullable=True, max_len=40)
    start = get_datetime(body, "start", tz=tz)
    end = get_datetime(body, "end", tz=tz)
    minutes = get_int(body, "minutes", required=False, minimum=1, maximum=60 * 24 * 366)
    reason = get_str(body, "reason", required=False, max_len=200, default="", allow_empty=True)
    try:
        grant = grant_exception(g.person, scope=scope, lesson=lesson, room=room, group=group,
                                services=services, start=start, end=end, minutes=minutes,
                                reason=reason or "")
        db.session.commit()
    except GrantForbidden as err:
        db.session.rollback()
        abort_json(403, str(err))
    except GrantError as err:
        db.session.rollback()
        abort_json(400, str(err), field=getattr(err, "field", None))
    return jsonify(exception_json(grant)), 201


@bp.delete("/exceptions/<int:exception_id>")
@require_user("teacher", "leader")
def revoke_exception_view(exception_id: int) -> Response:
    """Revoke an exception (body optional: `{"reason": ...}`); audited."""
    from ..grants import GrantError, GrantForbidden, revoke_exception
    body = json_body(optional=True)
    reason = get_str(body, "reason", required=False, max_len=200, default="", allow_empty=True)
    grant = get_object(ExceptionGrant, exception_id, g.person.school_id, "exception")
    try:
        revoke_exception(g.person, grant, reason=reason or "")
        db.session.commit()
    except GrantForbidden as err:
        db.session.rollback()
        abort_json(403, str(err))
    except GrantError as err:
        db.session.rollback()
        # "already revoked" / "already over" are conflicts with the exception's state.
        field = getattr(err, "field", None)
        abort_json(409 if field == "exception" else 400, str(err), field=field)
    return jsonify(exception_json(grant))
