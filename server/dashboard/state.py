"""A room's state as the dashboard shows it, read from the same policy the gateway's agent gets."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..models import ExceptionGrant, Gateway, Lesson, Room

# A gateway that has not been heard from for this long is shown as offline (agents poll and send a
# heartbeat far more often than this).
ONLINE_WITHIN = timedelta(minutes=3)


@dataclass
class GatewayHealth:
    """Whether a gateway is online and runs the policy the server would hand it now."""

    gateway: Gateway
    online: bool
    current_version: str | None
    up_to_date: bool


@dataclass
class RoomState:
    """What is blocked in a room now and until when, and the health of its gateways."""

    room: Room
    blocked: list[str] = field(default_factory=list)
    until: datetime | None = None
    gateways: list[GatewayHealth] = field(default_factory=list)

    @property
    def has_network(self) -> bool:
        """True when at least one segment (so one gateway) serves the room."""
        return bool(self.room.segments)


def _policy_claims(gateway: Gateway, now: datetime,
                   cache: dict[str, tuple[str, dict]]) -> tuple[str, dict]:
    # The very compiler and loader the agent's policy comes from, so the page cannot disagree
    # with the gateway; `ver` is the content hash the agent reports as applied.
    from ..policy import compile_policy, load_policy_inputs
    if gateway.id not in cache:
        claims = compile_policy(load_policy_inputs(gateway, now))
        cache[gateway.id] = (claims["ver"], claims)
    return cache[gateway.id]


def gateway_health(gateway: Gateway, now: datetime,
                   cache: dict[str, tuple[str, dict]] | None = None) -> GatewayHealth:
    """Online (recent contact) and up to date (applied the current policy version)."""
    version, _claims = _policy_claims(gateway, now, {} if cache is None else cache)
    online = gateway.last_contact_at is not None and now - gateway.last_contact_at <= ONLINE_WITHIN
    return GatewayHealth(gateway=gateway, online=online, current_version=version,
                         up_to_date=gateway.policy_version_applied == version)


def room_states(rooms: list[Room], now: datetime) -> list[RoomState]:
    """The state of each room at `now`: blocked services (union over its segments) and until."""
    from ..policy import segment_status
    cache: dict[str, tuple[str, dict]] = {}
    states = []
    for room in rooms:
        state = RoomState(room=room)
        blocked: set[str] = set()
        seen: set[str] = set()
        for segment in room.segments:
            _version, claims = _policy_claims(segment.gateway, now, cache)
            services, until = segment_status(claims, segment.id, now)
            blocked.update(services)
            if services and until is not None and (state.until is None or until > state.until):
                state.until = until
            if segment.gateway_id not in seen:
                seen.add(segment.gateway_id)
                state.gateways.append(gateway_health(segment.gateway, now, cache))
        state.blocked = sorted(blocked)
        states.append(state)
    return states


def exception_covers(exception: ExceptionGrant, lesson: Lesson) -> bool:
    """True when `exception`'s scope includes `lesson` (its lesson, a room, a group, the school)."""
    if exception.scope == "school":
        return exception.school_id == lesson.school_id
    if exception.scope == "lesson":
        return exception.lesson_id == lesson.id
    if exception.scope == "room":
        return any(room.id == exception.room_id for room in lesson.rooms)
    if exception.scope == "group":
        return any(group.id == exception.group_id for group in lesson.groups)
    return False


def exceptions_covering(lesson: Lesson, now: datetime) -> list[ExceptionGrant]:
    """The exceptions in force at `now` that apply to `lesson`, ending first listed first."""
    from ..grants import active_exceptions
    found = [e for e in active_exceptions(lesson.school_id, now) if exception_covers(e, lesson)]
    return sorted(found, key=lambda e: (e.end, e.id))
