"""IT pages: rooms, segments, gateways, timetable import, blocked services, reminders, people."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from flask import (abort, current_app, flash, make_response, redirect, render_template,
                   request, url_for)
from flask_babel import gettext
from sqlalchemy import delete, func, select
from sqlalchemy.orm import selectinload
from werkzeug.wrappers import Response

from .. import audit
from ..extensions import db
from ..models import (ARTICLES, LANGUAGES, ROLES, Gateway, GatewayCounter, ImportJob, Person,
                      Reminder, Room, Segment, Service, utcnow)
from ..fields import FieldError
from ..passwords import MIN_LENGTH, hash_password
from ..people import username_taken, valid_username
from ..sso import normal_email
from . import bp
from .common import current_user, login_required, school_object_or_404, service_names
from .state import gateway_health, room_states

TIMETABLE_FORMATS = ("ical", "zermelo", "untis", "csv")
# A synced source failing for longer than this warns IT and the school's leaders.
STALE_SOURCE_AFTER = timedelta(hours=1)
COUNTER_DAYS = 7
RECENT_IMPORTS = 10
JOB_PAGE_REFRESH_SECONDS = 2
# The longest name each form field takes (the columns' lengths), shown next to the field.
NAME_LIMITS = {"room_code": 64, "room_name": 200, "segment": 100, "gateway": 100,
               "display_name": 200, "teacher_code": 32, "username": 150}


def _school_gateways(school_id: int) -> list[Gateway]:
    return list(db.session.scalars(
        select(Gateway).where(Gateway.school_id == school_id).order_by(Gateway.name)))


def error_text(err: Exception) -> str:
    """A refusal in the reader's language: FieldErrors translated, others as they are."""
    return err.translated() if isinstance(err, FieldError) else str(err)


def _split_list(text: str) -> list[str]:
    """Values separated by commas, spaces or new lines."""
    return [part for part in re.split(r"[\s,;]+", text or "") if part]


# --- rooms -----------------------------------------------------------------------------------

@bp.route("/it/lokalen", methods=["GET", "POST"])
@login_required("it_admin")
def it_rooms() -> Response | tuple[str, int]:
    """Every room with its segments and what is blocked there now; add a room."""
    from ..rooms import add_room
    user = current_user()
    errors: dict[str, str] = {}
    form = {"code": "", "name": ""}
    if request.method == "POST":
        form = {key: (request.form.get(key) or "").strip() for key in form}
        try:
            room = add_room(user.school, form["code"], form["name"], actor=user)
        except FieldError as err:
            db.session.rollback()
            errors[err.field] = err.translated()
        else:
            db.session.commit()
            flash(gettext("Room %(code)s added.", code=room.code), "success")
            return redirect(url_for("dashboard.it_rooms"))
    rooms = db.session.scalars(
        select(Room).where(Room.school_id == user.school_id).order_by(Room.code)
        .options(selectinload(Room.segments))).all()
    states = room_states(list(rooms), utcnow())
    return render_template("it/rooms.html", states=states, form=form, errors=errors,
                           names=service_names(), limits=NAME_LIMITS), 400 if errors else 200


@bp.route("/it/lokalen/<int:room_id>", methods=["GET", "POST"])
@login_required("it_admin")
def it_room(room_id: int) -> Response | tuple[str, int]:
    """Rename a room, or delete it (refused, saying what uses it, while it is in use)."""
    from ..rooms import delete_room, rename_room, room_uses
    user = current_user()
    room = school_object_or_404(Room, room_id)
    errors: dict[str, str] = {}
    form = {"code": room.code, "name": room.name or ""}
    if request.method == "POST":
        try:
            if request.form.get("action") == "delete":
                code = room.code
                delete_room(room, actor=user)
                db.session.commit()
                flash(gettext("Room %(code)s deleted.", code=code), "success")
                return redirect(url_for("dashboard.it_rooms"))
            form = {key: (request.form.get(key) or "").strip() for key in form}
            rename_room(room, form["code"], form["name"], actor=user)
        except FieldError as err:
            db.session.rollback()
            errors[err.field] = err.translated()
        else:
            db.session.commit()
            flash(gettext("Room %(code)s saved.", code=room.code), "success")
            return redirect(url_for("dashboard.it_rooms"))
    return render_template("it/room.html", room=room, form=form, errors=errors,
                           uses=room_uses(room), limits=NAME_LIMITS), 400 if errors else 200


# --- segments --------------------------------------------------------------------------------

def _all_rooms(school_id: int) -> list[Room]:
    return list(db.session.scalars(select(Room).where(Room.school_id == school_id)
                                   .order_by(Room.code)))


@bp.route("/it/segmenten", methods=["GET", "POST"])
@login_required("it_admin")
def it_segments() -> Response | tuple[str, int]:
    """Segments per gateway (CIDRs, rooms); add one, with errors shown at the field. Rooms are
    chosen from the existing ones; new room codes go in their own field, so a typo in the
    choice cannot create a room."""
    from ..network import add_segment, check_segment_cidrs
    from ..rooms import existing_rooms
    user = current_user()
    gateways = _school_gateways(user.school_id)
    errors: dict[str, str] = {}
    form: dict[str, Any] = {"name": "", "gateway": "", "cidrs": "", "new_rooms": "", "rooms": []}
    if request.method == "POST":
        form = {key: (request.form.get(key) or "").strip()
                for key in ("name", "gateway", "cidrs", "new_rooms")}
        form["rooms"] = [code for code in request.form.getlist("rooms") if code.strip()]
        gateway = next((g for g in gateways if g.id == form["gateway"]), None)
        if gateway is None:
            errors["gateway"] = gettext("Choose a gateway.")
        if not form["name"]:
            errors["name"] = gettext("A segment needs a name.")
        elif len(form["name"]) > NAME_LIMITS["segment"]:
            errors["name"] = gettext("At most %(n)d characters.", n=NAME_LIMITS["segment"])
        elif gateway is not None and db.session.scalar(select(Segment).where(
                Segment.gateway_id == gateway.id, Segment.name == form["name"])) is not None:
            errors["name"] = gettext("This gateway has a segment with this name already.")
        cidrs = _split_list(form["cidrs"])
        if not cidrs:
            errors["cidrs"] = gettext("Give at least one network, such as 10.1.2.0/24.")
        elif gateway is not None:
            try:
                check_segment_cidrs(gateway.id, cidrs)
            except ValueError as err:
                errors["cidrs"] = error_text(err)
        new_codes = _split_list(form["new_rooms"])
        try:
            existing_rooms(user.school, form["rooms"])
        except FieldError as err:
            errors[err.field] = err.translated()
        if any(len(code) > NAME_LIMITS["room_code"] for code in new_codes):
            errors["new_rooms"] = gettext("At most %(n)d characters.", n=NAME_LIMITS["room_code"])
        if not form["rooms"] and not new_codes:
            errors["rooms"] = gettext("A segment serves at least one room.")
        if not errors:
            assert gateway is not None
            try:
                add_segment(user.school, gateway, form["name"], cidrs,
                            list(dict.fromkeys(form["rooms"] + new_codes)), actor=user)
            except FieldError as err:
                db.session.rollback()
                errors[err.field if err.field in form else "form"] = err.translated()
            else:
                db.session.commit()
                flash(gettext("Segment %(name)s added.", name=form["name"]), "success")
                return redirect(url_for("dashboard.it_segments"))
    segments = db.session.scalars(
        select(Segment).where(Segment.school_id == user.school_id)
        .options(selectinload(Segment.cidrs), selectinload(Segment.rooms))
        .order_by(Segment.gateway_id, Segment.name)).all()
    return render_template("it/segments.html", segments=segments, gateways=gateways, form=form,
                           errors=errors, all_rooms=_all_rooms(user.school_id),
                           limits=NAME_LIMITS), 400 if errors else 200


@bp.route("/it/segmenten/<int:segment_id>", methods=["GET", "POST"])
@login_required("it_admin")
def it_segment(segment_id: int) -> Response | tuple[str, int]:
    """Rename a segment and choose its rooms."""
    from ..rooms import update_segment
    user = current_user()
    segment = school_object_or_404(Segment, segment_id)
    errors: dict[str, str] = {}
    form: dict[str, Any] = {"name": segment.name, "rooms": [r.code for r in segment.rooms]}
    if request.method == "POST":
        form = {"name": (request.form.get("name") or "").strip(),
                "rooms": [code for code in request.form.getlist("rooms") if code.strip()]}
        try:
            update_segment(segment, form["name"], form["rooms"], actor=user)
        except FieldError as err:
            db.session.rollback()
            errors[err.field] = err.translated()
        else:
            db.session.commit()
            flash(gettext("Segment %(name)s saved.", name=segment.name), "success")
            return redirect(url_for("dashboard.it_segments"))
    return render_template("it/segment.html", segment=segment, form=form, errors=errors,
                           all_rooms=_all_rooms(user.school_id),
                           limits=NAME_LIMITS), 400 if errors else 200


@bp.post("/it/segmenten/<int:segment_id>/verwijderen")
@login_required("it_admin")
def it_segment_delete(segment_id: int) -> Response:
    """Remove a segment (its rooms stay)."""
    from ..rooms import delete_segment
    user = current_user()
    segment = school_object_or_404(Segment, segment_id)
    delete_segment(segment, actor=user)
    db.session.commit()
    flash(gettext("Segment removed."), "success")
    return redirect(url_for("dashboard.it_segments"))


# --- gateways --------------------------------------------------------------------------------

# Where docs/agent.md installs the agent, and the user it runs as.
AGENT_ENROL = "sudo -u lesfocus-agent /opt/lesfocus/.venv/bin/lesfocus-agent enroll"


def _enrol_command(token: str) -> str:
    """The command IT runs on the gateway: the agent as docs/agent.md installs it, enrolling at
    the server's public URL (LESFOCUS_PUBLIC_URL, the audience of agent tokens).

    Without LESFOCUS_PUBLIC_URL the URL this page came in on stands in (what the server then
    accepts as audience too); the page says so, since behind a proxy that is often not the
    address, or the scheme, the gateways use.
    """
    base = (current_app.config.get("LESFOCUS_PUBLIC_URL") or request.host_url).rstrip("/")
    return f"{AGENT_ENROL} --server {base} --token {token}"


@bp.route("/it/gateways", methods=["GET", "POST"])
@login_required("it_admin")
def it_gateways() -> tuple[str, int]:
    """Gateways with last contact and policy state; create one and show its enrolment command."""
    from ..gateways import create_gateway, issue_enrollment_token
    user = current_user()
    errors: dict[str, str] = {}
    name = ""
    created: tuple[Gateway, str] | None = None
    if request.method == "POST":
        name = (request.form.get("name") or "").strip()
        try:
            gateway = create_gateway(user.school, name, actor=user)
        except ValueError as err:
            db.session.rollback()
            errors["name"] = error_text(err)
        else:
            token = issue_enrollment_token(gateway, actor=user)
            db.session.commit()
            created = (gateway, _enrol_command(token))
            name = ""
    now = utcnow()
    cache: dict[str, Any] = {}
    health = [gateway_health(g, now, cache) for g in _school_gateways(user.school_id)]
    from ..alerts import open_incidents
    return render_template("it/gateways.html", health=health, errors=errors, name=name,
                           created=created, alerts=open_incidents(user.school_id)
                           ), 400 if errors else 200


@bp.get("/it/gateways/<gateway_id>")
@login_required("it_admin")
def it_gateway(gateway_id: str) -> str:
    """One gateway: contact, policy version, segments and counters per service."""
    gateway = school_object_or_404(Gateway, gateway_id)
    now = utcnow()
    since = now - timedelta(days=COUNTER_DAYS)
    counters = db.session.execute(
        select(GatewayCounter.service_id, func.sum(GatewayCounter.count))
        .where(GatewayCounter.gateway_id == gateway.id, GatewayCounter.hour >= since)
        .group_by(GatewayCounter.service_id)
        .order_by(func.sum(GatewayCounter.count).desc())).all()
    per_segment = db.session.execute(
        select(GatewayCounter.segment_id, func.sum(GatewayCounter.count))
        .where(GatewayCounter.gateway_id == gateway.id, GatewayCounter.hour >= since)
        .group_by(GatewayCounter.segment_id)).all()
    return render_template("it/gateway.html", health=gateway_health(gateway, now),
                           counters=counters, per_segment=dict(per_segment),
                           names=service_names(), days=COUNTER_DAYS, token_command=None)


def _gateway_page(gateway: Gateway, token_command: str | None = None,
                  status: int = 200) -> tuple[str, int]:
    return render_template("it/gateway.html", health=gateway_health(gateway, utcnow()),
                           counters=[], per_segment={}, names=service_names(),
                           days=COUNTER_DAYS, token_command=token_command), status


@bp.post("/it/gateways/<gateway_id>/token")
@login_required("it_admin")
def it_gateway_token(gateway_id: str) -> tuple[str, int] | Response:
    """Issue a new one-time enrolment token; for an enrolled gateway only as the explicit
    re-enrolment ("opnieuw koppelen", its box ticked): the token replaces its agent's key."""
    from ..gateways import GatewayError, issue_enrollment_token
    user = current_user()
    gateway = school_object_or_404(Gateway, gateway_id)
    reenrol = request.form.get("reenrol") == "yes"
    try:
        token = issue_enrollment_token(gateway, actor=user, reenrol=reenrol)
    except GatewayError:
        db.session.rollback()
        if gateway.disabled_at is not None:
            flash(gettext("The gateway is disabled: enable it before it can be enrolled."),
                  "error")
        else:
            flash(gettext("The gateway is enrolled already. To replace its agent's key, tick "
                          "the box and choose \u201cRe-enrol\u201d."), "error")
        return redirect(url_for("dashboard.it_gateway", gateway_id=gateway.id))
    db.session.commit()
    return _gateway_page(gateway, _enrol_command(token))


@bp.post("/it/gateways/<gateway_id>/uitschakelen")
@login_required("it_admin")
def it_gateway_disable(gateway_id: str) -> Response:
    """Disable a gateway: its agent gets no policy, its segments are unenforced."""
    from ..gateways import set_gateway_disabled
    gateway = school_object_or_404(Gateway, gateway_id)
    if set_gateway_disabled(gateway, True, actor=current_user()):
        db.session.commit()
    flash(gettext("Gateway %(name)s disabled: it blocks nothing until you enable it.",
                  name=gateway.name), "success")
    return redirect(url_for("dashboard.it_gateway", gateway_id=gateway.id))


@bp.post("/it/gateways/<gateway_id>/inschakelen")
@login_required("it_admin")
def it_gateway_enable(gateway_id: str) -> Response:
    """Put a disabled gateway back in service."""
    from ..gateways import set_gateway_disabled
    gateway = school_object_or_404(Gateway, gateway_id)
    if set_gateway_disabled(gateway, False, actor=current_user()):
        db.session.commit()
    flash(gettext("Gateway %(name)s enabled.", name=gateway.name), "success")
    return redirect(url_for("dashboard.it_gateway", gateway_id=gateway.id))


@bp.post("/it/gateways/<gateway_id>/verwijderen")
@login_required("it_admin")
def it_gateway_remove(gateway_id: str) -> Response:
    """Remove a gateway with its segments (the box must be ticked); its rooms stay."""
    from ..gateways import remove_gateway
    gateway = school_object_or_404(Gateway, gateway_id)
    if request.form.get("confirm") != "yes":
        flash(gettext("Tick the box to confirm that the gateway and its segments are removed."),
              "error")
        return redirect(url_for("dashboard.it_gateway", gateway_id=gateway.id))
    name = gateway.name
    remove_gateway(gateway, actor=current_user())
    db.session.commit()
    flash(gettext("Gateway %(name)s removed.", name=name), "success")
    return redirect(url_for("dashboard.it_gateways"))


# --- school settings ---------------------------------------------------------------------------

@bp.route("/it/school", methods=["GET", "POST"])
@login_required("it_admin")
def it_school() -> Response | tuple[str, int]:
    """The school's settings: how long an unused dashboard session lasts."""
    from ..school_settings import (IDLE_MINUTES_RANGE, SettingError, install_idle_minutes,
                                   parse_idle_minutes, set_idle_minutes)
    user = current_user()
    school = user.school
    errors: dict[str, str] = {}
    value = "" if school.idle_minutes is None else str(school.idle_minutes)
    if request.method == "POST":
        value = (request.form.get("idle_minutes") or "").strip()
        try:
            minutes = parse_idle_minutes(value)
        except SettingError:
            errors["idle_minutes"] = gettext("Give a whole number of minutes from %(low)d to "
                                             "%(high)d, or leave it empty for the default.",
                                             low=IDLE_MINUTES_RANGE[0], high=IDLE_MINUTES_RANGE[1])
        else:
            if set_idle_minutes(school, minutes, actor=user):
                db.session.commit()
            flash(gettext("Saved."), "success")
            return redirect(url_for("dashboard.it_school"))
    return render_template("it/school.html", value=value, errors=errors,
                           default=install_idle_minutes(), low=IDLE_MINUTES_RANGE[0],
                           high=IDLE_MINUTES_RANGE[1]), 400 if errors else 200


@bp.post("/it/gateways/<gateway_id>/naam")
@login_required("it_admin")
def it_gateway_rename(gateway_id: str) -> Response | tuple[str, int]:
    """Give a gateway a new name."""
    from ..gateways import rename_gateway
    user = current_user()
    gateway = school_object_or_404(Gateway, gateway_id)
    name = (request.form.get("name") or "").strip()
    try:
        rename_gateway(gateway, name, actor=user)
    except FieldError as err:
        db.session.rollback()
        return render_template("it/gateway.html", health=gateway_health(gateway, utcnow()),
                               counters=[], per_segment={}, names=service_names(),
                               days=COUNTER_DAYS, token_command=None,
                               rename_errors={err.field: err.translated()}, rename_value=name,
                               limits=NAME_LIMITS), 400
    db.session.commit()
    flash(gettext("Gateway %(name)s saved.", name=gateway.name), "success")
    return redirect(url_for("dashboard.it_gateway", gateway_id=gateway.id))


# --- timetable ---------------------------------------------------------------------------------

@bp.route("/it/rooster", methods=["GET", "POST"])
@login_required("it_admin")
def it_timetable() -> Response | tuple[str, int]:
    """Upload a timetable file: queue it for the worker and go to its page; list recent uploads."""
    from ..imports import queue_import
    from ..timetable import TimetableError
    user = current_user()
    error = None
    fmt = request.form.get("format") or ""
    if request.method == "POST":
        upload = request.files.get("file")
        if fmt and fmt not in TIMETABLE_FORMATS:
            error = gettext("Unknown format.")
        elif upload is None or not upload.filename:
            error = gettext("Choose a file to import.")
        else:
            try:
                job = queue_import(user.school, upload.read(), upload.filename, fmt or None,
                                   actor=user)
            except TimetableError as err:
                from ..timetable.messages import translate
                db.session.rollback()
                error = translate(str(err), gettext)
            else:
                db.session.commit()
                return redirect(url_for("dashboard.it_timetable_job", job_id=job.id), code=303)
    jobs = db.session.scalars(
        select(ImportJob).where(ImportJob.school_id == user.school_id)
        .order_by(ImportJob.created_at.desc(), ImportJob.id.desc()).limit(RECENT_IMPORTS)).all()
    return render_template("it/timetable.html", error=error, fmt=fmt, formats=TIMETABLE_FORMATS,
                           jobs=jobs, sources=source_rows(user.school_id, utcnow()),
                           stale_after=STALE_SOURCE_AFTER), 400 if error else 200


def source_rows(school_id: int, now: datetime) -> list[dict[str, Any]]:
    """The school's timetable sources as the IT page shows them: never their secrets."""
    from ..models import Lesson, TimetableSource
    from ..timetable.sources import failing_since, shown_address
    counts = dict(db.session.execute(
        select(Lesson.source, func.count()).where(Lesson.school_id == school_id)
        .group_by(Lesson.source)).all())
    rows = []
    for source in db.session.scalars(select(TimetableSource).where(
            TimetableSource.school_id == school_id).order_by(TimetableSource.name)):
        since = failing_since(source)
        report = source.last_report or {}
        rows.append({"id": source.id, "name": source.name, "kind": source.kind,
                     "address": shown_address(source), "every": source.every_minutes,
                     "user": (source.options or {}).get("user"),
                     "last_attempt": source.last_attempt_at,
                     "last_success": source.last_success_at, "error": source.last_error,
                     "counts": report.get("counts"), "window": report.get("window"),
                     "notes": report.get("notes") or [], "lessons": counts.get(source.name, 0),
                     "stale": since is not None and now - since > STALE_SOURCE_AFTER,
                     "synced": source.kind != "file"})
    return rows


def stale_sources(school_id: int, now: datetime) -> list[str]:
    """Names of the school's synced sources that have failed for more than an hour."""
    return [row["name"] for row in source_rows(school_id, now) if row["stale"]]


@bp.post("/it/rooster/bronnen/<int:source_id>/synchroniseren")
@login_required("it_admin")
def it_timetable_source_sync(source_id: int) -> Response:
    """Sync one source now (the request waits for it) and say what it changed or why not."""
    from ..models import TimetableSource
    from ..timetable.sync import sync_named
    source = school_object_or_404(TimetableSource, source_id)
    if source.kind == "file":
        abort(404)
    user = current_user()
    name, school = source.name, user.school
    report, error = sync_named(db.session, school, name, now=utcnow())
    if error is not None:
        flash(gettext("Synchronising %(name)s failed: %(error)s", name=name, error=error),
              "error")
    elif report is None:
        flash(gettext("%(name)s is unchanged since the last synchronisation.", name=name),
              "success")
    else:
        counts = report.counts()
        flash(gettext("%(name)s synchronised: %(created)d new, %(updated)d changed, "
                      "%(cancelled)d cancelled, %(removed)d removed.", name=name, **{
                          key: counts[key] for key in ("created", "updated", "cancelled",
                                                       "removed")}),
              "success")
    audit.record("timetable.source_sync", school_id=user.school_id, actor=user,
                 object_type="timetable_source", object_id=name, ok=error is None,
                 **(report.counts() if report else {}))
    db.session.commit()
    return redirect(url_for("dashboard.it_timetable", _anchor=f"bron-{name}"), code=303)


@bp.route("/it/rooster/bronnen/<int:source_id>/verwijderen", methods=["GET", "POST"])
@login_required("it_admin")
def it_timetable_source_delete(source_id: int) -> Response | str:
    """Ask, with the number of lessons that go, then delete a source and its lessons."""
    from .. import changes
    from ..models import Lesson, TimetableSource, lesson_rooms
    source = school_object_or_404(TimetableSource, source_id)
    user = current_user()
    lessons = db.session.scalar(select(func.count()).select_from(Lesson).where(
        Lesson.school_id == user.school_id, Lesson.source == source.name)) or 0
    if request.method == "GET" or request.form.get("confirm") != str(lessons):
        # The confirmation names the number it was shown: if a sync changed it meanwhile, ask
        # again with the new number.
        return render_template("it/timetable_source_delete.html", source=source,
                               lessons=lessons)
    name = source.name
    owned = select(Lesson.id).where(Lesson.school_id == user.school_id, Lesson.source == name)
    rooms = set(db.session.scalars(select(lesson_rooms.c.room_id).distinct()
                                   .where(lesson_rooms.c.lesson_id.in_(owned))))
    with changes.bulk_writes_for(db.session, user.school_id, lesson_rooms_declared=True):
        # lesson_rooms/groups/teachers and lesson-scoped exceptions go by ON DELETE CASCADE.
        db.session.execute(delete(Lesson).where(Lesson.school_id == user.school_id,
                                                Lesson.source == name))
        changes.declare_lesson_rooms(db.session, user.school_id, rooms)
    db.session.delete(source)
    audit.record("timetable.source_delete", school_id=user.school_id, actor=user,
                 object_type="timetable_source", object_id=name, lessons=lessons)
    db.session.commit()
    flash(gettext("Source %(name)s and its %(count)d lessons were deleted.", name=name,
                  count=lessons), "success")
    return redirect(url_for("dashboard.it_timetable"), code=303)


@bp.get("/it/rooster/<int:job_id>")
@login_required("it_admin")
def it_timetable_job(job_id: int) -> Response:
    """One upload: queued, running, or its report (counts, notes) or error; reloads until done."""
    from ..imports import FINISHED, stored_report
    job = school_object_or_404(ImportJob, job_id)
    now = utcnow()
    waiting = job.state not in FINISHED
    # A queued job that nobody takes for a minute means no `lesfocus worker` runs: say so.
    stalled = job.state == "queued" and now - job.created_at > timedelta(seconds=60)
    response = make_response(render_template(
        "it/timetable_job.html", job=job, report=stored_report(job), stalled=stalled,
        waiting=waiting))
    if waiting:
        response.headers["Refresh"] = str(JOB_PAGE_REFRESH_SECONDS)  # works without scripts
    return response


# --- services ----------------------------------------------------------------------------------

@bp.route("/it/diensten", methods=["GET", "POST"])
@login_required("it_admin")
def it_services() -> Response | str:
    """Choose which services are blocked during lessons."""
    user = current_user()
    school = user.school
    services = db.session.scalars(select(Service).order_by(Service.group, Service.name)).all()
    if request.method == "POST":
        chosen = set(request.form.getlist("services"))
        known = {s.id for s in services}
        unknown = chosen - known
        if unknown:
            abort(400, description=gettext("Unknown service: %(id)s", id=sorted(unknown)[0]))
        # Every service ticked is stored as None: services added to the catalog later are
        # blocked too.
        new_value = None if chosen == known else sorted(chosen)
        if new_value != school.blocked_services:
            audit.record("school.blocked_services", school_id=school.id, actor=user,
                         object_type="school", object_id=school.id,
                         services="all" if new_value is None else new_value)
            school.blocked_services = new_value
            db.session.commit()
        flash(gettext("Blocked services saved."), "success")
        return redirect(url_for("dashboard.it_services"))
    blocked = {s.id for s in services} if school.blocked_services is None \
        else set(school.blocked_services)
    return render_template("it/services.html", services=services, blocked=blocked)


# --- reminders ---------------------------------------------------------------------------------

def _article_order(reminder: Reminder) -> tuple[int, str, str]:
    index = ARTICLES.index(reminder.article) if reminder.article in ARTICLES else len(ARTICLES)
    return index, reminder.audience, reminder.trigger


@bp.get("/it/herinneringen")
@login_required("it_admin")
def it_reminders() -> str:
    """Every reminder text per article, audience and trigger, in both languages."""
    user = current_user()
    reminders = sorted(db.session.scalars(
        select(Reminder).where(Reminder.school_id == user.school_id)), key=_article_order)
    return render_template("it/reminders.html", reminders=reminders, languages=LANGUAGES)


REMINDER_MAX = 600
# The words around a reminder in the extension's dialog (extension/_locales/<lang>/messages.json,
# keys overlayTitle, editButton, postButton, articleLabel), so the preview looks like the real
# thing.
EXTENSION_DIALOG = {
    "nl": {"overlayTitle": "Even nadenken voor je plaatst", "editButton": "Aanpassen",
           "postButton": "Toch plaatsen", "articleLabel": "Artikel"},
    "en": {"overlayTitle": "A moment before you post", "editButton": "Edit",
           "postButton": "Post anyway", "articleLabel": "Article"},
}


@bp.route("/it/herinneringen/<int:reminder_id>", methods=["GET", "POST"])
@login_required("it_admin")
def it_reminder(reminder_id: int) -> Response | tuple[str, int]:
    """Edit one reminder's texts, with a preview as the extension shows it."""
    user = current_user()
    reminder = school_object_or_404(Reminder, reminder_id)
    texts = dict(reminder.texts or {})
    errors: dict[str, str] = {}
    enabled = reminder.enabled
    if request.method == "POST":
        texts = {lang: (request.form.get(f"text_{lang}") or "").strip() for lang in LANGUAGES}
        enabled = request.form.get("enabled") == "on"
        for lang in LANGUAGES:
            if not texts[lang]:
                errors[f"text_{lang}"] = gettext("Write the text in this language too.")
            elif len(texts[lang]) > REMINDER_MAX:
                errors[f"text_{lang}"] = gettext("At most %(n)d characters.", n=REMINDER_MAX)
        if not errors and request.form.get("action") != "preview":
            if texts != reminder.texts or enabled != reminder.enabled:
                audit.record("reminder.update", school_id=user.school_id, actor=user,
                             object_type="reminder", object_id=reminder.id,
                             article=reminder.article, enabled=enabled)
                reminder.texts = texts
                reminder.enabled = enabled
                db.session.commit()
            flash(gettext("Reminder saved."), "success")
            return redirect(url_for("dashboard.it_reminder", reminder_id=reminder.id))
    return render_template("it/reminder.html", reminder=reminder, texts=texts, enabled=enabled,
                           errors=errors, languages=LANGUAGES,
                           dialog=EXTENSION_DIALOG), 400 if errors else 200


# --- people ------------------------------------------------------------------------------------

def _person_form_errors(form: dict[str, Any], person: Person | None,
                        school_id: int) -> dict[str, str]:
    errors: dict[str, str] = {}
    username = form["username"]
    if username:
        if not valid_username(username):
            errors["username"] = gettext("Use 2 to 150 letters, digits or . _ @ -")
        elif username_taken(username, person):
            errors["username"] = gettext("This username is taken.")
    code = form["teacher_code"]
    if code:
        other = db.session.scalar(select(Person).where(Person.school_id == school_id,
                                                       Person.teacher_code == code))
        if other is not None and other is not person:
            errors["teacher_code"] = gettext("This teacher code belongs to someone else.")
    if form["email"]:
        email = normal_email(form["email"])
        other = db.session.scalar(select(Person).where(Person.email == email)) if email else None
        if email is None:
            errors["email"] = gettext("Enter an e-mail address such as j.jansen@school.nl.")
        elif other is not None and other is not person:
            errors["email"] = gettext("This e-mail address belongs to someone else.")
        form["email"] = email or form["email"]
    if any(role not in ROLES for role in form["roles"]):
        errors["roles"] = gettext("Unknown role.")
    if form["password"] and len(form["password"]) < MIN_LENGTH:
        errors["password"] = gettext("A password needs at least %(n)d characters.", n=MIN_LENGTH)
    # A login with an e-mail address may sign in with the school account alone.
    if person is None and username and not form["password"] and not form["email"]:
        errors["password"] = gettext("A new login needs a password.")
    return errors


def _read_person_form() -> dict[str, Any]:
    return {"username": (request.form.get("username") or "").strip(),
            "display_name": (request.form.get("display_name") or "").strip()[:200],
            "teacher_code": (request.form.get("teacher_code") or "").strip()[:32],
            "email": (request.form.get("email") or "").strip()[:254],
            "roles": sorted(set(request.form.getlist("roles"))),
            "password": request.form.get("password") or "",
            "active": request.form.get("active") == "on"}


@bp.route("/it/mensen", methods=["GET", "POST"])
@login_required("it_admin")
def it_people() -> Response | tuple[str, int]:
    """People and their roles; add a person (with a login when a username is given)."""
    user = current_user()
    form: dict[str, Any] = {"username": "", "display_name": "", "teacher_code": "", "email": "",
                            "roles": ["teacher"], "password": "", "active": True}
    errors: dict[str, str] = {}
    if request.method == "POST":
        form = _read_person_form()
        form["active"] = True
        errors = _person_form_errors(form, None, user.school_id)
        if not form["display_name"] and not form["username"] and not form["teacher_code"]:
            errors["display_name"] = gettext("Give at least a name, a username or a teacher code.")
        if not errors:
            person = Person(school_id=user.school_id, username=form["username"] or None,
                            display_name=form["display_name"] or form["username"],
                            teacher_code=form["teacher_code"] or None, roles=form["roles"],
                            email=form["email"] or None,
                            password_hash=hash_password(form["password"])
                            if form["password"] else None)
            db.session.add(person)
            db.session.flush()
            audit.record("person.create", school_id=user.school_id, actor=user,
                         object_type="person", object_id=person.id,
                         username=person.username, roles=person.roles)
            db.session.commit()
            flash(gettext("%(name)s added.", name=person.label), "success")
            return redirect(url_for("dashboard.it_people"))
    people = db.session.scalars(select(Person).where(Person.school_id == user.school_id)
                                .order_by(Person.display_name, Person.id)).all()
    return render_template("it/people.html", people=people, form=form, errors=errors,
                           roles=ROLES), 400 if errors else 200


@bp.route("/it/mensen/<int:person_id>", methods=["GET", "POST"])
@login_required("it_admin")
def it_person(person_id: int) -> Response | tuple[str, int]:
    """Edit a person's roles, login and status."""
    user = current_user()
    person = school_object_or_404(Person, person_id)
    errors: dict[str, str] = {}
    form: dict[str, Any] = {"username": person.username or "", "display_name": person.display_name,
                            "teacher_code": person.teacher_code or "",
                            "email": person.email or "",
                            "roles": list(person.roles or []), "password": "",
                            "active": person.active}
    if request.method == "POST":
        form = _read_person_form()
        errors = _person_form_errors(form, person, user.school_id)
        if person.id == user.id and ("it_admin" not in form["roles"] or not form["active"]):
            # Nobody may lock themselves out of IT; another IT admin can do it if needed.
            errors["roles"] = gettext("You cannot remove your own IT role or disable yourself.")
        if (form["username"] and not person.password_hash and not form["password"]
                and not form["email"]):
            errors["password"] = gettext("A new login needs a password.")
        if not errors:
            changes = {key: form[key] for key in ("username", "display_name", "teacher_code",
                                                    "email", "roles", "active")}
            person.username = form["username"] or None
            person.display_name = form["display_name"] or person.display_name
            person.teacher_code = form["teacher_code"] or None
            person.email = form["email"] or None
            person.roles = form["roles"]
            person.active = form["active"]
            if form["password"]:
                person.password_hash = hash_password(form["password"])
            audit.record("person.update", school_id=user.school_id, actor=user,
                         object_type="person", object_id=person.id,
                         password_changed=bool(form["password"]), **changes)
            db.session.commit()
            flash(gettext("%(name)s saved.", name=person.label), "success")
            return redirect(url_for("dashboard.it_people"))
    return render_template("it/person.html", person=person, form=form, errors=errors,
                           roles=ROLES), 400 if errors else 200


@bp.post("/it/mensen/<int:person_id>/verwijderen")
@login_required("it_admin")
def it_person_delete(person_id: int) -> Response | tuple[str, int]:
    """Delete a person and their personal data (server/people.py, delete_person)."""
    from ..people import delete_person
    user = current_user()
    person = school_object_or_404(Person, person_id)
    label = person.label
    try:
        delete_person(person, actor=user)
    except FieldError as err:
        db.session.rollback()
        flash(err.translated(), "error")
        return redirect(url_for("dashboard.it_person", person_id=person_id))
    db.session.commit()
    flash(gettext("%(name)s deleted, with their personal data.", name=label), "success")
    return redirect(url_for("dashboard.it_people"))
