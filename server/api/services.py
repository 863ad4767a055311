"""The service catalog and the school's choice of services blocked during lessons."""

from __future__ import annotations

from flask import Response, g, jsonify
from sqlalchemy import select

from .. import audit
from ..auth import require_user
from ..errors import abort_json
from ..extensions import db
from ..models import School, Service
from . import bp
from .common import get_str_list, json_body


def _services_answer(school: School) -> Response:
    services = db.session.scalars(select(Service).order_by(Service.name)).all()
    blocked = school.blocked_services
    chosen = set(blocked) if blocked is not None else {s.id for s in services}
    return jsonify({
        "blocked": None if blocked is None else sorted(blocked),
        "services": [{"id": s.id, "name": s.name, "group": s.group, "domains": s.domains,
                      "blocked": s.id in chosen} for s in services],
    })


@bp.get("/services")
@require_user("teacher", "leader", "it_admin")
def list_services() -> Response:
    """Every known service, its domains, and whether the school blocks it during lessons."""
    return _services_answer(db.session.get(School, g.person.school_id))


@bp.put("/services/blocked")
@require_user("it_admin")
def set_blocked_services() -> Response:
    """Set which services the school blocks during lessons (`services`: ids, or null for all)."""
    body = json_body()
    if "services" not in body:
        abort_json(400, "services is required (a list of service ids, or null for all)",
                   field="services")
    chosen = get_str_list(body, "services", nullable=True, max_len=40)
    if chosen is not None:
        known = set(db.session.scalars(select(Service.id)))
        for index, service_id in enumerate(chosen):
            if service_id not in known:
                abort_json(400, f"unknown service {service_id!r}", field=f"services[{index}]")
        chosen = sorted(set(chosen))
    school = db.session.get(School, g.person.school_id)
    before = school.blocked_services
    school.blocked_services = chosen
    audit.record("school.blocked_services", school_id=school.id, actor=g.person,
                 object_type="school", object_id=school.id, before=before, after=chosen)
    db.session.commit()
    return _services_answer(school)
