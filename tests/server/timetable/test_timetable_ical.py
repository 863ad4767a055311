"""iCalendar import: the sample feed, time zones, who/where conventions, re-import semantics."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.support.timetable import AUTUMN_2026, FIXTURES, Importer, local


def test_sample_feed_imports_expanded_lessons_with_moves_and_cancellations(
        importer: Importer) -> None:
    report = importer.fixture("school-timetable.ics")
    # netl: 12 Mondays 7 Sep..30 Nov minus the EXDATE of 19 Oct = 12 (one of them cancelled);
    # biol: COUNT=8; toets: 1. All-day study day ignored.
    assert report.counts() == {"created": 20, "updated": 0, "cancelled": 1, "removed": 0,
                               "lessons": 20}
    assert "ignored 1 all-day event" in report.notes
    assert {"created room B204", "created room C012", "created group h4a", "created teacher vdb"} \
        <= set(report.notes)
    lessons = {l.source_id: l for l in importer.lessons("ical")}
    uid = "h4a-netl-ma-u1@voorbeeldcollege.example"
    moved = lessons[f"{uid}/20260921T063000Z"]  # keyed by its RECURRENCE-ID, not its new start
    assert (moved.start, moved.end, moved.rooms) == (local(2026, 9, 21, 9, 20),
                                                      local(2026, 9, 21, 10, 10), ("C012",))
    assert lessons[f"{uid}/20260928T063000Z"].cancelled
    assert f"{uid}/20261019T063000Z" not in lessons  # EXDATE (autumn holiday)
    after_dst = lessons[f"{uid}/20261102T073000Z"]
    assert after_dst.start == local(2026, 11, 2, 8, 30)  # still 08:30 local after 25 October
    first = lessons[f"{uid}/20260907T063000Z"]
    assert (first.subject, first.groups, first.teachers) == ("netl", ("h4a",), ("vdb",))
    exam = lessons["toets-entl-h4-20261001@voorbeeldcollege.example"]  # single event: UID alone
    assert (exam.subject, exam.groups) == ("Toets entl", ("h4a", "h4b"))


def test_importing_the_same_feed_twice_changes_nothing(importer: Importer) -> None:
    importer.fixture("school-timetable.ics")
    before = importer.lessons()
    second = importer.fixture("school-timetable.ics")
    assert second.counts() == {"created": 0, "updated": 0, "cancelled": 0, "removed": 0,
                               "lessons": 20}
    assert importer.lessons() == before


def test_floating_times_are_school_time(importer: Importer) -> None:
    importer.fixture("floating.ics")
    starts = [l.start for l in importer.lessons()]
    # 26 October 2026 is the first day of winter time: 08:30 local = 07:30 UTC.
    assert starts == [local(2026, 10, 26, 8, 30), local(2026, 10, 27, 8, 30),
                      local(2026, 10, 28, 8, 30)]
    assert starts[0] == datetime(2026, 10, 26, 7, 30, tzinfo=timezone.utc)


def test_utc_series_follow_x_wr_timezone_across_the_dst_change(importer: Importer) -> None:
    importer.fixture("utc-with-x-wr-timezone.ics")
    starts = [l.start for l in importer.lessons()]
    # 06:30Z is 08:30 in summer time; the series keeps 08:30 local after the change.
    assert starts == [local(2026, 10, 19, 8, 30), local(2026, 10, 26, 8, 30),
                      local(2026, 11, 2, 8, 30)]


def test_description_lines_and_attendees_name_groups_teachers_and_rooms(importer: Importer) -> None:
    report = importer.fixture("description-convention.ics")
    lessons = {l.source_id.split("/")[0]: l for l in importer.lessons()}
    project = lessons["described-1@test"]
    assert project.rooms == ("B204", "B205", "C-aula")
    assert project.groups == ("3havo-a", "3havo-b")
    assert project.teachers == ("JANS", "PIE")
    assert project.subject == "wisk/nat"
    mentor = lessons["attendees-1@test"]
    assert (mentor.rooms, mentor.groups, mentor.teachers) == (("1.05",), ("1gym-c",), ("BAK",))
    assert mentor.end - mentor.start == timedelta(minutes=50)
    # A student listed as attendee is not made a teacher.
    assert "created teacher Leerling Een" not in report.notes
    assert any("unknown TZID 'Mars/Olympus_Mons'" in note for note in report.notes)
    assert lessons["mars-zone@test"].start == local(2026, 11, 6, 8, 30)


def test_a_cancelled_series_imports_every_instance_as_cancelled(importer: Importer) -> None:
    report = importer.fixture("description-convention.ics")
    series = [l for l in importer.lessons() if l.source_id.startswith("cancelled-series@test/")]
    assert len(series) == 2 and all(l.cancelled for l in series)
    assert report.cancelled == 2
    assert report.lessons == 3


def _feed(*events: str) -> str:
    body = "".join(events)
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//lesfocus tests//EN\r\n" + body
            + "END:VCALENDAR\r\n")


def _event(uid: str, start: str, end: str, *extra: str, location: str = "B204",
           summary: str = "netl - h4a - vdb") -> str:
    lines = ["BEGIN:VEVENT", f"UID:{uid}", "DTSTAMP:20260901T000000Z", f"SUMMARY:{summary}",
             f"LOCATION:{location}", f"DTSTART;TZID=Europe/Amsterdam:{start}",
             f"DTEND;TZID=Europe/Amsterdam:{end}", *extra, "END:VEVENT"]
    return "\r\n".join(lines) + "\r\n"


def test_changed_feed_updates_moves_cancels_and_removes_vanished_lessons(
        importer: Importer) -> None:
    weekly = "RRULE:FREQ=WEEKLY;COUNT=4"
    first = _feed(_event("a@t", "20261102T083000", "20261102T092000", weekly),
                  _event("b@t", "20261103T083000", "20261103T092000"),
                  _event("c@t", "20261104T083000", "20261104T092000"))
    assert importer.run(first, "feed.ics").counts() == {
        "created": 6, "updated": 0, "cancelled": 0, "removed": 0, "lessons": 6}
    second = _feed(
        _event("a@t", "20261102T083000", "20261102T092000", weekly),
        # the second instance moves to room C012, the third is cancelled
        _event("a@t", "20261109T083000", "20261109T092000", "RECURRENCE-ID;TZID=Europe/"
               "Amsterdam:20261109T083000", location="C012"),
        _event("a@t", "20261116T083000", "20261116T092000", "RECURRENCE-ID;TZID=Europe/"
               "Amsterdam:20261116T083000", "STATUS:CANCELLED"),
        # b moves an hour later; c vanishes
        _event("b@t", "20261103T093000", "20261103T102000"))
    report = importer.run(second, "feed.ics")
    assert report.counts() == {"created": 0, "updated": 2, "cancelled": 1, "removed": 1,
                               "lessons": 4}
    stored = {l.source_id: l for l in importer.lessons()}
    assert "c@t" not in stored
    assert stored["a@t/20261109T073000Z"].rooms == ("C012",)
    assert stored["a@t/20261116T073000Z"].cancelled
    assert stored["b@t"].start == local(2026, 11, 3, 9, 30)
    assert importer.run(second, "feed.ics").counts()["updated"] == 0


def test_lessons_outside_the_window_are_kept(importer: Importer) -> None:
    feed = _feed(_event("early@t", "20260907T083000", "20260907T092000"),
                 _event("late@t", "20261207T083000", "20261207T092000"))
    importer.run(feed, "feed.ics")
    november = (datetime(2026, 11, 1, tzinfo=timezone.utc),
                datetime(2026, 12, 1, tzinfo=timezone.utc))
    report = importer.run(_feed(_event("nov@t", "20261109T083000", "20261109T092000")), "feed.ics",
                          window=november)
    assert report.counts() == {"created": 1, "updated": 0, "cancelled": 0, "removed": 0,
                               "lessons": 1}
    assert [l.source_id for l in importer.lessons()] == ["early@t", "nov@t", "late@t"]


def test_default_window_runs_from_a_week_ago_to_eight_weeks_ahead(importer: Importer) -> None:
    daily = "RRULE:FREQ=DAILY;COUNT=200"
    feed = _feed(_event("daily@t", "20260901T083000", "20260901T092000", daily))
    now = datetime(2026, 11, 2, 12, 0, tzinfo=timezone.utc)
    importer.run(feed, "feed.ics", window=None, now=now)
    starts = [l.start for l in importer.lessons()]
    assert starts[0] == local(2026, 10, 27, 8, 30)  # 26 Oct 08:30 ended before now - 7 days
    assert starts[-1] == local(2026, 12, 28, 8, 30)  # the last start before now + 8 weeks
    assert len(starts) == 63


@pytest.mark.parametrize(("location", "rooms"), [
    ("B204", ("B204",)),
    ("B204, B205", ("B204", "B205")),
    ("B204;B205 ; ", ("B204", "B205")),
    ("  ", ()),
    ("2.14,2.14", ("2.14",)),
])
def test_location_is_split_into_rooms(importer: Importer, location: str, rooms: tuple[str, ...]
                                      ) -> None:
    importer.run(_feed(_event("x@t", "20261102T083000", "20261102T092000",
                              location=location.replace(",", "\\,").replace(";", "\\;"))),
                 "feed.ics")
    assert importer.lessons()[0].rooms == rooms


@pytest.mark.parametrize(("summary", "subject", "groups", "teachers"), [
    ("netl - h4a - vdb", "netl", ("h4a",), ("vdb",)),
    ("biol - h4.biol1 - pie (blokuur)", "biol", ("h4.biol1",), ("pie",)),
    ("Toets entl - h4a\\, h4b", "Toets entl", ("h4a", "h4b"), ()),
    ("Mentoruur", "Mentoruur", (), ()),
    ("wisk - 3havo-b - JANS\\, KOK", "wisk", ("3havo-b",), ("JANS", "KOK")),
])
def test_summary_convention_gives_subject_groups_and_teachers(
        importer: Importer, summary: str, subject: str, groups: tuple[str, ...],
        teachers: tuple[str, ...]) -> None:
    importer.run(_feed(_event("s@t", "20261102T083000", "20261102T092000", summary=summary)),
                 "feed.ics")
    lesson = importer.lessons()[0]
    assert (lesson.subject, lesson.groups, lesson.teachers) == \
        (subject, groups, tuple(sorted(teachers)))


def test_fixture_window_constant_covers_the_sample() -> None:
    text = (FIXTURES / "school-timetable.ics").read_text()
    assert "20260907" in text and AUTUMN_2026[0].month == 9


def test_an_endless_rule_is_expanded_only_inside_the_window(importer: Importer) -> None:
    report = importer.run(_feed(_event("forever@t", "20200106T083000", "20200106T092000",
                                       "RRULE:FREQ=WEEKLY")), "feed.ics")
    starts = [l.start for l in importer.lessons()]
    assert report.lessons == len(starts) == 17  # the Mondays of 1 Sep .. 31 Dec 2026
    assert AUTUMN_2026[0] <= starts[0] and starts[-1] < AUTUMN_2026[1]


def test_lf_line_endings_and_folded_lines_are_read(importer: Importer) -> None:
    feed = ("BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//x//EN\nBEGIN:VEVENT\n"
            "UID:a-very-long-uid-that-an-exporter-folded-over-two-lines@roosters.school.exa\n"
            " mple\nDTSTAMP:20260901T000000Z\nSUMMARY:netl - h4a\n  - vdb\n"
            "LOCATION:B204\nDTSTART;TZID=Europe/Amsterdam:20261102T083000\n"
            "DTEND;TZID=Europe/Amsterdam:20261102T092000\nEND:VEVENT\nEND:VCALENDAR\n")
    importer.run(feed, "feed.ics")
    lesson = importer.lessons()[0]
    assert lesson.source_id.endswith("@roosters.school.example")
    assert (lesson.groups, lesson.teachers) == (("h4a",), ("vdb",))


def test_outlook_windows_zone_names_are_understood(importer: Importer) -> None:
    report = importer.run(_feed(
        "BEGIN:VEVENT\r\nUID:outlook@t\r\nDTSTAMP:20260901T000000Z\r\nSUMMARY:netl\r\n"
        "LOCATION:B204\r\nDTSTART;TZID=W. Europe Standard Time:20261102T083000\r\n"
        "DTEND;TZID=W. Europe Standard Time:20261102T092000\r\nEND:VEVENT\r\n"), "feed.ics")
    assert importer.lessons()[0].start == local(2026, 11, 2, 8, 30)
    assert report.created == 1


def test_local_until_with_a_zoned_start_is_accepted(importer: Importer) -> None:
    # RFC 5545 wants UNTIL in UTC here; exporters often write local time. Both mean "up to".
    importer.run(_feed(_event("u@t", "20261102T083000", "20261102T092000",
                              "RRULE:FREQ=WEEKLY;UNTIL=20261116T083000")), "feed.ics")
    assert len(importer.lessons()) == 3


def test_same_feed_imports_the_same_in_both_directions_of_dst(importer: Importer) -> None:
    weekly = "RRULE:FREQ=WEEKLY;COUNT=3"
    importer.run(_feed(_event("spring@t", "20270322T083000", "20270322T092000", weekly)),
                 "feed.ics", window=(datetime(2027, 3, 1, tzinfo=timezone.utc),
                                     datetime(2027, 5, 1, tzinfo=timezone.utc)))
    assert [l.start for l in importer.lessons()] == [
        local(2027, 3, 22, 8, 30), local(2027, 3, 29, 8, 30), local(2027, 4, 5, 8, 30)]


def test_feeds_put_one_after_another_are_imported_together(importer: Importer) -> None:
    joined = ((FIXTURES / "floating.ics").read_text()
              + (FIXTURES / "utc-with-x-wr-timezone.ics").read_text())
    report = importer.run(joined, "joined.ics")
    assert report.created == 6
    assert "joined 2 calendars found one after another in the file" in report.notes
    starts = {l.source_id: l.start for l in importer.lessons()}
    assert starts["utc-weekly@test/20261026T073000Z"] == local(2026, 10, 26, 8, 30)
    assert starts["floating-1@test/20261026T073000Z"] == local(2026, 10, 26, 8, 30)
