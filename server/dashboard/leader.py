"""The school leader's pages: school-wide exceptions, every active exception, the audit log."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext
from sqlalchemy import func, select
from werkzeug.wrappers import Response

from ..bounds import parse_id
from ..extensions import db
from ..models import AuditEvent, ExceptionGrant, Group, Room, utcnow
from . import bp
from .common import (current_user, local_input_value, login_required, parse_local_datetime,
                     school_services, school_zone, service_names)

AUDIT_PAGE_SIZE = 50
LEADER_SCOPES = ("school", "room", "group")


def _render_overview(form: dict[str, str | list[str]] | None = None,
                     errors: dict[str, str] | None = None, status: int = 200) -> tuple[str, int]:
    user = current_user()
    school = user.school
    now = utcnow()
    current = db.session.scalars(
        select(ExceptionGrant).where(ExceptionGrant.school_id == school.id,
                                     ExceptionGrant.revoked_at.is_(None),
                                     ExceptionGrant.end > now)
        .order_by(ExceptionGrant.start, ExceptionGrant.id)).all()
    active = [e for e in current if e.start <= now]
    planned = [e for e in current if e.start > now]
    if form is None:
        start = now.astimezone(school_zone(school)).replace(second=0, microsecond=0)
        form = {"scope": "school", "start": local_input_value(start, school),
                "end": local_input_value(start + timedelta(hours=2), school), "reason": "",
                "services": []}
    rooms = db.session.scalars(select(Room).where(Room.school_id == school.id)
                               .order_by(Room.code)).all()
    groups = db.session.scalars(select(Group).where(Group.school_id == school.id)
                                .order_by(Group.name)).all()
    return render_template("leader/overview.html", active=active, planned=planned, form=form,
                           errors=errors or {}, rooms=rooms, groups=groups,
                           services=school_services(school), names=service_names(),
                           scopes=LEADER_SCOPES, now=now), status


@bp.get("/leiding")
@login_required("leader")
def leader_overview() -> tuple[str, int]:
    """Every active and planned exception, and the form for a school-wide one."""
    return _render_overview()


@bp.post("/leiding/uitzonderingen")
@login_required("leader")
def leader_grant() -> Response | tuple[str, int]:
    """Grant an exception for the school, a room or a group, with a start and an end."""
    from ..grants import GrantError, GrantForbidden, grant_exception
    user = current_user()
    school = user.school
    form: dict[str, str | list[str]] = {
        key: (request.form.get(key) or "").strip()
        for key in ("scope", "start", "end", "reason", "room", "group")}
    form["services"] = request.form.getlist("services")
    errors: dict[str, str] = {}
    scope = str(form["scope"])
    if scope not in LEADER_SCOPES:
        errors["scope"] = gettext("Choose the school, a room or a group.")
    times: dict[str, datetime] = {}
    for key in ("start", "end"):
        try:
            times[key] = parse_local_datetime(str(form[key]), school)
        except ValueError as err:
            errors[key] = str(err)
    room = group = None
    if scope == "room":
        room = db.session.scalar(select(Room).where(Room.school_id == school.id,
                                                    Room.id == _int(form["room"])))
        if room is None:
            errors["room"] = gettext("Choose a room.")
    if scope == "group":
        group = db.session.scalar(select(Group).where(Group.school_id == school.id,
                                                      Group.id == _int(form["group"])))
        if group is None:
            errors["group"] = gettext("Choose a group.")
    if errors:
        return _render_overview(form, errors, 400)
    try:
        grant_exception(user, scope=scope, room=room, group=group,
                        services=list(form["services"]) or None, start=times["start"],
                        end=times["end"], reason=str(form["reason"]), now=utcnow())
    except GrantForbidden:
        db.session.rollback()
        return _render_overview(form, {"form": gettext("You may not grant this exception.")}, 403)
    except GrantError as err:
        db.session.rollback()
        field = getattr(err, "field", None) or "form"
        texts = {"end": gettext("The end must be after the start and still to come."),
                 "services": gettext("Choose services that the school blocks."),
                 "reason": gettext("The reason is too long (at most 200 characters).")}
        return _render_overview(form, {field: texts.get(field, str(err))}, 400)
    db.session.commit()
    flash(gettext("Exception granted."), "success")
    return redirect(url_for("dashboard.leader_overview"))


def _int(value: object) -> int:
    """A form's id, or 0 (no object has it) when it is not one."""
    return parse_id(str(value)) or 0


def _parse_day(text: str | None, zone: ZoneInfo, end_of_day: bool) -> datetime | None:
    if not text:
        return None
    try:
        day = datetime.fromisoformat(text).date()
    except ValueError:
        return None
    moment = datetime.combine(day, time.min, zone)
    return moment + timedelta(days=1) if end_of_day else moment


@bp.get("/audit")
@login_required("leader", "it_admin")
def audit_log() -> str:
    """The audit log, newest first, filtered by who, what and when."""
    user = current_user()
    school = user.school
    zone = school_zone(school)
    actor = (request.args.get("actor") or "").strip()
    action = (request.args.get("action") or "").strip()
    since = _parse_day(request.args.get("since"), zone, end_of_day=False)
    until = _parse_day(request.args.get("until"), zone, end_of_day=True)
    page = min(max(1, parse_id(request.args.get("page", "1")) or 1), 100_000)
    query = select(AuditEvent).where(AuditEvent.school_id == school.id)
    if actor:
        query = query.where(AuditEvent.actor_label == actor)
    if action:
        query = query.where(AuditEvent.action == action)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if until is not None:
        query = query.where(AuditEvent.at < until)
    events = db.session.scalars(query.order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
                                .offset((page - 1) * AUDIT_PAGE_SIZE)
                                .limit(AUDIT_PAGE_SIZE + 1)).all()
    actors = db.session.scalars(select(AuditEvent.actor_label).distinct()
                                .where(AuditEvent.school_id == school.id)
                                .order_by(AuditEvent.actor_label)).all()
    actions = db.session.scalars(select(AuditEvent.action).distinct()
                                 .where(AuditEvent.school_id == school.id)
                                 .order_by(AuditEvent.action)).all()
    total = db.session.scalar(query.with_only_columns(func.count(AuditEvent.id)).order_by(None))
    filters = {key: request.args.get(key, "") for key in ("actor", "action", "since", "until")}
    return render_template("leader/audit.html", events=events[:AUDIT_PAGE_SIZE],
                           has_more=len(events) > AUDIT_PAGE_SIZE, page=page, actors=actors,
                           actions=actions, filters=filters, total=total)
