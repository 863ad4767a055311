"""Live sync of a timetable source from its address (issue 11 point 2; iCal URLs so far).

`sync_source` fetches the feed, parses it over the source's window (`days_back` before now to
`days_ahead` after it) and hands the lessons to `apply_to_source`, so a sync replaces exactly the
source's lessons in that window, as a file import does. The fetch is an HTTP GET (RFC 9110) with
a conditional request (`If-None-Match` / `If-Modified-Since` from the last answer, RFC 9110
section 13): a `304 Not Modified` changes nothing. Timeouts, a size limit and at most five
redirects bound what a feed can cost; TLS certificates are verified (the default context).
Failures are recorded on the source in words and leave its last good lessons in force.

`lesfocus worker` syncs every linked source every `every_minutes` (`sync_due`, one job each
minute); `lesfocus timetable sync` does it now. Zermelo and WebUntis servers are not synced yet:
their sources can be stored, not fetched.
"""

from __future__ import annotations

import http.client
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..metrics import observe_sync
from ..models import School, TimetableSource, utcnow
from .common import MAX_FILE_BYTES, ImportReport, TimetableError, decode_utf8, school_zone
from .ical import parse_ical
from .sources import apply_to_source

TIMEOUT_SECONDS = 20.0
MAX_REDIRECTS = 5
USER_AGENT = "lesfocus timetable sync"


@dataclass
class Fetched:
    """One answer of the feed: its body (None for 304) and the validators to send next time."""

    body: bytes | None
    etag: str | None
    last_modified: str | None


class _LimitedRedirects(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS


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
    opener = urllib.request.build_opener(
        _LimitedRedirects(), urllib.request.HTTPSHandler(context=ssl.create_default_context()))
    try:
        with opener.open(request, timeout=timeout) as answer:
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


def sync_window(source: TimetableSource, now: datetime) -> tuple[datetime, datetime]:
    """The window a sync of `source` asks for and replaces."""
    return now - timedelta(days=source.days_back), now + timedelta(days=source.days_ahead)


def sync_source(session: Session, school: School, source: TimetableSource, *,
                now: datetime | None = None,
                fetch: Callable[[str, dict[str, str] | None], Fetched] = fetch_feed
                ) -> ImportReport | None:
    """Sync one source into the caller's session; the report, or None when nothing changed.

    On failure the error is recorded on the source (the caller commits it after rolling back
    the lessons: see `record_failure`) and TimetableError is raised.
    """
    at = now or utcnow()
    if source.kind != "ical-url":
        raise TimetableError(f"source {source.name!r}: syncing {source.kind} sources is not "
                             f"built yet; import their export with `lesfocus timetable import`")
    if not source.address:
        raise TimetableError(f"source {source.name!r} has no address")
    fetched = fetch(source.address, source.sync_state)
    source.last_attempt_at = at
    if fetched.body is None:  # 304: the feed is as it was
        source.last_success_at, source.last_error = at, None
        return None
    window = sync_window(source, at)
    parsed = parse_ical(decode_utf8(fetched.body), school_zone(school.timezone), window=window)
    report = apply_to_source(session, school, source, parsed, school_zone(school.timezone),
                             requested=window, now=at)
    source.sync_state = {"etag": fetched.etag or "", "last_modified": fetched.last_modified or ""}
    return report


def record_failure(source: TimetableSource, message: str, now: datetime) -> None:
    """Note a failed attempt on the source (its lessons stay as they were)."""
    source.last_attempt_at = now
    source.last_error = message[:2000]


def sync_named(session: Session, school: School, name: str, *, now: datetime | None = None,
               fetch: Callable[[str, dict[str, str] | None], Fetched] = fetch_feed
               ) -> tuple[ImportReport | None, str | None]:
    """Sync the school's source `name` and commit: (report or None when unchanged, None), or
    (None, the error in words) with the failure recorded on the source and committed, its
    lessons as they were. The one path of `lesfocus timetable sync` and the worker's job."""
    at = now or utcnow()
    source = _source(session, school, name)
    try:
        report = sync_source(session, school, source, now=at, fetch=fetch)
    except TimetableError as err:
        session.rollback()
        failed = _source(session, school, name)
        record_failure(failed, str(err), at)
        session.commit()
        observe_sync(failed.id, "failed")
        return None, str(err)
    session.commit()
    observe_sync(source.id, "synced" if report else "unchanged")
    return report, None


def _source(session: Session, school: School, name: str) -> TimetableSource:
    return session.scalars(select(TimetableSource).where(
        TimetableSource.school_id == school.id, TimetableSource.name == name)).one()


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
             fetch: Callable[[str, dict[str, str] | None], Fetched] = fetch_feed
             ) -> dict[str, int]:
    """Sync every due source (the worker's job, every minute); counts of what happened."""
    at = now or utcnow()
    counts = {"synced": 0, "unchanged": 0, "failed": 0}
    for school_id, name in due_sources(session, at):
        school = session.get(School, school_id)
        if school is None:
            continue
        report, error = sync_named(session, school, name, now=at, fetch=fetch)
        counts["failed" if error else "synced" if report else "unchanged"] += 1
    return counts


__all__ = ["Fetched", "due_sources", "fetch_feed", "record_failure", "sync_due", "sync_named",
           "sync_source", "sync_window"]
