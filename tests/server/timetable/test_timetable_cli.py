"""`lesfocus timetable import`: prints the counts as JSON; refuses bad files with exit code 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flask import Flask
from tests.support.timetable import FIXTURES, Importer


def _counts(stdout: str) -> dict[str, int]:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("fixture", "fmt", "expected"), [
    ("zermelo-appointments.json", None,
     {"created": 4, "updated": 0, "cancelled": 1, "removed": 0, "lessons": 4}),
    ("untis-with-names.json", "untis",
     {"created": 2, "updated": 0, "cancelled": 1, "removed": 0, "lessons": 2}),
    ("lessons.csv", "csv",
     {"created": 4, "updated": 0, "cancelled": 0, "removed": 0, "lessons": 4}),
])
def test_cli_prints_the_counts_and_a_second_run_changes_nothing(
        app: Flask, importer: Importer, fixture: str, fmt: str | None,
        expected: dict[str, int]) -> None:
    runner = app.test_cli_runner()
    args = ["timetable", "import", str(FIXTURES / fixture), "--school", "test"]
    if fmt:
        args += ["--format", fmt]
    first = runner.invoke(args=args)
    assert first.exit_code == 0, first.output
    assert _counts(first.stdout) == expected
    assert "created room" in first.stderr  # notes go to stderr, the JSON alone to stdout
    second = runner.invoke(args=args)
    assert second.exit_code == 0, second.output
    assert _counts(second.stdout) == dict(expected, created=0, cancelled=0)
    assert len(importer.lessons()) == expected["lessons"] + expected["cancelled"]


@pytest.mark.parametrize(("content", "name", "message"), [
    (b"date,start,end,room\n2026-11-02,09:00,08:00,B204\n", "bad.csv", "line 2: the lesson ends"),
    (b'{"response": {"data": [{"id": 1, "valid": true, "end": 5}]}}', "bad.json",
     "record 1 (id 1): start is missing"),
    (b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:u1\r\nDTSTART:20261102T080000Z\r\n"
     b"RRULE:FREQ=SECONDLY\r\nDTEND:20261102T085000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
     "bad.ics", "event UID u1 (line 3): RRULE FREQ=SECONDLY"),
    (bytes(range(256)), "noise.bin", "unknown format"),
    (bytes(range(256)), "noise.csv", "line 2: the file is not UTF-8"),
])
def test_cli_refuses_a_bad_file_with_the_place_and_changes_nothing(
        app: Flask, importer: Importer, tmp_path: Path, content: bytes, name: str,
        message: str) -> None:
    importer.fixture("lessons.csv")
    before = importer.snapshot()
    path = tmp_path / name
    path.write_bytes(content)
    result = app.test_cli_runner().invoke(args=["timetable", "import", str(path), "--school",
                                                "test"])
    assert result.exit_code == 1
    assert message in result.output
    assert importer.snapshot() == before


def test_cli_refuses_an_unknown_school(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["timetable", "import",
                                                str(FIXTURES / "lessons.csv"),
                                                "--school", "nope"])
    assert result.exit_code != 0
    assert "nope" in result.output
