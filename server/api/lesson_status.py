"""`GET /lesson-status`: is the caller's network in a lesson, and what is blocked there (public).

Every browser with the extension asks, so a request is answered from memory, with no SQL and no
signature check:
- an index of every segment's networks (with its rooms), built from the database once and again
  when the change feed says that something other than exceptions changed (segments, networks,
  rooms; here or in another process), and at least every few seconds as a safety net;
- each gateway's compiled policy, the long poll's (server/policy_cache.py), which the change feed
  keeps current: a grant through any process is in the answers within the feed's delay;
- each segment's answer, serialised, kept until the next block boundary in its policy (between
  two boundaries the one reader answers the same) or until the policy changes.

Private networks repeat: two schools of a board, or two sites of one school, may both number a
classroom 10.1.2.0/24. The index keeps every segment of a network. A caller that names its school
(`?school=<slug>`, the extension's `school` setting) gets that school's segment; when several
segments remain, the answer is theirs if they all say the same, else "ambiguous" (nothing is
known to be blocked), rather than one school's answer given to the other's students.

A segment behind a gateway IT disabled is unenforced: its answer blocks nothing and says
`"enforced": false` (the index is built again when the feed carries the disable).
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, Response, current_app, json, request
from sqlalchemy import select

from lesfocus_policy import Policy, SegmentState, state_stable_until, status_of

from .. import changes
from ..errors import abort_json
from ..extensions import db
from ..models import Gateway, Room, School, Segment, SegmentCidr, segment_rooms, utcnow
from . import bp
from .common import extension_cors_headers, iso, query_str

# How old the index of networks may get without a word from the change feed: on PostgreSQL the
# feed tells every process, on SQLite another process's change is seen by polling.
INDEX_SECONDS = {"postgresql": 60.0, "sqlite": 5.0}


@dataclass(frozen=True)
class SegmentRef:
    """What the index knows of a segment."""

    segment_id: int
    gateway_id: str
    school_id: int
    prefixlen: int
    rooms: tuple[str, ...]
    # False when IT disabled the segment's gateway: nothing is blocked there.
    enforced: bool = True


@dataclass
class NetworkIndex:
    """The segments by network, and the schools by slug, as read at one moment."""

    # (ip version, prefix length) -> {network address as int: its segments}, longest prefix
    # first; a network has several segments when schools (or sites) number alike.
    networks: dict[tuple[int, int], dict[int, tuple[SegmentRef, ...]]] = field(
        default_factory=dict)
    schools: dict[str, int] = field(default_factory=dict)
    built_at: float = -1e9
    feed_total: int = -1


@dataclass
class StatusCache:
    """The index and answers of one app (tests build many apps in one process)."""

    # INDEX_SECONDS for the app's database, chosen once when the cache is made.
    max_age: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    building: threading.Lock = field(default_factory=threading.Lock)
    index: NetworkIndex = field(default_factory=NetworkIndex)
    # segment id -> (policy version, valid from, valid until, serialised answer)
    answers: dict[int, tuple[str, datetime, datetime, bytes]] = field(default_factory=dict)


def _cache(app: Flask) -> StatusCache:
    """The app's index cache; made on first use, inside the app's context."""
    cache = app.extensions.get("lesfocus.lesson_status")
    if cache is None:
        max_age = INDEX_SECONDS.get(db.engine.dialect.name, 5.0)
        cache = app.extensions.setdefault("lesfocus.lesson_status", StatusCache(max_age))
    return cache


def _build_index(feed_total: int) -> NetworkIndex:
    rooms: dict[int, list[str]] = {}
    for segment_id, code in db.session.execute(
            select(segment_rooms.c.segment_id, Room.code)
            .join(Room, Room.id == segment_rooms.c.room_id).order_by(Room.code)):
        rooms.setdefault(segment_id, []).append(code)
    networks: dict[tuple[int, int], dict[int, tuple[SegmentRef, ...]]] = {}
    for cidr, segment_id, gateway_id, school_id, disabled_at in db.session.execute(
            select(SegmentCidr.cidr, Segment.id, Segment.gateway_id, Segment.school_id,
                   Gateway.disabled_at)
            .join(Segment, SegmentCidr.segment_id == Segment.id)
            .join(Gateway, Segment.gateway_id == Gateway.id).order_by(Segment.id)):
        net = ipaddress.ip_network(cidr)
        ref = SegmentRef(segment_id, gateway_id, school_id, net.prefixlen,
                         tuple(rooms.get(segment_id, ())), enforced=disabled_at is None)
        nets = networks.setdefault((net.version, net.prefixlen), {})
        key = int(net.network_address)
        nets[key] = (*nets.get(key, ()), ref)
    schools = dict(db.session.execute(select(School.slug, School.id)).all())
    return NetworkIndex(networks=dict(sorted(networks.items(), key=lambda item: -item[0][1])),
                        schools=schools, built_at=time.monotonic(), feed_total=feed_total)


def current_index(app: Flask) -> NetworkIndex:
    """The index of networks, built again when the feed moved or it got old.

    One request builds it; the others go on with the previous one meanwhile (the first request
    of the process waits for it).
    """
    cache = _cache(app)
    index = cache.index
    feed_total = changes.feed_of(app).timetable_total
    max_age = cache.max_age
    if index.feed_total == feed_total and time.monotonic() - index.built_at < max_age:
        return index
    first = index.feed_total < 0
    if not cache.building.acquire(blocking=first):
        return index
    try:
        index = cache.index
        if index.feed_total != feed_total or time.monotonic() - index.built_at >= max_age:
            index = _build_index(feed_total)
            with cache.lock:
                cache.index = index
                cache.answers.clear()  # the segments' rooms may have changed
    finally:
        cache.building.release()
    return index


def find_segments(address: str, index: NetworkIndex, school_id: int | None = None
                  ) -> tuple[SegmentRef, ...]:
    """The segments of the most specific network that holds `address` (of `school_id` when
    given); more than one when schools or sites use the same network."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    value, bits = int(ip), ip.max_prefixlen
    for (version, prefixlen), nets in index.networks.items():
        if version != ip.version:
            continue
        key = (value >> (bits - prefixlen)) << (bits - prefixlen) if prefixlen else 0
        refs = nets.get(key, ())
        if school_id is not None:
            refs = tuple(ref for ref in refs if ref.school_id == school_id)
        if refs:
            return refs
    return ()


def client_address() -> str:
    """The caller's address (behind trusted proxies, create_app's ProxyFix has already set it)."""
    return request.remote_addr or ""


def _policy(ref: SegmentRef) -> Policy | None:
    from ..policy_cache import GatewayGone, cached_policy
    # The long poll's cache: one compile serves both the agent and the browsers behind it, and
    # both read it with the same reader.
    try:
        return cached_policy(ref.gateway_id, ref.school_id).policy
    except GatewayGone:  # removed since the index was read
        return None


def status_answer(state: SegmentState | None, rooms: list[str]) -> dict[str, Any]:
    """The lesson-status answer for a segment's state at an instant (None: not in the policy).

    `until` is when every blocked service is open again; `services` says per service of the
    school's blocked list whether it is blocked now and until when it stays so, or, when allowed
    during this lesson, until when the allowance lasts. `exception` names what an exception
    allows in this lesson and until when.
    """
    if state is None:
        return {**NOT_IN_A_SEGMENT, "rooms": rooms}
    services: dict[str, dict[str, Any]] = {
        s: {"blocked": True, "until": iso(until)} for s, until in sorted(state.blocked.items())}
    open_until = {s: state.allowed_until(s) for s in sorted(state.allowed)}
    for s, until in open_until.items():
        services[s] = {"blocked": False, "until": iso(until)}
    exception = None
    if state.in_lesson and open_until:
        # During a lesson an allowed service is open through an exception.
        exception = {"services": None if not state.blocked else list(open_until),
                     "until": iso(min(open_until.values()))}  # type: ignore[type-var]
    return {"in_lesson": state.in_lesson, "blocked_services": sorted(state.blocked),
            "until": iso(max(state.blocked.values())) if state.blocked else None,
            "exception": exception, "services": dict(sorted(services.items())), "rooms": rooms}


def _answer(cache: StatusCache, ref: SegmentRef) -> bytes:
    if not ref.enforced:
        # The gateway is disabled: it blocks nothing, so nothing is said to be blocked.
        return _serialised({**NOT_IN_A_SEGMENT, "rooms": list(ref.rooms), "enforced": False})
    at = utcnow()
    policy = _policy(ref)
    version = "" if policy is None else policy.version
    cached = cache.answers.get(ref.segment_id)
    if cached is not None and cached[0] == version and cached[1] <= at < cached[2]:
        return cached[3]
    state = None
    # Without a policy or a segment in it, the answer holds until the policy changes (within the
    # hour: the policy cache compiles again on the hour).
    until = at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    if policy is not None:
        try:
            segment = policy.segment(ref.segment_id)
        except KeyError:  # a segment newer than the compiled policy: the feed recompiles it
            segment = None
        if segment is not None:
            state = status_of(policy, ref.segment_id, at)
            boundary = state_stable_until(segment, at)
            if boundary is not None:
                until = min(until, boundary)
    body = _serialised(status_answer(state, list(ref.rooms)))
    with cache.lock:
        cache.answers[ref.segment_id] = (version, at, until, body)
    return body


def _serialised(answer: dict[str, Any]) -> bytes:
    return (json.dumps(answer) + "\n").encode()


NOT_IN_A_SEGMENT: dict[str, Any] = {"in_lesson": False, "blocked_services": [], "until": None,
                                    "exception": None, "services": {}, "rooms": []}
_NOT_IN_A_SEGMENT_BODY = _serialised(NOT_IN_A_SEGMENT)


AMBIGUOUS: dict[str, Any] = {**NOT_IN_A_SEGMENT, "ambiguous": True}
_AMBIGUOUS_BODY = _serialised(AMBIGUOUS)


def answer_for(app: Flask, address: str, school_id: int | None = None) -> bytes:
    """The serialised answer for a caller at `address` (inside an app context)."""
    cache = _cache(app)
    refs = find_segments(address, current_index(app), school_id)
    if not refs:
        return _NOT_IN_A_SEGMENT_BODY
    if len(refs) == 1:
        return _answer(cache, refs[0])
    # One network, several segments: what they agree on, without their rooms, else ambiguous.
    answers = []
    for ref in refs:
        answer = json.loads(_answer(cache, ref))
        answer["rooms"] = []
        answers.append(answer)
    if all(answer == answers[0] for answer in answers[1:]):
        return _serialised(answers[0])
    return _AMBIGUOUS_BODY


@bp.get("/lesson-status")
def lesson_status() -> Response:
    """For the caller's address: in a lesson?, which services are blocked, until when, exception."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    school_id = None
    slug = query_str("school")
    if slug:
        school_id = current_index(app).schools.get(slug)
        if school_id is None:  # perhaps newer than the index
            school_id = db.session.scalar(select(School.id).where(School.slug == slug))
        if school_id is None:
            abort_json(404, f"no school {slug!r}", field="school")
    body = answer_for(app, client_address(), school_id)
    return Response(body, mimetype="application/json", headers={"Cache-Control": "no-store"})


# A school slug as it can appear in a query string without percent-encoding.
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")


class FastPath:
    """WSGI: the extension's plain `GET /api/v1/lesson-status` answered beside Flask.

    Every browser asks every few minutes (alone or with `?school=<slug>`), and the answer comes
    from memory; Flask's request machinery (request context, session, URL matching, response hooks) cost several times the
    answer itself (tests/bench/bench_api.py prints the server's CPU per request). Any other
    request to the path (a query string, another method) goes to the Flask view above, which
    gives the same answer; so does this one when something fails, so errors come out as the
    API's JSON errors. Sits inside ProxyFix, so REMOTE_ADDR is the client's address.
    """

    PATH = "/api/v1/lesson-status"
    HEADERS = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]

    def __init__(self, app: Flask, wsgi_app: Any) -> None:
        self.app = app
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") != self.PATH or environ.get("REQUEST_METHOD") != "GET":
            return self.wsgi_app(environ, start_response)
        query = environ.get("QUERY_STRING") or ""
        name, _, slug = query.partition("=")
        if query and (name != "school" or not _SLUG.fullmatch(slug)):
            return self.wsgi_app(environ, start_response)
        try:
            with self.app.app_context():
                school_id = None
                if slug:
                    school_id = current_index(self.app).schools.get(slug)
                    if school_id is None:  # unknown here: the view looks it up, or says 404
                        return self.wsgi_app(environ, start_response)
                body = answer_for(self.app, environ.get("REMOTE_ADDR") or "", school_id)
        except Exception:  # noqa: BLE001 - the view answers, with the API's error handling
            return self.wsgi_app(environ, start_response)
        cors = extension_cors_headers(environ.get("HTTP_ORIGIN"),
                                      str(self.app.config.get("LESFOCUS_EXTENSION_ORIGINS") or ""))
        start_response("200 OK", [*self.HEADERS, *cors, ("Content-Length", str(len(body)))])
        return [body]
