"""Fetch a school's timetable from WebUntis through its JSON-RPC API.

Written from Untis' "WebUntis JSON-RPC API" document: every call is a JSON-RPC 2.0 POST to
`https://<server>/WebUntis/jsonrpc.do?school=<school>`. `authenticate` (params `user`, `password`,
`client`) opens a session; its result carries `sessionId`, and the server sets the cookie
`JSESSIONID`, which every later call sends. `getRooms` lists the rooms (`id`, `name`,
`longName`, `active`); `getTimetable` with `options` (`element` {`id`, `type`: 4 for a room},
`startDate`/`endDate` as YYYYMMDD numbers and the `*Fields` wanted) gives one room's periods,
with `date` (YYYYMMDD) and `startTime`/`endTime` (HHMM) in the school's local time, `code`
(`cancelled`, `irregular`) and `lstype` (`ls` lesson, `oh` office hour, `sb` standby, `bs` break
supervision, `ex` exam). `logout` ends the session. Errors are JSON-RPC error objects with
WebUntis' own codes (-8504 bad credentials, -8520 not authenticated, ...).

The answers are returned in the capture shape server/timetable/untis.py reads (`getRooms` next
to the `getTimetable` calls with their requests), so a sync and an uploaded capture are read by
the same code.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from datetime import date
from typing import Any

from .common import TimetableError
from .http import exchange

WHAT = "WebUntis"
CLIENT = "lesfocus"
ROOM = 4  # element type of a room in getTimetable
_NAMES = ["id", "name"]
# WebUntis error codes, in the words IT needs to act on them.
ERRORS = {
    -8500: "the school name is not known on this WebUntis server (check --untis-school)",
    -8504: "the user name or password is wrong (bad credentials); store the right password "
           "with `lesfocus timetable source secret NAME --secret-file F`",
    -8509: "the user has no right to call this method; give it the rights docs/timetables.md "
           "lists",
    -8520: "the session is not authenticated (it expired or was refused)",
    -8998: "the user is blocked for now after too many failed logins",
    -7004: "the dates asked for lie outside the school year WebUntis knows",
}


def jsonrpc_url(address: str, school: str) -> str:
    """The JSON-RPC endpoint of a WebUntis address (`https://mese.webuntis.com` or its
    `/WebUntis/jsonrpc.do`), for `school`."""
    base = address.strip().split("?", 1)[0].rstrip("/")
    for tail in ("/WebUntis/jsonrpc.do", "/WebUntis"):
        if base.lower().endswith(tail.lower()):
            base = base[:-len(tail)]
            break
    return f"{base}/WebUntis/jsonrpc.do?{urllib.parse.urlencode({'school': school})}"


def yyyymmdd(day: date) -> int:
    """A day as WebUntis writes it: 20261201."""
    return day.year * 10000 + day.month * 100 + day.day


class Session:
    """One authenticated JSON-RPC session (use as a context manager: it logs out at the end)."""

    def __init__(self, url: str, user: str, password: str, *, timeout: float,
                 deadline: float | None = None) -> None:
        self.url, self.timeout, self.deadline = url, timeout, deadline
        self._user, self._password = user, password
        self._cookie: str | None = None
        self._next_id = 0

    def __enter__(self) -> Session:
        result = self.call("authenticate", {"user": self._user, "password": self._password,
                                            "client": CLIENT})
        if not isinstance(result, dict) or not isinstance(result.get("sessionId"), str):
            raise TimetableError(f"{WHAT} answered authenticate without a sessionId")
        self._cookie = self._cookie or result["sessionId"]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._cookie is None:
            return
        try:
            self.call("logout", {})
        except TimetableError:
            pass  # the session times out on the server by itself
        self._cookie = None

    def call(self, method: str, params: dict[str, Any]) -> Any:
        """The result of one call; TimetableError in words for a JSON-RPC error or a bad answer."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TimetableError(f"{WHAT} took too long: the sync stopped before {method}")
        self._next_id += 1
        body = json.dumps({"jsonrpc": "2.0", "id": str(self._next_id), "method": method,
                           "params": params}).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._cookie:
            headers["Cookie"] = f"JSESSIONID={self._cookie}"
        answer = exchange(self.url, what=WHAT, timeout=self.timeout, method="POST",
                          headers=headers, body=body)
        for header in answer.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            if name.strip() == "JSESSIONID":
                self._cookie = rest.split(";", 1)[0].strip()
        try:
            document = json.loads(answer.body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            document = None
        if isinstance(document, dict) and isinstance(document.get("error"), dict):
            raise TimetableError(_error_text(method, document["error"]))
        if answer.status != 200:
            raise TimetableError(f"{WHAT} answered HTTP {answer.status} to {method}")
        if not isinstance(document, dict) or "result" not in document:
            raise TimetableError(f"{WHAT} answered {method} with something that is not a "
                                 f"JSON-RPC response")
        return document["result"]


def _error_text(method: str, error: dict[str, Any]) -> str:
    code = error.get("code")
    known = ERRORS.get(code) if isinstance(code, int) else None
    message = str(error.get("message") or "")[:160]
    if known:
        return f"{WHAT} refused {method}: {known} (error {code}{': ' + message if message else ''})"
    return f"{WHAT} refused {method}: error {str(code)[:12]}{': ' + message if message else ''}"


def fetch_timetable(address: str, school: str, user: str, password: str, first: date,
                    last: date, *, timeout: float, deadline: float | None = None
                    ) -> dict[str, Any]:
    """Every active room's periods from `first` to `last` (school-local days, both included),
    in the capture shape of server/timetable/untis.py."""
    url = jsonrpc_url(address, school)
    calls: list[dict[str, Any]] = []
    with Session(url, user, password, timeout=timeout, deadline=deadline) as session:
        rooms = session.call("getRooms", {})
        if not isinstance(rooms, list):
            raise TimetableError(f"{WHAT} answered getRooms without a list of rooms")
        for room in rooms:
            if not isinstance(room, dict) or isinstance(room.get("id"), bool) \
                    or not isinstance(room.get("id"), int) or room.get("active") is False:
                continue
            request = {"method": "getTimetable", "params": {"options": {
                "element": {"id": room["id"], "type": ROOM},
                "startDate": yyyymmdd(first), "endDate": yyyymmdd(last),
                "klasseFields": _NAMES, "roomFields": _NAMES, "subjectFields": _NAMES,
                "teacherFields": _NAMES}}}
            result = session.call("getTimetable", request["params"])
            calls.append({"request": request, "response": {"jsonrpc": "2.0", "result": result}})
    if not calls:
        raise TimetableError(f"{WHAT} lists no active room for this user; nothing was changed")
    return {"getRooms": {"response": {"result": rooms}}, "getTimetable": calls}


__all__ = ["ERRORS", "Session", "fetch_timetable", "jsonrpc_url", "yyyymmdd"]
