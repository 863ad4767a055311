"""The change feed: which writes bump a school's generation, when, and across processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from tests.support.api import (add_lesson, add_person, add_segment_for, bearer, minutes,
                               new_gateway, now_utc)
from tests.support.api import school_id as school_id_of

from server import changes
from server.extensions import db
from server.gateways import create_gateway
from server.grants import grant_exception, revoke_exception
from server.models import (ExceptionGrant, Gateway, Lesson, Person, Room, School, Segment,
                           SegmentCidr, Service)
from server.timetable import import_timetable_bytes

# Waits for a state, never for a speed (docs/testing.md).
WAIT_SECONDS = 10.0


@dataclass
class World:
    """A school with a gateway, a segment in room B204, a lesson there and a leader."""

    app: Flask
    school_id: int
    other_school_id: int
    gateway_id: str
    segment_id: int
    lesson_id: int
    leader_id: int
    grant_id: int
    now: datetime


@pytest.fixture
def world(app: Flask) -> World:
    now = now_utc()
    gateway_id, _token = new_gateway(app, "gw")
    segment_id = add_segment_for(app, gateway_id, "seg", ["10.1.0.0/24"], ["B204"])
    lesson_id = add_lesson(app, "B204", now + minutes(60), now + minutes(110))
    leader_id = add_person(app, "rector", "leader")
    with app.app_context():
        leader = db.session.get(Person, leader_id)
        grant = grant_exception(leader, scope="school", minutes=30, reason="setup", now=now)
        other = School(slug="other", name="Other", timezone="Europe/Amsterdam", aliases=[])
        db.session.add_all([other, Room(school_id=school_id_of(app), code="B205")])
        db.session.commit()
        grant_id, other_id = grant.id, other.id
    return World(app, school_id_of(app), other_id, gateway_id, segment_id, lesson_id, leader_id,
                 grant_id, now)


# --- each kind of write ---------------------------------------------------------------------------

def _get(model: type, key: object) -> object:
    obj = db.session.get(model, key)
    assert obj is not None
    return obj


def _grant(w: World) -> object:
    grant_exception(_get(Person, w.leader_id), scope="lesson", lesson=_get(Lesson, w.lesson_id),
                    minutes=15, now=w.now)


def _revoke(w: World) -> object:
    revoke_exception(_get(Person, w.leader_id), _get(ExceptionGrant, w.grant_id), now=w.now)


def _add_lesson(w: World) -> object:
    room = db.session.scalar(select(Room).where(Room.code == "B204"))
    db.session.add(Lesson(school_id=w.school_id, start=w.now + minutes(120),
                          end=w.now + minutes(170), source="manual", source_id="extra",
                          rooms=[room]))


def _move_lesson(w: World) -> object:
    lesson = _get(Lesson, w.lesson_id)
    lesson.end = lesson.end + minutes(5)  # type: ignore[attr-defined]
    return lesson


def _cancel_lesson(w: World) -> object:
    lesson = _get(Lesson, w.lesson_id)
    lesson.cancelled = True  # type: ignore[attr-defined]
    return lesson


def _delete_lesson(w: World) -> object:
    db.session.delete(_get(Lesson, w.lesson_id))


def _lesson_in_another_room(w: World) -> object:
    # Only a lesson_rooms row changes.
    room = db.session.scalar(select(Room).where(Room.code == "B205"))
    lesson = _get(Lesson, w.lesson_id)
    lesson.rooms.append(room)  # type: ignore[attr-defined]
    return lesson


def _import_timetable(w: World) -> object:
    school = _get(School, w.school_id)
    data = b"date,start,end,room\n2026-11-02,08:30,09:20,B204\n"
    import_timetable_bytes(school, data, "week.csv", "csv", actor="test")  # type: ignore[arg-type]


def _add_cidr(w: World) -> object:
    # By segment id only: the feed looks the school up itself.
    db.session.add(SegmentCidr(segment_id=w.segment_id, cidr="10.9.0.0/24"))


def _remove_cidr(w: World) -> object:
    segment = _get(Segment, w.segment_id)
    segment.cidrs.clear()  # type: ignore[attr-defined]
    return segment


def _room_to_segment(w: World) -> object:
    room = db.session.scalar(select(Room).where(Room.code == "B205"))
    segment = _get(Segment, w.segment_id)
    segment.rooms.append(room)  # type: ignore[attr-defined]
    return segment


def _service_domains(w: World) -> object:
    service = db.session.scalar(select(Service).order_by(Service.id).limit(1))
    assert service is not None
    service.domains = [*service.domains, "new.example"]
    return service


def _blocked_services(w: World) -> object:
    school = _get(School, w.school_id)
    school.blocked_services = ["tiktok"]  # type: ignore[attr-defined]
    return school


def _add_gateway(w: World) -> object:
    create_gateway(_get(School, w.school_id), "gw-2", actor="test")  # type: ignore[arg-type]


def _remove_gateway(w: World) -> object:
    gateway = _get(Gateway, w.gateway_id)
    for segment in gateway.segments:  # type: ignore[attr-defined]
        db.session.delete(segment)
    db.session.delete(gateway)
    return gateway


WRITES: list[tuple[str, Callable[[World], object]]] = [
    ("grant", _grant), ("revoke", _revoke), ("lesson added", _add_lesson),
    ("lesson moved", _move_lesson), ("lesson cancelled", _cancel_lesson),
    ("lesson deleted", _delete_lesson), ("lesson in another room", _lesson_in_another_room),
    ("timetable import", _import_timetable), ("segment CIDR added", _add_cidr),
    ("segment CIDRs removed", _remove_cidr), ("room attached to a segment", _room_to_segment),
    ("service domains", _service_domains), ("school blocked services", _blocked_services),
    ("gateway added", _add_gateway), ("gateway removed", _remove_gateway),
]


@pytest.mark.parametrize("write", [w for _, w in WRITES], ids=[name for name, _ in WRITES])
def test_a_write_bumps_the_school_generation_when_it_commits(
        world: World, write: Callable[[World], object]) -> None:
    with world.app.app_context():
        before = changes.generation(world.school_id)
        touched = write(world)  # noqa: F841 - held: the session keeps changed objects weakly
        db.session.flush()
        assert changes.generation(world.school_id) == before  # written, not committed
        db.session.commit()
        assert changes.generation(world.school_id) > before


@pytest.mark.parametrize("write", [w for _, w in WRITES], ids=[name for name, _ in WRITES])
def test_a_rolled_back_write_bumps_nothing(world: World,
                                          write: Callable[[World], object]) -> None:
    with world.app.app_context():
        before = changes.generation(world.school_id)
        touched = write(world)  # noqa: F841 - held: the session keeps changed objects weakly
        db.session.flush()
        db.session.rollback()
        assert changes.generation(world.school_id) == before
        db.session.commit()  # an empty transaction afterwards publishes nothing left over
        assert changes.generation(world.school_id) == before


def test_a_write_bumps_only_its_own_school_and_a_service_every_school(world: World) -> None:
    with world.app.app_context():
        other = changes.generation(world.other_school_id)
        _grant(world)
        db.session.commit()
        assert changes.generation(world.other_school_id) == other
        _service_domains(world)
        db.session.commit()
        assert changes.generation(world.other_school_id) > other


class CountingReads(dict):
    """The feed's counters, counting how often a waiter's condition read one school's."""

    def __init__(self, counts: dict[int, int], watched: int) -> None:
        super().__init__(counts)
        self.watched = watched
        self.reads = 0

    def __missing__(self, key: int) -> int:
        return 0

    def __getitem__(self, key: int) -> int:
        if key == self.watched:
            self.reads += 1
        return super().__getitem__(key)


def test_a_change_wakes_the_waiters_of_its_school_and_not_those_of_the_others(
        world: World) -> None:
    feed = changes.feed_of(world.app)
    with world.app.app_context():
        seen = changes.generation(world.other_school_id)
    counting = CountingReads(feed.counts, world.other_school_id)
    feed.counts = counting  # type: ignore[assignment]
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(
        feed.wait_for_change(world.other_school_id, seen, timeout=30)))
    waiter.start()
    deadline = time.monotonic() + 10
    while world.other_school_id not in feed.school_conditions and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # it has read its condition once and waits
    reads = counting.reads
    for _ in range(20):
        feed.publish({world.school_id})
    time.sleep(0.2)
    assert counting.reads == reads  # never woken by the other school's changes
    feed.wake_waiters(world.school_id)  # a replaced poll of the other school: not woken either
    time.sleep(0.1)
    assert counting.reads == reads and waiter.is_alive()
    feed.publish({changes.EVERY_SCHOOL})  # a service changed: every school's waiters wake
    waiter.join(10)
    assert woke == [True]


def test_heartbeat_sign_in_and_reading_the_audit_log_bump_nothing(
        world: World, client: FlaskClient, enrolled_agent: object) -> None:
    with world.app.app_context():
        before = changes.generation(world.school_id)
    response = client.post("/api/v1/gateways/self/heartbeat",
                           headers=enrolled_agent.headers(),  # type: ignore[attr-defined]
                           json={"policy_version": "v1", "agent_version": "0.1.0"})
    assert response.status_code == 200, response.get_json()
    headers = bearer(client, "rector")
    assert client.get("/api/v1/audit", headers=headers).status_code == 200
    with world.app.app_context():
        assert changes.generation(world.school_id) == before


@pytest.fixture
def enrolled_agent(world: World, client: FlaskClient) -> object:
    """An agent enrolled on a gateway of its own (the world's gateway stays unenrolled)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from server.tokens import public_jwk
    from tests.support.api import Agent
    gateway_id, token = new_gateway(world.app, "gw-agent")
    segment_id = add_segment_for(world.app, gateway_id, "seg-agent", ["10.2.0.0/24"], ["B204"])
    key = Ed25519PrivateKey.generate()
    response = client.post("/api/v1/gateways/enroll",
                           json={"token": token, "public_key": public_jwk(key.public_key())})
    assert response.status_code == 201, response.get_json()
    return Agent(gateway_id, key, [segment_id])


# --- other processes (PostgreSQL: LISTEN/NOTIFY) ------------------------------------------------

def _tomorrow_csv(room: str) -> bytes:
    """A timetable with one lesson in `room` tomorrow at 10:00 school time (inside the window)."""
    day = (now_utc().astimezone(ZoneInfo("Europe/Amsterdam")) + timedelta(days=1)).date()
    return f"date,start,end,room\n{day.isoformat()},10:00,10:50,{room}\n".encode()


def _import_in_another_process(database_url: str, tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "timetable.csv"
    path.write_bytes(data)
    env = dict(os.environ, LESFOCUS_DATABASE_URL=database_url,
               LESFOCUS_INSTANCE_PATH=str(tmp_path / "cli-instance"))
    command = [str(Path(sys.executable).with_name("lesfocus")), "timetable", "import", str(path),
               "--school", "test"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


postgres_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def test_an_import_in_another_process_wakes_a_waiter_here(
        world: World, database_url: str, tmp_path: Path) -> None:
    woke: dict[str, bool] = {}
    with world.app.app_context():
        seen = changes.generation(world.school_id)  # the listener is in place from here on

    def wait() -> None:
        with world.app.app_context():
            woke["moved"] = changes.wait_for_change(world.school_id, seen, WAIT_SECONDS)

    waiter = threading.Thread(target=wait)
    waiter.start()
    _import_in_another_process(database_url, tmp_path, _tomorrow_csv("B204"))
    waiter.join()
    assert woke["moved"]


def test_a_waiting_agent_gets_the_policy_changed_by_another_process(
        world: World, client: FlaskClient, enrolled_agent: object, database_url: str,
        tmp_path: Path) -> None:
    agent = enrolled_agent
    first = client.get("/api/v1/gateways/self/policy",
                       headers=agent.headers()).get_json()  # type: ignore[attr-defined]
    result: dict[str, object] = {}

    def poll() -> None:
        with world.app.test_client() as poller:
            response = poller.get(
                f"/api/v1/gateways/self/policy?wait={int(WAIT_SECONDS * 2)}",
                headers={**agent.headers(),  # type: ignore[attr-defined]
                         "If-None-Match": f'"{first["version"]}"'})
            result["status"] = response.status_code
            result["version"] = (response.get_json(silent=True) or {}).get("version")

    thread = threading.Thread(target=poll)
    thread.start()
    _import_in_another_process(database_url, tmp_path, _tomorrow_csv("B204"))
    thread.join(timeout=WAIT_SECONDS * 3)
    assert result == {"status": 200, "version": result["version"]}
    assert result["version"] != first["version"]


@pytest.mark.postgres
@postgres_only
def test_the_listener_reconnects_and_wakes_everyone_after_losing_its_connection(
        world: World, database_url: str) -> None:
    import sqlalchemy as sa
    with world.app.app_context():
        seen = changes.generation(world.school_id)
        # What a database restart does to the listener: its backend is gone.
        db.session.execute(sa.text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'lesfocus change feed' AND datname = current_database()"))
        db.session.commit()
        assert changes.wait_for_change(world.school_id, seen, WAIT_SECONDS)


# --- only exceptions changed: the policy cache reads only them again -------------------------

EXCEPTION_WRITES = {"grant", "revoke"}


@pytest.mark.parametrize("name, write", WRITES, ids=[name for name, _ in WRITES])
def test_the_timetable_generation_moves_for_every_write_but_a_grant_or_revocation(
        world: World, name: str, write: Callable[[World], object]) -> None:
    with world.app.app_context():
        changes.generation(world.school_id)  # the change log is read now (SQLite), not later
        before = changes.timetable_generation(world.school_id)
        touched = write(world)  # noqa: F841 - held: the session keeps changed objects weakly
        db.session.commit()
        moved = changes.timetable_generation(world.school_id) > before
    assert moved is (name not in EXCEPTION_WRITES), name


def test_after_a_grant_the_cache_reuses_the_loaded_timetable_and_compiles_the_same(
        world: World) -> None:
    from server.policy import compile_policy, load_policy_inputs
    from server.policy_cache import cached_policy
    with world.app.app_context():
        first = cached_policy(world.gateway_id, world.school_id)
        _grant(world)
        db.session.commit()
        after_grant = cached_policy(world.gateway_id, world.school_id)
        assert after_grant is not first and after_grant.version != first.version
        assert after_grant.inputs.lessons is first.inputs.lessons  # taken over, not read again
        gateway = db.session.get(Gateway, world.gateway_id)
        fresh = compile_policy(load_policy_inputs(gateway, now_utc()))
        assert fresh.version == after_grant.version  # the same as reading everything
        _move_lesson(world)
        db.session.commit()
        after_move = cached_policy(world.gateway_id, world.school_id)
        assert after_move.inputs.lessons is not after_grant.inputs.lessons


def test_a_group_exception_reads_the_timetable_again_when_groups_were_left_out(
        world: World) -> None:
    from server.models import Group
    from server.policy_cache import cached_policy
    with world.app.app_context():
        first = cached_policy(world.gateway_id, world.school_id)
        assert not first.inputs.groups_loaded  # no group exception yet: groups not read
        group = Group(school_id=world.school_id, name="3havo-b")
        db.session.add(group)
        db.session.commit()
        lesson = db.session.get(Lesson, world.lesson_id)
        lesson.groups.append(group)
        db.session.commit()
        before = cached_policy(world.gateway_id, world.school_id)
        grant_exception(db.session.get(Person, world.leader_id), scope="group", group=group,
                        minutes=30, now=world.now)
        db.session.commit()
        after = cached_policy(world.gateway_id, world.school_id)
        assert after.inputs.groups_loaded and after.inputs.lessons is not before.inputs.lessons


# --- SQLite: other processes' changes through the change log ------------------------------------

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _read_log_now(app: Flask) -> None:
    """Make the app's change-log reader read now, not RECHECK_SECONDS after its last read."""
    reader = changes.feed_of(app).source
    reader.read_at = -1e9  # type: ignore[union-attr]
    with app.app_context():
        reader.before_read(0)


def _log_rows(app: Flask) -> list[str]:
    from server.models import ChangeLogEntry
    with app.app_context():
        return list(db.session.scalars(select(ChangeLogEntry.payload).order_by(ChangeLogEntry.id)))


@sqlite_only
def test_this_process_does_not_read_its_own_commits_back_as_another_process_change(
        world: World) -> None:
    _read_log_now(world.app)
    with world.app.app_context():
        before = changes.timetable_generation(world.school_id)
        _move_lesson(world)
        db.session.commit()
        after_commit = changes.timetable_generation(world.school_id)
    _read_log_now(world.app)
    with world.app.app_context():
        after_read = changes.timetable_generation(world.school_id)
    assert after_commit == before + 1
    # Before the change log the marker moved by this commit counted a second time, as "every room".
    assert after_read == after_commit
    assert _log_rows(world.app)[-1].endswith(f":{world.school_id}={_room_id(world, 'B204')}")


def _room_id(world: World, code: str) -> int:
    with world.app.app_context():
        return db.session.scalar(select(Room.id).where(Room.code == code))


@sqlite_only
def test_another_process_lesson_write_arrives_here_with_its_rooms(
        make_app: Callable[..., Flask]) -> None:
    here, there = make_app(), make_app()
    lesson_id = add_lesson(there, "B204", now_utc() + minutes(60), now_utc() + minutes(110))
    with here.app_context():
        school = school_id_of(here)
        seen = changes.timetable_generation(school)  # the first read: from here on it is news
        room_id = db.session.scalar(select(Room.id).where(Room.code == "B204"))
    with there.app_context():
        lesson = db.session.get(Lesson, lesson_id)
        lesson.end = lesson.end + minutes(5)
        db.session.commit()
    _read_log_now(here)
    with here.app_context():
        now = changes.timetable_generation(school)
        assert now == seen + 1
        assert changes.timetable_rooms(school, seen, now) == frozenset({room_id})


@sqlite_only
def test_a_waiter_here_wakes_for_a_grant_made_by_another_process(
        make_app: Callable[..., Flask]) -> None:
    here, there = make_app(), make_app()
    leader_id = add_person(there, "rector", "leader")
    with here.app_context():
        school = school_id_of(here)
        seen = changes.generation(school)
    woke: dict[str, bool] = {}

    def wait() -> None:
        with here.app_context():
            woke["moved"] = changes.wait_for_change(school, seen, WAIT_SECONDS)

    waiter = threading.Thread(target=wait)
    waiter.start()
    with there.app_context():
        grant_exception(db.session.get(Person, leader_id), scope="school", minutes=10,
                        reason="x", now=now_utc())
        db.session.commit()
    waiter.join()
    assert woke["moved"]


@sqlite_only
def test_a_rolled_back_write_leaves_nothing_in_the_change_log(world: World) -> None:
    before = _log_rows(world.app)
    with world.app.app_context():
        _move_lesson(world)
        db.session.flush()
        db.session.rollback()
    assert _log_rows(world.app) == before


@sqlite_only
def test_a_reader_that_fell_behind_the_kept_log_counts_every_school(
        make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changes, "CHANGE_LOG_KEEP", 3)
    monkeypatch.setattr(changes, "CHANGE_LOG_PRUNE_EVERY", 1)
    here, there = make_app(), make_app()
    leader_id = add_person(there, "rector", "leader")
    with here.app_context():
        other = School(slug="other", name="Other", timezone="Europe/Amsterdam", aliases=[])
        db.session.add(other)
        db.session.commit()
        other_id = other.id
        seen_other = changes.generation(other_id)
    _read_log_now(here)
    with there.app_context():
        for _ in range(6):  # grants in school `test` only; the log keeps the last 3
            grant_exception(db.session.get(Person, leader_id), scope="school", minutes=10,
                            reason="x", now=now_utc())
            db.session.commit()
    assert len(_log_rows(there)) == 3
    _read_log_now(here)
    with here.app_context():
        # The dropped rows might have named any school: `other` counts as changed too.
        assert changes.generation(other_id) > seen_other
