"""`GET /lesson-status`: is the caller's network in a lesson, and what is blocked there (public).

Answered from in-process caches, because every browser with the extension asks: a table of all
segment CIDRs (rebuilt every few seconds), each gateway's decoded policy, and each segment's
answer for one second. A grant or revocation made in this process clears a school's entries at
once (its notify generation changes); changes made by other processes show within the TTLs.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jwt
from flask import Flask, Response, current_app, jsonify, request
from sqlalchemy import or_, select

from .. import changes
from ..errors import abort_json
from ..extensions import db
from ..models import (ExceptionGrant, Gateway, Lesson, School, Segment, SegmentCidr, lesson_rooms,
                      segment_rooms, utcnow)
from . import bp
from .common import iso

CIDR_TABLE_SECONDS = 5.0
POLICY_SECONDS = 10.0
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
    policies: dict[str, tuple[float, int, dict[str, Any]]] = field(default_factory=dict)
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
        cache.policies.clear()


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


def _policy_claims(cache: StatusCache, ref: SegmentRef, generation: int) -> dict[str, Any] | None:
    from .gateways import current_policy
    now = time.monotonic()
    cached = cache.policies.get(ref.gateway_id)
    if cached is not None and cached[1] == generation and now - cached[0] < POLICY_SECONDS:
        return cached[2]
    if db.session.get(Gateway, ref.gateway_id) is None:
        return None
    # The long poll's cache: one compile serves both the agent and the browsers behind it.
    _version, jws = current_policy(ref.gateway_id, ref.school_id)
    key = current_app.extensions["lesfocus.signing_key"]
    # Our own signature over our own document: verified anyway, it costs ~0.1 ms per compile.
    claims = jwt.decode(jws, key.public, algorithms=["EdDSA"], audience=ref.gateway_id,
                        options={"verify_exp": False})
    with cache.lock:
        cache.policies[ref.gateway_id] = (now, generation, claims)
    return claims


def _exception_now(ref: SegmentRef, at: datetime) -> tuple[bool, dict[str, Any] | None]:
    """(in a lesson now?, the exception in force for it as {services, until} or None)."""
    lessons = db.session.scalars(
        select(Lesson).join(lesson_rooms, lesson_rooms.c.lesson_id == Lesson.id)
        .where(lesson_rooms.c.room_id.in_(
            select(segment_rooms.c.room_id).where(segment_rooms.c.segment_id == ref.segment_id)),
            Lesson.school_id == ref.school_id, Lesson.cancelled.is_(False),
            Lesson.start <= at, Lesson.end > at).distinct()).all()
    if not lessons:
        return False, None
    lesson_ids = [lesson.id for lesson in lessons]
    room_ids = {room.id for lesson in lessons for room in lesson.rooms}
    group_ids = {group.id for lesson in lessons for group in lesson.groups}
    grants = db.session.scalars(
        select(ExceptionGrant).where(
            ExceptionGrant.school_id == ref.school_id, ExceptionGrant.start <= at,
            ExceptionGrant.end > at,
            or_(ExceptionGrant.revoked_at.is_(None), ExceptionGrant.revoked_at > at),
            or_(ExceptionGrant.scope == "school",
                ExceptionGrant.lesson_id.in_(lesson_ids),
                ExceptionGrant.room_id.in_(room_ids),
                ExceptionGrant.group_id.in_(group_ids)))).all()
    if not grants:
        return True, None
    services: set[str] | None = set()
    for grant in grants:
        if grant.services is None:
            services = None
            break
        services.update(grant.services)
    lesson_end = max(lesson.end for lesson in lessons)
    until = min(max(grant.end for grant in grants), lesson_end)
    return True, {"services": None if services is None else sorted(services), "until": iso(until)}


def _answer(cache: StatusCache, ref: SegmentRef) -> dict[str, Any]:
    from ..policy import segment_status
    generation = changes.generation(ref.school_id)
    now = time.monotonic()
    cached = cache.answers.get(ref.segment_id)
    if cached is not None and cached[1] == generation and now - cached[0] < ANSWER_SECONDS:
        return cached[2]
    at = utcnow()
    claims = _policy_claims(cache, ref, generation)
    blocked: list[str] = []
    until: datetime | None = None
    if claims is not None:
        try:
            blocked_services, until = segment_status(claims, ref.segment_id, at)
            blocked = sorted(blocked_services)
        except KeyError:  # a segment newer than the cached policy: drop it, ask again next time
            with cache.lock:
                cache.policies.pop(ref.gateway_id, None)
    in_lesson, exception = _exception_now(ref, at)
    segment = db.session.get(Segment, ref.segment_id)
    answer = {"in_lesson": in_lesson or bool(blocked), "blocked_services": blocked,
              "until": iso(until) if isinstance(until, datetime) else until,
              "exception": exception,
              "rooms": [room.code for room in segment.rooms] if segment else []}
    with cache.lock:
        cache.answers[ref.segment_id] = (now, generation, answer)
    return answer


NOT_IN_A_SEGMENT: dict[str, Any] = {"in_lesson": False, "blocked_services": [], "until": None,
                                    "exception": None, "rooms": []}


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
