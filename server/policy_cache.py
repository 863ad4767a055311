"""Compiled policies per gateway, kept until the school's change generation or the hour moves.

A compile costs tens of milliseconds; every long poll starts with one and every change wakes all
of a school's agents, so the result of `server.policy.gateway_policy(gateway)` is kept per
gateway. It is compiled again when the school's generation in the change feed moves (a write
anywhere, see `server/changes.py`) or the hour does (the policy window starts on the hour).
When the feed says the change was only exceptions (a grant, a revocation: the case a teacher waits
for), the compile takes the gateway's segments and lessons over from the last one and reads only
the exceptions again. Either way, segments that come out as before are the last policy's objects.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from flask import current_app

from . import changes
from .extensions import db
from .models import Gateway, utcnow

_lock = threading.Lock()
# (database, gateway id) -> (school generation, hour, compiled policy, timetable generation)
_entries: dict[tuple[str, str], tuple[int, datetime, Any, int]] = {}


class GatewayGone(LookupError):
    """The gateway asked for was removed."""


def cached_policy(gateway_id: str, school_id: int) -> Any:
    """What `gateway_policy` returns for the gateway, compiled again only after a change.

    GatewayGone when it was removed. The session stays open (a dashboard request goes on using
    its objects); a long poll gives its connection back itself before it waits.
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
        return cached[2]
    gateway = db.session.get(Gateway, gateway_id)
    if gateway is None:
        with _lock:
            _entries.pop(key, None)
        raise GatewayGone(gateway_id)
    # Only exceptions changed since the last compile in this hour (a grant, a revocation): the
    # gateway's segments and lessons are taken over and only the exceptions read again.
    reuse = cached[2].inputs if cached is not None and cached[1] == hour \
        and cached[3] == timetable else None
    compiled = gateway_policy(gateway, reuse=reuse,
                              previous=None if cached is None else cached[2].policy,
                              generation=generation)
    with _lock:
        _entries[key] = (generation, hour, compiled, timetable)
    return compiled
