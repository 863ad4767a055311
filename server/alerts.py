"""Alerts IT receives by e-mail (SMTP) and sees on the IT page: one message when an incident
opens and one when it is over, however long it lasts.

What is an incident (checked every minute by the worker's `alerts` job, server/scheduler.py):
- `gateway_offline`: an enrolled gateway has not checked in for LESFOCUS_ALERT_OFFLINE_MINUTES
  while a lesson runs in one of its rooms (outside lessons nobody needs it; it opens at the first
  lesson it misses). It is over when the gateway checks in again, lesson or not.
- `gateway_policy_stale`: a gateway in contact has applied another version than its current
  policy for LESFOCUS_ALERT_STALE_MINUTES.
- `gateway_policy_expired`: the version a gateway applied last was issued more than
  LESFOCUS_POLICY_HORIZON_DAYS ago, so it has run out: that gateway blocks nothing.
- `timetable_sync_failing`: a synced timetable source has failed since its last success,
  LESFOCUS_ALERT_SYNC_FAILED_MINUTES (an hour) or longer ago; over at its next good sync.

E-mail: LESFOCUS_SMTP_HOST / _PORT / _USER / _PASSWORD_FILE / _FROM / _TO (comma-separated),
STARTTLS unless LESFOCUS_SMTP_STARTTLS is off (port 465: TLS from the start), in the dashboard's
default language. A message that cannot be sent is logged in words and tried again at the next
run; nothing else waits for it. Without SMTP_HOST or SMTP_TO the incidents are only shown.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask
from flask_babel import force_locale, gettext
from sqlalchemy import delete, select

from .extensions import db
from .metrics import ALERT_MAILS
from .models import (AlertIncident, Gateway, Lesson, School, Segment, TimetableSource,
                     lesson_rooms, segment_rooms)

log = logging.getLogger("lesfocus.alerts")

MAX_MAILS_PER_RUN = 50


@dataclass(frozen=True)
class Condition:
    """Something wrong now: `opens` says whether it may open a new incident (an offline
    gateway only during a lesson); `confirm_after` how long it must hold before it counts."""

    kind: str
    school_id: int
    subject_id: str
    subject_name: str
    detail: str
    opens: bool = True
    confirm_after: timedelta = timedelta(0)


def _gateways_in_lesson(now: datetime) -> set[str]:
    rows = db.session.scalars(
        select(Segment.gateway_id).distinct()
        .join(segment_rooms, segment_rooms.c.segment_id == Segment.id)
        .join(lesson_rooms, lesson_rooms.c.room_id == segment_rooms.c.room_id)
        .join(Lesson, Lesson.id == lesson_rooms.c.lesson_id)
        .where(Lesson.start <= now, Lesson.end > now, Lesson.cancelled.is_(False)))
    return set(rows)


def gateway_conditions(config: Any, now: datetime) -> list[Condition]:
    """The gateways' conditions at `now` (offline, stale, expired)."""
    from .dashboard.state import gateway_health
    offline_after = timedelta(minutes=config["LESFOCUS_ALERT_OFFLINE_MINUTES"])
    stale_after = timedelta(minutes=config["LESFOCUS_ALERT_STALE_MINUTES"])
    horizon = timedelta(days=config["LESFOCUS_POLICY_HORIZON_DAYS"])
    in_lesson = _gateways_in_lesson(now)
    found = []
    cache: dict[str, Any] = {}
    for gateway in db.session.scalars(select(Gateway).where(Gateway.enrolled_at.is_not(None))):
        contact = gateway.last_contact_at or gateway.enrolled_at
        assert contact is not None
        if now - contact >= offline_after:
            found.append(Condition("gateway_offline", gateway.school_id, gateway.id, gateway.name,
                                   contact.isoformat(), opens=gateway.id in in_lesson))
            # Whether its policy is current is unknown while it is away: what is open stays so.
            found += [Condition(kind, gateway.school_id, gateway.id, gateway.name, "",
                                opens=False)
                      for kind in ("gateway_policy_stale", "gateway_policy_expired")]
            continue
        applied = gateway.policy_applied_at
        if gateway.policy_version_applied and applied is not None and now - applied >= horizon:
            if not gateway_health(gateway, now, cache).up_to_date:
                found.append(Condition("gateway_policy_expired", gateway.school_id, gateway.id,
                                       gateway.name, applied.isoformat()))
                continue
        if not gateway_health(gateway, now, cache).up_to_date:
            found.append(Condition("gateway_policy_stale", gateway.school_id, gateway.id,
                                   gateway.name, gateway.policy_version_applied or "",
                                   confirm_after=stale_after))
    return found


def source_conditions(config: Any, now: datetime) -> list[Condition]:
    """Synced timetable sources whose last attempt failed (opening after the hour)."""
    after = timedelta(minutes=config["LESFOCUS_ALERT_SYNC_FAILED_MINUTES"])
    found = []
    for source in db.session.scalars(select(TimetableSource).where(
            TimetableSource.kind != "file", TimetableSource.last_error.is_not(None))):
        since = source.last_success_at or source.created_at
        found.append(Condition("timetable_sync_failing", source.school_id, str(source.id),
                               source.name, (source.last_error or "")[:500],
                               opens=now - since >= after))
    return found


def reconcile(conditions: list[Condition], now: datetime) -> dict[str, int]:
    """Open, confirm and resolve incidents so the table says what `conditions` say."""
    counts = {"opened": 0, "resolved": 0}
    current = {(c.kind, c.subject_id): c for c in conditions}
    open_rows = {(row.kind, row.subject_id): row for row in db.session.scalars(
        select(AlertIncident).where(AlertIncident.resolved_at.is_(None)))}
    for key, condition in current.items():
        row = open_rows.get(key)
        if row is None:
            if not condition.opens:
                continue
            row = AlertIncident(school_id=condition.school_id, kind=condition.kind,
                                subject_id=condition.subject_id,
                                subject_name=condition.subject_name[:200],
                                detail=condition.detail, noticed_at=now, mail_failures=0)
            db.session.add(row)
        if row.confirmed_at is None and condition.opens \
                and now - row.noticed_at >= condition.confirm_after:
            row.confirmed_at = now
            counts["opened"] += 1
    for key, row in open_rows.items():
        if key in current:
            continue
        if row.confirmed_at is None:
            db.session.delete(row)  # over before it counted: nobody is told
        else:
            row.resolved_at = now
            counts["resolved"] += 1
    return counts


# --- e-mail -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SmtpSettings:
    """Where alert e-mail goes (the LESFOCUS_SMTP_* settings)."""

    host: str
    port: int
    user: str
    password_file: str
    sender: str
    recipients: tuple[str, ...]
    starttls: bool
    timeout: float

    @classmethod
    def from_config(cls, config: Any) -> "SmtpSettings | None":
        """The settings, or None when no mail is to be sent (no host or no recipient)."""
        recipients = tuple(a.strip() for a in str(config["LESFOCUS_SMTP_TO"] or "").split(",")
                           if a.strip())
        if not config["LESFOCUS_SMTP_HOST"] or not recipients:
            return None
        return cls(str(config["LESFOCUS_SMTP_HOST"]), int(config["LESFOCUS_SMTP_PORT"]),
                   str(config["LESFOCUS_SMTP_USER"] or ""),
                   str(config["LESFOCUS_SMTP_PASSWORD_FILE"] or ""),
                   str(config["LESFOCUS_SMTP_FROM"] or f"lesfocus@{config['LESFOCUS_SMTP_HOST']}"),
                   recipients, bool(config["LESFOCUS_SMTP_STARTTLS"]),
                   float(config["LESFOCUS_SMTP_TIMEOUT"]))


def send_smtp(settings: SmtpSettings, message: EmailMessage) -> None:
    """Send one message (RFC 5321; STARTTLS RFC 3207). OSError or SMTPException on failure."""
    context = ssl.create_default_context()
    if settings.port == 465:
        client: smtplib.SMTP = smtplib.SMTP_SSL(settings.host, settings.port,
                                                timeout=settings.timeout, context=context)
    else:
        client = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
    with client:
        if settings.starttls and settings.port != 465:
            client.starttls(context=context)
        if settings.user:
            password = Path(settings.password_file).read_text().strip() \
                if settings.password_file else ""
            client.login(settings.user, password)
        client.send_message(message)


def _local(at: datetime, zone: str) -> str:
    try:
        tz = ZoneInfo(zone)
    except (KeyError, ValueError):
        tz = ZoneInfo("Europe/Amsterdam")
    return at.astimezone(tz).strftime("%d-%m-%Y %H:%M")


def _what(row: AlertIncident) -> str:
    name = row.subject_name
    if row.kind == "gateway_offline":
        return gettext("Gateway %(name)s is offline during lessons", name=name)
    if row.kind == "gateway_policy_stale":
        return gettext("Gateway %(name)s does not apply the current policy", name=name)
    if row.kind == "gateway_policy_expired":
        return gettext("Gateway %(name)s runs an expired policy and blocks nothing", name=name)
    return gettext("Timetable source %(name)s keeps failing", name=name)


def _explain(row: AlertIncident, zone: str) -> str:
    if row.kind == "gateway_offline":
        try:
            since = _local(datetime.fromisoformat(row.detail), zone)
        except ValueError:
            since = row.detail
        return gettext("Its last check-in was at %(since)s. Check that the gateway is on and "
                       "that the lesfocus-agent service runs (lesfocus-agent status).",
                       since=since)
    if row.kind == "gateway_policy_stale":
        return gettext("The gateway is in contact but has not applied the latest policy; see "
                       "the agent's log (journalctl -u lesfocus-agent).")
    if row.kind == "gateway_policy_expired":
        return gettext("Its policy has expired: until it gets a new one, nothing is blocked in "
                       "its classrooms.")
    return gettext("The last error was: %(error)s", error=row.detail)


def compose(row: AlertIncident, school: School | None, settings: SmtpSettings,
            recovered: bool) -> EmailMessage:
    """The message about `row`'s opening or recovery, in the dashboard's default language."""
    zone = school.timezone if school is not None else "Europe/Amsterdam"
    school_name = school.name if school is not None else "?"
    what = _what(row)
    message = EmailMessage()
    if recovered:
        message["Subject"] = gettext("[lesfocus] Recovered: %(what)s", what=what)
        body = [gettext("Recovered: %(what)s", what=what),
                gettext("School: %(school)s", school=school_name),
                gettext("From %(start)s until %(end)s.",
                        start=_local(row.confirmed_at or row.noticed_at, zone),
                        end=_local(row.resolved_at or row.noticed_at, zone))]
    else:
        message["Subject"] = gettext("[lesfocus] %(what)s", what=what)
        body = [what, gettext("School: %(school)s", school=school_name),
                gettext("Since: %(start)s", start=_local(row.noticed_at, zone)),
                _explain(row, zone),
                gettext("You get one more message when this is over. The IT page of the "
                        "dashboard lists the open alerts.")]
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.recipients)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="lesfocus")
    message.set_content("\n\n".join(body) + "\n")
    return message


def deliver(app: Flask, settings: SmtpSettings | None, now: datetime,
            send: Callable[[SmtpSettings, EmailMessage], None] = send_smtp) -> dict[str, int]:
    """Send the messages that are due; a failure stops this run's sending (tried next run)."""
    counts = {"sent": 0, "failed": 0}
    if settings is None:
        return counts
    due = list(db.session.scalars(select(AlertIncident).where(
        AlertIncident.confirmed_at.is_not(None),
        ((AlertIncident.opened_mail_at.is_(None) & AlertIncident.resolved_at.is_(None))
         | (AlertIncident.opened_mail_at.is_not(None) & AlertIncident.resolved_at.is_not(None)
            & AlertIncident.resolved_mail_at.is_(None))))
        .order_by(AlertIncident.id).limit(MAX_MAILS_PER_RUN)))
    schools = {s.id: s for s in db.session.scalars(
        select(School).where(School.id.in_({row.school_id for row in due})))}
    with force_locale(app.config.get("LESFOCUS_DEFAULT_LOCALE") or "nl"):
        for row in due:
            recovered = row.resolved_at is not None
            message = compose(row, schools.get(row.school_id), settings, recovered)
            try:
                send(settings, message)
            except (OSError, smtplib.SMTPException) as err:
                reason = _reason(err)
                row.mail_failures += 1
                row.last_mail_error = reason[:500]
                counts["failed"] += 1
                ALERT_MAILS.labels("failed").inc()
                log.warning("alert e-mail not sent through %s:%d: %s; trying again at the "
                            "next run (in a minute)", settings.host, settings.port, reason)
                break  # the server is down or refuses: the others would fail the same way
            if recovered:
                row.resolved_mail_at = now
            else:
                row.opened_mail_at = now
            row.last_mail_error = None
            counts["sent"] += 1
            ALERT_MAILS.labels("sent").inc()
            db.session.commit()  # each message that went out is noted at once
    return counts


def _reason(err: BaseException) -> str:
    if isinstance(err, smtplib.SMTPResponseException):
        text = err.smtp_error.decode("utf-8", "replace") if isinstance(
            err.smtp_error, bytes) else str(err.smtp_error)
        return f"the server answered {err.smtp_code} {text}"
    if isinstance(err, smtplib.SMTPRecipientsRefused):
        return "the server refused every recipient"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused (is the mail server running, is the port right?)"
    if isinstance(err, TimeoutError):
        return "no answer in time"
    if isinstance(err, ssl.SSLError):
        return f"TLS failed: {err.reason or err}"
    return f"{type(err).__name__}: {err}"


def run_alerts(app: Flask, now: datetime,
               send: Callable[[SmtpSettings, EmailMessage], None] = send_smtp) -> dict[str, int]:
    """The `alerts` job: find the conditions at `now`, update the incidents, send what is due."""
    conditions = gateway_conditions(app.config, now) + source_conditions(app.config, now)
    counts = reconcile(conditions, now)
    forget_old(now, int(app.config["LESFOCUS_AUDIT_RETENTION_DAYS"]))
    db.session.commit()
    counts.update(deliver(app, SmtpSettings.from_config(app.config), now, send))
    db.session.commit()
    return counts


def open_incidents(school_id: int) -> list[AlertIncident]:
    """The school's open, confirmed incidents, oldest first (the IT page shows them)."""
    return list(db.session.scalars(select(AlertIncident).where(
        AlertIncident.school_id == school_id, AlertIncident.resolved_at.is_(None),
        AlertIncident.confirmed_at.is_not(None)).order_by(AlertIncident.noticed_at)))


def incident_title(row: AlertIncident) -> str:
    """The incident in one line, in the request's language (the IT page)."""
    return _what(row)


def forget_old(now: datetime, days: int) -> int:
    """Delete incidents resolved more than `days` ago; returns how many."""
    result = db.session.execute(delete(AlertIncident).where(
        AlertIncident.resolved_at < now - timedelta(days=days)))
    return result.rowcount or 0
