"""Compiled policies per gateway, kept until the school's change generation or the hour moves.

A compile costs tens of milliseconds; every long poll starts with one and every change wakes all
of a school's agents, so the result of `server.policy.gateway_policy(gateway)` is kept per
gateway. It is compiled again when the school's generation in the change feed moves (a write
anywhere, see `server/changes.py`) or the hour does (the policy window starts on the hour).
When the feed says the change was only exceptions (a grant, a revocation: the case a teacher waits
for), the compile takes the gateway's segments and lessons over from the last one and reads only
the exceptions again. When it names the rooms whose lessons changed (a lesson moved, cancelled or
added), only those rooms' lessons are read again; when the hour moved, only the lessons of the
window's new last hour. Either way, segments that come out as before are the last policy's
objects.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

from flask import current_app

from . import changes
from .extensions import db
from .metrics import COMPILE_SECONDS
from .models import Gateway, utcnow

_lock = threading.Lock()
# (database, gateway id) -> (school generation, hour, compiled policy, timetable generation,
# disabled by IT)
_entries: dict[tuple[str, str], tuple[int, datetime, Any, int, bool]] = {}
DISABLED = "this gateway was disabled by IT"


class GatewayGone(LookupError):
    """The gateway asked for was removed or disabled: its agent gets no policy."""

    def __init__(self, gateway_id: str, reason: str = "this gateway was removed") -> None:
        super().__init__(gateway_id)
        self.reason = reason


def cached_policy(gateway_id: str, school_id: int, *, for_agent: bool = False) -> Any:
    """What `gateway_policy` returns for the gateway, compiled again only after a change.

    GatewayGone when it was removed, and for its agent (`for_agent`) when IT disabled it: a
    disable moves the school's generation, so every process refuses from the moment its feed
    carries the commit (the dashboard still shows what the policy would be). The session stays
    open (a dashboard request goes on using its objects); a long poll gives its connection back
    itself before it waits.
    """
    from .policy import gateway_policy
    # Read before compiling, so a change during the compile is not hidden by the cache.
    generation = changes.generation(school_id)
    timetable = changes.timetable_generation(school_id)
    hour = utcnow().replace(minute=0, second=0, microsecond=0)
    key = (current_app.config["SQLALCHEMY_DATABASE_URI"], gateway_id)
    with _lock:
        cached = _entries.get(key)
    if cached is not None and cached[:2] == (generation, hour):
        if for_agent and cached[4]:
            raise GatewayGone(gateway_id, DISABLED)
        return cached[2]
    gateway = db.session.get(Gateway, gateway_id)
    if gateway is None:
        with _lock:
            _entries.pop(key, None)
        raise GatewayGone(gateway_id)
    # What the last compile read is taken over as far as the feed says it still holds: all of
    # it when only exceptions changed, all but the lessons of the rooms it names, or nothing.
    reuse, rooms = None, None
    if cached is not None and cached[1] <= hour:
        reuse = cached[2].inputs
        rooms = frozenset() if cached[3] == timetable else changes.timetable_rooms(
            school_id, cached[3], timetable)
    started = time.perf_counter()
    compiled = gateway_policy(gateway, reuse=reuse, rooms_changed=rooms,
                              previous=None if cached is None else cached[2].policy,
                              generation=generation)
    COMPILE_SECONDS.observe(time.perf_counter() - started)
    disabled = gateway.disabled_at is not None
    with _lock:
        _entries[key] = (generation, hour, compiled, timetable, disabled)
    if for_agent and disabled:
        raise GatewayGone(gateway_id, DISABLED)
    return compiled
