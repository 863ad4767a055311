"""Live sync of a timetable source from its address: iCal URLs, Zermelo, WebUntis.

A sync fetches the source (`pull`: network and parsing, no database), over the source's window
(`days_back` before now to `days_ahead` after it), and hands the lessons to `apply_to_source`
(`store`), so a sync replaces exactly the source's lessons in that window, as a file import
does: a lesson the server no longer has is removed, other sources' lessons stay. Zermelo is read
through server/timetable/zermelo_client.py, WebUntis through webuntis_client.py; their secrets
are sealed on the source (server/sealed.py) and unsealed only for the fetch.

An iCal fetch is an HTTP GET (RFC 9110) with
a conditional request (`If-None-Match` / `If-Modified-Since` from the last answer, RFC 9110
section 13): a `304 Not Modified` changes nothing. Timeouts, a size limit and at most five
redirects bound what a feed can cost; TLS certificates are verified (the default context).
Failures are recorded on the source in words and leave its last good lessons in force.

`lesfocus worker` syncs every linked source every `every_minutes` (`sync_due`, one job each
minute), fetching outside its writer lock; `lesfocus timetable sync` and the dashboard's
"Nu synchroniseren" do it now.
"""

from __future__ import annotations

import http.client
import logging
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..metrics import observe_sync
from ..models import School, TimetableSource, utcnow
from .common import MAX_FILE_BYTES, ImportReport, ParsedTimetable, TimetableError, decode_utf8, \
    school_zone
from .http import MAX_REDIRECTS, USER_AGENT, build_opener
from .ical import parse_ical
from .sources import apply_to_source, day_window, read_secret
from .untis import parse_untis
from .webuntis_client import fetch_timetable
from .zermelo import parse_zermelo
from .zermelo_client import fetch_appointments

TIMEOUT_SECONDS = 20.0
# One sync of a Zermelo or WebUntis source (many requests) stops after this long.
MAX_SYNC_SECONDS = 300.0
SYNCED_KINDS = ("ical-url", "zermelo", "webuntis")

log = logging.getLogger("lesfocus.timetable")


@dataclass
class Fetched:
    """One answer of the feed: its body (None for 304) and the validators to send next time."""

    body: bytes | None
    etag: str | None
    last_modified: str | None


def fetch_feed(url: str, state: dict[str, str] | None, *,
               timeout: float = TIMEOUT_SECONDS, limit: int = MAX_FILE_BYTES) -> Fetched:
    """GET `url` conditionally; TimetableError in words for every way it can fail."""
    if not url.lower().startswith(("http://", "https://")):
        raise TimetableError(f"the address {url[:80]!r} is not an http(s) URL")
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT,
                                                   "Accept": "text/calendar, */*;q=0.5"})
    for header, key in (("If-None-Match", "etag"), ("If-Modified-Since", "last_modified")):
        if state and state.get(key):
            request.add_header(header, state[key])
    try:
        with build_opener().open(request, timeout=timeout) as answer:
            body = answer.read(limit + 1)
            if len(body) > limit:
                raise TimetableError(f"the feed is larger than the {limit} bytes allowed")
            return Fetched(body, answer.headers.get("ETag"), answer.headers.get("Last-Modified"))
    except urllib.error.HTTPError as err:
        if err.code == 304:
            return Fetched(None, (state or {}).get("etag"), (state or {}).get("last_modified"))
        if err.code in (401, 403):
            raise TimetableError(f"the feed refused access (HTTP {err.code}): check the link or "
                                 f"its token") from None
        if err.code in (301, 302, 303, 307, 308):
            raise TimetableError(f"the feed redirects more than {MAX_REDIRECTS} times") from None
        raise TimetableError(f"the feed answered HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, TimeoutError):
            raise TimetableError(f"the feed did not answer within {timeout:.0f} s") from None
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise TimetableError(f"the feed's TLS certificate is not valid: "
                                 f"{reason.verify_message}") from None
        raise TimetableError(f"cannot reach the feed: {reason}") from None
    except TimeoutError:
        raise TimetableError(f"the feed did not answer within {timeout:.0f} s") from None
    except (http.client.HTTPException, OSError, ValueError) as err:
        raise TimetableError(f"the feed's answer is broken: {type(err).__name__}: "
                             f"{str(err)[:120]}") from None


def sync_window(source: TimetableSource | Snapshot, now: datetime) -> tuple[datetime, datetime]:
    """The window a sync of `source` asks for and replaces."""
    return now - timedelta(days=source.days_back), now + timedelta(days=source.days_ahead)


@dataclass(frozen=True)
class Snapshot:
    """What a fetch needs of a source, read before the network so no transaction stays open."""

    name: str
    kind: str
    address: str
    options: dict[str, Any]
    sync_state: dict[str, str] | None
    days_back: int
    days_ahead: int
    zone: tzinfo
    secret: str | None = field(default=None, repr=False)  # never in a log line or traceback


@dataclass
class Pulled:
    """What a fetch brought: the lessons (None: the feed is as it was) and the window asked."""

    parsed: ParsedTimetable | None
    window: tuple[datetime, datetime]
    sync_state: dict[str, str] | None


def snapshot_of(school: School, source: TimetableSource) -> Snapshot:
    """The source as a fetch needs it, its secret unsealed; TimetableError when unusable."""
    if source.kind not in SYNCED_KINDS:
        raise TimetableError(f"source {source.name!r} is a {source.kind} source: it is "
                             f"imported, not synced")
    if not source.address:
        raise TimetableError(f"source {source.name!r} has no address")
    secret = read_secret(source)
    if source.kind in ("zermelo", "webuntis") and not secret:
        raise TimetableError(f"source {source.name!r} has no stored "
                             f"{'token' if source.kind == 'zermelo' else 'password'}")
    return Snapshot(source.name, source.kind, source.address, dict(source.options or {}),
                    source.sync_state, source.days_back, source.days_ahead,
                    school_zone(school.timezone), secret)


def pull(snapshot: Snapshot, now: datetime, *,
         fetch: Callable[[str, dict[str, str] | None], Fetched] = fetch_feed,
         timeout: float = TIMEOUT_SECONDS) -> Pulled:
    """Fetch and parse one source; touches no database. TimetableError in words."""
    deadline = time.monotonic() + MAX_SYNC_SECONDS
    window = sync_window(snapshot, now)
    if snapshot.kind == "ical-url":
        fetched = fetch(snapshot.address, snapshot.sync_state)
        if fetched.body is None:  # 304: the feed is as it was
            return Pulled(None, window, snapshot.sync_state)
        parsed = parse_ical(decode_utf8(fetched.body), snapshot.zone, window=window)
        return Pulled(parsed, window, {"etag": fetched.etag or "",
                                       "last_modified": fetched.last_modified or ""})
    if snapshot.kind == "zermelo":
        document = fetch_appointments(snapshot.address, snapshot.secret or "", window,
                                      timeout=timeout, deadline=deadline)
        return Pulled(parse_zermelo(document, snapshot.zone), window, None)
    # webuntis: whole school-local days, as the API counts them
    first = window[0].astimezone(snapshot.zone).date()
    last = window[1].astimezone(snapshot.zone).date()
    document = fetch_timetable(snapshot.address, str(snapshot.options.get("untis_school", "")),
                               str(snapshot.options.get("user", "")), snapshot.secret or "",
                               first, last, timeout=timeout, deadline=deadline)
    return Pulled(parse_untis(document, snapshot.zone), day_window(first, last, snapshot.zone),
                  None)


def store(session: Session, school: School, source: TimetableSource, pulled: Pulled,
          now: datetime) -> ImportReport | None:
    """Write what `pull` brought into the caller's session; the report, None when unchanged."""
    source.last_attempt_at = now
    if pulled.parsed is None:
        source.last_success_at, source.last_error = now, None
        return None
    report = apply_to_source(session, school, source, pulled.parsed,
                             school_zone(school.timezone), requested=pulled.window, now=now)
    source.sync_state = pulled.sync_state
    return report


def sync_source(session: Session, school: School, source: TimetableSource, *,
                now: datetime | None = None,
                fetch: Callable[[str, dict[str, str] | None], Fetched] = fetch_feed,
                timeout: float = TIMEOUT_SECONDS) -> ImportReport | None:
    """Sync one source into the caller's session (fetch and write in one go; no commit).

    On failure TimetableError is raised and nothing is written; `sync_named` records it.
    """
    at = now or utcnow()
    pulled = pull(snapshot_of(school, source), at, fetch=fetch, timeout=timeout)
    return store(session, school, source, pulled, at)


def record_failure(source: TimetableSource, message: str, now: datetime) -> None:
    """Note a failed attempt on the source (its lessons stay as they were)."""
    source.last_attempt_at = now
    source.last_error = message[:2000]


def sync_named(session: Session, school: School, name: str, *, now: datetime | None = None,
               fetch: Callable[[str, dict[str, str] | None], Fetched] = fetch_feed,
               timeout: float = TIMEOUT_SECONDS,
               write_lock: AbstractContextManager[Any] | None = None
               ) -> tuple[ImportReport | None, str | None]:
    """Sync the school's source `name` and commit: (report or None when unchanged, None), or
    (None, the error in words) with the failure recorded on the source and committed, its
    lessons as they were. The one path of the CLI, the dashboard and the worker's job.

    The fetch runs with no transaction open and without `write_lock` (the worker's writer
    lock): a slow feed holds up nobody. Only the writing takes the lock.
    """
    at = now or utcnow()
    lock = write_lock if write_lock is not None else nullcontext()
    school_id = school.id
    try:
        snapshot = snapshot_of(school, _source(session, school_id, name))
    except TimetableError as err:
        return _failed(session, school_id, name, str(err), at, lock)
    session.rollback()  # end the read transaction: nothing of the database is held meanwhile
    try:
        pulled = pull(snapshot, at, fetch=fetch, timeout=timeout)
    except TimetableError as err:
        return _failed(session, school_id, name, str(err), at, lock)
    with lock:
        source = _source(session, school_id, name)
        school = session.get(School, school_id)
        if source is None or school is None:
            session.rollback()
            return None, f"source {name!r} was deleted while it was being synced"
        try:
            report = store(session, school, source, pulled, at)
        except TimetableError as err:
            session.rollback()
            failed = _source(session, school_id, name)
            if failed is not None:
                record_failure(failed, str(err), at)
                observe_sync(failed.id, "failed")
            session.commit()
            return None, str(err)
        session.commit()
        observe_sync(source.id, "synced" if report else "unchanged")
    return report, None


def _failed(session: Session, school_id: int, name: str, message: str, at: datetime,
            lock: AbstractContextManager[Any]) -> tuple[None, str]:
    session.rollback()
    with lock:
        source = _source(session, school_id, name)
        if source is not None:
            record_failure(source, message, at)
            observe_sync(source.id, "failed")
        session.commit()
    log.info("timetable source %s failed: %s", name, message)
    return None, message


def _source(session: Session, school_id: int, name: str) -> TimetableSource | None:
    return session.scalar(select(TimetableSource).where(
        TimetableSource.school_id == school_id, TimetableSource.name == name))


def due_sources(session: Session, now: datetime) -> list[tuple[int, str]]:
    """(school id, name) of the linked sources whose `every_minutes` have passed since their
    last attempt (or that were never tried), oldest attempt first."""
    due = []
    for school_id, name, every, last in session.execute(
            select(TimetableSource.school_id, TimetableSource.name, TimetableSource.every_minutes,
                   TimetableSource.last_attempt_at)
            .where(TimetableSource.kind != "file", TimetableSource.address.is_not(None),
                   TimetableSource.every_minutes.is_not(None))):
        if last is None or last + timedelta(minutes=every) <= now:
            due.append((last or datetime.min.replace(tzinfo=now.tzinfo), school_id, name))
    return [(school_id, name) for _, school_id, name in sorted(due)]


def sync_due(session: Session, *, now: datetime | None = None,
             fetch: Callable[[str, dict[str, str] | None], Fetched] = fetch_feed,
             timeout: float = TIMEOUT_SECONDS,
             write_lock: AbstractContextManager[Any] | None = None) -> dict[str, int]:
    """Sync every due source (the worker's job, every minute); counts of what happened.

    `write_lock` is taken only to write (see `sync_named`)."""
    at = now or utcnow()
    counts = {"synced": 0, "unchanged": 0, "failed": 0}
    for school_id, name in due_sources(session, at):
        school = session.get(School, school_id)
        if school is None:
            continue
        report, error = sync_named(session, school, name, now=at, fetch=fetch, timeout=timeout,
                                   write_lock=write_lock)
        counts["failed" if error else "synced" if report else "unchanged"] += 1
    return counts


__all__ = ["Fetched", "Pulled", "Snapshot", "due_sources", "fetch_feed", "pull", "record_failure",
           "snapshot_of", "store", "sync_due", "sync_named", "sync_source", "sync_window"]
