"""Local servers that speak the timetable vendors' protocols, on 127.0.0.1, for sync tests.

Written from the vendors' documentation, not from our client:
- `ZermeloServer`: the Zermelo Portal REST API v3 `GET /api/v3/appointments` (confluence.zermelo.nl,
  "General API Information", "Appointment"): a token by `Authorization: Bearer` or
  `access_token`, `start`/`end` in Unix seconds selecting appointments that start in between,
  `valid`, `fields` (only the named fields are sent), every answer in the
  `{"response": {"status", "message", "details", "eventId", "startRow", "endRow", "totalRows",
  "data"}}` envelope, 401 with that envelope for a missing or wrong token.
- `WebUntisServer`: the WebUntis JSON-RPC API (`POST /WebUntis/jsonrpc.do?school=NAME`, JSON-RPC
  2.0): `authenticate` sets the JSESSIONID cookie and returns `sessionId`; `getRooms`,
  `getTimetable` (long form, `options` with `element`, `startDate`/`endDate` YYYYMMDD and the
  `*Fields` lists) and `logout` need that session; errors are JSON-RPC error objects with
  WebUntis' codes (-8500 unknown school, -8504 bad credentials, -8520 not authenticated).
Both can misbehave on purpose: `mode` "hang" (answer only once `release` is set), "500",
"garbage" (a body that is not the protocol's), and the Zermelo one "short" (fewer rows than
`totalRows`), "403", and `fail_on_request` (a 500 for the Nth request only).
"""

from __future__ import annotations

import json
import secrets
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server:
    """A ThreadingHTTPServer on a free loopback port, run in a thread (a context manager)."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.mode = "ok"
        self.release = threading.Event()
        self.arrived = threading.Event()  # set when a request comes in
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.server.owner = self  # type: ignore[attr-defined]
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Any:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass

    @property
    def owner(self) -> Any:
        return self.server.owner  # type: ignore[attr-defined]

    def send_json(self, status: int, document: Any, headers: dict[str, str] | None = None
                  ) -> None:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def misbehave(self) -> bool:
        """Answer as `mode` says; True when the request was dealt with that way."""
        owner = self.owner
        owner.arrived.set()
        if owner.mode == "hang":
            owner.release.wait(30)
            return owner.mode == "hang"
        if owner.mode == "500":
            self.send_json(500, b"<html><body>Internal Server Error</body></html>")
            return True
        if owner.mode == "garbage":
            self.send_json(200, b"<html>maintenance: back at 7:00</html>")
            return True
        return False


def zermelo_envelope(status: int, data: list[Any], message: str = "",
                     total: int | None = None) -> dict[str, Any]:
    """A Zermelo response envelope."""
    return {"response": {"status": status, "message": message, "details": "", "eventId": 0,
                         "startRow": 0, "endRow": len(data),
                         "totalRows": len(data) if total is None else total, "data": data}}


class ZermeloServer(_Server):
    """A Zermelo Portal's `/api/v3/appointments` (see the module docstring)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.appointments: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []  # query and headers of each request
        self.fail_on_request: int | None = None
        super().__init__(_ZermeloHandler)


class _ZermeloHandler(_Handler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
        owner: ZermeloServer = self.owner
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        owner.requests.append({"path": url.path, "query": query, "headers": dict(self.headers)})
        if self.misbehave():
            return
        if url.path != "/api/v3/appointments":
            self.send_json(404, zermelo_envelope(404, [], "Not Found"))
            return
        given = query.get("access_token")
        authorization = self.headers.get("Authorization", "")
        if authorization.startswith("Bearer "):
            given = authorization[len("Bearer "):]
        if given != owner.token:
            self.send_json(401, zermelo_envelope(401, [], "Unauthorized"))
            return
        if owner.mode == "403":
            self.send_json(403, zermelo_envelope(403, [], "Access Denied",))
            return
        if owner.fail_on_request == len(owner.requests):
            self.send_json(500, zermelo_envelope(500, [], "Internal error"))
            return
        try:
            start, end = int(query["start"]), int(query["end"])
        except (KeyError, ValueError):
            self.send_json(400, zermelo_envelope(400, [], "start and end are required"))
            return
        fields = query.get("fields", "").split(",") if query.get("fields") else None
        rows = [a for a in owner.appointments if start <= a["start"] < end
                and (query.get("valid") != "true" or a.get("valid", True))]
        if fields is not None:
            rows = [{key: value for key, value in a.items() if key in fields} for a in rows]
        if owner.mode == "short" and rows:
            self.send_json(200, zermelo_envelope(200, rows[:-1], total=len(rows)))
            return
        self.send_json(200, zermelo_envelope(200, rows))


class WebUntisServer(_Server):
    """A WebUntis JSON-RPC endpoint with sessions (see the module docstring)."""

    def __init__(self, school: str, user: str, password: str) -> None:
        self.school, self.user, self.password = school, user, password
        self.rooms: list[dict[str, Any]] = []
        self.names: dict[str, dict[int, str]] = {"kl": {}, "te": {}, "su": {}}
        self.periods: list[dict[str, Any]] = []  # elements as lists of ids
        self.sessions: set[str] = set()
        self.forget_sessions = False  # True: sessions end at once, as if they had expired
        self.calls: list[dict[str, Any]] = []  # method, params, cookie of each call
        super().__init__(_WebUntisHandler)


class _WebUntisHandler(_Handler):
    def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
        owner: WebUntisServer = self.owner
        url = urllib.parse.urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        cookie = None
        for part in (self.headers.get("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == "JSESSIONID":
                cookie = value
        try:
            call = json.loads(body)
        except json.JSONDecodeError:
            call = {}
        owner.calls.append({"method": call.get("method"), "params": call.get("params"),
                            "cookie": cookie})
        if self.misbehave():
            return
        if url.path != "/WebUntis/jsonrpc.do":
            self.send_json(404, b"Not Found")
            return
        ident = call.get("id")

        def error(code: int, message: str) -> None:
            self.send_json(200, {"jsonrpc": "2.0", "id": ident,
                                 "error": {"code": code, "message": message}})

        def result(value: Any, headers: dict[str, str] | None = None) -> None:
            self.send_json(200, {"jsonrpc": "2.0", "id": ident, "result": value}, headers)

        school = dict(urllib.parse.parse_qsl(url.query)).get("school")
        if school != owner.school:
            error(-8500, "invalid schoolname")
            return
        method, params = call.get("method"), call.get("params") or {}
        if method == "authenticate":
            if params.get("user") != owner.user or params.get("password") != owner.password:
                error(-8504, "bad credentials")
                return
            session = secrets.token_hex(16).upper()
            if not owner.forget_sessions:
                owner.sessions.add(session)
            result({"sessionId": session, "personType": 2, "personId": 0, "klasseId": 0},
                   {"Set-Cookie": f"JSESSIONID={session}; Path=/WebUntis; HttpOnly"})
            return
        if cookie not in owner.sessions:
            error(-8520, "not authenticated")
            return
        if method == "logout":
            owner.sessions.discard(cookie)
            result(None)
            return
        if method == "getRooms":
            result(owner.rooms)
            return
        if method == "getTimetable":
            options = params.get("options") or {}
            element = options.get("element") or {}
            if element.get("type") != 4:
                error(-32602, "only rooms (type 4) in this test server")
                return
            result([self._period(p, options) for p in owner.periods
                    if element.get("id") in p["ro"]
                    and options.get("startDate", 0) <= p["date"] <= options.get("endDate", 0)])
            return
        error(-32601, "Method not found")

    def _period(self, period: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
        owner: WebUntisServer = self.owner
        room_names = {room["id"]: room["name"] for room in owner.rooms}
        tables = {"kl": ("klasseFields", owner.names["kl"]), "te": ("teacherFields",
                                                                    owner.names["te"]),
                  "su": ("subjectFields", owner.names["su"]), "ro": ("roomFields", room_names)}
        answer = {key: value for key, value in period.items() if key not in tables}
        for key, (option, names) in tables.items():
            with_names = "name" in (options.get(option) or [])
            answer[key] = [{"id": i, **({"name": names[i]} if with_names else {})}
                           for i in period.get(key, [])]
        return answer


__all__ = ["WebUntisServer", "ZermeloServer", "zermelo_envelope"]
