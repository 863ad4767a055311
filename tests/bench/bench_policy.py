"""Benchmark: the policy, from the database to the agent (SPEC §5), printed next to its targets.

- size of the signed policy at 15 / 60 / 240 / 1,000 classroom segments over 7 days, shipped
  catalog (16 services): target <= 500 KB at 240;
- compile (pure), and the agent's verify + parse of the full document and of a document in which
  one classroom got a grant (the agent takes the unchanged segments over);
- load + compile + sign from the database, as `lesfocus serve` runs it (create_app with the
  shipped settings, then `server.serving.settle_heap()` as the served worker does), at 60
  segments of a 150,000-lessons/week board, on SQLite and PostgreSQL side by side: target
  <= 50 ms p95. Every sample follows a write never seen before (a grant, a lesson moved, an
  import) or a new hour, so no two compiles see the same input;
- 1,000 segments end to end over HTTP: the agent's long poll answer is read and verified.

The timetable: 10 periods of 45 minutes a day with 5-minute breaks, 5 days, one segment per
classroom, 2 % of lessons cancelled, lesson / room / group / school exceptions during the week.
Run with `make bench`, or `.venv/bin/python -m pytest -o addopts= -p no:cacheprovider -s
tests/bench/bench_policy.py`. Figures are printed, never asserted.
"""

from __future__ import annotations

import os
import random
import statistics
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.policy_source import Enrollment, verify_policy
from lesfocus_policy import FORMAT, LEGACY_FORMAT, MAX_POLICY_BYTES, to_claims
from server.policy import (ExceptionInput, LessonInput, PolicyInputs, SegmentInput,
                           compile_policy)
from server.tokens import load_or_create_signing_key

SIZES = (15, 60, 240, 1000)
SCHOOLS = 50
ROOMS_PER_SCHOOL = 60
PERIODS_PER_DAY = 10
GROUPS_PER_SCHOOL = 40
MONDAY = datetime(2026, 11, 23, 7, 0, tzinfo=timezone.utc)  # 08:00 in Amsterdam
ROUNDS = 5
PER_ROUND = 12


def shipped_catalog() -> dict[str, tuple[str, tuple[str, ...]]]:
    """The catalog lesfocus ships (server/data/social-services.json), as the seed reads it."""
    from server.seed import service_catalog
    return {s["id"]: (s["name"], tuple(s["domains"])) for s in service_catalog()}


SERVICES = shipped_catalog()


def _periods():
    for day in range(5):
        for period in range(PERIODS_PER_DAY):
            start = MONDAY + timedelta(days=day, minutes=period * 50)
            yield day, period, start, start + timedelta(minutes=45)


def school_week(school: int, rng: random.Random, rooms: int = ROOMS_PER_SCHOOL):
    """(lessons, exceptions) of one school's week: one lesson per room per period."""
    lessons = []
    lesson_id = school * 10_000_000
    services = sorted(SERVICES)
    for day, period, start, end in _periods():
        for room in range(rooms):
            lesson_id += 1
            group = school * 1000 + (room + period + day) % GROUPS_PER_SCHOOL
            lessons.append(LessonInput(lesson_id, start, end, (school * 10_000 + room,),
                                       (group,), rng.random() < 0.02))
    exceptions = []
    for lesson in rng.sample(lessons, max(2, len(lessons) // 25)):  # teachers allowing a while
        begin = lesson.start + timedelta(minutes=rng.randrange(0, 30))
        exceptions.append(ExceptionInput(
            "lesson", lesson.id, None, None, tuple(rng.sample(services, 2)), begin,
            lesson.end, begin + timedelta(minutes=10) if rng.random() < 0.2 else None))
    for day in range(5):
        noon = MONDAY + timedelta(days=day, hours=4)
        exceptions.append(ExceptionInput("room", None, school * 10_000 + day, None, None, noon,
                                         noon + timedelta(hours=2)))
        exceptions.append(ExceptionInput("group", None, None, school * 1000 + day, ("youtube",),
                                         noon, noon + timedelta(hours=3)))
    exceptions.append(ExceptionInput("school", None, None, None, ("youtube",),
                                     MONDAY + timedelta(days=4), MONDAY + timedelta(days=5)))
    return lessons, exceptions


def gateway_segments(school: int, rooms: int = ROOMS_PER_SCHOOL) -> tuple[SegmentInput, ...]:
    """One segment per classroom, each an IPv4 /24 and an IPv6 /64."""
    return tuple(SegmentInput(school * 10_000 + i, f"lokaal-{i // 100}.{i % 100:02d}",
                              (f"10.{100 + i // 256}.{i % 256}.0/24",
                               f"fd00:{school:x}:{i:x}::/64"),
                              (school * 10_000 + i,)) for i in range(rooms))


def figures(samples: list[float]) -> str:
    """Median, p95, min and max of `samples` (seconds) in ms."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return (f"median {statistics.median(ordered) * 1000:7.1f} ms, p95 {p95 * 1000:7.1f} ms, "
            f"min {ordered[0] * 1000:6.1f}, max {ordered[-1] * 1000:6.1f} (n={len(ordered)})")


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def inputs_for(segments: int, rng: random.Random) -> PolicyInputs:
    lessons, exceptions = school_week(1, rng, rooms=segments)
    return PolicyInputs(gateway_id="gw-bench", issuer="https://lesfocus.example",
                        timezone="Europe/Amsterdam",
                        window=(MONDAY - timedelta(hours=1), MONDAY + timedelta(days=7, hours=-1)),
                        services=SERVICES, blocked_services=None,
                        segments=gateway_segments(1, segments), lessons=tuple(lessons),
                        exceptions=tuple(exceptions))


def test_bench_policy_size_compile_and_agent_verify(tmp_path: Path) -> None:
    key = load_or_create_signing_key(tmp_path / "key.pem")
    enrollment = Enrollment(server_url="https://lesfocus.example", gateway_id="gw-bench",
                            server_keys=tuple(key.jwks()["keys"]))
    print(f"\npolicy per gateway, shipped catalog ({len(SERVICES)} services), 7 days; "
          f"documented maximum {MAX_POLICY_BYTES} bytes")
    for size in SIZES:
        rng = random.Random(size)
        inputs = inputs_for(size, rng)
        compile_times, verify_full, verify_change = [], [], []
        policy = compile_policy(inputs)
        for _ in range(ROUNDS * 2):
            started = time.perf_counter()
            policy = compile_policy(inputs)
            compile_times.append(time.perf_counter() - started)
        claims = to_claims(policy)
        token = key.sign({**claims, "iat": int(time.time()), "exp": int(time.time()) + 86400})
        legacy = key.sign({**to_claims(policy, LEGACY_FORMAT), "iat": int(time.time()),
                           "exp": int(time.time()) + 86400})
        now = time.time()
        for _ in range(ROUNDS * 2):
            started = time.perf_counter()
            in_force = verify_policy(token, enrollment, now=now)
            verify_full.append(time.perf_counter() - started)
        # A grant in one classroom, never seen before: that segment's blocks change.
        for n in range(ROUNDS * 2):
            lesson = rng.choice([le for le in inputs.lessons if not le.cancelled])
            grant = ExceptionInput("lesson", lesson.id, None, None, ("tiktok",),
                                   lesson.start, lesson.end)
            changed = compile_policy(PolicyInputs(**{**inputs.__dict__, "exceptions": (
                *inputs.exceptions, grant)}))
            signed = key.sign({**to_claims(changed), "iat": int(now) + n + 1,
                               "exp": int(now) + 86400})
            started = time.perf_counter()
            verify_policy(signed, enrollment, now=now, previous=in_force)
            verify_change.append(time.perf_counter() - started)
        blocks = sum(len(s.blocks) for s in policy.segments)
        print(f"  {size:5d} segments, {len(inputs.lessons)} lessons, {blocks} blocks: "
              f"signed {len(token) / 1024:7.1f} KiB in {FORMAT} (1.0: {len(legacy) / 1024:8.1f} "
              f"KiB){'  target <= 500 KB' if size == 240 else ''}")
        print(f"        compile (pure):                 {figures(compile_times)}")
        print(f"        agent verify + parse, full:     {figures(verify_full)}")
        print(f"        agent verify + parse, a grant:  {figures(verify_change)}"
              f"{'  (target with apply <= 150 ms)' if size == 240 else ''}")


# --- from the database, as served ------------------------------------------------------------

def fill_database(app, rng: random.Random, schools: int) -> str:
    """Write `schools` schools of the board into the app's database; return the gateway id."""
    from server.extensions import db
    from server.models import (ExceptionGrant, Gateway, Group, Lesson, Room, School, Segment,
                               SegmentCidr, lesson_groups, lesson_rooms, segment_rooms)
    from server.seed import seed_services
    with app.app_context():
        seed_services()
        conn = db.session.connection()
        gateway_id = None
        for school in range(schools):
            school_id = conn.execute(sa.insert(School).values(
                slug=f"school-{school}", name=f"School {school}", timezone="Europe/Amsterdam",
                aliases=[], created_at=MONDAY)).inserted_primary_key[0]
            room_ids = [conn.execute(sa.insert(Room).values(
                school_id=school_id, code=f"{r}")).inserted_primary_key[0]
                for r in range(ROOMS_PER_SCHOOL)]
            group_ids = [conn.execute(sa.insert(Group).values(
                school_id=school_id, name=f"g{g}")).inserted_primary_key[0]
                for g in range(GROUPS_PER_SCHOOL)]
            gateway = f"gw-{school:04d}"
            conn.execute(sa.insert(Gateway).values(id=gateway, school_id=school_id, name="gw",
                                                   created_at=MONDAY))
            for segment in gateway_segments(school):
                segment_id = conn.execute(sa.insert(Segment).values(
                    school_id=school_id, gateway_id=gateway,
                    name=segment.name)).inserted_primary_key[0]
                conn.execute(sa.insert(SegmentCidr), [{"segment_id": segment_id, "cidr": c}
                                                      for c in segment.cidrs])
                conn.execute(sa.insert(segment_rooms), [
                    {"segment_id": segment_id, "room_id": room_ids[r - school * 10_000]}
                    for r in segment.room_ids])
            lessons, exceptions = school_week(school, rng)
            first = conn.execute(sa.select(sa.func.coalesce(sa.func.max(Lesson.id), 0))).scalar()
            rows, room_rows, group_rows = [], [], []
            ids = {}
            for n, lesson in enumerate(lessons, start=first + 1):
                ids[lesson.id] = n
                rows.append({"id": n, "school_id": school_id, "start": lesson.start,
                             "end": lesson.end, "subject": "les", "cancelled": lesson.cancelled,
                             "source": "bench", "source_id": str(lesson.id),
                             "updated_at": MONDAY})
                room_rows.append({"lesson_id": n,
                                  "room_id": room_ids[lesson.room_ids[0] - school * 10_000]})
                group_rows.append({"lesson_id": n,
                                   "group_id": group_ids[lesson.group_ids[0] - school * 1000]})
            conn.execute(sa.insert(Lesson), rows)
            conn.execute(sa.insert(lesson_rooms), room_rows)
            conn.execute(sa.insert(lesson_groups), group_rows)
            conn.execute(sa.insert(ExceptionGrant), [{
                "school_id": school_id, "scope": e.scope,
                "lesson_id": None if e.lesson_id is None else ids.get(e.lesson_id),
                "room_id": None if e.room_id is None else room_ids[e.room_id - school * 10_000],
                "group_id": None if e.group_id is None else group_ids[e.group_id - school * 1000],
                "services": None if e.services is None else list(e.services), "start": e.start,
                "end": e.end, "reason": "", "granted_at": e.start, "revoked_at": e.revoked_at}
                for e in exceptions])
            if school == 17 % schools:
                gateway_id = gateway
        db.session.commit()
    assert gateway_id is not None
    return gateway_id


@pytest.fixture
def postgres_database() -> Iterator[str | None]:
    """A fresh database on the test cluster (None when the run has no PostgreSQL)."""
    base = os.environ.get("LESFOCUS_TEST_POSTGRES_URL")
    if not base:
        yield None
        return
    name = f"bench_policy_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def vacuum_analyze(database_url: str) -> None:
    """VACUUM ANALYZE the database, as autovacuum would after a bulk load."""
    engine = sa.create_engine(database_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
    engine.dispose()


def _served_app(tmp: Path, database_url: str | None):
    from flask_migrate import upgrade

    from server.app import create_app
    config = {"INSTANCE_PATH": str(tmp), "SECRET_KEY": "bench"}
    if database_url:
        config["DATABASE_URL"] = database_url
    app = create_app(config)
    with app.app_context():
        upgrade()
    return app


# What happened before each compile of the database rounds: every one is a write never seen
# before (or a new hour), and each is read again as the served cache would after it.
WRITES = {
    "grant": "after a grant (exceptions read again)",
    "lesson": "after a lesson moved (its room read again)",
    "hour": "after the hour moved (the new hour read)",
    "import": "after an import (its rooms read again)",
    "bulk": "after a bulk write (everything read again)",
}


def _rounds(app, gateway_id: str, now: datetime, write: str
            ) -> tuple[list[list[float]], int, int]:
    """ROUNDS rounds of PER_ROUND compiles through the served policy cache, each after `write`
    (see WRITES): a new grant, a lesson moved by a minute through the ORM (as the dashboard or
    a sync of one changed lesson writes it), the clock an hour on (12 hours from Monday 08:00
    each round, so that the window keeps most of the week's lessons), a lesson moved by a bulk
    statement as the timetable importer writes it (it declares the rooms it touched,
    server/timetable/sources.py), or the same bulk statement undeclared (the change feed cannot
    say which rooms: as after a restart, a segment change, or a room renamed).
    Returns (the rounds' samples, segments, signed bytes)."""
    import time_machine

    from server import changes
    from server.extensions import db
    from server.models import ExceptionGrant, Gateway, Lesson
    from server.policy_cache import cached_policy
    from server.serving import settle_heap
    settle_heap()  # what the served worker does once after start-up
    rounds: list[list[float]] = []
    rng = random.Random(3)
    # The served cache reads the clock for the policy's hour: the board's Monday morning.
    with time_machine.travel(now, tick=True) as clock, app.app_context():
        gateway = db.session.get(Gateway, gateway_id)
        school_id = gateway.school_id
        lesson_ids = db.session.scalars(sa.select(Lesson.id).where(
            Lesson.school_id == school_id, Lesson.start >= now,
            Lesson.start < now + timedelta(days=1))).all()
        cached_policy(gateway_id, school_id).token()  # the first compile after start
        for _ in range(ROUNDS):
            if write == "hour":  # each round from Monday morning again (a full, untimed read)
                clock.move_to(now)
                cached_policy(gateway_id, school_id).token()
            samples = []
            for _ in range(PER_ROUND):
                lesson = db.session.get(Lesson, rng.choice(lesson_ids))
                if write == "grant":
                    db.session.add(ExceptionGrant(
                        school_id=school_id, scope="lesson", lesson_id=lesson.id,
                        services=[rng.choice(sorted(SERVICES))], start=lesson.start,
                        end=lesson.end, reason="bench", granted_at=now))
                elif write == "lesson":
                    lesson.end = lesson.end + timedelta(minutes=rng.choice((-1, 1)))
                elif write == "import":
                    rooms = [room.id for room in lesson.rooms]
                    with changes.bulk_writes_for(db.session, school_id,
                                                 lesson_rooms_declared=True):
                        db.session.execute(sa.update(Lesson).where(Lesson.id == lesson.id)
                                           .values(end=lesson.end + timedelta(
                                               minutes=rng.choice((-1, 1)))))
                        changes.declare_lesson_rooms(db.session, school_id, rooms)
                elif write == "bulk":
                    db.session.execute(sa.update(Lesson).where(Lesson.id == lesson.id).values(
                        end=lesson.end + timedelta(minutes=rng.choice((-1, 1)))))
                else:
                    clock.shift(timedelta(hours=1))
                db.session.commit()
                started = time.perf_counter()
                signed = cached_policy(gateway_id, school_id)
                token = signed.token()
                samples.append(time.perf_counter() - started)
                db.session.remove()
            rounds.append(samples)
        return rounds, len(signed.policy.segments), len(token)


def test_bench_policy_from_the_database_sqlite_and_postgresql(
        tmp_path: Path, postgres_database: str | None) -> None:
    now = MONDAY + timedelta(minutes=5)
    results = {}
    for label, url in (("SQLite", None), ("PostgreSQL", postgres_database)):
        if label == "PostgreSQL" and url is None:
            print("\nPostgreSQL: not measured (no LESFOCUS_TEST_POSTGRES_URL in this run)")
            continue
        app = _served_app(tmp_path / label, url)
        started = time.perf_counter()
        gateway_id = fill_database(app, random.Random(7), SCHOOLS)
        written = time.perf_counter() - started
        if url:
            # What autovacuum does within a minute or so of a bulk load: without statistics the
            # planner takes the fresh tables for empty, and without the visibility map every
            # index-only scan visits the table too.
            vacuum_analyze(url)
        for write in WRITES:
            results[label, write] = (_rounds(app, gateway_id, now, write), written)
        from server.changes import feed_of
        feed_of(app).stop()
    print(f"\nload + compile + sign through the served policy cache, after a write each time; "
          f"board {SCHOOLS} schools, {SCHOOLS * ROOMS_PER_SCHOOL * PERIODS_PER_DAY * 5} "
          "lessons/week; target <= 50 ms p95 at 60 segments")
    for (label, write), ((rounds, segments, size), written) in results.items():
        everything = [s for r in rounds for s in r]
        after = WRITES[write]
        print(f"  {label:10s} {after:42s} ({segments} segments, {size / 1024:.0f} KiB; board "
              f"written in {written:.0f} s): {figures(everything)}")
        print(f"  {'':10s} p95 per round: "
              + ", ".join(f"{p95(r) * 1000:.1f}" for r in rounds) + " ms")


def test_bench_a_1000_segment_gateway_gets_its_policy_over_http(tmp_path: Path) -> None:
    """Not a speed figure only: the long poll's answer at 1,000 segments is read and verified."""
    from server.extensions import db
    from server.models import Gateway, Lesson, Room, School, Segment, SegmentCidr
    from server.models import lesson_rooms, segment_rooms
    from server.seed import seed_services
    app = _served_app(tmp_path / "http", None)
    client = app.test_client()
    agent_key = Ed25519PrivateKey.generate()
    with app.app_context():
        seed_services()
        school = db.session.scalar(sa.select(School)) or School(slug="s", name="S",
                                                                 timezone="Europe/Amsterdam")
        db.session.add(school)
        db.session.flush()
        from server.tokens import public_key_pem
        gateway = Gateway(id="gw-1000", school_id=school.id, name="gw-1000",
                          public_key_pem=public_key_pem(agent_key.public_key()),
                          enrolled_at=MONDAY, created_at=MONDAY)
        db.session.add(gateway)
        db.session.flush()
        conn = db.session.connection()
        now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
        for i, segment in enumerate(gateway_segments(1, 1000)):
            room_id = conn.execute(sa.insert(Room).values(school_id=school.id,
                                                          code=f"r{i}")).inserted_primary_key[0]
            segment_id = conn.execute(sa.insert(Segment).values(
                school_id=school.id, gateway_id=gateway.id,
                name=segment.name)).inserted_primary_key[0]
            conn.execute(sa.insert(SegmentCidr), [{"segment_id": segment_id, "cidr": c}
                                                  for c in segment.cidrs])
            conn.execute(sa.insert(segment_rooms), [{"segment_id": segment_id, "room_id": room_id}])
            first = conn.execute(sa.select(sa.func.coalesce(sa.func.max(Lesson.id), 0))).scalar()
            rows = [{"id": first + 1 + p, "school_id": school.id,
                     "start": now + timedelta(days=p // 10, minutes=(p % 10) * 50),
                     "end": now + timedelta(days=p // 10, minutes=(p % 10) * 50 + 45),
                     "subject": "les", "cancelled": False, "source": "bench",
                     "source_id": f"{i}-{p}", "updated_at": now} for p in range(50)]
            conn.execute(sa.insert(Lesson), rows)
            conn.execute(sa.insert(lesson_rooms), [{"lesson_id": r["id"], "room_id": room_id}
                                                   for r in rows])
        db.session.commit()
        keys = app.extensions["lesfocus.signing_key"].jwks()["keys"]
    import jwt as pyjwt
    issued = int(time.time())
    token = pyjwt.encode({"sub": "gw-1000", "aud": "http://localhost", "iat": issued,
                          "exp": issued + 120, "jti": uuid.uuid4().hex}, agent_key,
                         algorithm="EdDSA")
    started = time.perf_counter()
    response = client.get("/api/v1/gateways/self/policy?format=2",
                          headers={"Authorization": f"Bearer {token}"})
    served = time.perf_counter() - started
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    body = response.get_json()
    enrollment = Enrollment(server_url="http://localhost", gateway_id="gw-1000",
                            server_keys=tuple(keys))
    started = time.perf_counter()
    policy = verify_policy(body["policy"], enrollment)
    verified = time.perf_counter() - started
    assert len(policy.segments) == 1000
    print(f"\n1,000 segments over HTTP: answer {len(response.data) / 1024:.0f} KiB "
          f"(maximum {MAX_POLICY_BYTES // 1024} KiB), served (compile + sign, first time) in "
          f"{served * 1000:.0f} ms, verified + parsed by the agent in {verified * 1000:.0f} ms")
