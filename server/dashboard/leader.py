"""The school leader's pages: school-wide exceptions, every active exception, the audit log."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_babel import format_datetime, gettext
from sqlalchemy import func, select
from werkzeug.wrappers import Response

from ..bounds import parse_id
from ..extensions import db
from ..models import AuditEvent, ExceptionGrant, Group, Person, Room, School, utcnow
from . import bp
from .common import (_hm, _short_dt, current_user, login_required, parse_local_datetime,
                     school_services, school_zone, service_names)

AUDIT_PAGE_SIZE = 50
LEADER_SCOPES = ("school", "room", "group")


EMPTY_FORM: dict[str, str | list[str]] = {
    "scope": "", "room": "", "group": "", "which": "", "services": [], "start": "", "end": "",
    "reason": ""}


@dataclass
class Preview:
    """What a leader's exception would do, in words, before it is granted (the second step)."""

    effect: str
    token: str  # binds the confirmation to exactly these values (see `_confirm_token`)
    overlaps: list[ExceptionGrant] = field(default_factory=list)
    extendable: set[int] = field(default_factory=set)
    school_wide: bool = False


def _render_overview(form: dict[str, str | list[str]] | None = None,
                     errors: dict[str, str] | None = None, status: int = 200,
                     preview: Preview | None = None) -> tuple[str, int]:
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
    # Nothing chosen beforehand: a leader decides scope, services and times themselves.
    form = dict(EMPTY_FORM) if form is None else form
    rooms = db.session.scalars(select(Room).where(Room.school_id == school.id)
                               .order_by(Room.code)).all()
    groups = db.session.scalars(select(Group).where(Group.school_id == school.id)
                                .order_by(Group.name)).all()
    from .it import stale_sources
    return render_template("leader/overview.html", active=active, planned=planned, form=form,
                           errors=errors or {}, rooms=rooms, groups=groups,
                           services=school_services(school), names=service_names(),
                           scopes=LEADER_SCOPES, now=now, preview=preview,
                           stale_sources=stale_sources(school.id, now)), status


@bp.get("/leiding")
@login_required("leader")
def leader_overview() -> tuple[str, int]:
    """Every active and planned exception, and the form for a school-wide one."""
    return _render_overview()


def _when_text(start: datetime, end: datetime, now: datetime, zone: ZoneInfo) -> str:
    """"vandaag 09:41–11:41", "morgen …", "wo 2 dec 09:00–11:00", or two moments for days."""
    first, last = start.astimezone(zone), end.astimezone(zone)
    today = now.astimezone(zone).date()
    if first.date() != last.date() and not (last.date() == first.date() + timedelta(days=1)
                                            and last.time() == time.min):
        return f"{_short_dt(start)} – {_short_dt(end)}"
    span = f"{_hm(start)}–{_hm(end)}"
    if first.date() == today:
        return gettext("today %(span)s", span=span)
    if first.date() == today + timedelta(days=1):
        return gettext("tomorrow %(span)s", span=span)
    return f"{format_datetime(start, 'EEE d MMM')} {span}"


def effect_text(scope: str, room: Room | None, group: Group | None,
                services: list[str] | None, start: datetime, end: datetime,
                now: datetime, zone: ZoneInfo) -> str:
    """What an exception does, as a sentence: "All social media allowed in the whole school,
    today 09:41–11:41"."""
    names = service_names()
    what = (gettext("All social media") if services is None
            else ", ".join(sorted(names.get(s, s) for s in services)))
    where = {"school": gettext("in the whole school"),
             "room": gettext("in room %(code)s", code=room.code if room else "?"),
             "group": gettext("for group %(name)s", name=group.name if group else "?")}[scope]
    return gettext("%(what)s allowed %(where)s, %(when)s", what=what, where=where,
                   when=_when_text(start, end, now, zone))


def _confirm_token(values: tuple[object, ...]) -> str:
    # Binds "Toekennen" to the values the leader saw in words: a changed or hand-made form
    # is shown again rather than granted.
    key = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(key, repr(values).encode(), hashlib.sha256).hexdigest()[:32]


@bp.post("/leiding/uitzonderingen")
@login_required("leader")
def leader_grant() -> Response | tuple[str, int]:
    """Grant an exception for the school, a room or a group, with a start and an end.

    Two steps, both checked here: "Bekijken" shows the effect in words and any overlapping
    exception; only "Toekennen" (or "Verlengen") from that preview, with its token, writes.
    """
    from ..grants import (GrantError, GrantForbidden, covers_services, grant_exception,
                          overlapping_exceptions, widen_exception)
    user = current_user()
    school = user.school
    form: dict[str, str | list[str]] = {
        key: (request.form.get(key) or "").strip()
        for key in ("scope", "start", "end", "reason", "room", "group", "which")}
    for key in ("start", "end"):
        # The form sends a date and a 24-hour time apart (a datetime-local input shows AM/PM in
        # an English-speaking Chromium); "start"/"end" in one value are accepted as well.
        day = (request.form.get(f"{key}_day") or "").strip()
        clock = (request.form.get(f"{key}_time") or "").strip().replace(".", ":")
        if len(clock) == 4 and clock[1] == ":":
            clock = "0" + clock  # 9:00
        if not form[key] and (day or clock):
            form[key] = f"{day}T{clock}"  # missing either half: refused as no date and time
    form["services"] = request.form.getlist("services")
    step = request.form.get("step") or "preview"
    errors: dict[str, str] = {}
    scope = str(form["scope"])
    if scope not in LEADER_SCOPES:
        errors["scope"] = gettext("Choose the school, a room or a group.")
    services: list[str] | None = None
    if not form["which"] and form["services"]:
        form["which"] = "some"  # ticking a service is a choice too
    if form["which"] == "all":
        services = None
        if form["services"]:
            errors["services"] = gettext("You chose all social media and some services: "
                                         "choose one of the two.")
    elif form["which"] == "some":
        services = sorted(set(form["services"]))
        if not services:
            errors["services"] = gettext("Choose at least one service.")
    else:
        errors["services"] = gettext("Choose all social media or some services.")
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
    now = utcnow()
    reason = str(form["reason"])
    # Checked by the grant rules themselves (then rolled back), so the preview shows only what
    # "Toekennen" will do.
    try:
        trial = grant_exception(user, scope=scope, room=room, group=group, services=services,
                                start=times["start"], end=times["end"], reason=reason, now=now)
        start, end = trial.start, trial.end
    except GrantForbidden:
        db.session.rollback()
        return _render_overview(form, {"form": gettext("You may not grant this exception.")}, 403)
    except GrantError as err:
        db.session.rollback()
        field_name = getattr(err, "field", None) or "form"
        texts = {"end": gettext("The end must be after the start and still to come."),
                 "services": gettext("Choose services that the school blocks."),
                 "reason": gettext("The reason is too long (at most 200 characters).")}
        from .grant_texts import grant_refusal
        return _render_overview(form, {field_name: texts.get(field_name, grant_refusal(err))},
                                400)
    db.session.rollback()
    room = db.session.get(Room, room.id) if room is not None else None
    group = db.session.get(Group, group.id) if group is not None else None
    overlaps = overlapping_exceptions(school.id, scope=scope, room_id=room.id if room else None,
                                      group_id=group.id if group else None, start=start, end=end)
    zone = school_zone(school)
    preview = Preview(
        effect=effect_text(scope, room, group, services, start, end, now, zone),
        # The overlaps seen are part of it: one added meanwhile is shown before anything is
        # granted.
        token=_confirm_token((scope, room.id if room else None, group.id if group else None,
                              services, start.isoformat(), end.isoformat(), reason,
                              [(e.id, e.start.isoformat(), e.end.isoformat())
                               for e in overlaps])),
        overlaps=overlaps, extendable={e.id for e in overlaps if covers_services(e, services)},
        school_wide=scope == "school")
    if step == "preview":
        return _render_overview(form, status=200, preview=preview)
    if step not in ("confirm", "extend") or not hmac.compare_digest(
            request.form.get("token", ""), preview.token):
        return _render_overview(form, {"form": gettext(
            "Check what the exception will do and confirm it again.")}, 400, preview)
    if step == "extend":
        target = next((e for e in overlaps if str(e.id) == request.form.get("extend_id")
                       and e.id in preview.extendable), None)
        if target is None:
            return _render_overview(form, {"form": gettext(
                "That exception cannot be extended (any more); check the overview.")}, 400,
                preview)
        try:
            widen_exception(user, target, start=start, end=end, now=now)
        except (GrantError, GrantForbidden):
            db.session.rollback()
            return _render_overview(form, {"form": gettext(
                "That exception cannot be extended (any more); check the overview.")}, 400,
                preview)
        db.session.commit()
        flash(gettext("Exception extended: %(effect)s.", effect=effect_text(
            target.scope, target.room, target.group, target.services, target.start, target.end,
            now, zone)), "success")
        return redirect(url_for("dashboard.leader_overview"))
    try:
        grant_exception(user, scope=scope, room=room, group=group, services=services,
                        start=times["start"], end=times["end"], reason=reason, now=now)
    except (GrantError, GrantForbidden):
        # The trial passed a moment ago: only a change in between (a room removed) gets here.
        db.session.rollback()
        return _render_overview(form, {"form": gettext(
            "Check what the exception will do and confirm it again.")}, 400)
    db.session.commit()
    flash(gettext("Exception granted: %(effect)s.", effect=preview.effect), "success")
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


def _audit_query(school: School) -> tuple[Any, dict[str, str]]:
    """The audit events the request's filters (who, what, from, until) select, newest first."""
    zone = school_zone(school)
    actor = (request.args.get("actor") or "").strip()
    action = (request.args.get("action") or "").strip()
    since = _parse_day(request.args.get("since"), zone, end_of_day=False)
    until = _parse_day(request.args.get("until"), zone, end_of_day=True)
    query = select(AuditEvent).where(AuditEvent.school_id == school.id)
    if actor:
        query = query.where(AuditEvent.actor_label == actor)
    if action:
        query = query.where(AuditEvent.action == action)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if until is not None:
        query = query.where(AuditEvent.at < until)
    filters = {key: request.args.get(key, "") for key in ("actor", "action", "since", "until")}
    return query.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()), filters


@bp.get("/audit")
@login_required("leader", "it_admin")
def audit_log() -> str:
    """The audit log in words, newest first, filtered by who, what and when."""
    from .audit_words import action_name, actor_name, describe_events
    user = current_user()
    school = user.school
    query, filters = _audit_query(school)
    page = min(max(1, parse_id(request.args.get("page", "1")) or 1), 100_000)
    events = db.session.scalars(query.offset((page - 1) * AUDIT_PAGE_SIZE)
                                .limit(AUDIT_PAGE_SIZE + 1)).all()
    pairs = db.session.execute(select(AuditEvent.actor_label, AuditEvent.actor_id).distinct()
                               .where(AuditEvent.school_id == school.id)).all()
    people = {p.id: p for p in db.session.scalars(select(Person).where(
        Person.id.in_({pid for _label, pid in pairs if pid is not None})))}
    names: dict[str, str] = {}
    for label, person_id in pairs:
        names.setdefault(label, actor_name(AuditEvent(actor_label=label, actor_id=person_id),
                                           people))
    actors = sorted(names.items(), key=lambda item: item[1].lower())
    actions = sorted(((code, action_name(code)) for code in db.session.scalars(
        select(AuditEvent.action).distinct().where(AuditEvent.school_id == school.id))),
        key=lambda item: item[1].lower())
    total = db.session.scalar(query.with_only_columns(func.count(AuditEvent.id)).order_by(None))
    return render_template("leader/audit.html",
                           events=describe_events(events[:AUDIT_PAGE_SIZE]),
                           has_more=len(events) > AUDIT_PAGE_SIZE, page=page, actors=actors,
                           actions=actions, filters=filters, total=total)


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV injection");
# such cells get a leading apostrophe, which shows the text as it is.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CSV_CHUNK = 500


def csv_cell(value: Any) -> str:
    """`value` as a CSV cell that no spreadsheet runs as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


@bp.get("/audit.csv")
@login_required("leader", "it_admin")
def audit_csv() -> Response:
    """The filtered audit log as CSV for the privacy officer: time in the school's timezone,
    who, what, the sentence, the object and the raw details (semicolons, UTF-8 with BOM, so
    Excel with Dutch settings opens it as columns)."""
    import csv
    import io
    import json
    from .audit_words import describe_events
    user = current_user()
    query, _filters = _audit_query(user.school)
    zone = school_zone(user.school)
    headers = [gettext("When"), gettext("Who"), gettext("What"), gettext("Description"),
               gettext("Object"), gettext("Details")]

    def rows() -> Any:
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
        writer.writerow(headers)
        yield "\ufeff" + buffer.getvalue()
        offset = 0
        while True:
            chunk = db.session.scalars(query.offset(offset).limit(CSV_CHUNK)).all()
            if not chunk:
                return
            buffer.seek(0)
            buffer.truncate()
            for item in describe_events(chunk):
                event = item.event
                writer.writerow([csv_cell(value) for value in (
                    event.at.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"), item.who,
                    item.what, item.sentence,
                    f"{event.object_type} {event.object_id or ''}".strip(),
                    json.dumps(event.details or {}, ensure_ascii=False, sort_keys=True))])
            yield buffer.getvalue()
            offset += CSV_CHUNK

    from flask import stream_with_context
    stamp = utcnow().astimezone(zone).strftime("%Y%m%d-%H%M")
    return Response(stream_with_context(rows()), mimetype="text/csv",
                    headers={"Content-Disposition":
                             f'attachment; filename="lesfocus-audit-{stamp}.csv"'})
