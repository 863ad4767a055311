"""The one after-commit change feed: "the policy of these schools may have changed".

Nothing at a call site says that a policy changed. SQLAlchemy session events do it once:

- `after_flush` collects the schools a flush can affect (lessons and their rooms, groups and
  teachers, exceptions, rooms, groups, segments, their CIDRs and rooms, gateways added or removed,
  a school's blocked services or timezone; a service affects every school) into `session.info`.
- `do_orm_execute` does the same for bulk `insert()`/`update()`/`delete()` statements run through
  `Session.execute`, which flush events never see. They are put down to the school named by their
  `school_id` parameters, else to the school declared with `bulk_writes_for` (the timetable
  importer declares its school), else to every school.
- `after_commit` publishes the set; a transaction that ends any other way drops it, and a
  transaction that changed nothing relevant (a heartbeat, a sign-in) publishes nothing.
- For a change of lessons only (a lesson moved, cancelled, added, deleted, given other rooms),
  the flush also notes the rooms it touched, before and after. The feed keeps them per timetable
  generation (`timetable_rooms`), so the policy cache reads only those rooms' lessons again.
  The timetable importer's bulk statements on lessons count the same way: it declares the
  rooms it touched (`bulk_writes_for(..., lesson_rooms_declared=True)`, `declare_lesson_rooms`).
  Anything else (segments, rooms, groups, other bulk statements, other processes' SQLite writes)
  counts as "every room".

Publishing bumps a generation counter per school and wakes the threads waiting on it
(`generation`, `wait_for_change`); lesson-status reads the counters as they are. Under
`lesfocus serve` the threads are greenlets (server/serving.py monkey-patches `threading` before
this module is imported), so a waiting agent costs no OS thread.

Other processes (a second `lesfocus serve`, the CLI's `lesfocus timetable import`) learn of a
change like this:

- PostgreSQL: `before_commit` runs `SELECT pg_notify('lesfocus_policy', ...)` inside the same
  transaction, so the notification is delivered if and only if the transaction commits
  (https://www.postgresql.org/docs/current/sql-notify.html). One thread per app listens on its own
  psycopg connection (`LISTEN lesfocus_policy`) and turns notifications into the same wake-up.
  After it (re)connects it wakes everything, since notifications sent meanwhile were missed.
- SQLite (no LISTEN/NOTIFY): `before_commit` writes the same payload as a row of the change log
  (`change_log`, server/models.py ChangeLogEntry) inside the transaction, so it is there if and
  only if the transaction commits. Each process reads the rows after the last one it saw, in one
  indexed query for every school, at most every RECHECK_SECONDS: when someone asks for a
  generation and, while agents wait, in one watcher thread. Its own rows it skips, as the
  listener skips its own notifications. A reader that finds rows missing (the log keeps its last
  CHANGE_LOG_KEEP) counts every school as changed. Writes that bypass the session (SQL typed into
  a shell) are seen by no other process, on either database.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import uuid
import weakref
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask, current_app, has_app_context
from sqlalchemy import Table, delete, event, func, insert, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, UOWTransaction

from .extensions import db
from .metrics import observe_feed_delay
from .models import (ChangeLogEntry, ExceptionGrant, Gateway, Group, Lesson, Room, School, Segment,
                     SegmentCidr, Service, lesson_groups, lesson_rooms, lesson_teachers,
                     segment_rooms)

log = logging.getLogger(__name__)

CHANNEL = "lesfocus_policy"
# Stands for every school: a service's domains changed, or notifications may have been missed.
EVERY_SCHOOL = "*"
# pg_notify payloads must stay below 8000 bytes; a longer list of schools becomes "every school".
MAX_PAYLOAD = 7000
# SQLite path: how often the change log is read at most (one query on its key, for every school).
RECHECK_SECONDS = 0.5
# SQLite path: how many rows the change log keeps, and every how many rows it drops older ones.
CHANGE_LOG_KEEP = 10_000
CHANGE_LOG_PRUNE_EVERY = 500
# PostgreSQL path: how long the first reader waits for LISTEN to be in place, and the listener's
# longest pause between reconnection attempts.
LISTEN_READY_SECONDS = 5.0
RECONNECT_MAX_SECONDS = 10.0
# How often the listener looks whether it should stop (the latency of `stop`).
POLL_STOP_SECONDS = 0.2

_PENDING = "lesfocus.changes.pending"
# The schools of the pending set whose change was more than exceptions (lessons, segments, ...).
_PENDING_TIMETABLE = "lesfocus.changes.pending_timetable"
# Of those, school -> the rooms whose lessons changed (None: more than lessons, or not known).
_PENDING_ROOMS = "lesfocus.changes.pending_rooms"
_BULK_SCHOOL = "lesfocus.changes.bulk_school"
_BULK_ROOMS_DECLARED = "lesfocus.changes.bulk_rooms_declared"
# school -> rooms named by `declare_lesson_rooms` (joined with the noted rooms at commit).
_DECLARED_ROOMS = "lesfocus.changes.declared_rooms"
# school -> True: a bulk lesson statement ran under `lesson_rooms_declared` (its rooms are the
# declared ones; without a declaration they are every room).
_UNDECLARED_LESSONS = "lesfocus.changes.undeclared_lessons"
_EXTENSION = "lesfocus.changes"

SchoolSet = frozenset[int | str]
# school -> the rooms whose lessons a timetable change touched; None (or a school left out): every
# room, as far as anyone can tell.
RoomChanges = dict[int | str, frozenset[int] | None]
# How many timetable generations of a school the feed remembers the rooms of.
ROOM_LOG_LENGTH = 256

# Tables whose rows feed a school's compiled policy, for bulk statements.
_WATCHED_TABLES: frozenset[str] = frozenset(
    t.name for t in (Lesson.__table__, ExceptionGrant.__table__, Room.__table__,
                     Group.__table__, Segment.__table__, SegmentCidr.__table__,
                     Gateway.__table__, School.__table__, Service.__table__, lesson_rooms,
                     lesson_groups, lesson_teachers, segment_rooms))  # type: ignore[attr-defined]
# A new room or group changes no compiled policy by itself: no segment serves it and no
# exception names it yet (a segment or an exception that does so in the same transaction is a
# change of its own, which says "every room" or reads the exceptions again). It still moves the
# school's timetable generation, so lesson-status rebuilds its table of rooms; and the lessons
# in it name it among their rooms. An import that brings a new room is then no full read.
_NAMES_NOTHING_YET: frozenset[str] = frozenset(
    t.name for t in (Room.__table__, Group.__table__))  # type: ignore[attr-defined]
# Of those, the lesson tables: bulk statements on them may have their rooms declared.
_LESSON_TABLES: frozenset[str] = frozenset(
    t.name for t in (Lesson.__table__, lesson_rooms, lesson_groups,  # type: ignore[attr-defined]
                     lesson_teachers))


# --- the feed of one app ----------------------------------------------------------------------

class ChangeFeed:
    """Generations per school and the threads waiting on them."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.token = uuid.uuid4().hex[:12]  # tells this feed's own notifications apart
        # Any change; and per school, for the long polls: a change of one school wakes only the
        # agents waiting on that school, not all 5,000 of a board (all share one lock).
        self.lock = threading.RLock()
        self.condition = threading.Condition(self.lock)
        self.school_conditions: dict[int, threading.Condition] = {}
        self.counts: dict[int, int] = defaultdict(int)
        self.every = 0  # bumps of every school at once
        # The same, for changes that were more than exceptions: the policy cache may reuse a
        # gateway's loaded timetable while this one stands still (a grant reloads exceptions).
        self.timetable_counts: dict[int, int] = defaultdict(int)
        self.timetable_every = 0
        # Moves with every change of any school that was more than exceptions (segments among
        # them): lesson-status rebuilds its table of networks when it moved.
        self.timetable_total = 0
        # school -> {timetable generation -> the rooms that change touched}, for the changes
        # that touched lessons only (see `timetable_rooms`).
        self.room_log: dict[int, dict[int, frozenset[int]]] = defaultdict(dict)
        url = make_url(app.config["SQLALCHEMY_DATABASE_URI"])
        self.postgres = url.get_backend_name() == "postgresql"
        self.source: _PostgresListener | _SqliteLogReader = (
            _PostgresListener(self, url) if self.postgres else _SqliteLogReader(self))

    def generation(self, school_id: int) -> int:
        """The change counter of `school_id`; pass it to `wait_for_change`."""
        self.source.before_read(school_id)
        with self.condition:
            return self.counts[school_id] + self.every

    def timetable_generation(self, school_id: int) -> int:
        """Moves with every change of `school_id` that was not only exceptions."""
        self.source.before_read(school_id)
        with self.condition:
            return self.timetable_counts[school_id] + self.timetable_every

    def timetable_rooms(self, school_id: int, since: int, until: int) -> frozenset[int] | None:
        """The rooms whose lessons changed between the timetable generations `since` and
        `until` of `school_id` (after `since`, up to and including `until`); None when any
        change in between was more than lessons, or is no longer remembered."""
        rooms: set[int] = set()
        with self.condition:
            log = self.room_log.get(school_id, {})
            for value in range(since + 1, until + 1):
                touched = log.get(value)
                if touched is None:
                    return None
                rooms.update(touched)
        return frozenset(rooms)

    def wait_for_change(self, school_id: int, seen: int, timeout: float,
                        cancel: threading.Event | None = None) -> bool:
        """Block until the counter of `school_id` moves past `seen`, `cancel` is set (and
        `wake_waiters` called) or `timeout` passes; False only when the time ran out."""
        self.source.before_read(school_id)
        with self.source.waiting(school_id), self.condition:
            waiting = self.school_conditions.get(school_id)
            if waiting is None:
                waiting = self.school_conditions[school_id] = threading.Condition(self.lock)
            return waiting.wait_for(
                lambda: (self.counts[school_id] + self.every != seen
                         or (cancel is not None and cancel.is_set())), timeout=timeout)

    def _notify(self, schools: Iterable[int] | None) -> None:
        """Wake the waiters of `schools` (None: of every school) and of any change; the lock is
        held."""
        if schools is None:
            for waiting in self.school_conditions.values():
                waiting.notify_all()
        else:
            for school_id in schools:
                waiting = self.school_conditions.get(school_id)
                if waiting is not None:
                    waiting.notify_all()
        self.condition.notify_all()

    def wake_waiters(self, school_id: int | None = None) -> None:
        """Make the waiters of `school_id` (None: every waiter) look at their conditions again
        (one of them was cancelled)."""
        with self.condition:
            self._notify(None if school_id is None else [school_id])

    def publish(self, schools: Iterable[int | str],
                timetable: Iterable[int | str] | None = None,
                rooms: RoomChanges | None = None) -> None:
        """Bump the generation of `schools` (EVERY_SCHOOL: all), and wake the waiters.

        `timetable`: those of them whose change was more than exceptions; None (the default, and
        what every source that cannot tell says) counts every one of them. `rooms`: for those,
        the rooms whose lessons changed where that was all that changed (see RoomChanges).
        """
        changed: SchoolSet = frozenset(schools)
        if not changed:
            return
        more = changed if timetable is None else frozenset(timetable)
        with self.condition:
            if EVERY_SCHOOL in changed:
                self.every += 1
            else:
                for school_id in changed:
                    self.counts[int(school_id)] += 1
            if EVERY_SCHOOL in more:
                self.timetable_every += 1
            else:
                for school_id in more:
                    school_id = int(school_id)
                    self.timetable_counts[school_id] += 1
                    touched = None if rooms is None else rooms.get(school_id)
                    if touched is not None:
                        value = self.timetable_counts[school_id] + self.timetable_every
                        log = self.room_log[school_id]
                        log[value] = touched
                        log.pop(value - ROOM_LOG_LENGTH, None)
            if more:
                self.timetable_total += 1
            self._notify(None if EVERY_SCHOOL in changed
                         else [int(school_id) for school_id in changed])

    def stop(self) -> None:
        """Stop the feed's thread, if it runs (it starts again when needed)."""
        self.source.stop()


def init_app(app: Flask) -> None:
    """Give `app` its change feed and register the session events (once per process)."""
    feed = ChangeFeed(app)
    app.extensions[_EXTENSION] = feed
    _FEEDS.add(feed)
    with app.app_context():
        engine = db.engine
    # Tests (and the CLI before serving) dispose of the engine when done with an app: the
    # listener thread goes with it, and starts again if the app is used after all.
    event.listen(engine, "engine_disposed", lambda _engine: feed.stop())
    _register_session_events()


def feed_of(app: Flask) -> ChangeFeed:
    """The change feed of `app`."""
    return app.extensions[_EXTENSION]


def generation(school_id: int) -> int:
    """The current app's change counter of `school_id`; pass it to `wait_for_change`."""
    return feed_of(current_app).generation(school_id)


def timetable_generation(school_id: int) -> int:
    """The counter of `school_id`'s changes that were more than exceptions."""
    return feed_of(current_app._get_current_object()).timetable_generation(  # type: ignore
        school_id)


def timetable_rooms(school_id: int, since: int, until: int) -> frozenset[int] | None:
    """The rooms whose lessons changed between two timetable generations (None: more did)."""
    return feed_of(current_app._get_current_object()).timetable_rooms(  # type: ignore
        school_id, since, until)


def wait_for_change(school_id: int, seen: int, timeout: float,
                    cancel: threading.Event | None = None) -> bool:
    """Block until the counter of `school_id` moves past `seen`, `cancel` is set or `timeout`
    passes; False: the time ran out."""
    return feed_of(current_app).wait_for_change(school_id, seen, timeout, cancel)


def wake_waiters(school_id: int | None = None) -> None:
    """Make the current app's waiters (of `school_id`; None: all) look again whether they were
    cancelled."""
    feed_of(current_app).wake_waiters(school_id)


@contextmanager
def bulk_writes_for(session: Session, school_id: int, *,
                    lesson_rooms_declared: bool = False) -> Iterator[None]:
    """Put bulk statements run in `session` meanwhile down to `school_id` (not every school).

    With `lesson_rooms_declared`, bulk statements on the lesson tables (lessons and their rooms,
    groups and teachers) do not count as "every room": the caller names the rooms whose lessons
    it changed with `declare_lesson_rooms` (the rooms a lesson was in and is in now). Until it
    does, the change still counts as every room of the school, so a caller that forgets makes
    policies compile in full, never stale.
    """
    previous = session.info.get(_BULK_SCHOOL), session.info.get(_BULK_ROOMS_DECLARED)
    session.info[_BULK_SCHOOL] = school_id
    session.info[_BULK_ROOMS_DECLARED] = lesson_rooms_declared
    try:
        yield
    finally:
        session.info[_BULK_SCHOOL], session.info[_BULK_ROOMS_DECLARED] = previous


def declare_lesson_rooms(session: Session, school_id: int, rooms: Iterable[int]) -> None:
    """Say that `session`'s bulk statements on the lesson tables changed only the lessons of
    `rooms` (see `bulk_writes_for`); other writes in the transaction still count as they do.
    Declaring makes nothing pending: a school without such statements publishes nothing."""
    declared: set[int] = session.info.setdefault(_DECLARED_ROOMS, {}).setdefault(school_id, set())
    declared.update(rooms)


_FEEDS: weakref.WeakSet[ChangeFeed] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for feed in list(_FEEDS):
        feed.stop()


# --- collecting what a transaction changed ------------------------------------------------------

def _pending(session: Session) -> set[int | str]:
    return session.info.setdefault(_PENDING, set())


def _pending_timetable(session: Session) -> set[int | str]:
    return session.info.setdefault(_PENDING_TIMETABLE, set())


def _note_rooms(session: Session, school: int | str, rooms: Iterable[int] | None) -> None:
    """Add `rooms` to the rooms the pending timetable change of `school` touched (None: all)."""
    pending: dict[int | str, set[int] | None] = session.info.setdefault(_PENDING_ROOMS, {})
    if rooms is None:
        pending[school] = None
    elif school not in pending:
        pending[school] = set(rooms)
    elif pending[school] is not None:
        pending[school].update(rooms)  # type: ignore[union-attr]


def _lesson_rooms(session: Session, lesson: Lesson, kind: str) -> set[int] | None:
    """The rooms a flushed lesson was in before the flush and is in after it; None: unknown."""
    state = inspect(lesson)
    if state.attrs.school_id.history.deleted:
        return None  # moved to another school: say "all" for both
    loaded = lesson.__dict__.get("rooms")
    if loaded is not None:
        rooms = [*loaded, *state.attrs.rooms.history.deleted]
        if any(room.id is None for room in rooms):
            return None
        return {room.id for room in rooms}
    if kind == "new":
        return set()  # no rooms given
    if kind == "deleted":
        return None  # its room rows are gone with it
    # Its rooms were not touched: they are still in the database.
    return set(session.connection().scalars(
        select(lesson_rooms.c.room_id).where(lesson_rooms.c.lesson_id == lesson.id)))


def _changed_attributes(obj: Any, *names: str) -> bool:
    state = inspect(obj)
    return any(state.attrs[name].history.has_changes() for name in names)


def _segment_school(session: Session, cidr: SegmentCidr) -> int | str:
    segment = cidr.__dict__.get("segment")  # loaded already: no query
    if segment is not None:
        return segment.school_id
    school_id = session.connection().scalar(
        select(Segment.school_id).where(Segment.id == cidr.segment_id))
    return EVERY_SCHOOL if school_id is None else school_id


def _schools_of(session: Session, obj: Any, kind: str) -> Iterator[int | str]:
    """The schools whose policies a flushed object (`kind`: new, dirty, deleted) can affect."""
    if isinstance(obj, (Lesson, ExceptionGrant, Room, Group, Segment)):
        yield obj.school_id
    elif isinstance(obj, SegmentCidr):
        yield _segment_school(session, obj)
    elif isinstance(obj, Service):
        yield EVERY_SCHOOL
    elif isinstance(obj, School):
        if kind != "dirty" or _changed_attributes(obj, "blocked_services", "timezone"):
            yield obj.id
    elif isinstance(obj, Gateway):
        # Its heartbeat fields (last contact, applied version) change no policy; disabling or
        # enabling it, or a new key, ends or starts what its agent is handed.
        if kind != "dirty" or _changed_attributes(obj, "disabled_at", "public_key_pem"):
            yield obj.school_id


def _after_flush(session: Session, flush_context: UOWTransaction) -> None:
    # The new/dirty/deleted lists and attribute histories still show what this flush wrote.
    found: set[int | str] = set()
    timetable: set[int | str] = set()

    def note(obj: Any, kind: str) -> None:
        schools = set(_schools_of(session, obj, kind))
        found.update(schools)
        if not isinstance(obj, ExceptionGrant):
            timetable.update(schools)
            rooms: set[int] | None = None
            if isinstance(obj, Lesson):
                rooms = _lesson_rooms(session, obj, kind)
            elif kind == "new" and isinstance(obj, (Room, Group)):
                rooms = set()  # see _NAMES_NOTHING_YET
            for school in schools:
                _note_rooms(session, school, rooms)

    for obj in session.new:
        note(obj, "new")
    for obj in session.deleted:
        note(obj, "deleted")
    for obj in session.dirty:
        # A collection change (lesson.rooms, segment.rooms) counts as a modification too.
        if session.is_modified(obj):
            note(obj, "dirty")
    if found:
        _pending(session).update(found)
        _pending_timetable(session).update(timetable)


def _do_orm_execute(state: Any) -> None:
    if not (state.is_insert or state.is_update or state.is_delete):
        return
    table = getattr(state.statement, "table", None)
    if not isinstance(table, Table) or table.name not in _WATCHED_TABLES:
        return
    session: Session = state.session
    if table.name == Service.__table__.name:  # type: ignore[attr-defined]
        schools: set[int | str] = {EVERY_SCHOOL}
    else:
        rows = state.parameters
        rows = [rows] if isinstance(rows, dict) else list(rows or ())
        if rows and all("school_id" in row for row in rows):
            schools = {row["school_id"] for row in rows}
        else:
            declared = session.info.get(_BULK_SCHOOL)
            schools = {EVERY_SCHOOL if declared is None else declared}
    _pending(session).update(schools)
    if table.name != ExceptionGrant.__table__.name:  # type: ignore[attr-defined]
        _pending_timetable(session).update(schools)
        declared = (session.info.get(_BULK_ROOMS_DECLARED) and table.name in _LESSON_TABLES
                    and schools == {session.info.get(_BULK_SCHOOL)})
        names_nothing = state.is_insert and table.name in _NAMES_NOTHING_YET
        for school in schools:
            if declared:
                # Its rooms come from declare_lesson_rooms; until then it counts as every room.
                session.info.setdefault(_UNDECLARED_LESSONS, set()).add(school)
            else:
                _note_rooms(session, school, set() if names_nothing else None)


def _listed(schools: set[int | str]) -> str:
    listed = EVERY_SCHOOL if EVERY_SCHOOL in schools else ",".join(
        str(s) for s in sorted(schools))  # type: ignore[arg-type]
    return EVERY_SCHOOL if len(listed) > MAX_PAYLOAD // 2 else listed


def _payload(feed: ChangeFeed, schools: set[int | str], timetable: set[int | str],
             rooms: dict[int | str, set[int] | None]) -> str:
    """`token:schools:timetable schools:rooms` (timetable schools: changed more than
    exceptions; rooms: `school=room.room;...` for those whose change touched lessons only).

    The rooms are left out when they would not fit: the other processes then read everything.
    A process of the previous release reads a fourth part as "every school changed".
    """
    # The token carries the sending time (`token@epoch`): the listeners measure the feed's
    # delay by it (a process of the previous release reads it as another process's token).
    head = (f"{feed.token}@{time.time():.3f}:{_listed(schools)}:"
            f"{_listed(timetable) if timetable else ''}")
    known = ";".join(f"{school}=" + ".".join(str(r) for r in sorted(touched))
                     for school, touched in sorted(rooms.items(), key=lambda kv: str(kv[0]))
                     if touched is not None and school != EVERY_SCHOOL)
    if not known or len(head) + 1 + len(known) > MAX_PAYLOAD:
        return head
    return f"{head}:{known}"


def _parse_rooms(part: str) -> RoomChanges:
    """The rooms part of a payload (see `_payload`); a school that cannot be read is left out."""
    rooms: RoomChanges = {}
    for item in part.split(";"):
        school, _, listed = item.partition("=")
        if not school.isdigit():
            continue
        ids = [r for r in listed.split(".") if r]
        if all(r.isdigit() for r in ids):
            rooms[int(school)] = frozenset(int(r) for r in ids)
    return rooms


def _frozen(rooms: dict[int | str, set[int] | None] | None) -> RoomChanges:
    return {school: None if touched is None else frozenset(touched)
            for school, touched in (rooms or {}).items()}


def _current_feed() -> ChangeFeed | None:
    if not has_app_context():
        return None
    return current_app.extensions.get(_EXTENSION)


def _settle_declarations(session: Session) -> None:
    """Put the rooms of bulk lesson statements (see `bulk_writes_for`) with the noted rooms: the
    declared ones, or every room of a school whose caller declared none."""
    undeclared = session.info.pop(_UNDECLARED_LESSONS, set())
    declared = session.info.pop(_DECLARED_ROOMS, {})
    for school in undeclared:
        _note_rooms(session, school, declared.get(school))


def _before_commit(session: Session) -> None:
    _settle_declarations(session)
    feed = _current_feed()
    if feed is None:
        return
    # Commit flushes only after this hook: flush now, so the set of schools is complete.
    session.flush()
    schools = session.info.get(_PENDING)
    if not schools:
        return
    payload = _payload(feed, schools, session.info.get(_PENDING_TIMETABLE, set()),
                       session.info.get(_PENDING_ROOMS, {}))
    # Part of the transaction: other processes learn of it if and only if it commits.
    if feed.postgres:
        session.execute(text("SELECT pg_notify(:channel, :payload)"),
                        {"channel": CHANNEL, "payload": payload})
    else:
        _log_change(session, payload)


def _log_change(session: Session, payload: str) -> None:
    """Write `payload` to the change log (SQLite), and now and then drop its oldest rows."""
    entry = session.execute(insert(ChangeLogEntry).values(payload=payload)
                            .returning(ChangeLogEntry.id)).scalar_one()
    if entry % CHANGE_LOG_PRUNE_EVERY == 0:
        session.execute(delete(ChangeLogEntry)
                        .where(ChangeLogEntry.id <= entry - CHANGE_LOG_KEEP))


def _after_commit(session: Session) -> None:
    _settle_declarations(session)  # done in before_commit already, unless flushed after it
    schools = session.info.pop(_PENDING, None)
    timetable = session.info.pop(_PENDING_TIMETABLE, set())
    rooms = _frozen(session.info.pop(_PENDING_ROOMS, None))
    feed = _current_feed()
    if schools and feed is not None:
        feed.publish(schools, timetable, rooms)


def _after_transaction_end(session: Session, transaction: Any) -> None:
    # Rolled back, or closed without a commit: what it wrote never happened.
    if transaction.parent is None:
        session.info.pop(_PENDING, None)
        session.info.pop(_PENDING_TIMETABLE, None)
        session.info.pop(_PENDING_ROOMS, None)
        session.info.pop(_UNDECLARED_LESSONS, None)
        session.info.pop(_DECLARED_ROOMS, None)


_registered = False


def _register_session_events() -> None:
    global _registered
    if _registered:
        return
    _registered = True
    target = db.session
    event.listen(target, "after_flush", _after_flush)
    event.listen(target, "do_orm_execute", _do_orm_execute)
    event.listen(target, "before_commit", _before_commit)
    event.listen(target, "after_commit", _after_commit)
    event.listen(target, "after_transaction_end", _after_transaction_end)


# --- PostgreSQL: LISTEN/NOTIFY --------------------------------------------------------------------

class _PostgresListener:
    """One thread on its own psycopg connection: `LISTEN lesfocus_policy`, reconnecting."""

    def __init__(self, feed: ChangeFeed, url: Any) -> None:
        self.feed = feed
        # libpq understands the URL without SQLAlchemy's driver suffix ("+psycopg").
        self.conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.ready_by = 0.0

    def before_read(self, school_id: int) -> None:
        """Start listening on first use; wait (briefly) until LISTEN is in place."""
        if self.thread is None:
            with self.lock:
                if self.thread is None:
                    self.stopping.clear()
                    self.ready.clear()
                    self.ready_by = time.monotonic() + LISTEN_READY_SECONDS
                    self.thread = threading.Thread(target=self._run, daemon=True,
                                                   name="lesfocus-change-listener")
                    self.thread.start()
        # Until then a change could be missed. The listener's first connect wakes everything
        # before it sets `ready`, so a reader that waited holds a generation from after it. When
        # the database cannot be reached, only the first readers wait, and not for long.
        if not self.ready.is_set():
            self.ready.wait(max(0.0, self.ready_by - time.monotonic()))

    @contextmanager
    def waiting(self, school_id: int) -> Iterator[None]:
        yield

    def stop(self) -> None:
        """Stop the thread and close its connection."""
        with self.lock:
            thread, self.thread = self.thread, None
            self.stopping.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        import psycopg
        pause = 0.5
        connected_before = False
        while not self.stopping.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True,
                                     application_name="lesfocus change feed") as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    if connected_before:
                        log.warning("change feed: listening again; waking every school, since "
                                    "notifications sent meanwhile were missed")
                    connected_before = True
                    pause = 0.5
                    self.feed.publish({EVERY_SCHOOL})
                    self.ready.set()
                    while not self.stopping.is_set():
                        # psycopg keeps notifications that arrive between two calls (backlog).
                        for notification in conn.notifies(timeout=POLL_STOP_SECONDS):
                            _deliver(self.feed, notification.payload)
            except psycopg.Error as err:
                if self.stopping.is_set():
                    break
                # The message names host and database at most; the URL (password) is not logged.
                first_line = (str(err).strip().splitlines() or [""])[0]
                log.warning("change feed: the LISTEN connection failed (%s: %s); retrying in "
                            "%.1f s", type(err).__name__, first_line, pause)
                self.stopping.wait(pause)
                pause = min(pause * 2, RECONNECT_MAX_SECONDS)



def _deliver(feed: ChangeFeed, payload: str) -> None:
    """Publish another process's change (a notification's or a change log row's payload)."""
    token, _, rest = payload.partition(":")
    token, _, sent = token.partition("@")
    if token == feed.token:
        return  # our own commit, published in this process already
    try:
        observe_feed_delay(float(sent))
    except ValueError:
        pass  # a process of the previous release sends no time
    listed, has_kinds, more = rest.partition(":")
    more, _, rooms = more.partition(":")
    schools = _parse_listed(listed) or {EVERY_SCHOOL}
    # Without the third part (or unreadable): count everything as a timetable change.
    timetable = _parse_listed(more) if has_kinds else schools
    feed.publish(schools, timetable, _parse_rooms(rooms))


def _parse_listed(listed: str) -> set[int | str]:
    schools: set[int | str] = set()
    for part in listed.split(","):
        if part.strip().isdigit():
            schools.add(int(part))
        elif part.strip():
            return {EVERY_SCHOOL}  # "*" or something unexpected: be conservative
    return schools


# --- SQLite: reading the change log -----------------------------------------------------------

class _SqliteLogReader:
    """Notices changes written by other processes on SQLite by reading the change log.

    The log is read at most every RECHECK_SECONDS, by one thread at a time (the others go on
    with the generations as they are rather than queue for the database). While agents wait,
    one watcher thread reads it, so the waiters sleep until a change instead of each waking
    every RECHECK_SECONDS; it ends when nobody waits.
    """

    def __init__(self, feed: ChangeFeed) -> None:
        self.feed = feed
        self.lock = threading.Lock()
        self.last_id: int | None = None  # the newest row seen; None: not read yet
        self.read_at = -1e9
        self.reading = False
        self.waiters = 0
        self.thread: threading.Thread | None = None

    def before_read(self, school_id: int) -> None:
        """Read the change log when due, and publish what other processes wrote to it."""
        now = time.monotonic()
        with self.lock:
            if now - self.read_at < RECHECK_SECONDS or self.reading:
                return
            self.reading = True
        try:
            with db.engine.connect() as connection:
                if self.last_id is None:
                    # What was written before is in the database already, read by whoever
                    # compiles next: only what comes after is news.
                    self.last_id = connection.scalar(select(func.max(ChangeLogEntry.id))) or 0
                    rows, missed = [], 0
                else:
                    rows = connection.execute(
                        select(ChangeLogEntry.id, ChangeLogEntry.payload)
                        .where(ChangeLogEntry.id > self.last_id)
                        .order_by(ChangeLogEntry.id)).all()
                    missed = rows[0].id - self.last_id - 1 if rows else 0
                    if rows:
                        self.last_id = rows[-1].id
        finally:
            with self.lock:
                self.reading = False
                self.read_at = time.monotonic()
        if missed > 0:
            log.warning("change feed: %d changes were dropped from the change log before this "
                        "process read them; counting every school as changed", missed)
            self.feed.publish({EVERY_SCHOOL})
        for row in rows:
            _deliver(self.feed, row.payload)

    @contextmanager
    def waiting(self, school_id: int) -> Iterator[None]:
        """Count one more agent waiting while inside."""
        with self.lock:
            self.waiters += 1
            if self.thread is None:
                self.thread = threading.Thread(target=self._watch, daemon=True,
                                               name="lesfocus-change-watcher")
                self.thread.start()
        try:
            yield
        finally:
            with self.lock:
                self.waiters -= 1

    def stop(self) -> None:
        """Nothing to stop: the watcher ends by itself when nobody waits."""

    def _watch(self) -> None:
        while True:
            time.sleep(RECHECK_SECONDS)
            with self.lock:
                if self.waiters <= 0:
                    self.thread = None
                    return
            try:
                with self.feed.app.app_context():
                    self.before_read(0)
            except Exception:  # noqa: BLE001 - the watcher must outlive a database hiccup
                log.exception("change feed: reading the change log failed")
