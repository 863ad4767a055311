"""Model-based property test: any sequence of CSV versions gives the counts and the stored
lessons that the rules of SPEC §4 predict (idempotence, update, cancel, removal in the whole
weeks the file speaks for)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete
from tests.support.timetable import AMSTERDAM, Importer

from server.extensions import db
from server.models import Lesson

# A lesson version: (day offset, period, room, cancelled); the key is the CSV id.
LESSON = st.tuples(st.integers(0, 9), st.integers(0, 7), st.sampled_from(["B204", "C012", "2.14"]),
                   st.booleans())
VERSION = st.dictionaries(st.sampled_from([f"L{i}" for i in range(12)]), LESSON, min_size=1,
                          max_size=10)


def _times(day: int, period: int) -> tuple[datetime, datetime]:
    start = datetime.combine(date(2026, 11, 2) + timedelta(days=day),
                             time(8 + period, 30), tzinfo=AMSTERDAM)
    return start, start + timedelta(minutes=50)


def _csv(version: dict[str, tuple[int, int, str, bool]]) -> str:
    rows = ["id,date,start,end,room,cancelled"]
    for key, (day, period, room, cancelled) in version.items():
        start, end = _times(day, period)
        rows.append(f"{key},{start:%Y-%m-%d},{start:%H:%M},{end:%H:%M},{room},"
                    f"{'yes' if cancelled else ''}")
    return "\n".join(rows) + "\n"


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(versions=st.lists(VERSION, min_size=1, max_size=4))
def test_any_sequence_of_versions_matches_the_model(app: Flask, importer: Importer,
                                                    versions: list[dict]) -> None:
    with app.app_context():
        db.session.execute(delete(Lesson))
        db.session.commit()
    stored: dict[str, tuple[int, int, str, bool]] = {}
    for version in versions + [versions[-1]]:
        # A CSV file speaks for the whole weeks (Monday to Monday, school time) of its lessons.
        days = [date(2026, 11, 2) + timedelta(days=d) for d, _, _, _ in version.values()]
        first = min(days) - timedelta(days=min(days).weekday())
        last = max(days) + timedelta(days=7 - max(days).weekday())
        window = (datetime.combine(first, time(), tzinfo=AMSTERDAM),
                  datetime.combine(last, time(), tzinfo=AMSTERDAM))
        expected = {"created": 0, "updated": 0, "cancelled": 0, "removed": 0,
                    "lessons": sum(1 for v in version.values() if not v[3])}
        for key, new in version.items():
            old = stored.get(key)
            if old == new:
                continue
            if new[3] and (old is None or not old[3]):
                expected["cancelled"] += 1
            elif old is None:
                expected["created"] += 1
            else:
                expected["updated"] += 1
        for key, old in list(stored.items()):
            if key not in version and window[0] <= _times(old[0], old[1])[0] < window[1]:
                expected["removed"] += 1
                del stored[key]
        stored.update(version)

        report = importer.run(_csv(version), "model.csv")
        assert report.counts() == expected
        actual = {l.source_id: (l.start, l.rooms, l.cancelled) for l in importer.lessons("csv")}
        assert actual == {f"id:{key}": (_times(d, p)[0], (room,), cancelled)
                          for key, (d, p, room, cancelled) in stored.items()}
