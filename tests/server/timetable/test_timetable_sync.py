"""Syncing an iCal URL source from a feed server on loopback that speaks HTTP as feeds do
(ETag, Last-Modified, 304), and fails as they do (401, 500, hangs, broken bodies, redirect loops):
each failure is an error in words on the source and no change to its lessons."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from flask import Flask
from sqlalchemy import select
from tests.support.timetable import Importer

from server.extensions import db
from server.models import AuditEvent, School, TimetableSource
from server.timetable import TimetableError
from server.timetable.sync import fetch_feed, sync_source

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)  # the sync's clock, injected


def _feed(*uids_days: tuple[str, int]) -> bytes:
    events = "".join(
        f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20261001T000000Z\r\n"
        f"DTSTART;TZID=Europe/Amsterdam:202611{day:02d}T083000\r\n"
        f"DTEND;TZID=Europe/Amsterdam:202611{day:02d}T092000\r\nLOCATION:B204\r\nEND:VEVENT\r\n"
        for uid, day in uids_days)
    return f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\n{events}END:VCALENDAR\r\n".encode()


class FeedServer:
    """An iCal feed on 127.0.0.1: serves `body` with an ETag and Last-Modified, or misbehaves."""

    def __init__(self) -> None:
        self.body = _feed(("a@t", 2), ("b@t", 3))
        self.etag = '"v1"'
        self.mode = "ok"
        self.requests: list[dict[str, str]] = []
        self.release = threading.Event()
        feed = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep the test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
                feed.requests.append(dict(self.headers))
                if feed.mode == "hang":
                    feed.release.wait(10)
                    return
                if feed.mode == "redirect-loop":
                    self.send_response(302)
                    self.send_header("Location", self.path)
                    self.end_headers()
                    return
                code = {"401": 401, "500": 500}.get(feed.mode)
                if code:
                    self.send_response(code)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if feed.mode == "ok" and self.headers.get("If-None-Match") == feed.etag:
                    self.send_response(304)
                    self.end_headers()
                    return
                body = b"this is not a calendar" if feed.mode == "garbage" else feed.body
                self.send_response(200)
                self.send_header("Content-Type", "text/calendar")
                self.send_header("ETag", feed.etag)
                self.send_header("Last-Modified", "Sun, 01 Nov 2026 10:00:00 GMT")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/rooster/secret-token.ics"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FeedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def feed() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server


def _add_source(app: Flask, url: str) -> None:
    result = app.test_cli_runner().invoke(args=["timetable", "source", "add", "rooster",
                                                "--school", "test", "--kind", "ical-url",
                                                "--url", url])
    assert result.exit_code == 0, result.output


def _sync(app: Flask, **fetch_options: object):
    with app.app_context():
        school = db.session.scalar(select(School).where(School.slug == "test"))
        source = db.session.scalar(select(TimetableSource).where(TimetableSource.name
                                                                 == "rooster"))
        try:
            report = sync_source(db.session, school, source, now=NOW,
                                 fetch=lambda url, state: fetch_feed(url, state,
                                                                     **fetch_options))
        except TimetableError:
            db.session.rollback()
            raise
        db.session.commit()
        return report


def test_sync_imports_then_sends_the_etag_and_a_304_changes_nothing(
        app: Flask, importer: Importer, feed: FeedServer) -> None:
    _add_source(app, feed.url)
    report = _sync(app)
    assert report is not None and report.created == 2
    assert _sync(app) is None  # 304
    assert feed.requests[-1].get("If-None-Match") == '"v1"'
    assert feed.requests[-1].get("If-Modified-Since") == "Sun, 01 Nov 2026 10:00:00 GMT"
    # A lesson deleted in the roster is removed at the next sync; a file source is untouched.
    importer.run(_feed(("other@t", 4)), "other.ics", source="gebouw-b",
                 window=(NOW, datetime(2026, 12, 1, tzinfo=timezone.utc)))
    feed.body, feed.etag = _feed(("a@t", 2)), '"v2"'
    report = _sync(app)
    assert report is not None and report.removed == 1
    assert sorted(l.source_id for l in importer.lessons()) == ["a@t", "other@t"]


@pytest.mark.parametrize(("mode", "message"), [
    ("401", "the feed refused access (HTTP 401)"),
    ("500", "the feed answered HTTP 500"),
    ("garbage", "not an iCalendar file"),
    ("redirect-loop", "redirects more than 5 times"),
    ("hang", "did not answer within 1 s"),
])
def test_a_failing_feed_is_an_error_in_words_and_changes_no_lesson(
        app: Flask, importer: Importer, feed: FeedServer, mode: str, message: str) -> None:
    _add_source(app, feed.url)
    _sync(app)
    before = importer.snapshot()
    feed.mode = mode
    with pytest.raises(TimetableError, match=re.escape(message)):
        _sync(app, timeout=1.0)
    assert importer.snapshot() == before


def test_cli_sync_prints_a_summary_records_errors_and_never_shows_the_link(
        app: Flask, importer: Importer, feed: FeedServer) -> None:
    # The CLI syncs at the real time: the feed's lessons lie in the coming days, whatever today is.
    soon = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=1)
    feed.body = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n" + "".join(
        f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTART:{start:%Y%m%dT%H%M%SZ}\r\n"
        f"DTEND:{start + timedelta(minutes=50):%Y%m%dT%H%M%SZ}\r\nLOCATION:B204\r\n"
        f"END:VEVENT\r\n" for uid, start in (("a@t", soon), ("b@t", soon + timedelta(days=1))))
        + "END:VCALENDAR\r\n").encode()
    _add_source(app, feed.url)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["timetable", "sync", "--school", "test"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "source": "rooster", "created": 2, "updated": 0, "cancelled": 0, "removed": 0,
        "lessons": 2}
    feed.mode = "500"
    failed = runner.invoke(args=["timetable", "sync", "--school", "test", "--source", "rooster"])
    assert failed.exit_code == 1 and "rooster: the feed answered HTTP 500" in failed.stderr
    assert "Traceback" not in failed.output
    listed = runner.invoke(args=["timetable", "source", "list", "--school", "test"])
    shown = json.loads(listed.stdout.strip())
    assert shown["last_error"] == "the feed answered HTTP 500 Internal Server Error"
    assert shown["last_counts"]["created"] == 2  # the last good sync's
    assert "secret-token" not in listed.output
    with app.app_context():
        details = [e.details for e in db.session.scalars(select(AuditEvent))]
    assert all("secret-token" not in json.dumps(d) for d in details)
    assert len(importer.lessons()) == 2


@pytest.mark.parametrize(("args", "message"), [
    (["--kind", "ical-url", "--url", "ftp://x/y"], "http(s) or webcal"),
    (["--kind", "zermelo", "--url", "https://x.zportal.nl"], "--kind zermelo needs --token-file"),
    (["--kind", "webuntis", "--url", "https://x.webuntis.com", "--user", "u"],
     "needs --secret-file, --untis-school"),
    (["--kind", "ical-url", "--url", "https://x/y", "--user", "u"], "takes no --user"),
    (["--kind", "zermelo", "--url", "https://x.zportal.nl", "--token-file", "/nonexistent/t"],
     "cannot read /nonexistent/t"),
])
def test_cli_source_add_refuses_bad_input(app: Flask, args: list[str], message: str) -> None:
    result = app.test_cli_runner().invoke(args=["timetable", "source", "add", "x", "--school",
                                                "test", *args])
    assert result.exit_code != 0 and message in result.output


def test_the_worker_syncs_each_source_when_its_minutes_have_passed(app: Flask,
                                                                  feed: FeedServer) -> None:
    from server.scheduler import scheduled_jobs
    from server.timetable.sync import due_sources, sync_due
    assert "timetable-sync" in {job.id for job in scheduled_jobs(app)}
    _add_source(app, feed.url)  # every 15 minutes
    with app.app_context():
        assert sync_due(db.session, now=NOW) == {"synced": 1, "unchanged": 0, "failed": 0}
        assert _lesson_ids(app) == {"a@t", "b@t"}
        # Not due again until 15 minutes after the last attempt.
        assert due_sources(db.session, NOW + timedelta(minutes=14)) == []
        assert sync_due(db.session, now=NOW + timedelta(minutes=14))["synced"] == 0
        assert len(feed.requests) == 1
        # The feed drops b@t: the next due sync removes it, as a deleted lesson must stop blocking.
        feed.body, feed.etag = _feed(("a@t", 2)), '"v2"'
        later = NOW + timedelta(minutes=15)
        assert sync_due(db.session, now=later) == {"synced": 1, "unchanged": 0, "failed": 0}
        assert _lesson_ids(app) == {"a@t"}
        # A feed that fails is recorded in words, keeps its lessons and is tried again on time.
        feed.mode = "500"
        failed_at = later + timedelta(minutes=15)
        assert sync_due(db.session, now=failed_at) == {"synced": 0, "unchanged": 0, "failed": 1}
        source = db.session.scalar(select(TimetableSource).where(TimetableSource.name
                                                                 == "rooster"))
        assert "500" in (source.last_error or "") and source.last_attempt_at == failed_at
        assert _lesson_ids(app) == {"a@t"}
        feed.mode = "ok"
        assert sync_due(db.session, now=failed_at + timedelta(minutes=15)) == {
            "synced": 0, "unchanged": 1, "failed": 0}  # 304: the ETag is still v2
        db.session.refresh(source)
        assert source.last_error is None


def _lesson_ids(app: Flask) -> set[str]:
    from server.models import Lesson
    with app.app_context():
        return set(db.session.scalars(select(Lesson.source_id).where(
            Lesson.source == "rooster")))
