"""The teacher's pages: "Nu" (the running and next lesson, one-tap grants) and the week view."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext
from sqlalchemy import select
from sqlalchemy.orm import selectinload
from werkzeug.wrappers import Response

from ..bounds import parse_id
from ..extensions import db
from ..models import ExceptionGrant, Lesson, Person, lesson_teachers, utcnow
from . import bp
from .common import (_hm, _short_dt, current_user, login_required, safe_next,
                     school_object_or_404, school_services, school_zone, service_names)
from .state import exceptions_covering, room_states, state_text

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
        "minutes": gettext("This exception lasts until the end of the lesson already."),
    }
    from .grant_texts import grant_refusal
    return texts.get(getattr(err, "field", ""), grant_refusal(err))


def _change_error_text(err: Exception, exception: ExceptionGrant, now: datetime) -> str:
    # A stale page asks to change an exception that was stopped or ran out meanwhile.
    if getattr(err, "field", "") == "exception":
        if exception.revoked_at is not None:
            return gettext("This exception was stopped already.")
        return gettext("This exception is over already.")
    return grant_error_text(err)


def _parse_duration(value: str | None) -> tuple[bool, int | None]:
    """(valid, minutes) for the form's duration: "rest" is the rest of the lesson (None)."""
    value = value or ""
    if value == "rest":
        return True, None
    if value.isascii() and value.isdigit() and int(value) in DURATIONS:
        return True, int(value)
    return False, None


def _scope_words(exception: ExceptionGrant) -> str:
    if exception.scope == "school":
        return gettext("whole school")
    if exception.scope == "room":
        return gettext("room %(code)s", code=exception.room.code if exception.room else "?")
    if exception.scope == "group":
        return gettext("group %(name)s", name=exception.group.name if exception.group else "?")
    return gettext("lesson")


def state_message(action: str, lesson: Lesson | None, at: datetime, now: datetime,
                  ended: ExceptionGrant | None = None, day_named: bool = False) -> str:
    """`action` followed by what holds in the lesson's rooms at `at` after it, per service.

    Read from the policy the gateway gets (after the commit), so "stopped" never claims a block
    that another exception keeps open; `ended`: the exception just stopped, so that the other
    exceptions still in force are named; `day_named`: `action` names the day already.
    """
    from ..policy import policy_window
    _, window_end = policy_window(now, int(current_app.config["LESFOCUS_POLICY_HORIZON_DAYS"]))
    if lesson is None or at >= window_end:
        return action  # beyond the policy's horizon the gateway knows nothing yet to read back
    text = state_text(room_states(list(lesson.rooms), at), service_names())
    if not text:
        return action
    if at > now:
        zone = school_zone(lesson.school)
        same_day = at.astimezone(zone).date() == now.astimezone(zone).date()
        when = _hm(at) if same_day or day_named else _short_dt(at)
        message = gettext("%(action)s From %(time)s: %(state)s", action=action, time=when,
                          state=text)
    else:
        message = gettext("%(action)s Now: %(state)s", action=action, state=text)
    if ended is not None and at <= now:
        others = [e for e in exceptions_covering(lesson, now) if e.id != ended.id]
        if others:
            message += " " + gettext("Still in force: the exception for %(scopes)s.",
                                     scopes=", ".join(_scope_words(e) for e in others))
    return message


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
    valid, minutes = _parse_duration(request.form.get("duration", "rest"))
    if not valid:
        return _render_now(gettext("Choose the rest of the lesson, 10, 15 or 30 minutes."), 400)
    services = request.form.getlist("services") or None
    reason = (request.form.get("reason") or "").strip()
    at = utcnow()
    try:
        grant_exception(user, scope="lesson", lesson=lesson, services=services, minutes=minutes,
                        reason=reason, now=at)
    except GrantForbidden as err:
        db.session.rollback()
        return _render_now(grant_error_text(err), 403)
    except GrantError as err:
        db.session.rollback()
        return _render_now(grant_error_text(err), 400)
    db.session.commit()
    flash(state_message(gettext("Exception granted."), lesson, at, at), "success")
    return redirect(safe_next(request.form.get("next"), url_for("dashboard.now")))


def _lesson_of(exception: ExceptionGrant, user: Person, now: datetime) -> Lesson | None:
    # Whose rooms the message speaks of: the exception's lesson, else the user's running one.
    if exception.scope == "lesson":
        return exception.lesson
    if user.has_role("teacher"):
        running, _following = current_and_next(user, now)
        return running
    return None


@bp.post("/exceptions/<int:exception_id>/revoke")
@login_required("teacher", "leader")
def revoke(exception_id: int) -> Response | tuple[str, int]:
    """End an exception: stop a running one, cancel a planned one (a teacher their own lesson's,
    a leader any)."""
    from ..grants import GrantError, GrantForbidden, exception_started, revoke_exception
    user = current_user()
    exception = school_object_or_404(ExceptionGrant, exception_id, gettext("No such exception."))
    at = utcnow()
    started = exception_started(exception, at)
    starts_at = exception.start
    try:
        revoke_exception(user, exception, reason=(request.form.get("reason") or "").strip(),
                         now=at)
    except GrantForbidden:
        db.session.rollback()
        abort(403, description=gettext("You may not revoke this exception."))
    except GrantError as err:
        db.session.rollback()
        flash(_change_error_text(err, exception, at), "error")
    else:
        db.session.commit()
        lesson = _lesson_of(exception, user, at)
        if started:
            message = state_message(gettext("Exception stopped."), lesson, at, at, exception)
        else:
            message = state_message(gettext("Planned exception cancelled."), lesson, starts_at,
                                    at)
        flash(message, "success")
    return redirect(safe_next(request.form.get("next"), url_for("dashboard.index")))


@bp.post("/exceptions/<int:exception_id>/extend")
@login_required("teacher", "leader")
def extend(exception_id: int) -> Response:
    """"+5 min": a running exception ends later, a lesson's at the latest with the lesson."""
    from ..grants import GrantError, GrantForbidden, extend_exception
    user = current_user()
    exception = school_object_or_404(ExceptionGrant, exception_id, gettext("No such exception."))
    at = utcnow()
    try:
        extend_exception(user, exception, now=at)
    except GrantForbidden:
        db.session.rollback()
        abort(403, description=gettext("You may not change this exception."))
    except GrantError as err:
        db.session.rollback()
        flash(_change_error_text(err, exception, at), "error")
    else:
        db.session.commit()
        lesson = _lesson_of(exception, user, at)
        if lesson is not None and exception.end == lesson.end:
            action = gettext("Exception extended to %(time)s, the end of the lesson.",
                             time=_hm(exception.end))
        else:
            action = gettext("Exception extended to %(time)s.", time=_hm(exception.end))
        flash(state_message(action, lesson, at, at), "success")
    return redirect(safe_next(request.form.get("next"), url_for("dashboard.index")))


def _week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _render_week(chosen: date, error: str | None = None,
                 status: int = 200) -> tuple[str, int]:
    from ..grants import week_bounds
    user = current_user()
    zone = school_zone(user.school)
    now = utcnow()
    today = now.astimezone(zone).date()
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
    # Later lessons of this week can get an exception planned (the same rule as plan_exception).
    _, week_end = week_bounds(now, zone)
    plannable = {lesson.id for lesson in lessons
                 if not lesson.cancelled and now < lesson.start < week_end}
    planned: dict[int, list[ExceptionGrant]] = {}
    if lessons:
        for exception in db.session.scalars(
                select(ExceptionGrant).where(
                    ExceptionGrant.lesson_id.in_([lesson.id for lesson in lessons]),
                    ExceptionGrant.revoked_at.is_(None), ExceptionGrant.end > now)
                .order_by(ExceptionGrant.start, ExceptionGrant.id)):
            planned.setdefault(exception.lesson_id, []).append(exception)
    return render_template(
        "teacher/week.html", days=days, monday=monday, today=today,
        previous=monday - timedelta(days=7), following=monday + timedelta(days=7), now=now,
        plannable=plannable, planned=planned, services=school_services(user.school),
        names=service_names(), durations=DURATIONS, error=error), status


def _chosen_day(value: str | None) -> date:
    if not value:
        return utcnow().astimezone(school_zone(current_user().school)).date()
    try:
        return date.fromisoformat(value)
    except ValueError:
        abort(400, description=gettext("The date must look like 2026-11-23."))


@bp.get("/week")
@login_required("teacher")
def week() -> tuple[str, int]:
    """The teacher's own lessons of one week (Monday to Sunday), day by day."""
    return _render_week(_chosen_day(request.args.get("date")))


@bp.post("/week/plan")
@login_required("teacher")
def plan() -> Response | tuple[str, int]:
    """Plan an exception for a later lesson of this week, from its start (at most to its end)."""
    from ..grants import GrantError, GrantForbidden, plan_exception
    user = current_user()
    lesson = school_object_or_404(Lesson, parse_id(request.form.get("lesson_id")) or 0,
                                  gettext("No such lesson."))
    chosen = lesson.start.astimezone(school_zone(user.school)).date()
    valid, minutes = _parse_duration(request.form.get("duration"))
    if not valid:
        return _render_week(chosen, gettext("Choose the rest of the lesson, 10, 15 or 30 "
                                            "minutes."), 400)
    at = utcnow()
    try:
        grant = plan_exception(user, lesson, zone=school_zone(user.school),
                               services=request.form.getlist("services") or None,
                               minutes=minutes, reason=(request.form.get("reason") or "").strip(),
                               now=at)
    except GrantForbidden as err:
        db.session.rollback()
        return _render_week(chosen, grant_error_text(err), 403)
    except GrantError as err:
        db.session.rollback()
        text = (gettext("Only later lessons of this week can get a planned exception.")
                if err.field == "lesson_id" and not lesson.cancelled and lesson.end > at
                else grant_error_text(err))
        return _render_week(chosen, text, 400)
    db.session.commit()
    action = gettext("Exception planned for %(subject)s, %(time)s.",
                     subject=lesson.subject or gettext("lesson"),
                     time=f"{_short_dt(lesson.start)}–{_hm(lesson.end)}")
    flash(state_message(action, lesson, grant.start, at, day_named=True), "success")
    return redirect(url_for("dashboard.week", date=chosen.isoformat()))
