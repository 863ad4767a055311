"""Zermelo fields that decide what blocks: lastModified, hidden, type, branches, liveschedule."""

from __future__ import annotations

import json
from datetime import date

from tests.support.timetable import AMSTERDAM, Importer

from server.timetable.sources import day_window

BASE = 1793000000  # Tuesday 2026-10-27 07:33 UTC


def _record(instance: int, start: int = BASE, **fields: object) -> dict:
    record = {"id": instance * 10, "appointmentInstance": instance, "start": start,
              "end": start + 3000, "locations": ["B204"], "groups": ["h4a"], "teachers": ["vdb"],
              "subjects": ["netl"], "valid": True, "cancelled": False, "type": "lesson",
              "hidden": False}
    record.update(fields)
    return record


def _response(*records: dict) -> str:
    return json.dumps({"response": {"status": 200, "data": list(records)}})


def test_the_newest_valid_version_by_last_modified_wins_whatever_the_order(
        importer: Importer) -> None:
    newer = _record(1, locations=["C012"], lastModified=BASE - 100, id=11)
    older = _record(1, locations=["B204"], lastModified=BASE - 5000, id=12)
    report = importer.run(_response(newer, older), "z.json")
    assert importer.lessons()[0].rooms == ("C012",)
    assert any("replaces" in note for note in report.notes)


def test_hidden_appointments_and_other_types_are_left_out_with_a_count(importer: Importer
                                                                       ) -> None:
    report = importer.run(_response(
        _record(1), _record(2, type="exam", start=BASE + 3600),
        _record(3, hidden=True, start=BASE + 7200),
        _record(4, type="choice", locations=["B204", "C012", "D001"], start=BASE + 10800),
        _record(5, type="activity", start=BASE + 14400)), "z.json")
    assert sorted(l.source_id for l in importer.lessons()) == ["1", "2"]
    assert "ignored 1 hidden appointment (hidden: true)" in report.notes
    assert "ignored 1 appointment of type 'choice' (not a lesson)" in report.notes
    assert "ignored 1 appointment of type 'activity' (not a lesson)" in report.notes


def test_one_room_code_at_two_branches_stays_two_rooms(importer: Importer) -> None:
    report = importer.run(_response(_record(1, branch="hoofd", branchOfSchool=7),
                                    _record(2, branch="dependance", branchOfSchool=8)), "z.json")
    rooms = sorted(l.rooms for l in importer.lessons())
    assert rooms == [("dependance/B204",), ("hoofd/B204",)]
    assert any("2 branches" in note for note in report.notes)


def test_one_branch_keeps_plain_room_codes(importer: Importer) -> None:
    importer.run(_response(_record(1, branchOfSchool=7), _record(2, branchOfSchool=7,
                                                                 start=BASE + 3600)), "z.json")
    assert {l.rooms for l in importer.lessons()} == {("B204",)}


def _liveschedule(week: str, *records: dict) -> str:
    return json.dumps({"response": {"status": 200, "data": [
        {"week": week, "user": "~me", "appointments": list(records)}]}})


def test_liveschedule_is_read_and_speaks_for_its_week(importer: Importer) -> None:
    # ISO week 44 of 2026: Monday 26 October to Sunday 1 November.
    report = importer.run(_liveschedule("202644", _record(1), _record(2, start=BASE + 3600)),
                          "live.json")
    assert report.created == 2
    assert report.window == day_window(date(2026, 10, 26), date(2026, 11, 1), AMSTERDAM)
    report = importer.run(_liveschedule("202644", _record(1)), "live.json")
    assert report.removed == 1


def test_liveschedule_with_a_bad_week_says_so(importer: Importer) -> None:
    before = importer.snapshot()
    try:
        importer.run(_liveschedule("2026-44", _record(1)), "live.json")
    except Exception as err:  # noqa: BLE001 - the message is what is checked
        assert "liveschedule week 1: week '2026-44' is not YYYYWW" in str(err)
    else:
        raise AssertionError("a bad week was accepted")
    assert importer.snapshot() == before
