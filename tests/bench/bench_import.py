"""Benchmark: first import of a school-wide iCal feed into SQLite and PostgreSQL, and the memory
an import of a large feed needs.

Targets (issue 11, SPEC §5): >= 10,000 lessons/s for the whole first import (parse, expand,
write, commit) on both databases; at most 250 MB for a 400,000-lesson file.

- `test_bench_first_import_both_databases`: ROUNDS rounds; each round imports the feed into a
  fresh database of each kind (alternating, so the neighbours' load falls on both alike), then
  re-imports it unchanged. Prints min/median/max of lessons/s (wall and CPU) per database.
- `test_bench_import_memory`: the peak resident memory of a separate process that imports a
  MEMORY_LESSONS feed (its own process, so the peak is the import's and nothing else's), minus
  what the process held before the import, per database.

Sizes: LESFOCUS_BENCH_IMPORT_LESSONS (default 100,000) and LESFOCUS_BENCH_IMPORT_MEMORY_LESSONS
(default 400,000); smaller values give a quick run on a loaded machine.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import make_url

from server.app import create_app
from server.extensions import db
from server.models import Lesson, School
from server.timetable import import_timetable_bytes
from tests.support.schools import seed_school

WEEKS = 40
ROUNDS = 3
LESSONS = int(os.environ.get("LESFOCUS_BENCH_IMPORT_LESSONS", "100000"))
MEMORY_LESSONS = int(os.environ.get("LESFOCUS_BENCH_IMPORT_MEMORY_LESSONS", "400000"))
WINDOW = (datetime(2026, 8, 1, tzinfo=timezone.utc), datetime(2027, 8, 1, tzinfo=timezone.utc))
KINDS = ("sqlite", "postgresql")


def build_feed(lessons: int = LESSONS, weeks: int = WEEKS) -> bytes:
    """A school-wide feed of weekly series over 300 rooms, 80 groups, 120 teachers."""
    events = max(1, lessons // weeks)
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//lesfocus//bench//EN",
             "X-WR-TIMEZONE:Europe/Amsterdam"]
    monday = date(2026, 8, 31)
    for i in range(events):
        day = monday + timedelta(days=i % 5)
        hour = 8 + (i // 5) % 9
        lines += [
            "BEGIN:VEVENT", f"UID:bench-{i}@lesfocus.test", "DTSTAMP:20260801T000000Z",
            f"SUMMARY:vak{i % 17} - g{i % 80} - T{i % 120}", f"LOCATION:R{i % 300}",
            f"DTSTART;TZID=Europe/Amsterdam:{day:%Y%m%d}T{hour:02d}0000",
            f"DTEND;TZID=Europe/Amsterdam:{day:%Y%m%d}T{hour:02d}5000",
            f"RRULE:FREQ=WEEKLY;COUNT={weeks}", "END:VEVENT",
        ]
    lines.append("END:VCALENDAR")
    return ("\r\n".join(lines) + "\r\n").encode()


@contextmanager
def fresh_database(kind: str, request: pytest.FixtureRequest, folder: Path) -> Iterator[str]:
    """The URL of a new, migrated, empty database of `kind` (dropped afterwards)."""
    if kind == "sqlite":
        path = folder / f"bench-{uuid.uuid4().hex[:8]}.sqlite3"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        path.unlink(missing_ok=True)
        return
    template = request.getfixturevalue("postgres_template")
    base = os.environ["LESFOCUS_TEST_POSTGRES_URL"]
    name = "bench_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template}" '
                             'STRATEGY FILE_COPY'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def seeded_app(url: str, folder: Path) -> Flask:
    """An app on `url` with the catalog and school `test` (as the shipped CLI would see it)."""
    app = create_app({"INSTANCE_PATH": str(folder / f"instance-{uuid.uuid4().hex[:8]}"),
                      "DATABASE_URL": url, "SECRET_KEY": "bench", "TESTING": True})
    with app.app_context():
        seed_school("test", "Testcollege")
        db.session.commit()
    return app


def _import(app: Flask, feed: bytes) -> tuple[int, float, float, dict[str, int]]:
    with app.app_context():
        school = db.session.scalar(db.select(School).where(School.slug == "test"))
        started, cpu = time.perf_counter(), time.process_time()
        report = import_timetable_bytes(school, feed, "bench.ics", None, actor="bench",
                                        window=WINDOW)
        db.session.commit()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        return report.lessons, seconds, cpu, report.counts()


def _spread(values: list[float]) -> str:
    return (f"min {min(values):,.0f} / median {statistics.median(values):,.0f} / "
            f"max {max(values):,.0f}")


def test_bench_first_import_both_databases(request: pytest.FixtureRequest,
                                           tmp_path: Path) -> None:
    """First import and unchanged re-import, ROUNDS rounds, SQLite and PostgreSQL side by side."""
    if not os.environ.get("LESFOCUS_TEST_POSTGRES_URL"):
        pytest.fail("this benchmark compares both databases: set LESFOCUS_TEST_POSTGRES_URL")
    feed = build_feed()
    expected = max(1, LESSONS // WEEKS) * WEEKS
    figures: dict[tuple[str, str], list[float]] = {}
    for round_number in range(1, ROUNDS + 1):
        for kind in KINDS if round_number % 2 else tuple(reversed(KINDS)):
            with fresh_database(kind, request, tmp_path) as url:
                app = seeded_app(url, tmp_path)
                try:
                    for run in ("first import", "re-import"):
                        lessons, seconds, cpu, counts = _import(app, feed)
                        assert lessons == expected
                        if run == "first import":
                            assert counts["created"] == expected
                        else:
                            assert counts["created"] == counts["removed"] == 0
                        figures.setdefault((kind, run), []).append(lessons / seconds)
                        figures.setdefault((kind, run + " CPU"), []).append(lessons / cpu)
                        print(f"\nround {round_number} [{kind}] {run}: {lessons} lessons in "
                              f"{seconds:.2f} s (CPU {cpu:.2f} s)")
                    with app.app_context():
                        assert db.session.scalar(db.select(db.func.count(Lesson.id))) == expected
                finally:
                    with app.app_context():
                        db.session.remove()
                        db.engine.dispose()
    print(f"\n{expected:,} lessons, {ROUNDS} rounds, lessons/s (wall, then per CPU second):")
    for kind in KINDS:
        for run in ("first import", "re-import"):
            print(f"  {kind:10} {run:12}  wall {_spread(figures[(kind, run)])}   "
                  f"CPU {_spread(figures[(kind, run + ' CPU')])}")


_MEMORY_PROBE = r"""
import json, resource, sys
from datetime import datetime, timezone
from pathlib import Path
from server.app import create_app
from server.extensions import db
from server.models import School
from server.timetable import import_timetable

url, feed, instance = sys.argv[1:4]
app = create_app({"INSTANCE_PATH": instance, "DATABASE_URL": url, "SECRET_KEY": "bench",
                  "TESTING": True})
window = (datetime(2026, 8, 1, tzinfo=timezone.utc), datetime(2027, 8, 1, tzinfo=timezone.utc))
with app.app_context():
    school = db.session.scalar(db.select(School).where(School.slug == "test"))
    # What the process holds now (not its high-water mark, which start-up may have set).
    before = int(next(line.split()[1] for line in open("/proc/self/status")
                      if line.startswith("VmRSS:")))
    report = import_timetable(school, Path(feed), None, actor="bench", window=window)
    db.session.commit()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"lessons": report.lessons, "before_kib": before, "peak_kib": peak}))
"""


def test_bench_import_memory(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Peak memory of one import of MEMORY_LESSONS lessons, in a process of its own."""
    feed = tmp_path / "memory.ics"
    feed.write_bytes(build_feed(MEMORY_LESSONS))
    kinds = KINDS if os.environ.get("LESFOCUS_TEST_POSTGRES_URL") else ("sqlite",)
    for kind in kinds:
        with fresh_database(kind, request, tmp_path) as url:
            app = seeded_app(url, tmp_path)
            with app.app_context():
                db.engine.dispose()
            started = time.perf_counter()
            probe = subprocess.run(
                [sys.executable, "-c", _MEMORY_PROBE, url, str(feed), str(tmp_path / "probe")],
                capture_output=True, text=True, timeout=1800,
                cwd=Path(__file__).resolve().parents[2])
            assert probe.returncode == 0, probe.stderr[-2000:]
            result = json.loads(probe.stdout.strip().splitlines()[-1])
            grown = (result["peak_kib"] - result["before_kib"]) / 1024
            print(f"\n[{kind}] {result['lessons']:,} lessons from a "
                  f"{feed.stat().st_size / 1e6:.1f} MB feed in {time.perf_counter() - started:.0f} "
                  f"s: process peak {result['peak_kib'] / 1024:.0f} MiB; before the import it held "
                  f"{result['before_kib'] / 1024:.0f} MiB, so the import added up to {grown:.0f} "
                  f"MiB ({grown * 1024 * 1024 / max(1, result['lessons']):,.0f} bytes per lesson)")
