"""Zermelo, WebUntis and CSV imports; name matching; format detection."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from flask import Flask
from sqlalchemy import func, select
from tests.support.timetable import FIXTURES, Importer, local

from server.extensions import db
from server.models import AuditEvent, Person, Room, School
from server.timetable import TimetableError, detect_format


def test_zermelo_sample_imports_only_valid_versions(importer: Importer) -> None:
    report = importer.fixture("zermelo-appointments.json")
    assert report.counts() == {"created": 4, "updated": 0, "cancelled": 1, "removed": 0,
                               "lessons": 4}
    assert "ignored 2 superseded appointment versions (valid: false)" in report.notes
    lessons = {l.source_id: l for l in importer.lessons("zermelo")}
    assert lessons["5002"].cancelled
    assert lessons["5004"].rooms == ("C012",)  # the valid version, not the superseded C013
    assert lessons["5001"].start == datetime.fromtimestamp(1789367400, tz=timezone.utc)
    assert lessons["5006"].teachers == ("kok", "vdb") and lessons["5006"].groups == ("h4a", "h4b")
    assert importer.fixture("zermelo-appointments.json").counts()["created"] == 0


def _zermelo(*records: dict) -> str:
    return json.dumps({"response": {"status": 200, "data": list(records)}})


def _appointment(instance: int, start: int, **fields: object) -> dict:
    record = {"id": instance * 10, "appointmentInstance": instance, "start": start,
              "end": start + 3000, "locations": ["B204"], "groups": ["h4a"], "teachers": ["vdb"],
              "subjects": ["netl"], "valid": True, "cancelled": False}
    record.update(fields)
    return record


def test_zermelo_changes_update_cancel_and_remove(importer: Importer) -> None:
    base = 1793000000
    importer.run(_zermelo(_appointment(1, base), _appointment(2, base + 3600),
                          _appointment(3, base + 7200)), "a.json")
    report = importer.run(_zermelo(_appointment(1, base + 600), _appointment(2, base + 3600,
                                                                             cancelled=True)),
                          "a.json")
    # The file speaks for the whole week of its lessons: appointment 3, the last one of the
    # first file, was deleted in Zermelo and is removed (it used to stay and block).
    assert report.counts() == {"created": 0, "updated": 1, "cancelled": 1, "removed": 1,
                               "lessons": 1}
    report = importer.run(_zermelo(_appointment(1, base + 600), _appointment(4, base + 9000)),
                          "a.json")
    assert report.counts() == {"created": 1, "updated": 0, "cancelled": 0, "removed": 1,
                               "lessons": 2}
    assert [l.source_id for l in importer.lessons()] == ["1", "4"]


def test_zermelo_later_version_of_an_instance_wins(importer: Importer) -> None:
    base = 1793000000
    report = importer.run(_zermelo(_appointment(1, base), _appointment(1, base,
                                                                       locations=["C012"])),
                          "z.json")
    assert importer.lessons()[0].rooms == ("C012",)
    assert any("record 2" in note and "replaces record 1" in note for note in report.notes)


def test_untis_names_come_from_the_lookup_calls(importer: Importer) -> None:
    report = importer.fixture("untis-with-names.json")
    assert report.counts() == {"created": 2, "updated": 0, "cancelled": 1, "removed": 0,
                               "lessons": 2}
    lessons = {l.source_id: l for l in importer.lessons("untis")}
    assert lessons["1"].start == local(2026, 11, 2, 8, 30)
    assert (lessons["1"].rooms, lessons["1"].groups, lessons["1"].teachers,
            lessons["1"].subject) == (("B204",), ("h4a",), ("VDB",), "netl")
    assert lessons["2"].cancelled and lessons["2"].groups == ("h4a", "h4b")
    assert lessons["3"].teachers == ("PIE",)  # the substitute, not the original (orgid)
    assert "4" not in lessons  # break supervision is not a lesson
    assert any("not lessons" in note for note in report.notes)


def test_untis_sample_notes_elements_it_cannot_name(importer: Importer) -> None:
    report = importer.fixture("webuntis-jsonrpc.json")
    assert report.lessons == 3
    assert any("'ro'" in note and "40" in note for note in report.notes)


def test_untis_declared_range_removes_vanished_periods(importer: Importer) -> None:
    importer.fixture("untis-with-names.json")
    document = json.loads((FIXTURES / "untis-with-names.json").read_text())
    periods = document["getTimetable"]["response"]["result"]
    document["getTimetable"]["response"]["result"] = [p for p in periods if p["id"] != 3]
    report = importer.run(json.dumps(document), "untis.json")
    assert report.removed == 1
    assert sorted(l.source_id for l in importer.lessons()) == ["1", "2"]


@pytest.mark.parametrize("shape", ["bare list", "json-rpc response", "list of responses"])
def test_untis_accepts_plain_result_shapes(importer: Importer, shape: str) -> None:
    periods = [{"id": 7, "date": 20261102, "startTime": 830, "endTime": 920,
                "ro": [{"id": 1, "name": "B204"}], "kl": [{"id": 2, "name": "h4a"}],
                "te": [{"id": 3, "name": "VDB"}], "su": [{"id": 4, "name": "netl"}]}]
    document: object = {"bare list": periods,
                        "json-rpc response": {"jsonrpc": "2.0", "id": "1", "result": periods},
                        "list of responses": [{"jsonrpc": "2.0", "id": "1", "result": periods}],
                        }[shape]
    report = importer.run(json.dumps(document), "timetable.json")
    assert report.created == 1
    assert importer.lessons()[0].rooms == ("B204",)


def test_csv_imports_rows_with_several_rooms_groups_and_teachers(importer: Importer) -> None:
    report = importer.fixture("lessons.csv")
    assert report.counts() == {"created": 4, "updated": 0, "cancelled": 0, "removed": 0,
                               "lessons": 4}
    lessons = importer.lessons("csv")
    assert lessons[0].start == local(2026, 11, 2, 8, 30)
    assert lessons[1].rooms == ("B204", "B205") and lessons[1].teachers == ("JANS", "PIE")
    assert lessons[2].rooms == ("B204",)  # b204 matched the room the first row created
    assert lessons[3].groups == () and lessons[3].subject == "zelfstudie"
    assert importer.fixture("lessons.csv").counts()["created"] == 0


def test_csv_with_dutch_headers_semicolons_and_bom(importer: Importer) -> None:
    report = importer.fixture("dutch-excel.csv")
    assert report.counts() == {"created": 1, "updated": 0, "cancelled": 1, "removed": 0,
                               "lessons": 1}
    assert "ignored 1 column: Opmerking" in report.notes
    assert importer.lessons()[1].rooms == ("B204", "B205")


def test_csv_teacher_change_is_an_update_of_the_same_lesson(importer: Importer) -> None:
    header = "date,start,end,room,group,teacher\n"
    importer.run(header + "2026-11-02,08:30,09:20,B204,3havo-b,JANS\n", "a.csv")
    report = importer.run(header + "2026-11-02,08:30,09:20,B204,3havo-b,KOK\n", "a.csv")
    assert report.counts() == {"created": 0, "updated": 1, "cancelled": 0, "removed": 0,
                               "lessons": 1}
    assert importer.lessons()[0].teachers == ("KOK",)


def test_csv_id_column_keeps_a_moved_lesson(importer: Importer) -> None:
    header = "id,date,start,end,room,cancelled\n"
    importer.run(header + "L1,2026-11-02,08:30,09:20,B204,\nL2,2026-11-02,09:20,10:10,B204,\n",
                 "a.csv")
    report = importer.run(header + "L1,2026-11-02,10:30,11:20,C012,\nL2,2026-11-02,09:20,10:10,"
                          "B204,yes\n", "a.csv")
    assert report.counts() == {"created": 0, "updated": 1, "cancelled": 1, "removed": 0,
                               "lessons": 1}


def test_csv_exact_repeated_rows_are_merged(importer: Importer) -> None:
    row = "2026-11-02,08:30,09:20,B204,3havo-b\n"
    report = importer.run("date,start,end,room,group\n" + row + row, "a.csv")
    assert report.created == 1 and "ignored 1 repeated lesson" in report.notes


def test_names_match_existing_objects_ignoring_case(app: Flask, importer: Importer) -> None:
    with app.app_context():
        school = db.session.scalar(select(School).where(School.slug == "test"))
        db.session.add(Room(school_id=school.id, code="B204"))
        db.session.add(Person(school_id=school.id, username="jans", teacher_code="JANS",
                              roles=["teacher", "leader"]))
        db.session.commit()
    report = importer.run("date,start,end,room,teacher\n2026-11-02,08:30,09:20,b204,jans\n",
                          "a.csv")
    assert not [note for note in report.notes if note.startswith("created")]
    lesson = importer.lessons()[0]
    assert lesson.rooms == ("B204",) and lesson.teachers == ("JANS",)


def test_new_teachers_are_people_without_login_with_the_teacher_role(
        app: Flask, importer: Importer) -> None:
    importer.run("date,start,end,room,teacher\n2026-11-02,08:30,09:20,B204,NEW\n", "a.csv")
    with app.app_context():
        person = db.session.scalar(select(Person).where(Person.teacher_code == "NEW"))
        assert person is not None
        assert (person.username, person.roles, person.active) == (None, ["teacher"], True)


def test_each_import_records_one_audit_event_with_the_counts(app: Flask, importer: Importer
                                                             ) -> None:
    importer.fixture("lessons.csv")
    with app.app_context():
        events = db.session.scalars(select(AuditEvent).where(
            AuditEvent.action == "timetable.import")).all()
        assert len(events) == 1
        assert events[0].actor_label == "test"
        assert {k: events[0].details[k] for k in ("created", "lessons", "format")} == \
            {"created": 4, "lessons": 4, "format": "csv"}


@pytest.mark.parametrize(("filename", "expected"), [
    ("school-timetable.ics", "ical"),
    ("zermelo-appointments.json", "zermelo"),
    ("webuntis-jsonrpc.json", "untis"),
    ("untis-with-names.json", "untis"),
    ("lessons.csv", "csv"),
    ("dutch-excel.csv", "csv"),
])
def test_format_is_detected_from_contents(filename: str, expected: str) -> None:
    data = (FIXTURES / filename).read_bytes()
    assert detect_format(data, "upload.dat" if expected != "csv" else filename) == expected


def test_csv_without_a_csv_name_is_detected_by_its_header() -> None:
    assert detect_format(b"date,start,end,room\n", "export") == "csv"


def test_unknown_formats_are_refused() -> None:
    with pytest.raises(TimetableError, match="unknown format"):
        detect_format(b"PK\x03\x04 a spreadsheet", "rooster.xlsx")


def test_removing_a_lesson_also_removes_its_links_and_exceptions(app: Flask,
                                                                importer: Importer) -> None:
    from datetime import timedelta

    from server.models import ExceptionGrant, Lesson, lesson_rooms
    header = "id,date,start,end,room,group,teacher\n"
    importer.run(header + "L1,2026-11-02,08:30,09:20,B204,h4a,JANS\n"
                 "L2,2026-11-02,09:20,10:10,B204,h4a,JANS\n", "a.csv")
    with app.app_context():
        lesson = db.session.scalar(select(Lesson).where(Lesson.source_id == "id:L2"))
        db.session.add(ExceptionGrant(school_id=lesson.school_id, scope="lesson",
                                      lesson_id=lesson.id, start=lesson.start,
                                      end=lesson.start + timedelta(minutes=10), services=None))
        db.session.commit()
    report = importer.run(header + "L1,2026-11-02,08:30,10:10,B204,h4a,JANS\n", "a.csv")
    assert (report.updated, report.removed) == (1, 1)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(ExceptionGrant)) == 0
        assert db.session.scalar(select(func.count()).select_from(lesson_rooms)) == 1


@pytest.mark.parametrize(("text", "rooms", "subject"), [
    ("date,start,end,room,subject\r\n2026-11-02,08:30,09:20,B204,wisk\r\n", ("B204",), "wisk"),
    ("\n\ndate,start,end,room,subject\n\n2026-11-02,08:30,09:20,B204,wisk\n\n\n", ("B204",),
     "wisk"),
    ('date,start,end,room,subject\n2026-11-02,08:30,09:20,B204,"wisk\nB-toets"\n', ("B204",),
     "wisk B-toets"),
    ("date,start,end,room,subject\n2026-11-02,08:30,09:20,B204,wisk\u2028extra\n", ("B204",),
     "wisk extra"),
    ("date\tstart\tend\troom\tsubject\n2026-11-02\t08:30\t09:20\tB204\twisk\n", ("B204",), "wisk"),
    ("DATE,Start,END,Room,Subject\n2026-11-02,08.30,09.20, B204 ,  wisk \n", ("B204",), "wisk"),
])
def test_csv_survives_messy_exports(importer: Importer, text: str, rooms: tuple[str, ...],
                                    subject: str) -> None:
    report = importer.run(text, "export.csv")
    assert report.created == 1
    lesson = importer.lessons()[0]
    assert (lesson.rooms, lesson.subject, lesson.start) == (rooms, subject,
                                                            local(2026, 11, 2, 8, 30))
