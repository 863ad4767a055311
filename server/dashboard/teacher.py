"""The teacher's pages: "Nu" (the running and next lesson, one-tap grants) and the week view."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext
from sqlalchemy import select
from sqlalchemy.orm import selectinload
from werkzeug.wrappers import Response

from ..bounds import parse_id
from ..extensions import db
from ..models import ExceptionGrant, Lesson, Person, lesson_teachers, utcnow
from . import bp
from .common import (current_user, login_required, safe_next, school_object_or_404,
                     school_services, school_zone, service_names)
from .state import exceptions_covering, room_states

# The choices of the "Nu" page: None is "rest of the lesson" (the default, listed first).
DURATIONS: tuple[int | None, ...] = (None, 10, 15, 30)


def _lessons_of(person: Person) -> Any:
    return (select(Lesson)
            .join(lesson_teachers, lesson_teachers.c.lesson_id == Lesson.id)
            .where(lesson_teachers.c.person_id == person.id, Lesson.school_id == person.school_id)
            .options(selectinload(Lesson.rooms), selectinload(Lesson.groups),
                     selectinload(Lesson.teachers)))


def current_and_next(person: Person, now: datetime) -> tuple[Lesson | None, Lesson | None]:
    """The person's lesson running at `now` (if any) and the next one to start."""
    upcoming = db.session.scalars(
        _lessons_of(person).where(Lesson.end > now, Lesson.cancelled.is_(False))
        .order_by(Lesson.start, Lesson.id).limit(4)).all()
    running = next((lesson for lesson in upcoming if lesson.start <= now), None)
    following = next((lesson for lesson in upcoming if lesson.start > now), None)
    return running, following


def grant_error_text(err: Exception) -> str:
    """The grant module's refusal in the reader's language (its own text as the fallback)."""
    if isinstance(err, PermissionError):
        return gettext("You may grant exceptions only for lessons you teach yourself.")
    texts = {
        "services": gettext("Choose services that the school blocks."),
        "reason": gettext("The reason is too long (at most 200 characters)."),
        "lesson_id": gettext("This lesson is over or cancelled."),
    }
    return texts.get(getattr(err, "field", ""), str(err))


def _render_now(error: str | None = None, status: int = 200) -> tuple[str, int]:
    user = current_user()
    now = utcnow()
    running, following = current_and_next(user, now)
    states = room_states(running.rooms, now) if running else []
    covering = exceptions_covering(running, now) if running else []
    return render_template(
        "teacher/now.html", lesson=running, next_lesson=following, states=states,
        exceptions=covering, services=school_services(user.school), names=service_names(),
        durations=DURATIONS, error=error, now=now), status


@bp.get("/nu")
@login_required("teacher")
def now() -> tuple[str, int]:
    """The lesson running now, its room's state, and one-tap grants."""
    return _render_now()


@bp.post("/nu/grant")
@login_required("teacher", "leader")
def grant() -> Response | tuple[str, int]:
    """Allow social media (all services or some) for the rest of a lesson or for N minutes."""
    from ..grants import GrantError, GrantForbidden, grant_exception
    user = current_user()
    lesson = school_object_or_404(Lesson, parse_id(request.form.get("lesson_id")) or 0,
                                  gettext("No such lesson."))
    duration = request.form.get("duration", "rest")
    if duration == "rest":
        minutes = None
    elif duration.isascii() and duration.isdigit() and int(duration) in DURATIONS:
        minutes = int(duration)
    else:
        return _render_now(gettext("Choose the rest of the lesson, 10, 15 or 30 minutes."), 400)
    services = request.form.getlist("services") or None
    reason = (request.form.get("reason") or "").strip()
    try:
        grant_exception(user, scope="lesson", lesson=lesson, services=services, minutes=minutes,
                        reason=reason, now=utcnow())
    except GrantForbidden as err:
        db.session.rollback()
        return _render_now(grant_error_text(err), 403)
    except GrantError as err:
        db.session.rollback()
        return _render_now(grant_error_text(err), 400)
    db.session.commit()
    flash(gettext("Social media allowed."), "success")
    return redirect(safe_next(request.form.get("next"), url_for("dashboard.now")))


@bp.post("/exceptions/<int:exception_id>/revoke")
@login_required("teacher", "leader")
def revoke(exception_id: int) -> Response | tuple[str, int]:
    """End an exception now (a teacher their own lesson's, a leader any)."""
    from ..grants import GrantError, GrantForbidden, revoke_exception
    user = current_user()
    exception = school_object_or_404(ExceptionGrant, exception_id, gettext("No such exception."))
    try:
        revoke_exception(user, exception, reason=(request.form.get("reason") or "").strip(),
                         now=utcnow())
    except GrantForbidden:
        db.session.rollback()
        abort(403, description=gettext("You may not revoke this exception."))
    except GrantError as err:
        db.session.rollback()
        flash(str(err), "error")
    else:
        db.session.commit()
        flash(gettext("Exception ended: social media is blocked again."), "success")
    return redirect(safe_next(request.form.get("next"), url_for("dashboard.index")))


def _week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


@bp.get("/week")
@login_required("teacher")
def week() -> str:
    """The teacher's own lessons of one week (Monday to Sunday), day by day."""
    user = current_user()
    zone = school_zone(user.school)
    today = utcnow().astimezone(zone).date()
    try:
        chosen = date.fromisoformat(request.args["date"]) if request.args.get("date") else today
    except ValueError:
        abort(400, description=gettext("The date must look like 2026-11-23."))
    monday = _week_start(chosen)
    start = datetime.combine(monday, time.min, zone)
    end = datetime.combine(monday + timedelta(days=7), time.min, zone)
    lessons = db.session.scalars(
        _lessons_of(user).where(Lesson.start < end, Lesson.end > start)
        .order_by(Lesson.start, Lesson.id)).all()
    days: list[tuple[date, list[Lesson]]] = []
    for offset in range(7):
        day = monday + timedelta(days=offset)
        todays = [lesson for lesson in lessons if lesson.start.astimezone(zone).date() == day]
        if offset < 5 or todays:  # weekends only when something is planned
            days.append((day, todays))
    return render_template("teacher/week.html", days=days, monday=monday, today=today,
                           previous=monday - timedelta(days=7),
                           following=monday + timedelta(days=7), now=utcnow())
