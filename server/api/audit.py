"""The audit log, for school leaders and IT (read only: events are append-only)."""

from __future__ import annotations

from typing import Any

from flask import Response, g, jsonify, request
from sqlalchemy import select

from ..auth import require_user
from ..extensions import db
from ..models import AuditEvent
from . import bp
from .common import iso, parse_datetime, query_int, query_str


def audit_json(event: AuditEvent) -> dict[str, Any]:
    """An audit event as the API shows it."""
    return {"id": event.id, "at": iso(event.at), "actor": event.actor_label,
            "actor_id": event.actor_id, "action": event.action,
            "object_type": event.object_type, "object_id": event.object_id,
            "details": event.details}


@bp.get("/audit")
@require_user("leader", "it_admin")
def list_audit() -> Response:
    """Audit events, newest first, filtered by action, object, actor and time; paged by id."""
    query = select(AuditEvent).where(AuditEvent.school_id == g.person.school_id)
    for name, column in (("action", AuditEvent.action), ("object_type", AuditEvent.object_type),
                         ("object_id", AuditEvent.object_id), ("actor", AuditEvent.actor_label)):
        value = query_str(name)
        if value:
            query = query.where(column == value)
    if request.args.get("from"):
        query = query.where(AuditEvent.at >= parse_datetime(request.args["from"], "from"))
    if request.args.get("to"):
        query = query.where(AuditEvent.at < parse_datetime(request.args["to"], "to"))
    before = query_int("before", default=0, minimum=0, maximum=2**62)
    if before:
        query = query.where(AuditEvent.id < before)
    limit = query_int("limit", default=100, minimum=1, maximum=500)
    events = db.session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)).all()
    return jsonify({"events": [audit_json(event) for event in events],
                    "next_before": events[-1].id if len(events) == limit else None})
