"""IT pages: rooms, segments, gateways, timetable import, blocked services, reminders, people."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from flask import (abort, current_app, flash, make_response, redirect, render_template,
                   request, url_for)
from flask_babel import gettext
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload
from werkzeug.wrappers import Response

from .. import audit
from ..extensions import db
from ..models import (ARTICLES, LANGUAGES, ROLES, Gateway, GatewayCounter, ImportJob, Person,
                      Reminder, Room, Segment, Service, utcnow)
from ..passwords import MIN_LENGTH, hash_password
from ..people import username_taken, valid_username
from . import bp
from .common import current_user, login_required, school_object_or_404, service_names
from .state import gateway_health, room_states

TIMETABLE_FORMATS = ("ical", "zermelo", "untis", "csv")
COUNTER_DAYS = 7
RECENT_IMPORTS = 10
JOB_PAGE_REFRESH_SECONDS = 2


def _school_gateways(school_id: int) -> list[Gateway]:
    return list(db.session.scalars(
        select(Gateway).where(Gateway.school_id == school_id).order_by(Gateway.name)))


def _split_list(text: str) -> list[str]:
    """Values separated by commas, spaces or new lines."""
    return [part for part in re.split(r"[\s,;]+", text or "") if part]


# --- rooms -----------------------------------------------------------------------------------

@bp.route("/it/lokalen", methods=["GET", "POST"])
@login_required("it_admin")
def it_rooms() -> Response | tuple[str, int]:
    """Every room with its segments and what is blocked there now; add a room."""
    user = current_user()
    errors: dict[str, str] = {}
    form = {"code": "", "name": ""}
    if request.method == "POST":
        form = {key: (request.form.get(key) or "").strip() for key in form}
        if not form["code"]:
            errors["code"] = gettext("A room needs a code, such as 2.14.")
        elif len(form["code"]) > 64:
            errors["code"] = gettext("At most 64 characters.")
        elif db.session.scalar(select(Room).where(Room.school_id == user.school_id,
                                                  Room.code == form["code"])) is not None:
            errors["code"] = gettext("This school has a room with this code already.")
        if not errors:
            room = Room(school_id=user.school_id, code=form["code"], name=form["name"] or None)
            db.session.add(room)
            db.session.flush()
            audit.record("room.create", school_id=user.school_id, actor=user, object_type="room",
                         object_id=room.id, code=room.code)
            db.session.commit()
            flash(gettext("Room %(code)s added.", code=room.code), "success")
            return redirect(url_for("dashboard.it_rooms"))
    rooms = db.session.scalars(
        select(Room).where(Room.school_id == user.school_id).order_by(Room.code)
        .options(selectinload(Room.segments))).all()
    states = room_states(list(rooms), utcnow())
    return render_template("it/rooms.html", states=states, form=form, errors=errors,
                           names=service_names()), 400 if errors else 200


# --- segments --------------------------------------------------------------------------------

@bp.route("/it/segmenten", methods=["GET", "POST"])
@login_required("it_admin")
def it_segments() -> Response | tuple[str, int]:
    """Segments per gateway (CIDRs, rooms); add one, with errors shown at the field."""
    from ..network import add_segment, check_segment_cidrs
    user = current_user()
    gateways = _school_gateways(user.school_id)
    errors: dict[str, str] = {}
    form = {"name": "", "gateway": "", "cidrs": "", "rooms": ""}
    if request.method == "POST":
        form = {key: (request.form.get(key) or "").strip() for key in form}
        gateway = next((g for g in gateways if g.id == form["gateway"]), None)
        if gateway is None:
            errors["gateway"] = gettext("Choose a gateway.")
        if not form["name"]:
            errors["name"] = gettext("A segment needs a name.")
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
                errors["cidrs"] = str(err)
        room_codes = _split_list(form["rooms"])
        if not room_codes:
            errors["rooms"] = gettext("A segment serves at least one room.")
        if not errors:
            assert gateway is not None
            try:
                add_segment(user.school, gateway, form["name"], cidrs, room_codes, actor=user)
            except ValueError as err:
                db.session.rollback()
                errors["form"] = str(err)
            else:
                db.session.commit()
                flash(gettext("Segment %(name)s added.", name=form["name"]), "success")
                return redirect(url_for("dashboard.it_segments"))
    segments = db.session.scalars(
        select(Segment).where(Segment.school_id == user.school_id)
        .options(selectinload(Segment.cidrs), selectinload(Segment.rooms))
        .order_by(Segment.gateway_id, Segment.name)).all()
    return render_template("it/segments.html", segments=segments, gateways=gateways, form=form,
                           errors=errors), 400 if errors else 200


@bp.post("/it/segmenten/<int:segment_id>/verwijderen")
@login_required("it_admin")
def it_segment_delete(segment_id: int) -> Response:
    """Remove a segment (its rooms stay)."""
    user = current_user()
    segment = school_object_or_404(Segment, segment_id)
    audit.record("segment.delete", school_id=user.school_id, actor=user, object_type="segment",
                 object_id=segment.id, name=segment.name, cidrs=segment.cidr_strings)
    db.session.delete(segment)
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
            errors["name"] = str(err)
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


@bp.post("/it/gateways/<gateway_id>/token")
@login_required("it_admin")
def it_gateway_token(gateway_id: str) -> str:
    """Issue a new one-time enrolment token (e.g. to re-install the gateway)."""
    from ..gateways import issue_enrollment_token
    user = current_user()
    gateway = school_object_or_404(Gateway, gateway_id)
    token = issue_enrollment_token(gateway, actor=user)
    db.session.commit()
    return render_template("it/gateway.html", health=gateway_health(gateway, utcnow()),
                           counters=[], per_segment={}, names=service_names(),
                           days=COUNTER_DAYS, token_command=_enrol_command(token))


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
                db.session.rollback()
                error = str(err)
            else:
                db.session.commit()
                return redirect(url_for("dashboard.it_timetable_job", job_id=job.id), code=303)
    jobs = db.session.scalars(
        select(ImportJob).where(ImportJob.school_id == user.school_id)
        .order_by(ImportJob.created_at.desc(), ImportJob.id.desc()).limit(RECENT_IMPORTS)).all()
    return render_template("it/timetable.html", error=error, fmt=fmt, formats=TIMETABLE_FORMATS,
                           jobs=jobs), 400 if error else 200


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
    if any(role not in ROLES for role in form["roles"]):
        errors["roles"] = gettext("Unknown role.")
    if form["password"] and len(form["password"]) < MIN_LENGTH:
        errors["password"] = gettext("A password needs at least %(n)d characters.", n=MIN_LENGTH)
    if person is None and username and not form["password"]:
        errors["password"] = gettext("A new login needs a password.")
    return errors


def _read_person_form() -> dict[str, Any]:
    return {"username": (request.form.get("username") or "").strip(),
            "display_name": (request.form.get("display_name") or "").strip()[:200],
            "teacher_code": (request.form.get("teacher_code") or "").strip()[:32],
            "roles": sorted(set(request.form.getlist("roles"))),
            "password": request.form.get("password") or "",
            "active": request.form.get("active") == "on"}


@bp.route("/it/mensen", methods=["GET", "POST"])
@login_required("it_admin")
def it_people() -> Response | tuple[str, int]:
    """People and their roles; add a person (with a login when a username is given)."""
    user = current_user()
    form: dict[str, Any] = {"username": "", "display_name": "", "teacher_code": "",
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
                            "roles": list(person.roles or []), "password": "",
                            "active": person.active}
    if request.method == "POST":
        form = _read_person_form()
        errors = _person_form_errors(form, person, user.school_id)
        if person.id == user.id and ("it_admin" not in form["roles"] or not form["active"]):
            # Nobody may lock themselves out of IT; another IT admin can do it if needed.
            errors["roles"] = gettext("You cannot remove your own IT role or disable yourself.")
        if form["username"] and not person.password_hash and not form["password"]:
            errors["password"] = gettext("A new login needs a password.")
        if not errors:
            changes = {key: form[key] for key in ("username", "display_name", "teacher_code",
                                                    "roles", "active")}
            person.username = form["username"] or None
            person.display_name = form["display_name"] or person.display_name
            person.teacher_code = form["teacher_code"] or None
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
