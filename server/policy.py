"""The gateway policy of SPEC §4: a pure compiler, the database loader, and signing.

`compile_policy` turns plain values (`PolicyInputs`) into a `lesfocus_policy.Policy`, the type the
agent verifies into too; it touches no database and no clock, so it can be tested and benchmarked
on its own. `lesfocus_policy` writes it in the document formats and is the one reader of it.
The rule it applies (SPEC §3):
service X is blocked at t on segment S iff some non-cancelled lesson in a room of S covers t, X is
one of the school's blocked services, and no exception in force at t that covers that lesson (by
the lesson itself, one of its rooms, one of its groups, or the whole school) includes X.

A lesson in which exceptions allow every service stays in the policy as a block of no services:
nothing is blocked then, but the dashboard and the extension still know that a lesson is on.

Times inside the compiler are whole UTC seconds (sub-second parts are dropped), which is the
resolution of the document.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from itertools import groupby
from operator import itemgetter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

from flask import current_app
from sqlalchemy import Integer, and_, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

import lesfocus_policy
from lesfocus_policy import FORMAT, MAX_POLICY_BYTES, Policy, content_version, to_claims
from lesfocus_policy.document import SegmentMaker

from .extensions import db
from .models import (ExceptionGrant, Gateway, Lesson, Room, School, Segment, SegmentCidr, Service,
                     lesson_groups, lesson_rooms, segment_rooms)


class SegmentInput(NamedTuple):
    """A segment of the gateway: its networks and the rooms it serves."""

    id: int
    name: str
    cidrs: tuple[str, ...]
    room_ids: tuple[int, ...]


class LessonInput(NamedTuple):
    """A lesson as the compiler needs it (times aware UTC, or UTC epoch seconds)."""

    id: int
    start: datetime | int
    end: datetime | int
    room_ids: tuple[int, ...]
    group_ids: tuple[int, ...]
    cancelled: bool = False


class ExceptionInput(NamedTuple):
    """An exception as the compiler needs it (times aware UTC, or UTC epoch seconds);
    `services` None means every service."""

    scope: str  # lesson, room, group, school
    lesson_id: int | None
    room_id: int | None
    group_id: int | None
    services: tuple[str, ...] | None
    start: datetime | int
    end: datetime | int
    revoked_at: datetime | int | None = None


@dataclass(frozen=True)
class PolicyInputs:
    """Everything the compiler reads, as plain values."""

    gateway_id: str
    issuer: str
    timezone: str
    window: tuple[datetime, datetime]  # [start, end), aware UTC
    services: Mapping[str, tuple[str, tuple[str, ...]]]  # catalog: id -> (name, domains)
    blocked_services: frozenset[str] | None  # the school's setting; None means every service
    segments: tuple[SegmentInput, ...]
    lessons: tuple[LessonInput, ...]
    exceptions: tuple[ExceptionInput, ...] = ()
    # False when the loader left the lessons' groups out (no group exception needed them).
    groups_loaded: bool = True
    # The rooms the loader read the lessons' rooms from (the gateway's and those that room
    # exceptions named); None: every room of each lesson is given.
    rooms_read: frozenset[int] | None = None


def _seconds(value: datetime | int) -> int:
    if type(value) is int:  # the loader reads lesson times as epoch seconds (see epoch_seconds)
        return value
    assert isinstance(value, datetime)
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r} given where an aware UTC one is required")
    return int(value.timestamp())


def _union_blocks(pieces: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Merge (start, end, service mask) pieces into sorted, disjoint, merged intervals.

    Where pieces overlap, the services blocked are the union of their masks; a piece with mask 0
    (a lesson that exceptions open entirely) still counts as a lesson.
    """
    pieces.sort()
    out: list[tuple[int, int, int]] = []
    overlapping = any(pieces[i][0] < pieces[i - 1][1] for i in range(1, len(pieces)))
    if not overlapping:
        # The common case (one room per segment, one lesson at a time): only merge neighbours.
        for start, end, mask in pieces:
            if out and out[-1][1] == start and out[-1][2] == mask:
                out[-1] = (out[-1][0], end, mask)
            else:
                out.append((start, end, mask))
        return out
    # Sweep over the boundaries, keeping a count of the active pieces per mask.
    events: list[tuple[int, int, int]] = []
    for start, end, mask in pieces:
        events.append((start, 1, mask))
        events.append((end, -1, mask))
    events.sort()
    active: dict[int, int] = defaultdict(int)
    current = 0
    since = events[0][0]
    i = 0
    while i < len(events):
        at = events[i][0]
        if at > since and active:
            if out and out[-1][1] == since and out[-1][2] == current:
                out[-1] = (out[-1][0], at, current)
            else:
                out.append((since, at, current))
        while i < len(events) and events[i][0] == at:
            _, delta, mask = events[i]
            active[mask] += delta
            if not active[mask]:
                del active[mask]
            i += 1
        current = 0
        for mask in active:
            current |= mask
        since = at
    return out


def compile_policy(inputs: PolicyInputs, previous: Policy | None = None,
                   unchanged: frozenset[int] = frozenset()) -> Policy:
    """Compile the policy of SPEC §4 for one gateway (issued at the window's start; `version` is
    its content hash). Blocks with the same services share one set object; segments that came
    out the same as in `previous` (the gateway's last compile) are its objects.

    `unchanged`: segments whose lessons and exceptions are known to be what `previous` was
    compiled from (see `gateway_policy`); they are taken over without compiling them again, and
    lessons in none of the other segments' rooms are not looked at.
    """
    win_start, win_end = (_seconds(t) for t in inputs.window)
    if win_end <= win_start:
        raise ValueError("the policy window ends before it starts")
    catalog = inputs.services
    if inputs.blocked_services is None:
        blocked_ids = sorted(catalog)
    else:
        blocked_ids = sorted(s for s in inputs.blocked_services if s in catalog)
    bit = {service_id: 1 << i for i, service_id in enumerate(blocked_ids)}
    all_mask = (1 << len(blocked_ids)) - 1
    maker = SegmentMaker(blocked_ids, previous)
    kept = {segment.id: old for segment in inputs.segments if segment.id in unchanged
            and (old := maker.keep(segment.id, segment.name, tuple(segment.cidrs))) is not None}
    # The rooms of the segments compiled; None: all of them.
    todo: set[int] | None = None
    if kept:
        todo = {r for segment in inputs.segments if segment.id not in kept
                for r in segment.room_ids}

    # Lessons that block something in the window: id -> (start, end, every blocked service),
    # and the lessons of each room and group.
    spans: dict[int, tuple[int, int, int]] = {}
    lessons_by_room: dict[int, list[int]] = defaultdict(list)
    lessons_by_group: dict[int, list[int]] = defaultdict(list)
    by_group = any(exc.scope == "group" for exc in inputs.exceptions)  # else never looked up
    # The hot loop of a compile (thousands of lessons): the loader's int times skip _seconds.
    for lesson_id, start, end, rooms, groups, cancelled in inputs.lessons:
        if cancelled or todo is not None and todo.isdisjoint(rooms):
            continue
        if type(start) is not int:
            start = _seconds(start)
        if type(end) is not int:
            end = _seconds(end)
        if start < win_start:
            start = win_start
        if end > win_end:
            end = win_end
        if end <= start:
            continue
        if lesson_id in spans:
            raise ValueError(f"lesson {lesson_id} is given twice")
        spans[lesson_id] = (start, end, all_mask)
        for room_id in rooms if len(rooms) == 1 else set(rooms):
            lessons_by_room[room_id].append(lesson_id)
        if by_group:
            for group_id in set(groups):
                lessons_by_group[group_id].append(lesson_id)

    # Each exception attached to the lessons it covers, as (start, stop, services it allows).
    covering: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for exc in inputs.exceptions:
        start, stop = _seconds(exc.start), _seconds(exc.end)
        if exc.revoked_at is not None:
            stop = min(stop, _seconds(exc.revoked_at))
        if exc.services is None:
            allowed = all_mask
        else:
            allowed = 0
            for service_id in exc.services:
                allowed |= bit.get(service_id, 0)
        if exc.scope == "lesson" and exc.lesson_id is not None:
            targets: Iterable[int] = (exc.lesson_id,) if exc.lesson_id in spans else ()
        elif exc.scope == "room" and exc.room_id is not None:
            targets = lessons_by_room.get(exc.room_id, ())
        elif exc.scope == "group" and exc.group_id is not None:
            targets = lessons_by_group.get(exc.group_id, ())
        elif exc.scope == "school":
            targets = spans
        else:
            raise ValueError(f"exception with scope {exc.scope!r} names nothing it covers")
        if stop <= start or not allowed:
            continue
        item = (start, stop, allowed)
        for lesson_id in targets:
            lesson_start, lesson_end, _ = spans[lesson_id]
            if start < lesson_end and stop > lesson_start:
                covering[lesson_id].append(item)

    def excepted_pieces(lesson_id: int,
                        excs: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        """The blocked pieces of a lesson that exceptions cover for part of its time."""
        start, end, _ = spans[lesson_id]
        cuts = {start, end}
        for exc_start, exc_stop, _ in excs:
            cuts.add(max(exc_start, start))
            cuts.add(min(exc_stop, end))
        bounds = sorted(cuts)
        pieces = []
        for a, b in zip(bounds, bounds[1:]):
            allowed = 0
            for exc_start, exc_stop, mask in excs:
                if exc_start <= a < exc_stop:
                    allowed |= mask
            pieces.append((a, b, all_mask & ~allowed))
        return pieces

    # Computed once per lesson, even when its rooms lie in several segments.
    pieces_of: dict[int, list[tuple[int, int, int]]] = {
        lesson_id: excepted_pieces(lesson_id, excs) for lesson_id, excs in covering.items()}

    segments_out = []
    for segment in sorted(inputs.segments, key=lambda s: s.id):
        if segment.id in kept:
            segments_out.append(kept[segment.id])
            continue
        pieces: list[tuple[int, int, int]] = []
        lesson_ids: Iterable[int]
        if len(segment.room_ids) == 1:
            lesson_ids = lessons_by_room.get(segment.room_ids[0], ())
        else:  # a lesson in two rooms of this segment counts once
            lesson_ids = {i for r in segment.room_ids for i in lessons_by_room.get(r, ())}
        for lesson_id in lesson_ids:
            excepted = pieces_of.get(lesson_id)
            if excepted is None:
                pieces.append(spans[lesson_id])
            else:
                pieces.extend(excepted)
        segments_out.append(maker.segment(segment.id, segment.name, tuple(segment.cidrs),
                                          _union_blocks(pieces) if pieces else []))

    window = (datetime.fromtimestamp(win_start, timezone.utc),
              datetime.fromtimestamp(win_end, timezone.utc))
    policy = Policy(version="", gateway_id=inputs.gateway_id, issued_at=window[0],
                    expires_at=window[1], timezone=inputs.timezone,
                    services={s: lesfocus_policy.Service(s, catalog[s][0], tuple(catalog[s][1]))
                              for s in blocked_ids},
                    segments=tuple(segments_out), issuer=inputs.issuer, window=window)
    return dataclasses.replace(policy, version=content_version(policy))


def policy_window(now: datetime, horizon_days: int) -> tuple[datetime, datetime]:
    """The window a policy made at `now` covers: from the hour `now` is in, `horizon_days` long."""
    start = now.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=horizon_days)


class epoch_seconds(FunctionElement[int]):
    """SQL: a UTC datetime column as whole epoch seconds, computed by the database.

    The loader reads thousands of lesson times per compile; turning each into a Python datetime
    and back into seconds cost more than the compile itself.
    """

    type = Integer()
    inherit_cache = True


@compiles(epoch_seconds, "sqlite")
def _epoch_seconds_sqlite(element: epoch_seconds, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    # unixepoch() (SQLite 3.38, Debian 12 has 3.40) reads 3,000 lesson times in 6 ms where
    # strftime('%s') takes 9.
    if sqlite3.sqlite_version_info >= (3, 38, 0):
        return f"unixepoch({column})"
    return f"CAST(strftime('%s', {column}) AS INTEGER)"


@compiles(epoch_seconds, "postgresql")
def _epoch_seconds_postgresql(element: epoch_seconds, compiler: Any, **kw: Any) -> str:
    # The columns hold naive UTC (UTCDateTime), which EXTRACT reads as UTC.
    return f"CAST(EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)}) AS BIGINT)"


def _exception_inputs(school_id: int, window: tuple[datetime, datetime]
                      ) -> tuple[ExceptionInput, ...]:
    e = ExceptionGrant
    return tuple(
        ExceptionInput(scope, lesson_id, room_id, group_id,
                       None if services is None else tuple(services), start, end, revoked_at)
        for scope, lesson_id, room_id, group_id, services, start, end, revoked_at
        in db.session.connection().execute(
            select(e.scope, e.lesson_id, e.room_id, e.group_id, e.services,
                   epoch_seconds(e.start), epoch_seconds(e.end), epoch_seconds(e.revoked_at))
            .where(e.school_id == school_id, e.start < window[1], e.end > window[0],
                   or_(e.revoked_at.is_(None),
                       and_(e.revoked_at > window[0], e.revoked_at > e.start)))
            .order_by(e.id)))


# (database, school) -> (window, generation, exceptions) and the lock of its one reader.
_school_exceptions: dict[tuple[str, int], tuple[tuple[datetime, datetime], int,
                                             tuple[ExceptionInput, ...]]] = {}
_school_locks: dict[tuple[str, int], threading.Lock] = {}
_school_lock = threading.Lock()


def school_exceptions(school_id: int, window: tuple[datetime, datetime],
                      generation: int | None) -> tuple[ExceptionInput, ...]:
    """The school's exceptions in `window`, read once per change generation of the school.

    A grant wakes every waiting agent of the school, and each compiles its gateway's policy
    again: without this, each read the same exceptions (a hundred queries at once for a school of
    a hundred gateways, which queued for the connection pool). `generation`: the school's change
    generation read before this call (server/changes.py); what was read at that generation or a
    later one serves. None: read now, keep nothing.
    """
    if generation is None:
        return _exception_inputs(school_id, window)
    key = (current_app.config["SQLALCHEMY_DATABASE_URI"], school_id)
    with _school_lock:
        lock = _school_locks.setdefault(key, threading.Lock())
    with lock:  # one reader per school; the others wait for its answer
        kept = _school_exceptions.get(key)
        if kept is not None and kept[0] == window and kept[1] >= generation:
            return kept[2]
        exceptions = _exception_inputs(school_id, window)
        _school_exceptions[key] = (window, generation, exceptions)
    return exceptions


def _segment_inputs(gateway_id: str) -> tuple[SegmentInput, ...]:
    """The gateway's segments with their networks and rooms, in one plain query (ORM objects
    and the session's execute cost more than the rest of the load; on PostgreSQL each query is a
    round trip). A segment has a row per network and room."""
    names: dict[int, str] = {}
    cidrs: dict[int, dict[str, None]] = defaultdict(dict)
    rooms: dict[int, dict[tuple[str, int], None]] = defaultdict(dict)
    query = (select(Segment.id, Segment.name, SegmentCidr.cidr, Room.code, Room.id)
             .select_from(Segment)
             .outerjoin(SegmentCidr, SegmentCidr.segment_id == Segment.id)
             .outerjoin(segment_rooms, segment_rooms.c.segment_id == Segment.id)
             .outerjoin(Room, Room.id == segment_rooms.c.room_id)
             .where(Segment.gateway_id == gateway_id))
    for segment_id, name, cidr, code, room_id in db.session.connection().execute(query):
        names[segment_id] = name
        if cidr is not None:
            cidrs[segment_id][cidr] = None
        if room_id is not None:
            rooms[segment_id][code, room_id] = None
    return tuple(SegmentInput(segment_id, name, tuple(sorted(cidrs.get(segment_id, ()))),
                              tuple(room_id for _, room_id in sorted(rooms.get(segment_id, ()))))
                 for segment_id, name in sorted(names.items()))


def _rooms_to_read(room_ids: Iterable[int], exceptions: tuple[ExceptionInput, ...]
                   ) -> frozenset[int]:
    return frozenset(room_ids) | {e.room_id for e in exceptions
                                  if e.scope == "room" and e.room_id is not None}


def _lesson_inputs(school_id: int, window: tuple[datetime, datetime], room_ids: Iterable[int],
                   rooms_read: frozenset[int], with_groups: bool,
                   in_rooms: frozenset[int] | None = None,
                   starting_from: datetime | None = None) -> tuple[LessonInput, ...]:
    """The lessons that can block on the gateway's rooms: not cancelled, in the window.

    A lesson's rooms are read as far as they matter: the gateway's own, and the rooms that a room
    exception names (an exception for the other room of a lesson in two rooms covers it here too).
    Times come as epoch seconds. `in_rooms`: only the lessons with one of these rooms (each with
    all its rooms read); `starting_from`: only those that start then or later.
    """
    here = set(room_ids)
    if not here or in_rooms is not None and not in_rooms & rooms_read:
        return ()
    # The school's lessons of the window by its (school, start) index, joined to their rooms.
    # The planners need different words for the room list. SQLite, given an indexable list,
    # probed it once per room and lesson (70 ms instead of 8 at 60 rooms): "room_id + 0" keeps
    # it a filter. PostgreSQL reads the rooms by their index and hashes them (7 ms), but with the
    # filter it went parallel and checked the list per row (16 ms).
    room = lesson_rooms.c.room_id
    if db.session.get_bind().dialect.name == "sqlite":
        room = room + 0
    query = (select(Lesson.id, epoch_seconds(Lesson.start), epoch_seconds(Lesson.end),
                    lesson_rooms.c.room_id)
             .join(lesson_rooms, lesson_rooms.c.lesson_id == Lesson.id)
             .where(Lesson.school_id == school_id, Lesson.cancelled.is_(False),
                    Lesson.start < window[1], Lesson.end > window[0],
                    room.in_(sorted(rooms_read))))
    if in_rooms is not None:
        query = query.where(Lesson.id.in_(
            select(lesson_rooms.c.lesson_id).where(
                lesson_rooms.c.room_id.in_(sorted(in_rooms & rooms_read)))))
    if starting_from is not None:
        query = query.where(Lesson.start >= starting_from)
    if with_groups:  # groups matter only to group exceptions
        query = query.add_columns(lesson_groups.c.group_id).outerjoin(
            lesson_groups, lesson_groups.c.lesson_id == Lesson.id)
    # A lesson has a row per room (and group); ordered, a lesson's rows come together and in one
    # order, so that any two reads give equal inputs.
    query = query.order_by(Lesson.id, lesson_rooms.c.room_id,
                           *((lesson_groups.c.group_id,) if with_groups else ()))
    # On the session's connection (the session's own execute costs as much again in ORM work),
    # and the rows as the driver gives them: every column is an integer, which no result type
    # converts, and wrapping 3,000 rows in Row objects took a third of the read.
    result = db.session.connection().execute(query)
    try:
        rows = result.cursor.fetchall()
    finally:
        result.close()
    lessons: list[LessonInput] = []
    for lesson_id, members in groupby(rows, itemgetter(0)):
        first = next(members)
        more = list(members)
        if not more:  # the common case: one room (and at most one group)
            if first[3] not in here:
                continue
            groups = (first[4],) if with_groups and first[4] is not None else ()
            lessons.append(LessonInput(lesson_id, first[1], first[2], (first[3],), groups))
            continue
        more.insert(0, first)
        rooms = tuple(dict.fromkeys(row[3] for row in more))
        if here.isdisjoint(rooms):
            continue
        groups = tuple(dict.fromkeys(row[4] for row in more if row[4] is not None)) \
            if with_groups else ()
        lessons.append(LessonInput(lesson_id, first[1], first[2], rooms, groups))
    return tuple(lessons)


def _lessons_again(reuse: PolicyInputs, school_id: int, window: tuple[datetime, datetime],
                   rooms_changed: frozenset[int]) -> tuple[LessonInput, ...]:
    """The lessons of `reuse` brought up to date for `window` (the same or a later one) after
    the lessons of `rooms_changed` changed: what `_lesson_inputs` reads in full, for less.

    Kept: the lessons still in the window with no changed room. Read again: the lessons with a
    changed room (a lesson moved from one room to another has both among them), and those that
    start in the part of the window the earlier one did not cover.
    """
    assert reuse.rooms_read is not None
    room_ids = {r for s in reuse.segments for r in s.room_ids}
    touched = rooms_changed & reuse.rooms_read
    lessons: list[LessonInput] = list(reuse.lessons)
    if window[0] != reuse.window[0]:
        start = _seconds(window[0])
        lessons = [lesson for lesson in lessons if _seconds(lesson.end) > start]
    if touched:
        lessons = [lesson for lesson in lessons if touched.isdisjoint(lesson.room_ids)]
        lessons.extend(_lesson_inputs(school_id, window, room_ids, reuse.rooms_read,
                                      reuse.groups_loaded, in_rooms=touched))
    if window[1] > reuse.window[1]:
        lessons.extend(
            lesson for lesson in _lesson_inputs(school_id, window, room_ids, reuse.rooms_read,
                                                reuse.groups_loaded,
                                                starting_from=reuse.window[1])
            if touched.isdisjoint(lesson.room_ids))  # those were read with their rooms
    lessons.sort()  # by id (unique, so only ids are compared): the order of a full read
    return tuple(lessons)


_catalogs: dict[tuple[Any, ...], Mapping[str, tuple[str, tuple[str, ...]]]] = {}
_catalogs_lock = threading.Lock()


def _shared_catalog(catalog: dict[str, tuple[str, tuple[str, ...]]]
                    ) -> Mapping[str, tuple[str, tuple[str, ...]]]:
    """One object per distinct service catalog in the process, shared by the compiled policies.

    Each load decodes the catalog's domains again (hundreds of strings); kept in every cached
    policy, that was about 60 KiB per gateway (90 KiB per cached policy in all, measured with
    tracemalloc at 300 gateways): 300 MB for a board's 5,000 gateways.
    """
    key = tuple(sorted(catalog.items()))
    with _catalogs_lock:
        shared = _catalogs.get(key)
        if shared is None:
            if len(_catalogs) >= 8:  # catalogs change seldom; old ones go
                _catalogs.clear()
            shared = _catalogs[key] = catalog
    return shared


def load_policy_inputs(gateway: Gateway, now: datetime,
                       reuse: PolicyInputs | None = None,
                       generation: int | None = None,
                       rooms_changed: frozenset[int] | None = frozenset()) -> PolicyInputs:
    """Read what the compiler needs for `gateway` at `now` from the database.

    `reuse`: inputs loaded before for the same gateway, in the same or an earlier window
    (`server/policy_cache.py`), and `rooms_changed`: the rooms whose lessons changed since (the
    change feed's word; empty: only exceptions changed; None: more than lessons, or unknown).
    The exceptions are read again, and the lessons of the changed rooms and of the window's new
    part; the rest is taken over. `generation`: the school's change generation read before (see
    `school_exceptions`).
    """
    config = current_app.config
    window = policy_window(now, int(config["LESFOCUS_POLICY_HORIZON_DAYS"]))
    if (reuse is not None and rooms_changed is not None and reuse.gateway_id == gateway.id
            and reuse.rooms_read is not None
            and reuse.window[0] <= window[0] < reuse.window[1] <= window[1]):
        exceptions = school_exceptions(gateway.school_id, window, generation)
        # Taken over unless a new exception needs what was not read: groups, or another room.
        groups_known = reuse.groups_loaded or not any(e.scope == "group" for e in exceptions)
        rooms_known = all(e.room_id in reuse.rooms_read for e in exceptions if e.scope == "room")
        if groups_known and rooms_known:
            lessons = reuse.lessons
            if rooms_changed or window != reuse.window:
                lessons = _lessons_again(reuse, gateway.school_id, window, rooms_changed)
            return dataclasses.replace(reuse, window=window, lessons=lessons,
                                       exceptions=exceptions)
    school = db.session.get(School, gateway.school_id)
    if school is None:
        raise LookupError(f"gateway {gateway.id} belongs to no school")
    segment_inputs = _segment_inputs(gateway.id)
    room_ids = sorted({r for s in segment_inputs for r in s.room_ids})
    exceptions = school_exceptions(school.id, window, generation)
    with_groups = any(e.scope == "group" for e in exceptions)
    rooms_read = _rooms_to_read(room_ids, exceptions)
    lessons = _lesson_inputs(school.id, window, room_ids, rooms_read, with_groups)
    services = _shared_catalog({s.id: (s.name, tuple(s.domains))
                                for s in db.session.scalars(select(Service))})
    blocked = None if school.blocked_services is None else frozenset(school.blocked_services)
    return PolicyInputs(gateway_id=gateway.id,
                        issuer=config.get("LESFOCUS_PUBLIC_URL") or "lesfocus",
                        timezone=school.timezone, window=window, services=services,
                        blocked_services=blocked, segments=segment_inputs, lessons=lessons,
                        exceptions=exceptions, groups_loaded=with_groups or not room_ids,
                        rooms_read=rooms_read)


class PolicyTooLarge(ValueError):
    """A gateway's signed policy would exceed the documented maximum the agents read."""

    def __init__(self, message: str, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class SignedPolicy:
    """A gateway's compiled policy and its signed documents, one per format, signed when asked.

    Immutable once made (the policy cache shares it between threads; two threads asking for the
    same format at once both sign, and one result is kept).
    """

    def __init__(self, policy: Policy, signing_key: Any,
                 inputs: PolicyInputs | None = None) -> None:
        self.policy = policy
        self.inputs = inputs  # what it was compiled from (the cache may reuse the timetable)
        self._signing_key = signing_key
        self._tokens: dict[str, str] = {}

    @property
    def version(self) -> str:
        """The content hash: the ETag and what the agent reports as applied, in every format."""
        return self.policy.version

    def token(self, fmt: str = FORMAT) -> str:
        """The compact JWS in format `fmt`; PolicyTooLarge above MAX_POLICY_BYTES."""
        token = self._tokens.get(fmt)
        if token is None:
            token = self._signing_key.sign(to_claims(self.policy, fmt))
            if len(token) > MAX_POLICY_BYTES:
                raise PolicyTooLarge(
                    f"the policy of gateway {self.policy.gateway_id} is {len(token)} bytes in "
                    f"format {fmt}, more than the {MAX_POLICY_BYTES} bytes agents read "
                    f"({len(self.policy.segments)} segments): split the gateway's segments "
                    "over more gateways or shorten LESFOCUS_POLICY_HORIZON_DAYS",
                    len(token), MAX_POLICY_BYTES)
            self._tokens[fmt] = token
        return token


def _unchanged_segments(inputs: PolicyInputs, reuse: PolicyInputs | None,
                        rooms_changed: frozenset[int] | None) -> frozenset[int]:
    """The segments of `inputs` that compile as they did from `reuse`: the same window,
    segments, catalog and exceptions, and none of their rooms' lessons changed."""
    if (reuse is None or rooms_changed is None or inputs.window != reuse.window
            or inputs.segments is not reuse.segments or inputs.services is not reuse.services
            or inputs.blocked_services != reuse.blocked_services
            or inputs.exceptions != reuse.exceptions):
        return frozenset()
    return frozenset(segment.id for segment in inputs.segments
                     if rooms_changed.isdisjoint(segment.room_ids))


def gateway_policy(gateway: Gateway, now: datetime | None = None,
                   reuse: PolicyInputs | None = None,
                   previous: Policy | None = None,
                   generation: int | None = None,
                   rooms_changed: frozenset[int] | None = frozenset()) -> SignedPolicy:
    """Compile the policy of `gateway` at `now` from the database; sign it when asked.

    `reuse`, `rooms_changed`: see `load_policy_inputs` (what still holds of inputs loaded
    before; `previous` must be what was compiled from `reuse`); `previous`:
    the gateway's last compiled policy, whose unchanged segments are taken over; `generation`:
    the school's change generation read before (the policy cache's), see `school_exceptions`.
    """
    now = now or datetime.now(timezone.utc)
    inputs = load_policy_inputs(gateway, now, reuse, generation, rooms_changed)
    policy = compile_policy(inputs, previous, _unchanged_segments(inputs, reuse, rooms_changed)
                            if previous is not None else frozenset())
    policy = dataclasses.replace(policy, issued_at=datetime.fromtimestamp(_seconds(now),
                                                                        timezone.utc))
    return SignedPolicy(policy, current_app.extensions["lesfocus.signing_key"], inputs)
