"""Network segments (CIDRs behind a gateway, serving rooms): read by all staff, changed by IT."""

from __future__ import annotations

from typing import Any

from flask import Response, g, jsonify
from sqlalchemy import select

from .. import audit
from ..auth import require_user
from ..errors import abort_json
from ..extensions import db
from ..models import Gateway, School, Segment
from ..network import add_segment, check_segment_cidrs, parse_cidr
from . import bp
from .common import get_object, get_str, get_str_list, json_body


def segment_json(segment: Segment) -> dict[str, Any]:
    """A segment with its CIDRs, rooms and gateway."""
    return {"id": segment.id, "name": segment.name, "cidrs": segment.cidr_strings,
            "gateway": {"id": segment.gateway_id, "name": segment.gateway.name},
            "rooms": [{"id": r.id, "code": r.code} for r in segment.rooms]}


@bp.get("/segments")
@require_user("teacher", "leader", "it_admin")
def list_segments() -> Response:
    """The school's segments."""
    segments = db.session.scalars(select(Segment).where(Segment.school_id == g.person.school_id)
                                  .order_by(Segment.name, Segment.id))
    return jsonify({"segments": [segment_json(s) for s in segments]})


@bp.post("/segments")
@require_user("it_admin")
def create_segment() -> Any:
    """Add a segment behind one of the school's gateways; CIDR errors name `cidrs[i]`."""
    body = json_body()
    name = get_str(body, "name", max_len=100)
    gateway_id = get_str(body, "gateway_id", max_len=36)
    cidrs = get_str_list(body, "cidrs", max_items=64, max_len=64) or []
    rooms = get_str_list(body, "rooms", max_items=200, max_len=64) or []
    gateway = db.session.get(Gateway, gateway_id)
    if gateway is None or gateway.school_id != g.person.school_id:
        abort_json(400, f"no gateway {gateway_id!r} in your school", field="gateway_id")
    if not cidrs:
        abort_json(400, "a segment needs at least one CIDR", field="cidrs")
    if not rooms:
        abort_json(400, "a segment serves at least one room", field="rooms")
    for index, cidr in enumerate(cidrs):
        try:
            parse_cidr(cidr)
        except ValueError as err:
            abort_json(400, str(err), field=f"cidrs[{index}]")
    try:
        check_segment_cidrs(gateway.id, cidrs)
    except ValueError as err:
        abort_json(400, str(err), field="cidrs")
    if db.session.scalar(select(Segment.id).where(Segment.gateway_id == gateway.id,
                                                  Segment.name == name)) is not None:
        abort_json(409, f"gateway {gateway.name!r} has a segment named {name!r} already",
                   field="name")
    school = db.session.get(School, g.person.school_id)
    try:
        segment = add_segment(school, gateway, name or "", cidrs, rooms, actor=g.person)
    except ValueError as err:
        db.session.rollback()
        abort_json(400, str(err), field="cidrs")
    db.session.commit()
    return jsonify(segment_json(segment)), 201


@bp.delete("/segments/<int:segment_id>")
@require_user("it_admin")
def delete_segment(segment_id: int) -> Response:
    """Remove a segment (its rooms stay); audited."""
    segment = get_object(Segment, segment_id, g.person.school_id, "segment")
    audit.record("segment.delete", school_id=segment.school_id, actor=g.person,
                 object_type="segment", object_id=segment.id, name=segment.name,
                 cidrs=segment.cidr_strings, gateway=segment.gateway.name)
    db.session.delete(segment)
    db.session.commit()
    return jsonify({"deleted": segment_id})
