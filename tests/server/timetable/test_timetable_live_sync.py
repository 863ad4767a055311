"""Zermelo and WebUntis sync against local servers that speak their protocols
(tests/support/timetable_servers.py), the sealed secrets, and the worker's lock while fetching."""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text
from tests.support.dashboard import PASSWORD as DASHBOARD_PASSWORD
from tests.support.dashboard import sign_in
from tests.support.timetable import Importer
from tests.support.timetable_servers import WebUntisServer, ZermeloServer

from server.extensions import db
from server.models import AuditEvent, Lesson, Person, School, TimetableSource, utcnow
from server.passwords import hash_password
from server.timetable.sync import sync_named

# A Monday, 08:00 in Amsterdam (CET, UTC+1): the window is 26 October .. 28 December.
NOW = datetime(2026, 11, 2, 7, 0, tzinfo=timezone.utc)
TOKEN = "zt-9c41f0a7d2b6e8-geheim"
PASSWORD = "W8woord!untis-7731"
NEW_PASSWORD = "N1euw-wachtwoord-2207"
ICAL = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:ical-1@t\r\n"
        "DTSTAMP:20261001T000000Z\r\nDTSTART;TZID=Europe/Amsterdam:20261103T083000\r\n"
        "DTEND;TZID=Europe/Amsterdam:20261103T092000\r\nLOCATION:C101\r\nEND:VEVENT\r\n"
        "END:VCALENDAR\r\n")


# Protocol and secret handling do not depend on the database: SQLite only, except the first
# test, which checks what a sync writes and removes on both.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _appointment(instance: int, at: datetime, room: str = "B204", **fields: Any
                 ) -> dict[str, Any]:
    """An appointment as Zermelo's /appointments sends it (fields of its documentation)."""
    return {"id": instance * 10, "appointmentInstance": instance, "start": int(at.timestamp()),
            "end": int((at + timedelta(minutes=50)).timestamp()), "type": "lesson",
            "cancelled": False, "valid": True, "hidden": False, "lastModified": 1_790_000_000,
            "branchOfSchool": 7, "locations": [room], "groups": ["3havo-b"],
            "teachers": ["ABC"], "subjects": ["ne"], "onlineLocationUrl": "", **fields}


def _cli(app: Flask, *args: str, input: str | None = None) -> str:
    result = app.test_cli_runner().invoke(args=list(args), input=input)
    assert result.exit_code == 0, result.output
    return result.output


def _add_zermelo(app: Flask, url: str, tmp_path: Path, token: str = TOKEN) -> str:
    token_file = tmp_path / "token.txt"
    token_file.write_text(token + "\n")
    return _cli(app, "timetable", "source", "add", "zportal", "--school", "test", "--kind",
                "zermelo", "--url", url, "--token-file", str(token_file))


def _add_webuntis(app: Flask, url: str, password: str = PASSWORD) -> str:
    # The password on stdin ('-'), as a script that reads it from a vault would give it.
    return _cli(app, "timetable", "source", "add", "untis", "--school", "test", "--kind",
                "webuntis", "--url", url, "--untis-school", "demo-school", "--user", "lesfocus",
                "--secret-file", "-", input=password + "\n")


def _sync(app: Flask, name: str, now: datetime = NOW, timeout: float = 10.0
          ) -> tuple[Any, str | None]:
    with app.app_context():
        school = db.session.scalar(select(School).where(School.slug == "test"))
        return sync_named(db.session, school, name, now=now, timeout=timeout)


def _source(app: Flask, name: str) -> TimetableSource:
    with app.app_context():
        source = db.session.scalar(select(TimetableSource).where(TimetableSource.name == name))
        db.session.expunge(source)
        return source


def test_zermelo_sync_asks_week_by_week_and_replaces_only_its_own_lessons(
        app: Flask, importer: Importer, tmp_path: Path) -> None:
    importer.run(ICAL, "gebouw-c.ics", source="gebouw-c")
    with ZermeloServer(TOKEN) as portal:
        portal.appointments = [
            _appointment(1, NOW + timedelta(days=1, hours=1)),
            _appointment(2, NOW + timedelta(days=15), cancelled=True),
            _appointment(3, NOW + timedelta(days=30), type="meeting"),
            _appointment(4, NOW + timedelta(days=2), valid=False),
            _appointment(5, NOW + timedelta(days=50), room="B205")]
        _add_zermelo(app, portal.base + "/", tmp_path)
        report, error = _sync(app, "zportal")
        assert error is None
        assert report.counts() == {"created": 2, "updated": 0, "cancelled": 1, "removed": 0,
                                   "lessons": 2}
        assert any("type 'meeting'" in note for note in report.notes)
        stored = {l.source_id: l for l in importer.lessons("zportal")}
        assert set(stored) == {"1", "2", "5"} and stored["2"].cancelled
        assert stored["1"].rooms == ("B204",) and stored["1"].teachers == ("ABC",)
        # One request per week of the window (Zermelo ends requests after 60 s), adjacent.
        starts = [int(r["query"]["start"]) for r in portal.requests]
        ends = [int(r["query"]["end"]) for r in portal.requests]
        assert starts[0] == int((NOW - timedelta(days=7)).timestamp())
        assert ends[-1] == int((NOW + timedelta(days=56)).timestamp())
        assert starts[1:] == ends[:-1] and len(portal.requests) == 9
        for request in portal.requests:
            assert request["path"] == "/api/v3/appointments"
            assert request["headers"]["Authorization"] == f"Bearer {TOKEN}"
            assert "access_token" not in request["query"] and request["query"]["valid"] == "true"
            assert {"type", "cancelled", "lastModified", "appointmentInstance",
                    "branchOfSchool", "locations", "groups", "teachers", "subjects", "start",
                    "end"} <= set(request["query"]["fields"].split(","))
        # Appointment 2 is gone from the portal: the next sync removes it; gebouw-c stays.
        portal.appointments = [a for a in portal.appointments if a["appointmentInstance"] != 2]
        report, error = _sync(app, "zportal", NOW + timedelta(minutes=15))
        assert error is None and report.removed == 1
        assert {l.source_id for l in importer.lessons("zportal")} == {"1", "5"}
        assert [l.source_id for l in importer.lessons("gebouw-c")] == ["ical-1@t"]
        source = _source(app, "zportal")
        assert source.last_report["counts"]["removed"] == 1 and source.last_error is None


@SQLITE_ONLY
@pytest.mark.parametrize("backend", ["zermelo", "webuntis"])
def test_every_failure_is_an_error_in_words_on_the_source_and_changes_no_lesson(
        app: Flask, importer: Importer, tmp_path: Path, backend: str) -> None:
    server: Any
    if backend == "zermelo":
        server = ZermeloServer(TOKEN)
        server.appointments = [_appointment(i, NOW + timedelta(days=7 * i + 1))
                               for i in range(1, 5)]
        name = "zportal"
        cases = [
            ("token", "did not accept the token (HTTP 401: Unauthorized)"),
            ("403", "refused the token (HTTP 403: Access Denied)"),
            ("page-3", "answered HTTP 500 for the week from 2026-11-09"),
            ("garbage", "something that is not its JSON envelope"),
            ("short", "sent 0 of the 1 appointments of the week from 2026-11-09"),
            ("hang", "the Zermelo portal did not answer within 1 s")]
    else:
        server = WebUntisServer("demo-school", "lesfocus", PASSWORD)
        server.rooms = [{"id": 1, "name": "B204", "longName": "B204", "active": True}]
        server.periods = [{"id": 100 + i, "date": 20261103 + i, "startTime": 830,
                           "endTime": 920, "ro": [1]} for i in range(3)]
        name = "untis"
        cases = [
            ("token", "refused authenticate: the user name or password is wrong "
                      "(bad credentials)"),
            ("school", "the school name is not known on this WebUntis server"),
            ("expired", "refused getRooms: the session is not authenticated"),
            ("500", "WebUntis answered HTTP 500 to authenticate"),
            ("garbage", "answered authenticate with something that is not a JSON-RPC"),
            ("hang", "WebUntis did not answer within 1 s")]
    with server:
        if backend == "zermelo":
            _add_zermelo(app, server.base, tmp_path)
        else:
            _add_webuntis(app, server.base)
        report, error = _sync(app, name)
        assert error is None and report.created == (4 if backend == "zermelo" else 3)
        before = importer.snapshot()
        good = _source(app, name).last_success_at
        for step, (case, message) in enumerate(cases, start=1):
            at = NOW + timedelta(minutes=15 * step)
            server.mode, server.release = "ok", threading.Event()
            if case == "token":
                if backend == "zermelo":
                    server.token = "another"
                else:
                    server.password = "another"
            elif case == "school":
                server.school = "elsewhere"
            elif case == "expired":
                server.forget_sessions = True
            elif case == "page-3":
                server.fail_on_request = len(server.requests) + 3
            else:
                server.mode = case
            _, error = _sync(app, name, at, timeout=1.0)
            server.release.set()
            assert error is not None and message in error, (case, error)
            source = _source(app, name)
            assert source.last_error == error and source.last_attempt_at == at, case
            assert source.last_success_at == good, case
            assert importer.snapshot() == before, case
            server.token, server.password, server.school = TOKEN, PASSWORD, "demo-school"
            server.forget_sessions, server.fail_on_request = False, None


@SQLITE_ONLY
def test_webuntis_sync_reads_each_room_in_school_time_and_honours_code_and_lstype(
        app: Flask, importer: Importer) -> None:
    with WebUntisServer("demo-school", "lesfocus", PASSWORD) as untis:
        untis.rooms = [{"id": 1, "name": "B204", "longName": "Biologie", "active": True},
                       {"id": 2, "name": "B205", "longName": "Biologie 2", "active": True},
                       {"id": 3, "name": "OUD", "longName": "gesloten", "active": False}]
        untis.names = {"kl": {10: "3havo-b"}, "te": {20: "ABC"}, "su": {30: "bi"}}
        base = {"kl": [10], "te": [20], "su": [30], "lsnumber": 1}
        untis.periods = [
            {"id": 1, "date": 20261103, "startTime": 830, "endTime": 920, "ro": [1], **base},
            {"id": 2, "date": 20261104, "startTime": 830, "endTime": 920, "ro": [2],
             "code": "cancelled", **base},
            {"id": 3, "date": 20261105, "startTime": 1000, "endTime": 1050, "ro": [1],
             "code": "irregular", **base},
            {"id": 4, "date": 20261105, "startTime": 1300, "endTime": 1400, "ro": [1],
             "lstype": "oh", **base},
            {"id": 5, "date": 20261110, "startTime": 830, "endTime": 1010, "ro": [1, 2], **base},
            {"id": 6, "date": 20261110, "startTime": 830, "endTime": 920, "ro": [3], **base},
            {"id": 7, "date": 20270301, "startTime": 830, "endTime": 920, "ro": [1], **base}]
        _add_webuntis(app, untis.base)
        report, error = _sync(app, "untis")
        assert error is None, error
        stored = {l.source_id: l for l in importer.lessons("untis")}
        assert set(stored) == {"1", "2", "3", "5"}
        # 08:30 in Amsterdam in November is 07:30 UTC.
        assert stored["1"].start == datetime(2026, 11, 3, 7, 30, tzinfo=timezone.utc)
        assert stored["1"].rooms == ("B204",) and stored["1"].groups == ("3havo-b",)
        assert stored["1"].teachers == ("ABC",) and stored["1"].subject == "bi"
        assert stored["2"].cancelled and not stored["3"].cancelled  # irregular still blocks
        assert stored["5"].rooms == ("B204", "B205")
        calls = untis.calls
        assert calls[0]["method"] == "authenticate" and calls[0]["cookie"] is None
        assert calls[0]["params"] == {"user": "lesfocus", "password": PASSWORD,
                                      "client": "lesfocus"}
        session = calls[1]["cookie"]
        assert session and all(c["cookie"] == session for c in calls[1:])
        timetable = [c["params"]["options"] for c in calls if c["method"] == "getTimetable"]
        assert [o["element"] for o in timetable] == [{"id": 1, "type": 4}, {"id": 2, "type": 4}]
        assert {(o["startDate"], o["endDate"]) for o in timetable} == {(20261026, 20261228)}
        assert calls[-1]["method"] == "logout" and untis.sessions == set()
        # Period 3 is deleted in WebUntis: the next sync removes it.
        untis.periods = [p for p in untis.periods if p["id"] != 3]
        report, error = _sync(app, "untis", NOW + timedelta(minutes=15))
        assert error is None and report.removed == 1
        assert {l.source_id for l in importer.lessons("untis")} == {"1", "2", "5"}


@SQLITE_ONLY
def test_secrets_appear_nowhere_but_sealed(app: Flask, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    outputs = []
    with ZermeloServer(TOKEN) as portal, \
            WebUntisServer("demo-school", "lesfocus", PASSWORD) as untis:
        portal.appointments = [_appointment(1, NOW + timedelta(days=1))]
        untis.rooms = [{"id": 1, "name": "B204", "active": True}]
        untis.periods = [{"id": 1, "date": 20261103, "startTime": 830, "endTime": 920,
                          "ro": [1]}]
        outputs.append(_add_zermelo(app, portal.base, tmp_path))
        outputs.append(_add_webuntis(app, untis.base))
        outputs.append(_cli(app, "timetable", "sync", "--school", "test"))
        portal.mode, untis.password = "403", "changed"
        failed = app.test_cli_runner().invoke(args=["timetable", "sync", "--school", "test"])
        assert failed.exit_code == 1
        outputs.append(failed.output)
        listed = app.test_cli_runner().invoke(args=["timetable", "source", "list", "--school",
                                                    "test"])
        outputs.append(listed.stdout)
        # A new password, replaced from stdin, is the one the next sync uses.
        untis.password = NEW_PASSWORD
        outputs.append(_cli(app, "timetable", "source", "secret", "untis", "--school", "test",
                            "--secret-file", "-", input=NEW_PASSWORD))
        outputs.append(_cli(app, "timetable", "sync", "--school", "test", "--source", "untis"))
        logins = [c["params"]["password"] for c in untis.calls if c["method"] == "authenticate"]
        assert logins[-1] == NEW_PASSWORD and untis.calls[-1]["method"] == "logout"
    assert "HTTP 403" in outputs[3] and "-8504" in outputs[3]
    listed = [json.loads(line) for line in outputs[4].splitlines()]
    assert {entry["name"]: entry.get("secret") for entry in listed} == {
        "untis": "sealed", "zportal": "sealed"}
    with app.app_context():
        from server.timetable.sources import read_secret
        sources = db.session.scalars(select(TimetableSource).order_by(TimetableSource.name)).all()
        # Kept, sealed, and each only opens for its own source.
        assert [read_secret(s) for s in sources] == [NEW_PASSWORD, TOKEN]
        rows = []
        for table in db.metadata.sorted_tables:
            rows.extend(str(tuple(row)) for row in db.session.execute(
                text(f'SELECT * FROM "{table.name}"')))  # every column, in the clear
        audit = [json.dumps(e.details) for e in db.session.scalars(select(AuditEvent))]
        assert len(audit) >= 2
        school = db.session.scalar(select(School).where(School.slug == "test"))
        db.session.add(Person(school_id=school.id, username="ict", display_name="ICT",
                              roles=["it_admin", "leader"], password_hash=hash_password(
                                  DASHBOARD_PASSWORD)))
        db.session.commit()
        ids = [s.id for s in sources]
    client = app.test_client()
    sign_in(client, "ict")
    pages = [client.get(path).get_data(as_text=True) for path in (
        "/it/rooster", "/leiding", "/audit", *(f"/it/rooster/bronnen/{i}/verwijderen"
                                                for i in ids))]
    assert "zportal" in pages[0] and "timetable.source_add" in pages[2]
    for secret in (TOKEN, PASSWORD, NEW_PASSWORD):
        for where, texts in (("CLI", outputs), ("database", rows), ("audit", audit),
                             ("pages", pages), ("log", [caplog.text])):
            assert not any(secret in t for t in texts), f"{secret[:4]}... in {where}"


@SQLITE_ONLY
def test_the_worker_fetches_without_its_writer_lock_and_writes_with_it(
        app: Flask, tmp_path: Path) -> None:
    from server.scheduler import _run_job, scheduled_jobs
    now = utcnow()
    with ZermeloServer(TOKEN) as portal:
        portal.appointments = [_appointment(1, now + timedelta(days=1))]
        _add_zermelo(app, portal.base, tmp_path)
        job = next(j for j in scheduled_jobs(app) if j.id == "timetable-sync")
        exclusive = threading.Lock()
        portal.mode = "hang"
        worker = threading.Thread(target=_run_job, args=(app, job, exclusive), daemon=True)
        worker.start()
        assert portal.arrived.wait(60), "the sync never asked the portal"
        # The portal has not answered yet: an import (or the heartbeat) can take the lock now.
        assert exclusive.acquire(timeout=10), "the sync holds the writer lock while it waits"
        exclusive.release()
        portal.mode = "ok"
        portal.release.set()
        worker.join(120)
        assert not worker.is_alive()
    with app.app_context():
        assert db.session.scalars(select(Lesson.source_id).where(
            Lesson.source == "zportal")).all() == ["1"]
