"""Wakes long-polling agents when a school's policy may have changed (grant, revocation, import).

In-process: a condition variable and a change counter per school. Waiters also re-check on a short
timeout, so changes written by another server process are seen within that interval.
"""

from __future__ import annotations

import threading
from collections import defaultdict

_condition = threading.Condition()
_generation: dict[int, int] = defaultdict(int)


def policy_changed(school_id: int) -> None:
    """Tell waiting agents of `school_id` that its policy may have changed (call after commit)."""
    with _condition:
        _generation[school_id] += 1
        _condition.notify_all()


def generation(school_id: int) -> int:
    """The change counter of `school_id`; pass it to `wait_for_change`."""
    with _condition:
        return _generation[school_id]


def wait_for_change(school_id: int, seen: int, timeout: float) -> bool:
    """Block until the counter of `school_id` moves past `seen` or `timeout` passes; True if moved."""
    with _condition:
        return _condition.wait_for(lambda: _generation[school_id] != seen, timeout=timeout)
