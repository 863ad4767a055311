"""Real feeds are messy: one event that cannot be a lesson is skipped with a note naming it, and
the rest of the feed imports (issue 11, point 4). Nothing here ends in a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from tests.support.timetable import Importer, local

GOOD = ("BEGIN:VEVENT", "UID:good@test", "DTSTAMP:20260901T000000Z", "SUMMARY:netl - h4a - vdb",
        "DTSTART;TZID=Europe/Amsterdam:20261102T083000",
        "DTEND;TZID=Europe/Amsterdam:20261102T092000", "LOCATION:B204", "END:VEVENT")


def _ics(*lines: str) -> str:
    return "\r\n".join(("BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//lesfocus tests//EN", *GOOD,
                        *lines, "END:VCALENDAR")) + "\r\n"


def _event(uid: str, *lines: str) -> tuple[str, ...]:
    return ("BEGIN:VEVENT", f"UID:{uid}", "DTSTAMP:20260901T000000Z", *lines, "END:VEVENT")


TUESDAY = ("DTSTART;TZID=Europe/Amsterdam:20261103T083000",)
TUESDAY_END = ("DTEND;TZID=Europe/Amsterdam:20261103T092000",)

# (case, extra lines after the good event, the note expected, lessons stored besides the good one)
SKIPPED = [
    ("no end", _event("x@t", *TUESDAY), "skipped event UID x@t (line 13): the event has neither "
     "DTEND nor DURATION", 0),
    ("zero length", _event("x@t", *TUESDAY, "DTEND;TZID=Europe/Amsterdam:20261103T083000"),
     "skipped event UID x@t (line 13): DTEND", 0),
    ("two DTSTART", _event("x@t", *TUESDAY, "DTSTART:20261103T100000Z", *TUESDAY_END),
     "skipped event UID x@t (line 13): the event has 2 DTSTART lines", 0),
    ("broken DTSTART", _event("x@t", "DTSTART:2026110T083000", *TUESDAY_END),
     "skipped event UID x@t (line 13): DTSTART is broken", 0),
    ("interval zero", _event("x@t", *TUESDAY, *TUESDAY_END, "RRULE:FREQ=WEEKLY;INTERVAL=0"),
     "skipped event UID x@t (line 13): RRULE INTERVAL must be a positive number, not 0", 0),
    ("recurrence id of a time only", _event("x@t", "RECURRENCE-ID:T083000", *TUESDAY,
                                            *TUESDAY_END),
     "skipped event UID x@t (line 13): RECURRENCE-ID is broken", 0),
    ("until of a time only", _event("x@t", *TUESDAY, *TUESDAY_END,
                                    "RRULE:FREQ=WEEKLY;UNTIL=T083000"),
     "skipped event UID x@t (line 13): RRULE", 0),
    ("hourly rule", _event("x@t", *TUESDAY, *TUESDAY_END, "RRULE:FREQ=HOURLY"),
     "skipped event UID x@t (line 13): RRULE FREQ=HOURLY does not describe lessons", 0),
    ("no UID", ("BEGIN:VEVENT", "DTSTAMP:20260901T000000Z", *TUESDAY, *TUESDAY_END,
                "END:VEVENT"), "skipped event at line 12: the event has no UID", 0),
    ("over-long teacher", _event("x@t", *TUESDAY, *TUESDAY_END, "SUMMARY:netl - h4a - " + "t" * 40),
     "skipped event UID x@t (line 13): teacher name", 0),
    ("line without a property name", _event("x@t", *TUESDAY, *TUESDAY_END, "LOCATION:C012",
                                            "this line is garbage"),
     "line 18: 'this line is garbage' is not an iCalendar property line; ignored", 1),
    ("colon first", _event("x@t", *TUESDAY, *TUESDAY_END, ":no name"),
     "line 17: ':no name' is not an iCalendar property line; ignored", 1),
    ("address", _event("x@t", *TUESDAY, *TUESDAY_END,
                       "LOCATION:Berliner Allee 32\\, 40212 Düsseldorf"),
     "event UID x@t (line 13): LOCATION 'Berliner Allee 32, 40212 Düsseldorf' is an address, "
     "not a room; no room", 1),
    ("dutch address", _event("x@t", *TUESDAY, *TUESDAY_END, "LOCATION:Stationsplein 1 Utrecht"),
     "is an address, not a room", 1),
    ("teams link", _event("x@t", *TUESDAY, *TUESDAY_END,
                          "LOCATION:https://teams.microsoft.com/l/meetup-join/19%3ameeting_x"),
     "is a link, not a room; no room", 1),
    ("over-long location", _event("x@t", *TUESDAY, *TUESDAY_END, "LOCATION:" + "L" * 70),
     "is longer than a room code (64 characters); no room", 1),
]


@pytest.mark.parametrize(("lines", "note", "others"), [case[1:] for case in SKIPPED],
                         ids=[case[0] for case in SKIPPED])
def test_one_bad_event_is_named_and_the_rest_imports(importer: Importer, lines: tuple[str, ...],
                                                     note: str, others: int) -> None:
    report = importer.run(_ics(*lines), "feed.ics")
    assert any(n.startswith(note) or note in n for n in report.notes), report.notes
    stored = importer.lessons()
    assert [l.source_id for l in stored][:1] == ["good@test"]
    assert stored[0].rooms == ("B204",) and stored[0].start == local(2026, 11, 2, 8, 30)
    assert len(stored) == 1 + others
    if others:
        assert stored[1].rooms in ((), ("C012",))


SERIES = _event("s@t", "DTSTART;TZID=Europe/Amsterdam:20261109T083000",
                "DTEND;TZID=Europe/Amsterdam:20261109T092000", "RRULE:FREQ=WEEKLY;COUNT=4",
                "LOCATION:B204")


def test_this_and_future_override_moves_the_later_instances_each_with_its_own_id(
        importer: Importer) -> None:
    override = _event("s@t", "RECURRENCE-ID;RANGE=THISANDFUTURE;TZID=Europe/Amsterdam:"
                      "20261116T083000", "DTSTART;TZID=Europe/Amsterdam:20261116T100000",
                      "DTEND;TZID=Europe/Amsterdam:20261116T105000", "LOCATION:C012")
    importer.run(_ics(*SERIES, *override), "feed.ics")
    series = [l for l in importer.lessons() if l.source_id.startswith("s@t/")]
    assert [(l.source_id, l.start, l.rooms) for l in series] == [
        ("s@t/20261109T073000Z", local(2026, 11, 9, 8, 30), ("B204",)),
        ("s@t/20261116T073000Z", local(2026, 11, 16, 10, 0), ("C012",)),
        ("s@t/20261123T073000Z", local(2026, 11, 23, 10, 0), ("C012",)),
        ("s@t/20261130T073000Z", local(2026, 11, 30, 10, 0), ("C012",)),
    ]
    # Importing it again changes nothing (the ids are stable).
    assert importer.run(_ics(*SERIES, *override), "feed.ics").counts()["updated"] == 0


def test_a_lesson_moved_to_an_all_day_event_no_longer_blocks_at_its_old_hour(
        importer: Importer) -> None:
    importer.run(_ics(*SERIES), "feed.ics")
    moved = _event("s@t", "RECURRENCE-ID;TZID=Europe/Amsterdam:20261116T083000",
                   "DTSTART;VALUE=DATE:20261116", "DTEND;VALUE=DATE:20261117",
                   "SUMMARY:excursie")
    report = importer.run(_ics(*SERIES, *moved), "feed.ics")
    assert report.removed == 1
    assert any("moved to an all-day event" in note for note in report.notes)
    starts = [l.start for l in importer.lessons() if l.source_id.startswith("s@t/")]
    assert local(2026, 11, 16, 8, 30) not in starts and len(starts) == 3


def test_a_feed_of_only_bad_events_is_refused_with_the_first_reason(importer: Importer) -> None:
    text = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n" + "\r\n".join(_event("x@t", *TUESDAY))
            + "\r\nEND:VCALENDAR\r\n")
    before = importer.snapshot()
    with pytest.raises(Exception, match="no event of the feed can be a lesson: event UID x@t"):
        importer.run(text, "feed.ics")
    assert importer.snapshot() == before


def test_cli_imports_a_messy_feed_without_a_traceback(app: Flask, importer: Importer,
                                                      tmp_path: Path) -> None:
    path = tmp_path / "feed.ics"
    path.write_text(_ics(*_event("x@t", *TUESDAY), *_event("y@t", *TUESDAY, "DTSTART:2026",
                                                           *TUESDAY_END),
                         *_event("z@t", *TUESDAY, *TUESDAY_END, "garbage")))
    result = app.test_cli_runner().invoke(args=["timetable", "import", str(path), "--school",
                                                "test", "--from", "2026-11-02", "--to",
                                                "2026-11-08"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "skipped event UID x@t" in result.stderr and "skipped event UID y@t" in result.stderr
    assert [l.source_id for l in importer.lessons()] == ["good@test", "z@t"]


@pytest.mark.parametrize(("day", "start", "end"), [
    ("2026-11-03", "08:30", "09:20"),
    ("3-11-2026", "8:30", "9:20"),
    ("03-11-2026", "08:30", "09:20"),
    ("03-11-2026 00:00", "08:30", "09:20"),
    ("03/11/2026", "03-11-2026 08:30", "03-11-2026 09:20"),
    ("3.11.2026", "08.30", "09.20"),
])
def test_csv_reads_dutch_excel_dates(importer: Importer, day: str, start: str, end: str) -> None:
    importer.run(f"datum;begin;eind;lokaal\n{day};{start};{end};B204\n", "excel.csv")
    [lesson] = importer.lessons()
    assert (lesson.start, lesson.end) == (local(2026, 11, 3, 8, 30), local(2026, 11, 3, 9, 20))
