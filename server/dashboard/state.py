"""A room's state as the dashboard shows it, read from the same policy the gateway's agent gets."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from flask_babel import format_datetime, gettext
from lesfocus_policy import Policy, status_of

from ..models import ExceptionGrant, Gateway, Lesson, Room
from ..policy import PolicyTooLarge, SignedPolicy

# A gateway that has not been heard from for this long is shown as offline (agents poll and send a
# heartbeat far more often than this).
ONLINE_WITHIN = timedelta(minutes=3)


# What the dashboard may say about a gateway and the policy the server holds for it now.
CONFIRMED = "confirmed"  # online, and it reported the current version as applied
WAITING = "waiting"      # online, but it has not reported the current version (yet)
OFFLINE = "offline"      # not heard from within ONLINE_WITHIN: nothing it did is known
DISABLED = "disabled"    # IT disabled it: it gets no policy, its segments are unenforced


@dataclass
class GatewayHealth:
    """Whether a gateway is online and runs the policy the server would hand it now."""

    gateway: Gateway
    online: bool
    current_version: str | None
    up_to_date: bool
    # Set when the server cannot send the gateway its policy: (size, limit) in bytes.
    too_large: tuple[int, int] | None = None

    @property
    def confirmation(self) -> str:
        """CONFIRMED, WAITING, OFFLINE or DISABLED: whether the gateway confirmed the server's
        policy."""
        if self.gateway.disabled_at is not None:
            return DISABLED
        if not self.online:
            return OFFLINE
        return CONFIRMED if self.up_to_date else WAITING


@dataclass(frozen=True)
class ServiceState:
    """One service in a room now: blocked or not, and until when that holds (None: no end known)."""

    blocked: bool
    until: datetime | None


@dataclass
class RoomState:
    """What is blocked in a room now and until when, per service, and the health of its gateways.

    Read with `lesfocus_policy`'s reader from the policy the gateway's agent gets, so the page
    says what the gateway does, adjacent lessons with other exceptions included.
    """

    room: Room
    blocked: list[str] = field(default_factory=list)
    until: datetime | None = None
    in_lesson: bool = False
    services: dict[str, ServiceState] = field(default_factory=dict)
    gateways: list[GatewayHealth] = field(default_factory=list)

    @property
    def has_network(self) -> bool:
        """True when at least one segment behind a gateway in service serves the room."""
        return any(s.gateway.disabled_at is None for s in self.room.segments)

    @property
    def unenforced(self) -> bool:
        """True when the room has segments, but IT disabled every gateway behind them."""
        return bool(self.room.segments) and not self.has_network

    @property
    def allows_something(self) -> bool:
        """True when at least one service is allowed in the room now."""
        return any(not s.blocked for s in self.services.values())

    @property
    def waiting(self) -> bool:
        """True when a gateway of the room is online but has not confirmed the current policy."""
        return any(h.confirmation == WAITING for h in self.gateways)

    @property
    def lines(self) -> list[ServiceLine]:
        """The per-service states grouped into short lines (see `service_lines`)."""
        return service_lines(self.services)


@dataclass(frozen=True)
class ServiceLine:
    """Services that share a state and an end, said the shortest way.

    `everything`: all the room's services; else `services` are the ones meant, or, when `inverse`,
    the line is about all services except `services` (the shorter list to read).
    """

    blocked: bool
    until: datetime | None
    services: tuple[str, ...] = ()
    everything: bool = False
    inverse: bool = False
    # The service ids the line is about, whatever way it says them (for scripts and tests).
    covers: tuple[str, ...] = field(default=(), compare=False)


def service_lines(services: dict[str, ServiceState]) -> list[ServiceLine]:
    """Group services by (blocked, until), one line each: blocked first, the largest group first.

    So the usual case is one line ("all social media until 10:40"), and adjacent lessons with
    different exceptions read as "all except Instagram until 10:40" plus "Instagram until 09:50".
    """
    groups: dict[tuple[bool, datetime | None], list[str]] = {}
    for service_id, state in services.items():
        groups.setdefault((state.blocked, state.until), []).append(service_id)
    far = datetime.max.replace(tzinfo=timezone.utc)
    ordered = sorted(groups.items(),
                     key=lambda item: (not item[0][0], -len(item[1]), item[0][1] or far))
    lines = []
    for (blocked, until), ids in ordered:
        others = tuple(s for s in services if s not in ids)
        covers = tuple(sorted(ids))
        if not others:
            lines.append(ServiceLine(blocked, until, everything=True, covers=covers))
        elif len(others) < len(ids):
            lines.append(ServiceLine(blocked, until, others, inverse=True, covers=covers))
        else:
            lines.append(ServiceLine(blocked, until, tuple(ids), covers=covers))
    return lines


def _signed(gateway: Gateway, cache: dict[str, SignedPolicy]) -> SignedPolicy:
    # The very policy the gateway's long poll hands out (the same cache); `version` is the
    # content hash the agent reports as applied.
    from ..policy_cache import cached_policy
    if gateway.id not in cache:
        cache[gateway.id] = cached_policy(gateway.id, gateway.school_id)
    return cache[gateway.id]


def _policy(gateway: Gateway, cache: dict[str, SignedPolicy]) -> Policy:
    return _signed(gateway, cache).policy


def gateway_health(gateway: Gateway, now: datetime,
                   cache: dict[str, SignedPolicy] | None = None) -> GatewayHealth:
    """Online (recent contact) and up to date (applied the current policy version)."""
    signed = _signed(gateway, {} if cache is None else cache)
    online = gateway.last_contact_at is not None and now - gateway.last_contact_at <= ONLINE_WITHIN
    too_large = None
    try:
        signed.token()  # signed once per version; the long poll hands out the same one
    except PolicyTooLarge as err:
        too_large = (err.size, err.limit)
    return GatewayHealth(gateway=gateway, online=online, current_version=signed.version,
                         up_to_date=gateway.policy_version_applied == signed.version,
                         too_large=too_large)


def _merge(a: ServiceState | None, b: ServiceState) -> ServiceState:
    # A room with several segments (wired and Wi-Fi): blocked on any wins, the later end counts.
    if a is None or (b.blocked and not a.blocked):
        return b
    if a.blocked != b.blocked:
        return a
    if a.until is None or b.until is None:
        return ServiceState(a.blocked, None if a.blocked else (a.until or b.until))
    return ServiceState(a.blocked, max(a.until, b.until) if a.blocked else min(a.until, b.until))


def room_states(rooms: list[Room], now: datetime) -> list[RoomState]:
    """The state of each room at `now`: per service blocked or allowed and until when."""
    cache: dict[str, SignedPolicy] = {}
    states = []
    for room in rooms:
        state = RoomState(room=room)
        seen: set[str] = set()
        for segment in room.segments:
            if segment.gateway.disabled_at is not None:  # blocks nothing: no service state
                if segment.gateway_id not in seen:
                    seen.add(segment.gateway_id)
                    state.gateways.append(gateway_health(segment.gateway, now, cache))
                continue
            policy = _policy(segment.gateway, cache)
            try:
                status = status_of(policy, segment.id, now)
            except KeyError:  # the segment is newer than the cached policy
                continue
            state.in_lesson = state.in_lesson or status.in_lesson
            for service, until in status.blocked.items():
                state.services[service] = _merge(state.services.get(service),
                                                 ServiceState(True, until))
            for service in status.allowed:
                state.services[service] = _merge(
                    state.services.get(service),
                    ServiceState(False, status.allowed_until(service)))
            if segment.gateway_id not in seen:
                seen.add(segment.gateway_id)
                state.gateways.append(gateway_health(segment.gateway, now, cache))
        state.services = dict(sorted(state.services.items()))
        state.blocked = [s for s, v in state.services.items() if v.blocked]
        ends = [v.until for v in state.services.values() if v.blocked and v.until is not None]
        state.until = max(ends) if ends else None
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


# --- the state in words (the "Nu" page's lines and the messages after an action) ---------------

def _time(moment: datetime | None) -> str | None:
    return format_datetime(moment, "HH:mm") if moment else None


def line_text(line: ServiceLine, names: dict[str, str]) -> str:
    """One `ServiceLine` in words: "All except YouTube blocked until 10:10" (translated)."""
    who = ", ".join(sorted(names.get(s, s) for s in line.services))
    time = _time(line.until)
    if line.blocked:
        if line.everything:
            return (gettext("All social media blocked until %(time)s", time=time) if time
                    else gettext("All social media blocked"))
        if line.inverse:
            return (gettext("All except %(names)s blocked until %(time)s", names=who, time=time)
                    if time else gettext("All except %(names)s blocked", names=who))
        return (gettext("%(names)s blocked until %(time)s", names=who, time=time) if time
                else gettext("%(names)s blocked", names=who))
    if line.everything:
        return (gettext("All social media allowed until %(time)s", time=time) if time
                else gettext("All social media allowed"))
    if line.inverse:
        return (gettext("All except %(names)s allowed until %(time)s", names=who, time=time)
                if time else gettext("All except %(names)s allowed", names=who))
    return (gettext("%(names)s allowed until %(time)s", names=who, time=time) if time
            else gettext("%(names)s allowed", names=who))


def state_text(states: list[RoomState], names: dict[str, str]) -> str:
    """The rooms' states in one sentence, per service blocked or allowed and until when.

    What a message after a grant, an extension or a revocation says: read from the policy
    after the change, so it cannot claim a block that another exception keeps open.
    """
    parts = []
    for state in states:
        if state.unenforced:
            text = gettext("Room %(code)s: IT disabled its gateway, so lesfocus blocks nothing "
                           "there.", code=state.room.code)
        elif not state.has_network:
            text = gettext("Room %(code)s has no network segment: lesfocus blocks nothing there.",
                           code=state.room.code)
        else:
            text = "; ".join(line_text(line, names) for line in state.lines)
            if not text:
                continue
            if len(states) > 1:
                text = gettext("Room %(code)s: %(state)s", code=state.room.code, state=text)
        parts.append(text.rstrip("."))
    return "; ".join(parts) + "." if parts else ""
