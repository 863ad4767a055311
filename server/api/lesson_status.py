"""`GET /lesson-status`: is the caller's network in a lesson, and what is blocked there (public).

Answered from in-process caches, because every browser with the extension asks: a table of all
segment CIDRs (rebuilt every few seconds), each gateway's compiled policy (the long poll's,
server/policy_cache.py), and each segment's answer for one second. A grant or revocation made in this process clears a school's entries at
once (the change feed's generation moves, server/changes.py), in every process on PostgreSQL.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from sqlalchemy import select

from lesfocus_policy import Policy, SegmentState, status_of

from .. import changes
from ..errors import abort_json
from ..extensions import db
from ..models import School, Segment, SegmentCidr, utcnow
from . import bp
from .common import iso

CIDR_TABLE_SECONDS = 5.0
ANSWER_SECONDS = 1.0


@dataclass(frozen=True)
class SegmentRef:
    """What the CIDR table knows of a segment."""

    segment_id: int
    gateway_id: str
    school_id: int
    prefixlen: int


@dataclass
class StatusCache:
    """The caches of one app (tests build many apps in one process)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    table_at: float = -1e9
    # (ip version, prefix length) -> {network address as int: segment}
    table: dict[tuple[int, int], dict[int, SegmentRef]] = field(default_factory=dict)
    answers: dict[int, tuple[float, int, dict[str, Any]]] = field(default_factory=dict)


def _cache(app: Flask) -> StatusCache:
    cache = app.extensions.get("lesfocus.lesson_status")
    if cache is None:
        cache = app.extensions.setdefault("lesfocus.lesson_status", StatusCache())
    return cache


def invalidate(app: Flask) -> None:
    """Forget cached segments and answers (call after segments change in this process)."""
    cache = _cache(app)
    with cache.lock:
        cache.table_at = -1e9
        cache.answers.clear()


def _cidr_table(cache: StatusCache) -> dict[tuple[int, int], dict[int, SegmentRef]]:
    if time.monotonic() - cache.table_at < CIDR_TABLE_SECONDS:
        return cache.table
    rows = db.session.execute(
        select(SegmentCidr.cidr, Segment.id, Segment.gateway_id, Segment.school_id)
        .join(Segment, SegmentCidr.segment_id == Segment.id))
    table: dict[tuple[int, int], dict[int, SegmentRef]] = {}
    for cidr, segment_id, gateway_id, school_id in rows:
        net = ipaddress.ip_network(cidr)
        ref = SegmentRef(segment_id, gateway_id, school_id, net.prefixlen)
        table.setdefault((net.version, net.prefixlen), {})[int(net.network_address)] = ref
    # Longest prefix first, so the most specific segment wins.
    ordered = dict(sorted(table.items(), key=lambda item: -item[0][1]))
    with cache.lock:
        cache.table, cache.table_at = ordered, time.monotonic()
    return ordered


def find_segment(address: str, cache: StatusCache, school_id: int | None = None
                 ) -> SegmentRef | None:
    """The most specific segment whose CIDR holds `address` (of `school_id` when given)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    value, bits = int(ip), ip.max_prefixlen
    for (version, prefixlen), nets in _cidr_table(cache).items():
        if version != ip.version:
            continue
        key = (value >> (bits - prefixlen)) << (bits - prefixlen) if prefixlen else 0
        ref = nets.get(key)
        if ref is not None and (school_id is None or ref.school_id == school_id):
            return ref
    return None


def client_address() -> str:
    """The caller's address; the proxy's X-Forwarded-For entry only when LESFOCUS_TRUST_PROXY."""
    if current_app.config.get("LESFOCUS_TRUST_PROXY"):
        forwarded = request.headers.get("X-Forwarded-For", "")
        # The last entry is the one our own proxy appended; earlier ones the client may forge.
        entries = [part.strip() for part in forwarded.split(",") if part.strip()]
        if entries:
            return entries[-1]
    return request.remote_addr or ""


def _policy(ref: SegmentRef) -> Policy | None:
    from ..policy_cache import GatewayGone, cached_policy
    # The long poll's cache: one compile serves both the agent and the browsers behind it, and
    # both read it with the same reader.
    try:
        return cached_policy(ref.gateway_id, ref.school_id).policy
    except GatewayGone:  # removed since the CIDR table was read
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


def _answer(cache: StatusCache, ref: SegmentRef) -> dict[str, Any]:
    generation = changes.generation(ref.school_id)
    now = time.monotonic()
    cached = cache.answers.get(ref.segment_id)
    if cached is not None and cached[1] == generation and now - cached[0] < ANSWER_SECONDS:
        return cached[2]
    at = utcnow()
    policy = _policy(ref)
    state = None
    if policy is not None:
        try:
            state = status_of(policy, ref.segment_id, at)
        except KeyError:  # a segment newer than the compiled policy: the feed recompiles it
            pass
    segment = db.session.get(Segment, ref.segment_id)
    answer = status_answer(state, [room.code for room in segment.rooms] if segment else [])
    with cache.lock:
        cache.answers[ref.segment_id] = (now, generation, answer)
    return answer


NOT_IN_A_SEGMENT: dict[str, Any] = {"in_lesson": False, "blocked_services": [], "until": None,
                                    "exception": None, "services": {}, "rooms": []}


@bp.get("/lesson-status")
def lesson_status() -> Response:
    """For the caller's address: in a lesson?, which services are blocked, until when, exception."""
    cache = _cache(current_app._get_current_object())  # type: ignore[attr-defined]
    school_id = None
    slug = request.args.get("school")
    if slug:
        school_id = db.session.scalar(select(School.id).where(School.slug == slug))
        if school_id is None:
            abort_json(404, f"no school {slug!r}", field="school")
    ref = find_segment(client_address(), cache, school_id)
    answer = NOT_IN_A_SEGMENT if ref is None else _answer(cache, ref)
    response = jsonify(answer)
    response.headers["Cache-Control"] = "no-store"
    return response
