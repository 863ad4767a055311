"""Timetable sources own their lessons: an import replaces exactly its source's lessons inside
the window the source declares (server/timetable/sources.py)."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select
from tests.support.timetable import AMSTERDAM, FIXTURES, Importer, local

from server.extensions import db
from server.models import AuditEvent, TimetableSource
from server.timetable import TimetableError
from server.timetable.common import parse_day
from server.timetable.sources import day_window

# Monday 2 November 2026 to Friday 6 November, one lesson a day at 08:30 in B204.
WEEK = [(2 + day, f"L{day}") for day in range(5)]


def _csv(rows: list[tuple[int, str]], room: str = "B204") -> str:
    lines = ["id,date,start,end,room"]
    lines += [f"{key},2026-11-{day:02d},08:30,09:20,{room}" for day, key in rows]
    return "\n".join(lines) + "\n"


def _ics(uids: list[tuple[str, int]], room: str) -> str:
    events = "".join(
        f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20261001T000000Z\r\n"
        f"DTSTART;TZID=Europe/Amsterdam:202611{day:02d}T083000\r\n"
        f"DTEND;TZID=Europe/Amsterdam:202611{day:02d}T092000\r\nSUMMARY:netl\r\n"
        f"LOCATION:{room}\r\nEND:VEVENT\r\n" for uid, day in uids)
    return f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\n{events}END:VCALENDAR\r\n"


def test_a_lesson_deleted_from_the_end_or_the_start_of_the_week_is_removed(
        importer: Importer) -> None:
    assert importer.run(_csv(WEEK), "week.csv").created == 5
    report = importer.run(_csv(WEEK[:4]), "week.csv")  # Friday deleted
    assert report.removed == 1
    report = importer.run(_csv(WEEK[1:4]), "week.csv")  # and now Monday
    assert report.removed == 1
    assert [l.source_id for l in importer.lessons()] == ["id:L1", "id:L2", "id:L3"]


def test_the_week_after_stays_when_a_file_speaks_for_one_week(importer: Importer) -> None:
    importer.run(_csv(WEEK + [(9, "next-monday")]), "weeks.csv")
    report = importer.run(_csv(WEEK), "weeks.csv")
    assert report.removed == 0
    assert "id:next-monday" in {l.source_id for l in importer.lessons()}


def test_two_ical_sources_do_not_remove_each_others_lessons(importer: Importer) -> None:
    importer.run(_ics([("a1@x", 2), ("shared@x", 3)], "B204"), "b204.ics", source="room-b204")
    importer.run(_ics([("c1@x", 2), ("shared@x", 3)], "C012"), "c012.ics", source="room-c012")
    report = importer.run(_ics([("a1@x", 2), ("shared@x", 3)], "B204"), "b204.ics",
                          source="room-b204")
    assert report.counts() == {"created": 0, "updated": 0, "cancelled": 0, "removed": 0,
                               "lessons": 2}
    stored = importer.lessons()
    assert sorted((l.source_id, l.rooms) for l in stored) == [
        ("a1@x", ("B204",)), ("c1@x", ("C012",)), ("shared@x", ("B204",)),
        ("shared@x", ("C012",))]
    # Deleting an event from one feed removes it from that source only.
    report = importer.run(_ics([("a1@x", 2)], "B204"), "b204.ics", source="room-b204")
    assert report.removed == 1
    assert sorted((l.source_id, l.rooms) for l in importer.lessons()) == [
        ("a1@x", ("B204",)), ("c1@x", ("C012",)), ("shared@x", ("C012",))]


def test_imports_create_file_sources_that_record_what_they_did(app: Flask,
                                                               importer: Importer) -> None:
    importer.run(_csv(WEEK), "week.csv")
    importer.run(_csv(WEEK[:2]), "other.csv", source="Afdeling-Havo")
    with app.app_context():
        sources = {s.name: s for s in db.session.scalars(select(TimetableSource))}
        assert sorted(sources) == ["afdeling-havo", "csv"]
        assert sources["csv"].kind == "file" and sources["csv"].format == "csv"
        assert sources["afdeling-havo"].last_report["counts"]["created"] == 2
        assert sources["afdeling-havo"].last_success_at is not None
        events = db.session.scalars(select(AuditEvent).where(
            AuditEvent.action == "timetable.import").order_by(AuditEvent.id)).all()
        assert [e.details["source"] for e in events] == ["csv", "afdeling-havo"]
        assert events[0].details["window"].startswith("2026-11-01T23:00:00+00:00")


@pytest.mark.parametrize(("name", "message"), [
    ("demo", "reserved"), ("manual", "reserved"), ("", "must be 1-32"), ("a" * 33, "must be 1-32"),
    ("two words", "must be 1-32"),
])
def test_bad_source_names_are_refused_and_change_nothing(importer: Importer, name: str,
                                                         message: str) -> None:
    before = importer.snapshot()
    with pytest.raises(TimetableError, match=message):
        importer.run(_csv(WEEK), "week.csv", source=name)
    assert importer.snapshot() == before


def test_files_cannot_go_into_a_synced_source(app: Flask, importer: Importer) -> None:
    with app.app_context():
        school_id = db.session.execute(db.text("SELECT id FROM schools")).scalar_one()
        db.session.add(TimetableSource(school_id=school_id, name="zermelo-live", kind="zermelo",
                                       address="https://school.zportal.nl", options={}))
        db.session.commit()
    with pytest.raises(TimetableError, match="is a zermelo source"):
        importer.run(_csv(WEEK), "week.csv", source="zermelo-live")


def test_an_explicit_window_replaces_it_and_leaves_out_lessons_outside(importer: Importer
                                                                       ) -> None:
    importer.run(_csv(WEEK), "week.csv")
    window = day_window(date(2026, 11, 4), date(2026, 11, 5), AMSTERDAM)  # Wednesday-Thursday
    report = importer.run(_csv([(2, "L0"), (4, "L2")]), "week.csv", window=window)
    # Thursday (L3) is removed; Monday's row lies outside and is neither imported nor a removal
    # reason; Tuesday and Friday, outside the window, stay.
    assert report.counts() == {"created": 0, "updated": 0, "cancelled": 0, "removed": 1,
                               "lessons": 1}
    assert report.outside == 1
    assert any("left out 1 event outside the window" in note for note in report.notes)
    assert [l.source_id for l in importer.lessons()] == ["id:L0", "id:L1", "id:L2", "id:L4"]


def test_a_file_whose_events_all_lie_outside_the_window_is_refused(importer: Importer) -> None:
    importer.run(_csv(WEEK), "week.csv")
    before = importer.snapshot()
    window = day_window(date(2027, 1, 4), date(2027, 1, 8), AMSTERDAM)
    with pytest.raises(TimetableError, match="all 5 events of the file lie outside the window"):
        importer.run(_csv(WEEK), "week.csv", window=window)
    # iCal: the feed's events all lie before the expansion window.
    with pytest.raises(TimetableError, match="all 2 events .* outside the window"):
        importer.run(_ics([("a@x", 2), ("b@x", 3)], "B204"), "old.ics",
                     window=(datetime(2027, 1, 1, tzinfo=timezone.utc),
                             datetime(2027, 3, 1, tzinfo=timezone.utc)))
    assert importer.snapshot() == before


def test_webuntis_range_in_params_options_is_the_window(importer: Importer) -> None:
    document = json.loads((FIXTURES / "untis-with-names.json").read_text())
    request = document["getTimetable"]["request"]
    params = request["params"]
    # The long form python-webuntis sends: the dates inside options, next to element.
    request["params"] = {"options": {"element": {"id": 1, "type": 1},
                                     "startDate": params["startDate"],
                                     "endDate": params["endDate"], "showBooking": True}}
    importer.run(json.dumps(document), "untis.json")
    periods = document["getTimetable"]["response"]["result"]
    document["getTimetable"]["response"]["result"] = [p for p in periods if p["id"] != 3]
    report = importer.run(json.dumps(document), "untis.json")
    assert report.removed == 1
    assert report.window == day_window(parse_day(str(params["startDate"])[:4] + "-"
                                                 + str(params["startDate"])[4:6] + "-"
                                                 + str(params["startDate"])[6:]),
                                       parse_day(str(params["endDate"])[:4] + "-"
                                                 + str(params["endDate"])[4:6] + "-"
                                                 + str(params["endDate"])[6:]), AMSTERDAM)


def _counts(stdout: str) -> dict[str, int]:
    return json.loads(stdout.strip().splitlines()[-1])


def test_cli_from_to_with_dutch_dates_and_source(app: Flask, importer: Importer,
                                                 tmp_path: Path) -> None:
    path = tmp_path / "week.csv"
    path.write_text(_csv(WEEK))
    runner = app.test_cli_runner()
    base = ["timetable", "import", str(path), "--school", "test", "--source", "havo"]
    first = runner.invoke(args=base)
    assert first.exit_code == 0, first.output
    path.write_text(_csv(WEEK[:1]))
    result = runner.invoke(args=base + ["--from", "2-11-2026", "--to", "03-11-2026"])
    assert result.exit_code == 0, result.output
    assert _counts(result.stdout)["removed"] == 1  # Tuesday only; Wednesday-Friday stay
    assert len(importer.lessons()) == 4
    outside = runner.invoke(args=base + ["--from", "2027-01-04", "--to", "2027-01-08"])
    assert outside.exit_code == 1
    assert "outside the window" in outside.output and "Traceback" not in outside.output
    assert len(importer.lessons()) == 4


@pytest.mark.parametrize(("args", "message"), [
    (["--from", "2026-11-02"], "give --from and --to together"),
    (["--from", "31-02-2026", "--to", "2026-11-03"], "not a valid date"),
    (["--from", "11/02/26", "--to", "2026-11-03"], "not a date"),
    (["--from", "2026-11-09", "--to", "2026-11-02"], "ends (2026-11-02) before it starts"),
])
def test_cli_refuses_bad_windows_in_words(app: Flask, importer: Importer, tmp_path: Path,
                                          args: list[str], message: str) -> None:
    path = tmp_path / "week.csv"
    path.write_text(_csv(WEEK))
    result = app.test_cli_runner().invoke(args=["timetable", "import", str(path), "--school",
                                                "test", *args])
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    assert importer.lessons() == []


def test_local_helper_is_school_time() -> None:
    assert local(2026, 11, 2, 8, 30) == datetime(2026, 11, 2, 7, 30, tzinfo=timezone.utc)


def test_cli_source_list_shows_each_source_without_credentials(app: Flask, importer: Importer
                                                               ) -> None:
    importer.run(_csv(WEEK), "week.csv", source="havo")
    with app.app_context():
        source = db.session.scalar(select(TimetableSource).where(TimetableSource.name == "havo"))
        source.credentials = b"sealed-token-bytes"
        db.session.commit()
    result = app.test_cli_runner().invoke(args=["timetable", "source", "list", "--school",
                                                "test"])
    assert result.exit_code == 0, result.output
    [line] = result.stdout.strip().splitlines()
    shown = json.loads(line)
    assert (shown["name"], shown["kind"], shown["format"], shown["address"]) == (
        "havo", "file", "csv", "week.csv")
    assert shown["last_counts"]["created"] == 5
    assert "sealed-token-bytes" not in result.output and "credentials" not in shown


def test_untis_periods_with_room_ids_only_are_refused_in_words(importer: Importer) -> None:
    periods = [{"id": 7, "date": 20261102, "startTime": 830, "endTime": 920,
                "ro": [{"id": 41}], "kl": [{"id": 2}], "su": [{"id": 4}]}]
    with pytest.raises(TimetableError, match=r"name their rooms by id only \(ids 41\)"):
        importer.run(json.dumps({"jsonrpc": "2.0", "id": "1", "result": periods}), "u.json")
    assert importer.lessons() == []
