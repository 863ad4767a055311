"""Fetch appointments from a Zermelo Portal through its REST API v3.

Written from Zermelo's developer documentation (confluence.zermelo.nl, "General API Information"
and "Appointment"): `GET https://<school>.zportal.nl/api/v3/appointments` with `start` and `end`
in Unix seconds (appointments that *start* in between are returned), `valid=true` (only the
current version of each appointment instance) and `fields=` (several fields, `type` and
`lastModified` among them, are only sent when asked for). The token of a portal user goes in
the `Authorization: Bearer` header (the API also takes an `access_token` query parameter; the
header keeps the token out of server logs). Every answer is wrapped in an envelope
`{"response": {"status", "message", "details", "eventId", "startRow", "endRow", "totalRows",
"data": [...]}}`.

Zermelo ends a request that runs longer than 60 seconds and asks clients to split large ones,
so the window is asked for one week at a time (our "pages"); the answers are joined into one
document for server/timetable/zermelo.py. An answer whose envelope says it holds fewer rows
than `totalRows` is refused rather than taken for the whole week.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from datetime import datetime, timedelta
from typing import Any

from .common import TimetableError
from .http import exchange

WHAT = "the Zermelo portal"
FIELDS = ("id", "appointmentInstance", "start", "end", "type", "cancelled", "valid", "hidden",
          "lastModified", "branchOfSchool", "locations", "groups", "teachers", "subjects",
          "onlineLocationUrl")
PAGE = timedelta(days=7)


def appointments_url(address: str) -> str:
    """The appointments endpoint of a portal address (`https://school.zportal.nl` or any
    address below it, such as `.../api/v3` or `.../api/v3/appointments`)."""
    base = address.strip().rstrip("/")
    for tail in ("/api/v3/appointments", "/api/v3", "/api"):
        if base.lower().endswith(tail):
            base = base[:-len(tail)]
            break
    return base + "/api/v3/appointments"


def fetch_appointments(address: str, token: str, window: tuple[datetime, datetime], *,
                       timeout: float, deadline: float | None = None) -> dict[str, Any]:
    """Every valid appointment starting in `window`, as one appointments document."""
    url = appointments_url(address)
    data: list[Any] = []
    start = window[0]
    while start < window[1]:
        end = min(start + PAGE, window[1])
        if deadline is not None and time.monotonic() > deadline:
            raise TimetableError(f"{WHAT} took too long: the sync stopped before "
                                 f"{start.date().isoformat()}")
        data.extend(_page(url, token, start, end, timeout))
        start = end
    return {"response": {"status": 200, "data": data}}


def _page(url: str, token: str, start: datetime, end: datetime, timeout: float) -> list[Any]:
    query = urllib.parse.urlencode({"start": int(start.timestamp()), "end": int(end.timestamp()),
                                    "valid": "true", "fields": ",".join(FIELDS)})
    answer = exchange(f"{url}?{query}", what=WHAT, timeout=timeout,
                      headers={"Authorization": f"Bearer {token}",
                               "Accept": "application/json"})
    week = f"the week from {start.date().isoformat()}"
    envelope = _envelope(answer.body)
    message = _message(envelope)
    if answer.status == 401:
        raise TimetableError(f"{WHAT} did not accept the token (HTTP 401{message}): it is "
                             f"wrong, expired or revoked; make a new one in the portal and store "
                             f"it with `lesfocus timetable source secret NAME --token-file F`")
    if answer.status == 403:
        raise TimetableError(f"{WHAT} refused the token (HTTP 403{message}): its user may not "
                             f"read the school's appointments; give the user the rights "
                             f"docs/timetables.md lists, or a token with the Schedule scope")
    if answer.status != 200:
        raise TimetableError(f"{WHAT} answered HTTP {answer.status} for {week}{message}")
    if envelope is None:
        raise TimetableError(f"{WHAT} answered {week} with something that is not its JSON "
                             f"envelope ({{\"response\": {{\"data\": [...]}}}})")
    status = envelope.get("status", 200)
    if status != 200:
        raise TimetableError(f"{WHAT} answered {week} with status {str(status)[:10]}{message}")
    rows = envelope.get("data")
    if not isinstance(rows, list):
        raise TimetableError(f"{WHAT} answered {week} without a data list")
    total = envelope.get("totalRows")
    if isinstance(total, int) and not isinstance(total, bool) and total > len(rows):
        raise TimetableError(f"{WHAT} sent {len(rows)} of the {total} appointments of {week}; "
                             f"nothing was changed")
    return rows


def _envelope(body: bytes) -> dict[str, Any] | None:
    """The `response` object of a Zermelo answer, or None when the body is not one."""
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    response = document.get("response") if isinstance(document, dict) else None
    return response if isinstance(response, dict) else None


def _message(envelope: dict[str, Any] | None) -> str:
    """`: <message> (<details>)` from the envelope, when it has them."""
    if envelope is None:
        return ""
    parts = [str(envelope.get(key))[:160] for key in ("message", "details")
             if isinstance(envelope.get(key), str) and envelope.get(key).strip()]
    return f": {' - '.join(parts)}" if parts else ""


__all__ = ["FIELDS", "appointments_url", "fetch_appointments"]
