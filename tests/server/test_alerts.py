"""Alerts IT receives: real e-mail to an SMTP server on loopback (aiosmtpd), one message per
incident and one when it recovers, an SMTP server that is down, and the IT page's list."""

from __future__ import annotations

import email
import email.policy
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from aiosmtpd.controller import Controller
from flask import Flask
from sqlalchemy import select

from server.alerts import run_alerts
from server.extensions import db
from server.gateways import create_gateway
from server.models import AlertIncident, Gateway, Lesson, Person, School, TimetableSource
from server.network import add_segment
from server.passwords import hash_password
from server.policy_cache import cached_policy
from tests.support.dashboard import PASSWORD, sign_in

# Every test on SQLite; the ones whose queries differ on PostgreSQL as well.
ON_SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
ON_BOTH = pytest.mark.parametrize("database_url", ["sqlite", pytest.param(
    "postgresql", marks=pytest.mark.postgres)], indirect=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Inbox:
    """aiosmtpd handler that keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.messages.append(email.message_from_bytes(envelope.content,
                                                      policy=email.policy.default))
        return "250 OK"

    def subjects(self) -> list[str]:
        # A long subject is folded onto the next line; readers unfold it without the space.
        return [str(m["Subject"]).strip() for m in self.messages]


class Smtp:
    """A real SMTP server on 127.0.0.1 (aiosmtpd), started and stopped on demand."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.inbox = Inbox()
        self.controller: Controller | None = None

    def start(self, **options: object) -> None:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port,
                                     **options)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp() -> Iterator[Smtp]:
    server = Smtp()
    yield server
    server.stop()


@dataclass
class Site:
    app: Flask
    gateway: str
    now: datetime


@pytest.fixture
def site(make_app, smtp: Smtp) -> Site:  # type: ignore[no-untyped-def]
    """A school with gateway `hoofdgebouw` (one segment, room 1.01), a lesson in 1.01 from now
    on for 50 minutes, the gateway last heard 20 minutes ago with the current policy applied,
    and mail to the loopback server."""
    app = make_app(SMTP_HOST="127.0.0.1", SMTP_PORT=smtp.port, SMTP_STARTTLS=False,
                   SMTP_FROM="lesfocus@school.test", SMTP_TO="ict@school.test, beheer@school.test",
                   SMTP_TIMEOUT=5)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    with app.app_context():
        school = db.session.scalar(select(School).where(School.slug == "test"))
        gateway = create_gateway(school, "hoofdgebouw", actor="pytest")
        segment = add_segment(school, gateway, "lokalen", ["10.3.1.0/24"], ["1.01"],
                              actor="pytest")
        gateway.enrolled_at = now - timedelta(days=1)
        gateway.last_contact_at = now - timedelta(minutes=20)
        db.session.add(Lesson(school_id=school.id, start=now, end=now + timedelta(minutes=50),
                              subject="wi", source="manual", source_id="l1",
                              rooms=list(segment.rooms)))
        db.session.commit()
        gateway_id = gateway.id
    site = Site(app, gateway_id, now)
    # Up to date: only the test's own condition makes an incident.
    _set_gateway(site, policy_version_applied=_current_version(site), policy_applied_at=now)
    return site


def _run(site: Site, minutes: float) -> dict[str, int]:
    with site.app.app_context():
        return run_alerts(site.app, site.now + timedelta(minutes=minutes))


def _set_gateway(site: Site, **values: object) -> None:
    with site.app.app_context():
        gateway = db.session.get(Gateway, site.gateway)
        for key, value in values.items():
            setattr(gateway, key, value)
        db.session.commit()


def _current_version(site: Site) -> str:
    with site.app.app_context():
        gateway = db.session.get(Gateway, site.gateway)
        return str(cached_policy(gateway.id, gateway.school_id).version)


@ON_BOTH
def test_an_offline_gateway_in_a_lesson_gets_one_message_and_one_on_recovery(
        site: Site, smtp: Smtp) -> None:
    smtp.start()
    assert _run(site, 0)["sent"] == 1
    for minute in range(1, 6):  # the job runs every minute: no second message
        assert _run(site, minute)["sent"] == 0
    assert smtp.inbox.subjects() == ["[lesfocus] Gateway hoofdgebouw is offline tijdens de lessen"]
    opened = smtp.inbox.messages[0]
    assert opened["To"] == "ict@school.test, beheer@school.test"
    body = opened.get_content()
    assert "School: Testcollege" in body and "Het laatste contact was om" in body
    assert "lesfocus-agent status" in body
    _set_gateway(site, last_contact_at=site.now + timedelta(minutes=6))
    assert _run(site, 7) == {"opened": 0, "resolved": 1, "sent": 1, "failed": 0}
    assert _run(site, 8)["sent"] == 0
    assert smtp.inbox.subjects()[1] == \
        "[lesfocus] Hersteld: Gateway hoofdgebouw is offline tijdens de lessen"
    assert "Van " in smtp.inbox.messages[1].get_content()
    with site.app.app_context():
        rows = db.session.scalars(select(AlertIncident).where(
            AlertIncident.kind == "gateway_offline")).all()
        assert len(rows) == 1 and rows[0].resolved_mail_at is not None


@ON_SQLITE
def test_offline_outside_lessons_opens_nothing_until_the_first_lesson(site: Site,
                                                                      smtp: Smtp) -> None:
    smtp.start()
    assert _run(site, -30)["opened"] == 0  # before the lesson: nobody needs the gateway yet
    assert _run(site, 60)["opened"] == 0  # after it
    assert smtp.inbox.messages == []
    assert _run(site, 1)["opened"] == 1  # during it


@ON_SQLITE
def test_an_smtp_server_that_is_down_is_logged_in_words_and_the_message_sent_later(
        site: Site, smtp: Smtp, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="lesfocus.alerts"):
        result = _run(site, 0)
    assert result == {"opened": 1, "resolved": 0, "sent": 0, "failed": 1}
    assert f"alert e-mail not sent through 127.0.0.1:{smtp.port}: connection refused" \
        in caplog.text
    assert "trying again at the next run" in caplog.text
    with site.app.app_context():
        row = db.session.scalars(select(AlertIncident)).one()
        assert row.mail_failures == 1 and row.opened_mail_at is None
    smtp.start()
    assert _run(site, 1)["sent"] == 1
    assert _run(site, 2)["sent"] == 0
    assert len(smtp.inbox.messages) == 1


@ON_SQLITE
def test_a_stale_policy_counts_after_its_minutes_and_a_quick_catch_up_is_not_mailed(
        site: Site, smtp: Smtp) -> None:
    smtp.start()
    minutes = site.app.config["LESFOCUS_ALERT_STALE_MINUTES"]

    def run_in_contact(minute: int, **values: object) -> dict[str, int]:
        _set_gateway(site, last_contact_at=site.now + timedelta(minutes=minute), **values)
        return _run(site, minute)

    assert run_in_contact(0, policy_version_applied="old-version")["opened"] == 0
    assert run_in_contact(minutes - 1)["opened"] == 0
    # Caught up in time: nothing to tell.
    assert run_in_contact(minutes, policy_version_applied=_current_version(site))["opened"] == 0
    assert run_in_contact(minutes + 1, policy_version_applied="old-again")["opened"] == 0
    assert run_in_contact(2 * minutes)["opened"] == 0
    assert run_in_contact(2 * minutes + 1)["opened"] == 1
    assert run_in_contact(2 * minutes + 2)["sent"] == 0
    assert smtp.inbox.subjects() == [
        "[lesfocus] Gateway hoofdgebouw past het actuele beleid niet toe"]


@ON_SQLITE
def test_an_expired_policy_is_mailed_at_once(site: Site, smtp: Smtp) -> None:
    smtp.start()
    days = site.app.config["LESFOCUS_POLICY_HORIZON_DAYS"]
    _set_gateway(site, last_contact_at=site.now, policy_version_applied="old-version",
                 policy_applied_at=site.now - timedelta(days=days, minutes=1))
    assert _run(site, 0)["sent"] == 1
    assert smtp.inbox.subjects() == [
        "[lesfocus] Gateway hoofdgebouw draait een verlopen beleid en blokkeert niets"]


@ON_BOTH
def test_a_timetable_source_failing_for_an_hour_is_mailed_and_its_recovery_too(
        site: Site, smtp: Smtp) -> None:
    smtp.start()
    _set_gateway(site, last_contact_at=site.now + timedelta(days=1))  # the gateway is fine
    with site.app.app_context():
        school = db.session.scalar(select(School).where(School.slug == "test"))
        db.session.add(TimetableSource(
            school_id=school.id, name="zermelo", kind="ical-url", address="https://x.test/a.ics",
            every_minutes=15, created_at=site.now - timedelta(days=3),
            last_success_at=site.now - timedelta(minutes=50), last_error="HTTP 503 from x.test"))
        db.session.commit()
    assert _run(site, 0)["opened"] == 0  # failing for 50 minutes: not yet
    assert _run(site, 10)["sent"] == 1
    assert smtp.inbox.subjects() == ["[lesfocus] Roosterbron zermelo blijft mislukken"]
    assert "De laatste fout was: HTTP 503 from x.test" in smtp.inbox.messages[0].get_content()
    with site.app.app_context():
        source = db.session.scalars(select(TimetableSource)).one()
        source.last_error, source.last_success_at = None, site.now + timedelta(minutes=20)
        db.session.commit()
    assert _run(site, 21)["sent"] == 1
    assert smtp.inbox.subjects()[1] == "[lesfocus] Hersteld: Roosterbron zermelo blijft mislukken"


@ON_SQLITE
def test_without_smtp_settings_the_incidents_are_kept_and_nothing_is_sent(make_app) -> None:
    app = make_app()
    with app.app_context():
        assert run_alerts(app, datetime.now(timezone.utc)) == {
            "opened": 0, "resolved": 0, "sent": 0, "failed": 0}


@ON_SQLITE
def test_the_it_page_lists_the_open_alerts(site: Site, smtp: Smtp) -> None:
    _run(site, 1)  # SMTP down: shown all the same, with "not sent yet"
    with site.app.app_context():
        school = db.session.scalar(select(School).where(School.slug == "test"))
        db.session.add(Person(school_id=school.id, username="ict", display_name="ICT",
                              roles=["it_admin"], password_hash=hash_password(PASSWORD)))
        db.session.commit()
    client = site.app.test_client()
    sign_in(client, "ict")
    page = client.get("/it/gateways").get_data(as_text=True)
    assert "Openstaande meldingen" in page
    assert "Gateway hoofdgebouw is offline tijdens de lessen" in page
    assert "e-mail nog niet verstuurd" in page
    _set_gateway(site, last_contact_at=site.now + timedelta(minutes=2))
    _run(site, 3)
    assert "Openstaande meldingen" not in client.get("/it/gateways").get_data(as_text=True)


@ON_SQLITE
def test_the_server_signs_in_with_the_password_from_its_file(make_app, smtp: Smtp,
                                                             tmp_path) -> None:  # type: ignore
    from aiosmtpd.smtp import AuthResult

    seen = []

    def authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore
        seen.append((auth_data.login, auth_data.password))
        return AuthResult(success=True)

    smtp.start(authenticator=authenticator, auth_require_tls=False)
    secret = tmp_path / "smtp-password"
    secret.write_text("geheim wachtwoord\n")
    app = make_app(SMTP_HOST="127.0.0.1", SMTP_PORT=smtp.port, SMTP_STARTTLS=False,
                   SMTP_USER="lesfocus", SMTP_PASSWORD_FILE=str(secret), SMTP_TO="ict@school.test",
                   SMTP_TIMEOUT=5)
    from flask_babel import force_locale

    from server.alerts import SmtpSettings, compose, send_smtp
    with app.app_context(), force_locale("nl"):
        row = AlertIncident(school_id=1, kind="timetable_sync_failing", subject_id="1",
                            subject_name="zermelo", detail="HTTP 503",
                            noticed_at=datetime.now(timezone.utc))
        settings = SmtpSettings.from_config(app.config)
        assert settings is not None
        message = compose(row, None, settings, recovered=False)
    send_smtp(settings, message)
    assert seen == [(b"lesfocus", b"geheim wachtwoord")]
    assert smtp.inbox.subjects() == ["[lesfocus] Roosterbron zermelo blijft mislukken"]
    # Read at each send: a changed password needs no restart of the worker.
    secret.write_text("nieuw wachtwoord\n")
    send_smtp(settings, message)
    assert seen[-1] == (b"lesfocus", b"nieuw wachtwoord")
