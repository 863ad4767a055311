"""Compiling again after a change reads and compiles only what the change touched.

The change feed names the rooms whose lessons a write touched (server/changes.py); the policy
cache then reads only those rooms' lessons again and takes the other segments over as they were
(server/policy.py). After any sequence of writes, what comes out must be what reading and
compiling everything gives.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from sqlalchemy import select
from tests.support.api import add_person, add_segment_for, new_gateway, now_utc
from tests.support.api import school_id as school_id_of

from server import changes
from server.extensions import db
from server.grants import grant_exception, revoke_exception
from server.models import (ExceptionGrant, Gateway, Group, Lesson, Person, Room, School,
                           Segment, lesson_rooms, utcnow)
from server.timetable.common import ParsedLesson, ParsedTimetable
from server.timetable.sources import apply_to_source, file_source
from lesfocus_policy import Policy
from server.policy import compile_policy, gateway_policy, load_policy_inputs
from server.policy_cache import cached_policy

# Waits for a state, never for a speed (docs/testing.md).
WAIT_SECONDS = 10.0
ROOMS = ("A", "B", "C", "D", "E", "X")  # X is in no segment of the gateway


@dataclass
class Board:
    app: Flask
    school_id: int
    gateway_id: str
    leader_id: int
    rooms: dict[str, int]
    now: datetime


def _room_ids() -> dict[str, int]:
    return {room.code: room.id for room in db.session.scalars(select(Room))}


@pytest.fixture
def board(app: Flask) -> Board:
    """A gateway with segments A, B, C+D and E, lessons over three days (some in two rooms,
    one with room X outside the gateway), and a room exception for X.

    On SQLite the feed also reads the change log every RECHECK_SECONDS, for other processes'
    writes; it skips this process's own rows, so a recheck in the middle of a test changes
    nothing (before the log, the marker it replaced counted own commits a second time, as
    "every room")."""
    now = now_utc()
    gateway_id, _token = new_gateway(app, "gw")
    for name, rooms in (("a", ["A"]), ("b", ["B"]), ("cd", ["C", "D"]), ("e", ["E"])):
        add_segment_for(app, gateway_id, name, [f"10.{len(name)}.{ord(name[0])}.0/24"], rooms)
    leader_id = add_person(app, "rector", "leader")
    rng = random.Random(11)
    with app.app_context():
        school_id = school_id_of(app)
        db.session.add(Room(school_id=school_id, code="X"))
        db.session.flush()
        rooms = {room.code: room for room in db.session.scalars(select(Room))}
        start = now.replace(minute=0, second=0) + timedelta(minutes=30)
        for n in range(40):
            begins = start + timedelta(minutes=50 * (n % 12) + 1440 * (n // 12))
            codes = [rng.choice(ROOMS[:5])]
            if n % 7 == 0:
                codes.append("X" if n % 2 else rng.choice(ROOMS[:5]))
            db.session.add(Lesson(school_id=school_id, start=begins,
                                  end=begins + timedelta(minutes=45), subject="wi",
                                  source="manual", source_id=uuid.uuid4().hex,
                                  rooms=[rooms[c] for c in dict.fromkeys(codes)]))
        db.session.commit()
        leader = db.session.get(Person, leader_id)
        grant_exception(leader, scope="room", room=rooms["X"], minutes=24 * 60, now=now)
        db.session.commit()
        return Board(app, school_id, gateway_id, leader_id, _room_ids(), now)


def _lessons(board: Board) -> list[Lesson]:
    return list(db.session.scalars(select(Lesson).order_by(Lesson.id)))


def _move(board: Board, rng: random.Random) -> str:
    lesson = rng.choice(_lessons(board))
    lesson.start += timedelta(minutes=rng.choice((-10, 5)))
    lesson.end += timedelta(minutes=rng.choice((-5, 10)))
    return "move"


def _other_room(board: Board, rng: random.Random) -> str:
    lesson = rng.choice(_lessons(board))
    lesson.rooms = [db.session.get(Room, board.rooms[code])
                    for code in rng.sample(ROOMS, rng.choice((1, 2)))]
    return "rooms"


def _cancel(board: Board, rng: random.Random) -> str:
    lesson = rng.choice(_lessons(board))
    lesson.cancelled = not lesson.cancelled
    return "cancel"


def _delete(board: Board, rng: random.Random) -> str:
    db.session.delete(rng.choice(_lessons(board)))
    return "delete"


def _add(board: Board, rng: random.Random) -> str:
    begins = board.now + timedelta(minutes=rng.randrange(0, 3 * 1440, 5))
    db.session.add(Lesson(school_id=board.school_id, start=begins,
                          end=begins + timedelta(minutes=45), subject="ak", source="manual",
                          source_id=uuid.uuid4().hex,
                          rooms=[db.session.get(Room, board.rooms[rng.choice(ROOMS)])]))
    return "add"


def _grant(board: Board, rng: random.Random) -> str:
    open_lessons = [lesson for lesson in _lessons(board)
                    if not lesson.cancelled and lesson.end > board.now]
    grant_exception(db.session.get(Person, board.leader_id), scope="lesson",
                    lesson=rng.choice(open_lessons), minutes=15, now=board.now)
    return "grant"


def _revoke(board: Board, rng: random.Random) -> str:
    grants = list(db.session.scalars(select(ExceptionGrant).where(
        ExceptionGrant.revoked_at.is_(None), ExceptionGrant.scope == "lesson")))
    if not grants:
        return _grant(board, rng)
    revoke_exception(db.session.get(Person, board.leader_id), rng.choice(grants),
                     now=board.now)
    return "revoke"


WRITES: tuple[Callable[[Board, random.Random], str], ...] = (
    _move, _move, _other_room, _cancel, _delete, _add, _grant, _revoke)


def _full(board: Board) -> Policy:
    """The policy as reading and compiling everything gives it now."""
    gateway = db.session.get(Gateway, board.gateway_id)
    return compile_policy(load_policy_inputs(gateway, utcnow()))


def test_after_any_sequence_of_writes_the_cached_policy_is_what_a_full_compile_gives(
        board: Board) -> None:
    # On SQLite the feed reads the change log meanwhile, and skips this process's own rows: the
    # feed's word comes from these writes alone, however slow the machine.
    rng = random.Random(5)
    with board.app.app_context():
        cached = cached_policy(board.gateway_id, board.school_id)
        for step in range(30):
            did = rng.choice(WRITES)(board, rng)
            db.session.commit()
            before, cached = cached, cached_policy(board.gateway_id, board.school_id)
            full = _full(board)
            assert cached.version == full.version, (step, did)
            assert set(cached.inputs.lessons) == set(
                load_policy_inputs(db.session.get(Gateway, board.gateway_id), utcnow()).lessons)
            if cached.inputs.window == before.inputs.window:
                # The segments were not read again: the feed said only lessons changed.
                assert cached.inputs.segments is before.inputs.segments, (step, did)
            db.session.remove()


def test_a_moved_lesson_reads_its_rooms_again_and_takes_the_other_segments_over(
        board: Board) -> None:
    with board.app.app_context():
        first = cached_policy(board.gateway_id, board.school_id)
        segment_a = db.session.scalar(select(Segment.id).where(Segment.name == "a"))
        in_a = next(lesson for lesson in _lessons(board)
                    if [r.code for r in lesson.rooms] == ["A"])
        in_a.end -= timedelta(minutes=5)
        db.session.commit()
        after = cached_policy(board.gateway_id, board.school_id)
        assert after.version != first.version
        assert after.version == _full(board).version
        by_id = {s.id: s for s in first.policy.segments}
        for segment in after.policy.segments:
            if segment.id == segment_a:
                assert segment is not by_id[segment.id]
            else:  # taken over without compiling it again
                assert segment is by_id[segment.id]


def test_a_lesson_moved_to_another_room_leaves_the_old_room_and_blocks_the_new_one(
        board: Board) -> None:
    with board.app.app_context():
        first = cached_policy(board.gateway_id, board.school_id)
        lesson = next(lesson for lesson in _lessons(board)
                      if [r.code for r in lesson.rooms] == ["A"])
        lesson.rooms = [db.session.get(Room, board.rooms["E"])]
        db.session.commit()
        after = cached_policy(board.gateway_id, board.school_id)
        assert after.inputs.segments is first.inputs.segments
        moved = next(entry for entry in after.inputs.lessons if entry.id == lesson.id)
        assert moved.room_ids == (board.rooms["E"],)
        assert after.version == _full(board).version


def test_the_window_moving_on_by_an_hour_reads_only_the_new_hour_and_compiles_the_same(
        board: Board) -> None:
    with board.app.app_context():
        gateway = db.session.get(Gateway, board.gateway_id)
        now = board.now
        first = gateway_policy(gateway, now)
        # A lesson in the window's next hour, and the first lesson over by then.
        horizon = first.inputs.window[1]
        db.session.add(Lesson(school_id=board.school_id, start=horizon + timedelta(minutes=10),
                              end=horizon + timedelta(minutes=55), subject="na",
                              source="manual", source_id="next-hour",
                              rooms=[db.session.get(Room, board.rooms["B"])]))
        db.session.commit()
        later = now + timedelta(hours=1)
        moved = gateway_policy(gateway, later, reuse=first.inputs, previous=first.policy,
                               rooms_changed=frozenset())
        assert moved.inputs.segments is first.inputs.segments  # taken over, not read again
        full = gateway_policy(gateway, later)
        assert moved.version == full.version
        assert moved.inputs.lessons == full.inputs.lessons
        assert any(entry.start >= int(horizon.timestamp()) for entry in moved.inputs.lessons)


def test_unknown_room_changes_read_everything_again(board: Board) -> None:
    with board.app.app_context():
        gateway = db.session.get(Gateway, board.gateway_id)
        first = gateway_policy(gateway, board.now)
        again = gateway_policy(gateway, board.now, reuse=first.inputs, previous=first.policy,
                               rooms_changed=None)
        assert again.inputs.segments is not first.inputs.segments
        assert again.version == first.version


# --- what the feed says a write touched ------------------------------------------------------

def _rooms_touched(board: Board, write: Callable[[], object]) -> frozenset[int] | None:
    changes.generation(board.school_id)  # the change log is read now (SQLite), not later
    before = changes.timetable_generation(board.school_id)
    write()
    db.session.commit()
    after = changes.timetable_generation(board.school_id)
    assert after > before
    return changes.timetable_rooms(board.school_id, before, after)


def test_the_feed_names_the_rooms_a_lesson_write_touched_before_and_after(board: Board) -> None:
    r = board.rooms
    with board.app.app_context():
        lesson_id = next(lesson.id for lesson in _lessons(board)
                         if [room.code for room in lesson.rooms] == ["A"])
        db.session.remove()

        def move() -> None:  # its rooms are not loaded: read from the database
            lesson = db.session.get(Lesson, lesson_id)
            lesson.end += timedelta(minutes=1)
        assert _rooms_touched(board, move) == {r["A"]}

        def other_rooms() -> None:
            lesson = db.session.get(Lesson, lesson_id)
            lesson.rooms = [db.session.get(Room, r["C"]), db.session.get(Room, r["X"])]
        assert _rooms_touched(board, other_rooms) == {r["A"], r["C"], r["X"]}

        def add() -> None:
            db.session.add(Lesson(school_id=board.school_id, start=board.now,
                                  end=board.now + timedelta(minutes=45), source="manual",
                                  source_id="new", rooms=[db.session.get(Room, r["D"])]))
        assert _rooms_touched(board, add) == {r["D"]}

        def delete() -> None:
            lesson = db.session.get(Lesson, lesson_id)
            assert len(lesson.rooms) == 2  # loaded: the rooms it leaves are known
            db.session.delete(lesson)
        assert _rooms_touched(board, delete) == {r["C"], r["X"]}


def test_the_feed_says_every_room_for_writes_that_are_more_than_lessons(board: Board) -> None:
    with board.app.app_context():
        def rename_segment() -> None:
            segment = db.session.scalar(select(Segment).where(Segment.name == "a"))
            segment.name = "a2"
        assert _rooms_touched(board, rename_segment) is None

        def rename_room() -> None:
            room = db.session.get(Room, board.rooms["A"])
            room.code = "A2"
        assert _rooms_touched(board, rename_room) is None

        def bulk() -> None:
            db.session.execute(Lesson.__table__.update().values(subject="bulk"))
        assert _rooms_touched(board, bulk) is None


def test_a_new_room_or_group_names_no_room_and_its_lessons_name_theirs(board: Board) -> None:
    # No segment serves a room, and no exception names it, before it exists.
    with board.app.app_context():
        def new_room() -> None:
            db.session.add(Room(school_id=board.school_id, code="F"))
        assert _rooms_touched(board, new_room) == frozenset()

        def new_group() -> None:  # as the importer adds them: rows with their school
            db.session.execute(Group.__table__.insert(),
                               [{"school_id": board.school_id, "name": "4h2"}])
        assert _rooms_touched(board, new_group) == frozenset()

        def lesson_and_room() -> None:
            lesson = _lessons(board)[0]
            lesson.end += timedelta(minutes=1)
            db.session.add(Room(school_id=board.school_id, code="G"))
        rooms = {room.id for room in _lessons(board)[0].rooms}
        db.session.remove()
        assert _rooms_touched(board, lesson_and_room) == rooms


def _import(board: Board, lessons: list[tuple[str, int, tuple[str, ...], bool]]) -> None:
    """Import (source "rooster") lessons given as (id, minutes from the board's hour, rooms,
    cancelled), into a window of the board's next three days, as the importer writes them."""
    school = db.session.get(School, board.school_id)
    hour = board.now.replace(minute=0, second=0, microsecond=0)
    parsed = ParsedTimetable("csv", [
        ParsedLesson(source_id=source_id, start=hour + timedelta(minutes=at),
                     end=hour + timedelta(minutes=at + 45), rooms=rooms, groups=(),
                     teachers=(), subject="ne", cancelled=cancelled, place=f"line {n + 2}")
        for n, (source_id, at, rooms, cancelled) in enumerate(lessons)],
        (hour, hour + timedelta(days=3)))
    source = file_source(db.session, school, "rooster", "csv")
    apply_to_source(db.session, school, source, parsed, ZoneInfo(school.timezone))


def test_an_import_names_the_rooms_whose_lessons_it_wrote(board: Board) -> None:
    r = board.rooms
    with board.app.app_context():
        first = [("l1", 60, ("A",), False), ("l2", 120, ("B",), False),
                 ("l3", 180, ("C",), False), ("l4", 240, ("E",), False)]
        assert _rooms_touched(board, lambda: _import(board, first)) == {
            r["A"], r["B"], r["C"], r["E"]}
        # l1 moves, l2 goes from B to D, l3 is cancelled, l4 is gone, l5 is new in X.
        second = [("l1", 70, ("A",), False), ("l2", 120, ("D",), False),
                  ("l3", 180, ("C",), True), ("l5", 300, ("X",), False)]
        assert _rooms_touched(board, lambda: _import(board, second)) == {
            r["A"], r["B"], r["C"], r["D"], r["E"], r["X"]}
        # The same file again writes nothing, and publishes nothing.
        before = changes.timetable_generation(board.school_id)
        _import(board, second)
        db.session.commit()
        assert changes.timetable_generation(board.school_id) == before
        # An import that creates a room names it with the rooms of the lessons it wrote.
        new_room = [*second, ("l6", 360, ("Z9", "A"), False)]
        touched = _rooms_touched(board, lambda: _import(board, new_room))
        z9 = db.session.scalar(select(Room.id).where(Room.code == "Z9"))
        assert touched == {r["A"], z9}


def test_after_imports_the_cached_policy_is_what_a_full_compile_gives(board: Board) -> None:
    rng = random.Random(8)
    with board.app.app_context():
        cached = cached_policy(board.gateway_id, board.school_id)
        ids = [f"i{n}" for n in range(12)]
        for step in range(8):
            # Now and then in a room the school did not have: the import creates it.
            lessons = [(source_id, rng.randrange(0, 3 * 1440, 5),
                        tuple(rng.sample([*ROOMS, f"N{step}"], rng.choice((1, 2)))),
                        rng.random() < 0.2)
                       for source_id in rng.sample(ids, rng.randrange(4, 12))]
            _import(board, lessons)
            db.session.commit()
            before, cached = cached, cached_policy(board.gateway_id, board.school_id)
            assert cached.version == _full(board).version, step
            if cached.inputs.window == before.inputs.window:
                assert cached.inputs.segments is before.inputs.segments, step
            db.session.remove()


def test_a_bulk_lesson_write_whose_rooms_were_not_declared_counts_as_every_room(
        board: Board) -> None:
    with board.app.app_context():
        def undeclared() -> None:
            with changes.bulk_writes_for(db.session, board.school_id,
                                         lesson_rooms_declared=True):
                db.session.execute(Lesson.__table__.update().values(subject="bulk"))
        assert _rooms_touched(board, undeclared) is None

        def declared() -> None:
            with changes.bulk_writes_for(db.session, board.school_id,
                                         lesson_rooms_declared=True):
                db.session.execute(Lesson.__table__.update().where(
                    Lesson.id.in_(select(lesson_rooms.c.lesson_id).where(
                        lesson_rooms.c.room_id == board.rooms["B"]))).values(subject="b"))
                changes.declare_lesson_rooms(db.session, board.school_id, {board.rooms["B"]})
        assert _rooms_touched(board, declared) == {board.rooms["B"]}

        def rolled_back() -> None:
            declared()
            db.session.rollback()
            lesson = _lessons(board)[0]
            lesson.subject = "na"  # an ORM write: its own rooms only
            return None
        rooms = {room.id for room in _lessons(board)[0].rooms}
        db.session.remove()
        assert _rooms_touched(board, rolled_back) == rooms


def test_the_rooms_travel_in_the_notification_and_are_left_out_when_they_do_not_fit() -> None:
    class Feed:
        token = "abc"
    payload = changes._payload(Feed(), {3, 4}, {3, 4}, {3: {7, 8}, 4: None})  # type: ignore
    token, _, payload = payload.partition("@")  # the sending time, for the feed-delay metric
    assert token == "abc" and float(payload.split(":")[0]) > 0
    payload = "abc:" + payload.partition(":")[2]
    assert payload == "abc:3,4:3,4:3=7.8"
    assert changes._parse_rooms(payload.split(":", 3)[3]) == {3: frozenset({7, 8})}
    huge = changes._payload(Feed(), {3}, {3}, {3: set(range(10_000))})  # type: ignore
    assert huge.split(":", 1)[1] == "3:3"  # the other processes read everything
    assert len(changes._payload(Feed(), {3}, {3}, {3: set(range(1000))})) <= changes.MAX_PAYLOAD
    assert changes._parse_rooms("x=1;5=2.y;6=") == {6: frozenset()}


def test_another_process_learns_the_rooms_of_a_lesson_write(
        make_app: Callable[..., Flask]) -> None:
    # Through LISTEN/NOTIFY on PostgreSQL, the change log on SQLite.
    here, there = make_app(), make_app()
    gateway_id, _token = new_gateway(here, "gw")
    add_segment_for(here, gateway_id, "a", ["10.9.0.0/24"], ["A"])
    with here.app_context():
        school_id = school_id_of(here)
        room = db.session.scalar(select(Room).where(Room.code == "A"))
        start = now_utc() + timedelta(hours=1)
        lesson = Lesson(school_id=school_id, start=start, end=start + timedelta(minutes=45),
                        source="manual", source_id="l1", rooms=[room])
        db.session.add(lesson)
        db.session.commit()
        lesson_id, room_id = lesson.id, room.id
    with there.app_context():
        seen = changes.generation(school_id)  # listening (reading the log) from now on
        before = changes.timetable_generation(school_id)
    with here.app_context():
        db.session.get(Lesson, lesson_id).end += timedelta(minutes=1)
        db.session.commit()
    with there.app_context():
        assert changes.wait_for_change(school_id, seen, WAIT_SECONDS)
        after = changes.timetable_generation(school_id)
        assert changes.timetable_rooms(school_id, before, after) == {room_id}
