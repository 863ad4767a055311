"""Exceptions to article A4 (SPEC §3): who may grant or revoke what, for how long; all audited.

The functions add rows and audit events to the caller's session and flush; the caller commits, and
the change feed (`server/changes.py`) tells waiting agents after that commit.

Lesson-scope exceptions end at the latest when their lesson ends: a length in `minutes` is capped
to the lesson's end, while an explicit `end` after the lesson's end is refused (the person asked for
something the rule does not allow, so they should hear it rather than get less silently).
"""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select, update

from . import audit, changes
from .extensions import db
from .models import (EXCEPTION_SCOPES, ExceptionGrant, Group, Lesson, Person, Room, School,
                     Service)

REASON_MAX = 200
# What "+5 min" adds to a running exception.
EXTEND_MINUTES = 5


class GrantError(ValueError):
    """A grant or revocation the rules refuse; `field` names the request field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class GrantForbidden(PermissionError):
    """The actor's role or relation to the lesson does not allow this grant or revocation."""


def _now(now: datetime | None) -> datetime:
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now


def _whole_seconds(value: datetime) -> datetime:
    # The policy works in whole seconds; storing the same keeps audit, API and policy in step.
    return value.astimezone(timezone.utc).replace(microsecond=0)


def cap_exception_to_lesson(start: datetime, end: datetime, lesson: Lesson) -> datetime:
    """The end of an exception for `lesson` from `start`: `end`, but never past the lesson."""
    return min(end, lesson.end)


def _school_services(school: School) -> list[str]:
    catalog = set(db.session.scalars(select(Service.id)))
    if school.blocked_services is None:
        return sorted(catalog)
    return sorted(s for s in school.blocked_services if s in catalog)


def _check_services(school: School, services: list[str] | None) -> list[str] | None:
    if services is None:
        return None
    if isinstance(services, str) or not isinstance(services, (list, tuple)):
        raise GrantError("services", "services must be a list of service ids (or left out for all)")
    if not services:
        raise GrantError("services", "give at least one service, or leave services out for all")
    known = set(_school_services(school))
    for service_id in services:
        if not isinstance(service_id, str) or service_id not in known:
            raise GrantError("services", f"{service_id!r} is not a service this school blocks "
                                         f"(known: {', '.join(sorted(known))})")
    return sorted(set(services))


def _check_reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if len(reason) > REASON_MAX:
        raise GrantError("reason", f"the reason is {len(reason)} characters long; "
                                   f"at most {REASON_MAX} are allowed")
    return reason


def _is_teacher_of(person: Person, lesson: Lesson) -> bool:
    return any(t.id == person.id for t in lesson.teachers)


def grant_exception(actor: Person, *, scope: str, lesson: Lesson | None = None,
                    room: Room | None = None, group: Group | None = None,
                    services: list[str] | None = None, start: datetime | None = None,
                    end: datetime | None = None, minutes: int | None = None, reason: str = "",
                    now: datetime | None = None) -> ExceptionGrant:
    """Grant an exception as `actor` under the rules of SPEC §3; audited, flushed, not committed.

    GrantForbidden when the actor's role or lessons do not allow it; GrantError (with the field)
    when the request itself is wrong. Nothing is written in either case.
    """
    now = _now(now)
    if not actor.active:
        raise GrantForbidden("this account is disabled")
    is_leader = actor.has_role("leader")
    if not is_leader and not actor.has_role("teacher"):
        raise GrantForbidden("only teachers and school leaders may grant exceptions")
    if scope not in EXCEPTION_SCOPES:
        raise GrantError("scope", f"scope must be one of {', '.join(EXCEPTION_SCOPES)}, "
                                  f"not {scope!r}")
    if not is_leader and scope != "lesson":
        raise GrantForbidden("a teacher may grant exceptions only for a lesson they teach; "
                             f"scope {scope!r} needs a school leader")
    target = {"lesson": lesson, "room": room, "group": group, "school": None}[scope]
    target_field = {"lesson": "lesson_id", "room": "room_id", "group": "group_id"}.get(scope)
    if target_field is not None and target is None:
        raise GrantError(target_field, f"scope {scope!r} needs {target_field}")
    if target is not None and target.school_id != actor.school_id:
        raise GrantForbidden(f"that {scope} belongs to another school")
    school = db.session.get(School, actor.school_id)
    assert school is not None  # people always belong to a school (foreign key)

    if scope == "lesson":
        assert lesson is not None
        if not is_leader and not _is_teacher_of(actor, lesson):
            raise GrantForbidden("a teacher may grant exceptions only for lessons they teach")
        if lesson.cancelled:
            raise GrantError("lesson_id", "the lesson is cancelled; it blocks nothing")
        if lesson.end <= now:
            raise GrantError("lesson_id", "the lesson is over")

    checked_services = _check_services(school, services)
    reason = _check_reason(reason)
    if minutes is not None:
        if end is not None:
            raise GrantError("minutes", "give either end or minutes, not both")
        if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes <= 0:
            raise GrantError("minutes", "minutes must be a whole number above 0")
        if minutes > 366 * 24 * 60:
            raise GrantError("minutes", "minutes may be at most one year")
    start = _whole_seconds(start or now)

    if scope == "lesson":
        assert lesson is not None
        if start >= lesson.end:
            raise GrantError("start", "the exception would start after the lesson has ended")
        if minutes is not None:
            # Count the minutes from when the exception first matters: not before the lesson.
            end = cap_exception_to_lesson(start, max(start, lesson.start)
                                          + timedelta(minutes=minutes), lesson)
        elif end is None:
            end = lesson.end
        elif end > lesson.end:
            raise GrantError("end", "an exception for a lesson ends at the latest when the "
                                    f"lesson ends ({lesson.end.isoformat()})")
    elif minutes is not None:
        end = start + timedelta(minutes=minutes)
    elif end is None:
        raise GrantError("end", f"an exception with scope {scope!r} needs an end (or minutes)")
    end = _whole_seconds(end)
    if end <= start:
        raise GrantError("end", "the exception must end after it starts")
    if end <= now:
        raise GrantError("end", "the exception would already be over")

    grant = ExceptionGrant(
        school_id=school.id, scope=scope,
        lesson_id=lesson.id if scope == "lesson" and lesson else None,
        room_id=room.id if scope == "room" and room else None,
        group_id=group.id if scope == "group" and group else None,
        services=checked_services, start=start, end=end, reason=reason, granted_by_id=actor.id,
        granted_at=now)
    db.session.add(grant)
    db.session.flush()
    event = audit.record("exception.grant", school_id=school.id, actor=actor,
                         object_type="exception", object_id=grant.id, scope=scope,
                         lesson_id=grant.lesson_id, room_id=grant.room_id,
                         group_id=grant.group_id, services=checked_services,
                         start=start.isoformat(), end=end.isoformat(), reason=reason)
    event.at = now
    db.session.flush()
    return grant


def _check_actor_for(actor: Person, exception: ExceptionGrant) -> None:
    if not actor.active:
        raise GrantForbidden("this account is disabled")
    if exception.school_id != actor.school_id:
        raise GrantForbidden("that exception belongs to another school")
    if not actor.has_role("leader", "teacher"):
        raise GrantForbidden("only teachers and school leaders may change exceptions")


def _check_in_force(exception: ExceptionGrant, now: datetime) -> None:
    # Revoked or over: the form that asked was made before that happened (a stale page).
    if exception.revoked_at is not None:
        raise GrantError("exception", "the exception was revoked already")
    if exception.end <= now:
        raise GrantError("exception", "the exception is over already")


def exception_started(exception: ExceptionGrant, now: datetime) -> bool:
    """True when `exception` has begun at `now`: revoking it stops it rather than cancels it."""
    return exception.start <= now


def extend_exception(actor: Person, exception: ExceptionGrant, *, minutes: int = EXTEND_MINUTES,
                     now: datetime | None = None) -> ExceptionGrant:
    """Move the end of an exception `minutes` later as `actor`; audited, flushed, not committed.

    A lesson's exception ends at the latest when the lesson ends (as when it was granted): the
    new end is capped there, and GrantError("minutes") when it ends there already. A teacher may
    extend only exceptions for lessons they teach (what they could grant); a leader any.
    """
    now = _now(now)
    _check_actor_for(actor, exception)
    lesson = exception.lesson if exception.scope == "lesson" else None
    if not actor.has_role("leader") and (lesson is None or not _is_teacher_of(actor, lesson)):
        raise GrantForbidden("a teacher may extend only exceptions for lessons they teach")
    _check_in_force(exception, now)
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 0 < minutes <= 24 * 60:
        raise GrantError("minutes", "minutes must be a whole number from 1 to 1440")
    end = exception.end + timedelta(minutes=minutes)
    if lesson is not None:
        if lesson.cancelled:
            raise GrantError("lesson_id", "the lesson is cancelled; it blocks nothing")
        end = cap_exception_to_lesson(exception.start, end, lesson)
    end = _whole_seconds(end)
    if end <= exception.end:
        raise GrantError("minutes", "the exception lasts until the end of the lesson already")
    previous = exception.end
    exception.end = end
    db.session.flush()
    event = audit.record("exception.extend", school_id=exception.school_id, actor=actor,
                         object_type="exception", object_id=exception.id, scope=exception.scope,
                         previous_end=previous.isoformat(), end=end.isoformat())
    event.at = now
    db.session.flush()
    return exception


def overlapping_exceptions(school_id: int, *, scope: str, room_id: int | None = None,
                           group_id: int | None = None, start: datetime,
                           end: datetime) -> list[ExceptionGrant]:
    """Exceptions of the same scope and target not revoked whose time overlaps or touches
    [`start`, `end`] (a new one there would duplicate or continue them), by start."""
    query = select(ExceptionGrant).where(
        ExceptionGrant.school_id == school_id, ExceptionGrant.scope == scope,
        ExceptionGrant.revoked_at.is_(None), ExceptionGrant.start <= end,
        ExceptionGrant.end >= start)
    if scope == "room":
        query = query.where(ExceptionGrant.room_id == room_id)
    elif scope == "group":
        query = query.where(ExceptionGrant.group_id == group_id)
    elif scope == "lesson":
        raise ValueError("lesson exceptions are capped to their lesson; use the lesson's list")
    return list(db.session.scalars(query.order_by(ExceptionGrant.start, ExceptionGrant.id)))


def covers_services(exception: ExceptionGrant, services: list[str] | None) -> bool:
    """True when `exception` allows at least `services` (None: all), so extending it suffices."""
    if exception.services is None:
        return True
    return services is not None and set(services) <= set(exception.services)


def widen_exception(actor: Person, exception: ExceptionGrant, *, start: datetime, end: datetime,
                    now: datetime | None = None) -> ExceptionGrant:
    """Let a leader's exception also cover [`start`, `end`] instead of adding a duplicate.

    The end moves later (never earlier); a planned exception's start moves earlier (not before
    now). Leaders only; audited as exception.extend; flushed, not committed.
    """
    now = _now(now)
    _check_actor_for(actor, exception)
    if not actor.has_role("leader"):
        raise GrantForbidden("only school leaders may widen an exception")
    if exception.scope == "lesson":
        raise GrantError("exception", "a lesson's exception is extended with +5 min")
    _check_in_force(exception, now)
    start, end = _whole_seconds(start), _whole_seconds(end)
    if end <= start:
        raise GrantError("end", "the exception must end after it starts")
    if start > exception.end or end < exception.start:
        raise GrantError("start", "the times do not overlap or touch the exception")
    previous_start, previous_end = exception.start, exception.end
    if exception.start > now:
        exception.start = max(min(exception.start, start), _whole_seconds(now))
    exception.end = max(exception.end, end)
    db.session.flush()
    event = audit.record("exception.extend", school_id=exception.school_id, actor=actor,
                         object_type="exception", object_id=exception.id, scope=exception.scope,
                         previous_start=previous_start.isoformat(),
                         previous_end=previous_end.isoformat(),
                         start=exception.start.isoformat(), end=exception.end.isoformat())
    event.at = now
    db.session.flush()
    return exception


def week_bounds(now: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """Monday 00:00 of the week of `now` in `zone`, and the Monday after (aware datetimes)."""
    today = now.astimezone(zone).date()
    monday = today - timedelta(days=today.weekday())
    start = datetime.combine(monday, time.min, zone)
    return start, datetime.combine(monday + timedelta(days=7), time.min, zone)


def plan_exception(actor: Person, lesson: Lesson, *, zone: ZoneInfo,
                   services: list[str] | None = None, minutes: int | None = None,
                   reason: str = "", now: datetime | None = None) -> ExceptionGrant:
    """Grant an exception for a later lesson of this week (in the school's `zone`), from its start.

    The rules of `grant_exception` hold (own lessons only, `minutes` counted from the lesson's
    start and capped at its end); GrantError("lesson_id") for a lesson of another week.
    """
    now = _now(now)
    if lesson.school_id != actor.school_id:
        raise GrantForbidden("that lesson belongs to another school")
    _, week_end = week_bounds(now, zone)
    if lesson.start >= week_end:
        raise GrantError("lesson_id", "only lessons of this week can be planned")
    return grant_exception(actor, scope="lesson", lesson=lesson, services=services,
                           start=max(now, lesson.start), minutes=minutes, reason=reason, now=now)


def revoke_exception(actor: Person, exception: ExceptionGrant, *, reason: str = "",
                     now: datetime | None = None) -> ExceptionGrant:
    """Revoke an exception as `actor`; audited, flushed, not committed.

    A leader may revoke any exception of the school; a teacher those for lessons they teach and
    those they granted. GrantError when it is already revoked or over.
    """
    now = _now(now)
    _check_actor_for(actor, exception)
    if not actor.has_role("leader"):
        own_lesson = (exception.scope == "lesson" and exception.lesson is not None
                      and _is_teacher_of(actor, exception.lesson))
        if not own_lesson and exception.granted_by_id != actor.id:
            raise GrantForbidden("a teacher may revoke only exceptions for their own lessons "
                                 "or granted by themselves")
    _check_in_force(exception, now)
    reason = _check_reason(reason)
    # One statement that revokes only what nobody revoked meanwhile: of two revocations at once
    # (two teachers' taps, two processes) the second finds no row and is told so, instead of
    # both succeeding with two audit events. The change feed counts it for this school only.
    with changes.bulk_writes_for(db.session, exception.school_id):
        revoked = db.session.execute(
            update(ExceptionGrant)
            .where(ExceptionGrant.id == exception.id, ExceptionGrant.revoked_at.is_(None))
            .values(revoked_at=_whole_seconds(now), revoked_by_id=actor.id)
            .execution_options(synchronize_session=False))
    db.session.refresh(exception)  # as the row is now, whoever revoked it
    if revoked.rowcount != 1:  # type: ignore[attr-defined]
        raise GrantError("exception", "the exception was revoked already")
    event = audit.record("exception.revoke", school_id=exception.school_id, actor=actor,
                         object_type="exception", object_id=exception.id, scope=exception.scope,
                         reason=reason)
    event.at = now
    db.session.flush()
    return exception


def active_exceptions(school_id: int, at: datetime) -> list[ExceptionGrant]:
    """The exceptions of a school in force at `at` (started, not ended, not revoked), by start."""
    return list(db.session.scalars(
        select(ExceptionGrant)
        .where(ExceptionGrant.school_id == school_id, ExceptionGrant.start <= at,
               ExceptionGrant.end > at,
               or_(ExceptionGrant.revoked_at.is_(None), ExceptionGrant.revoked_at > at))
        .order_by(ExceptionGrant.start, ExceptionGrant.id)))
