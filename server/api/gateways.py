"""Gateways: enrolment, the agent's long-polled policy and heartbeat, and IT's list of gateways."""

from __future__ import annotations

import random
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request
from sqlalchemy import select, update

from lesfocus_policy import FORMAT, LEGACY_FORMAT

from .. import agent_keys, audit, changes
from ..auth import agent_gateway, require_agent, require_user
from ..errors import ApiError, abort_json
from ..extensions import db
from ..gateways import (GatewayError, create_gateway, hash_token, issue_enrollment_token,
                        remove_gateway, set_gateway_disabled)
from ..metrics import LONG_POLLS, POLICY_BYTES
from ..models import EnrollmentToken, Gateway, GatewayCounter, School, Service, utcnow
from ..policy import PolicyTooLarge, SignedPolicy
from ..policy_cache import GatewayGone, cached_policy
from ..tokens import load_public_key, public_key_pem
from . import bp
from .common import get_object, get_str, iso, json_body, parse_datetime, query_int

MAX_COUNTERS = 10_000
# A heartbeat may carry a day of buffered counters (the agent keeps up to 4,800 buckets, about
# 100 bytes each), so its body may be this many times LESFOCUS_MAX_JSON_BODY.
HEARTBEAT_BODY_SCALE = 4


def gateway_json(gateway: Gateway) -> dict[str, Any]:
    """A gateway as the API shows it (never its enrolment token)."""
    return {
        "id": gateway.id, "name": gateway.name, "enrolled": gateway.public_key_pem is not None,
        "disabled_at": iso(gateway.disabled_at),
        "enrolled_at": iso(gateway.enrolled_at), "last_contact_at": iso(gateway.last_contact_at),
        "policy_version_applied": gateway.policy_version_applied,
        "policy_applied_at": iso(gateway.policy_applied_at),
        "agent_version": gateway.agent_version,
        "segments": [{"id": s.id, "name": s.name} for s in gateway.segments],
    }


# --- enrolment ----------------------------------------------------------------------------------

@bp.post("/gateways/enroll")
def enroll() -> Any:
    """Enrol an agent: one-time token and Ed25519 public key -> gateway id and server keys."""
    body = json_body()
    token = get_str(body, "token", max_len=200)
    raw_key = body.get("public_key")
    if raw_key is None:
        abort_json(400, "public_key is required", field="public_key")
    if not isinstance(raw_key, (str, dict)):
        abort_json(400, "public_key must be an Ed25519 key as PEM text or a JWK object",
                   field="public_key")
    if isinstance(raw_key, str) and len(raw_key) > 2000:
        abort_json(400, "public_key is too long for an Ed25519 key", field="public_key")
    try:
        key = load_public_key(raw_key)
    except ValueError as err:
        abort_json(400, f"public_key: {err}", field="public_key")

    now = utcnow()
    row = db.session.scalar(select(EnrollmentToken).where(
        EnrollmentToken.token_hash == hash_token(token or "")))
    if row is None:
        abort_json(403, "unknown enrolment token", field="token")
    if row.used_at is not None:
        abort_json(403, "this enrolment token was used already; ask IT for a new one",
                   field="token")
    if row.expires_at <= now:
        abort_json(403, "this enrolment token has expired or a newer one was issued; ask IT "
                   "for a new one", field="token")
    # Claim the token with a conditional UPDATE, so two concurrent enrolments cannot both use it.
    claimed = db.session.execute(
        update(EnrollmentToken)
        .where(EnrollmentToken.id == row.id, EnrollmentToken.used_at.is_(None))
        .values(used_at=now)).rowcount
    if claimed != 1:
        db.session.rollback()
        abort_json(403, "this enrolment token was used already; ask IT for a new one",
                   field="token")
    gateway = db.session.get(Gateway, row.gateway_id)
    assert gateway is not None  # the token's foreign key cascades on delete
    if gateway.disabled_at is not None:
        db.session.rollback()
        abort_json(403, "this gateway is disabled; ask IT to enable it first", field="token")
    if gateway.public_key_pem is not None and not row.reenrol:
        # Only IT's explicit re-enrolment replaces a live gateway's key (issue 13, item 6).
        db.session.rollback()
        abort_json(403, "this gateway is enrolled already; IT must re-enrol it (a re-enrolment "
                   "token) before another key can take its place", field="token")
    gateway.public_key_pem = public_key_pem(key)
    gateway.enrolled_at = now
    audit.record("gateway.reenrol" if row.reenrol else "gateway.enroll",
                 school_id=gateway.school_id, actor=f"agent:{gateway.name}",
                 object_type="gateway", object_id=gateway.id)
    db.session.commit()
    return jsonify({"gateway_id": gateway.id,
                    "server_keys": current_app.extensions["lesfocus.signing_key"].jwks()}), 201


# --- the agent's policy (long poll) ---------------------------------------------------------------

def current_policy(gateway_id: str, school_id: int) -> SignedPolicy:
    """The gateway's signed policy from the policy cache; 410 when the gateway was removed."""
    try:
        signed: SignedPolicy = cached_policy(gateway_id, school_id, for_agent=True)
    except GatewayGone as gone:
        # Removed or disabled through any process, as soon as the change feed carried it here
        # (the key cache of server/agent_keys.py may still hold the key for a few seconds).
        agent_keys.keys_of(current_app).forget([gateway_id])
        raise ApiError(401, f"agent token refused: {gone.reason}",
                       headers={"WWW-Authenticate": 'Bearer realm="lesfocus", '
                                                    'error="invalid_token"'}) from None
    return signed


def _requested_format() -> str:
    """The document format the agent reads: `format=2` from agents since 2.0, none before."""
    raw = request.args.get("format")
    if raw is None:
        return LEGACY_FORMAT  # an agent of the first release (rolling upgrade)
    if raw.strip() == FORMAT.split(".")[0]:
        return FORMAT
    abort_json(400, f"format {raw[:20]!r} is not served here: this server writes format "
               f"{FORMAT} (format=2), and {LEGACY_FORMAT} when format is left out",
               field="format")


def _policy_response(signed: SignedPolicy, fmt: str) -> Response:
    try:
        jws = signed.token(fmt)
    except PolicyTooLarge as err:
        current_app.logger.error("%s", err)
        abort_json(503, str(err))
    POLICY_BYTES.observe(len(jws))
    response = jsonify({"version": signed.version, "policy": jws})
    response.headers["ETag"] = f'"{signed.version}"'
    response.headers["Cache-Control"] = "no-store"
    return response


def _not_modified(version: str) -> Response:
    response = Response(status=304)
    response.headers["ETag"] = f'"{version}"'
    return response


def _requested_version() -> str | None:
    header = request.headers.get("If-None-Match")
    if not header:
        return None
    return header.strip().removeprefix("W/").strip('"')


class LongPolls:
    """The one waiting long poll per gateway in this process: a newer one replaces it.

    A gateway runs one agent, which polls once at a time; a second poll comes from a copy of its
    state directory or from a replayed token, and must not pile up waiting requests.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting: dict[str, threading.Event] = {}
        self.stopping = threading.Event()  # the server stops: answer at once, wait no more

    def claim(self, gateway_id: str, school_id: int) -> threading.Event:
        """Become the gateway's waiting poll; the previous one's event is set and it is woken."""
        mine = threading.Event()
        with self.lock:
            previous = self.waiting.get(gateway_id)
            self.waiting[gateway_id] = mine
        if previous is not None:
            previous.set()
            changes.wake_waiters(school_id)
        return mine

    def release(self, gateway_id: str, mine: threading.Event) -> None:
        """Stop being the gateway's waiting poll (if still it)."""
        with self.lock:
            if self.waiting.get(gateway_id) is mine:
                del self.waiting[gateway_id]

    def release_all(self) -> None:
        """Set every waiting poll's event, and make polls from now on answer at once."""
        self.stopping.set()
        with self.lock:
            for event in self.waiting.values():
                event.set()


def _long_polls(app: Flask | None = None) -> LongPolls:
    app = current_app if app is None else app
    polls: LongPolls = app.extensions.setdefault("lesfocus.long_polls", LongPolls())
    return polls


def release_waiting_polls(app: Flask) -> None:
    """Answer every long poll waiting in `app` with 304 now: the server stops, and the agents poll
    again at once (through nginx, on another serve process)."""
    _long_polls(app).release_all()
    changes.feed_of(app).wake_waiters()


# Long polls of at least this many seconds end (304) at a random moment of their last sixth.
SPREAD_FROM_SECONDS = 30


def _spread(wait: int) -> float:
    """How long a poll that asked to wait `wait` s waits for a change: all of it for short waits,
    else a random part of its last sixth ("wait up to"). Agents that began together, as after a
    server restart, then drift apart: 5,000 that all polled again at once held the one worker for
    about 10 s (tests/bench/bench_api.py, a round with no answer)."""
    if wait < SPREAD_FROM_SECONDS:
        return float(wait)
    return wait - random.uniform(0, wait / 6)


@bp.get("/gateways/self/policy")
@require_agent
def self_policy() -> Response:
    """The gateway's signed policy; with If-None-Match, wait up to `wait` s for a change or 304."""
    gateway_id, school_id = g.agent.gateway_id, g.agent.school_id
    limit = int(current_app.config["LESFOCUS_POLICY_LONG_POLL_MAX"])
    wait = query_int("wait", default=0, minimum=0, maximum=min(limit, 60))
    known = _requested_version()
    fmt = _requested_format()

    # Note the generation before compiling, so a change between the two cannot be missed.
    generation = changes.generation(school_id)
    signed = current_policy(gateway_id, school_id)
    version = signed.version
    if known != version:
        return _policy_response(signed, fmt)
    if wait <= 0:
        return _not_modified(version)
    db.session.remove()  # hold no pooled connection while the agent waits
    deadline = time.monotonic() + _spread(wait)
    polls = _long_polls()
    replaced = polls.claim(gateway_id, school_id)
    LONG_POLLS.inc()
    try:
        while True:
            remaining = deadline - time.monotonic()
            if (polls.stopping.is_set() or remaining <= 0
                    or not changes.wait_for_change(school_id, generation, remaining,
                                                   cancel=replaced)
                    or polls.stopping.is_set()):
                return _not_modified(version)
            if replaced.is_set():
                # Not 304: two agents of one gateway would then take turns replacing each
                # other without pause; on an error the agent backs off (agent/policy_source.py).
                abort_json(409, "another long poll of this gateway replaced this one: one "
                           "waits per gateway (is a second agent running with this gateway's "
                           "state directory?)")
            generation = changes.generation(school_id)
            signed = current_policy(gateway_id, school_id)
            db.session.remove()  # the compile's connection goes back before waiting again
            if signed.version != known:
                return _policy_response(signed, fmt)
    finally:
        LONG_POLLS.dec()
        polls.release(gateway_id, replaced)


# --- heartbeat ------------------------------------------------------------------------------------

def _parse_counters(raw: Any, gateway: Gateway) -> tuple[list[tuple[int, str, datetime, int]], int]:
    """The well-formed counters to add, and how many were skipped as stale.

    Malformed entries refuse the whole heartbeat (400, nothing written). Entries for a segment
    that is not (or no longer) this gateway's, an unknown service or an hour in the future are
    skipped and counted instead: refusing them would make the agent resend them forever.
    """
    if raw is None:
        return [], 0
    if not isinstance(raw, list):
        abort_json(400, "counters must be a list", field="counters")
    if len(raw) > MAX_COUNTERS:
        abort_json(400, f"counters has more than {MAX_COUNTERS} entries", field="counters")
    segments = {s.id for s in gateway.segments}
    services = set(db.session.scalars(select(Service.id)))
    latest_hour = utcnow() + timedelta(hours=1)
    totals: dict[tuple[int, str, datetime], int] = {}
    skipped = 0
    for index, item in enumerate(raw):
        where = f"counters[{index}]"
        if not isinstance(item, dict):
            abort_json(400, f"{where} must be an object", field=where)
        segment_id = item.get("segment_id")
        if not isinstance(segment_id, int) or isinstance(segment_id, bool):
            abort_json(400, f"{where}.segment_id must be a segment id",
                       field=f"{where}.segment_id")
        service = item.get("service")
        if not isinstance(service, str) or not service or len(service) > 40:
            abort_json(400, f"{where}.service must be a service id", field=f"{where}.service")
        hour = parse_datetime(item.get("hour"), f"{where}.hour")
        if (hour.minute, hour.second, hour.microsecond) != (0, 0, 0):
            abort_json(400, f"{where}.hour must be on the hour", field=f"{where}.hour")
        count = item.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 10**9:
            abort_json(400, f"{where}.count must be a whole number >= 0", field=f"{where}.count")
        if segment_id not in segments or service not in services or hour > latest_hour:
            skipped += 1
            continue
        key = (segment_id, service, hour)
        totals[key] = totals.get(key, 0) + count
    return [(seg, svc, hour, n) for (seg, svc, hour), n in totals.items()], skipped


@bp.post("/gateways/self/heartbeat")
@require_agent
def self_heartbeat() -> Response:
    """Record the agent's state and add its hourly block counts (aggregates, sent once each)."""
    gateway = agent_gateway()
    body = json_body(scale=HEARTBEAT_BODY_SCALE)
    policy_version = get_str(body, "policy_version", required=False, max_len=80)
    agent_version = get_str(body, "agent_version", required=False, max_len=40)
    counters, skipped = _parse_counters(body.get("counters"), gateway)

    if counters:
        hours = {hour for _, _, hour, _ in counters}
        existing = {(c.segment_id, c.service_id, c.hour): c for c in db.session.scalars(
            select(GatewayCounter).where(GatewayCounter.gateway_id == gateway.id,
                                         GatewayCounter.hour.in_(hours)))}
        for segment_id, service, hour, count in counters:
            row = existing.get((segment_id, service, hour))
            if row is None:
                db.session.add(GatewayCounter(gateway_id=gateway.id, segment_id=segment_id,
                                              service_id=service, hour=hour, count=count))
            else:
                # The agent sends each count once (it clears what the server took), so add.
                row.count += count
    now = utcnow()
    gateway.last_contact_at = now
    if policy_version is not None and policy_version != gateway.policy_version_applied:
        # The agent sends a heartbeat right after applying a new policy, so the first heartbeat
        # naming a version is when the gateway confirmed it; repeats keep that time.
        gateway.policy_version_applied = policy_version
        gateway.policy_applied_at = now
    if agent_version is not None:
        gateway.agent_version = agent_version
    db.session.commit()
    return jsonify({"ok": True, "counters": len(counters), "skipped": skipped,
                    "server_time": iso(datetime.now(timezone.utc))})


# --- gateways for IT ------------------------------------------------------------------------------

@bp.get("/gateways")
@require_user("it_admin")
def list_gateways() -> Response:
    """The school's gateways with their enrolment and contact state."""
    rows = db.session.scalars(select(Gateway).where(Gateway.school_id == g.person.school_id)
                              .order_by(Gateway.name))
    return jsonify({"gateways": [gateway_json(gw) for gw in rows]})


@bp.post("/gateways")
@require_user("it_admin")
def create_gateway_view() -> Any:
    """Create a gateway and return its one-time enrolment token (shown only this once)."""
    body = json_body()
    name = get_str(body, "name", max_len=100)
    school = db.session.get(School, g.person.school_id)
    try:
        gateway = create_gateway(school, name or "", actor=g.person)
    except ValueError as err:
        db.session.rollback()
        abort_json(400, str(err), field="name")
    token = issue_enrollment_token(gateway, actor=g.person)
    db.session.commit()
    return jsonify({"gateway": gateway_json(gateway), "enrollment_token": token}), 201


@bp.post("/gateways/<gateway_id>/enrollment-token")
@require_user("it_admin")
def new_enrollment_token(gateway_id: str) -> Any:
    """Issue a new one-time token. For an enrolled gateway (its agent reinstalled) only with
    `{"reenrol": true}`: whoever uses the token then replaces the agent's key (audited)."""
    body = json_body(optional=True)
    reenrol = body.get("reenrol", False)
    if not isinstance(reenrol, bool):
        abort_json(400, "reenrol must be true or false", field="reenrol")
    gateway = get_object(Gateway, gateway_id[:36], g.person.school_id, "gateway")
    try:
        token = issue_enrollment_token(gateway, actor=g.person, reenrol=reenrol)
    except GatewayError as err:
        db.session.rollback()
        abort_json(409, str(err), field="reenrol" if gateway.disabled_at is None else None)
    db.session.commit()
    return jsonify({"gateway": gateway_json(gateway), "enrollment_token": token}), 201


def _set_disabled(gateway_id: str, disabled: bool) -> Any:
    json_body(optional=True)
    gateway = get_object(Gateway, gateway_id[:36], g.person.school_id, "gateway")
    set_gateway_disabled(gateway, disabled, actor=g.person)
    db.session.commit()
    return jsonify({"gateway": gateway_json(gateway)})


@bp.post("/gateways/<gateway_id>/disable")
@require_user("it_admin")
def disable_gateway_view(gateway_id: str) -> Any:
    """Disable a gateway: its agent's tokens are refused, its segments reported unenforced."""
    return _set_disabled(gateway_id, True)


@bp.post("/gateways/<gateway_id>/enable")
@require_user("it_admin")
def enable_gateway_view(gateway_id: str) -> Any:
    """Put a disabled gateway back in service (its agent's key is kept)."""
    return _set_disabled(gateway_id, False)


@bp.delete("/gateways/<gateway_id>")
@require_user("it_admin")
def remove_gateway_view(gateway_id: str) -> Any:
    """Remove a gateway with its segments (their rooms stay), counters and tokens."""
    json_body(optional=True)
    gateway = get_object(Gateway, gateway_id[:36], g.person.school_id, "gateway")
    removed_id = gateway.id
    segments = remove_gateway(gateway, actor=g.person)
    db.session.commit()
    return jsonify({"deleted": removed_id, "segments_deleted": segments})
