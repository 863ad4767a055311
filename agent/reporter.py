"""Heartbeats: the policy version in force and aggregate counters (segment x service x hour) only.

Privacy (SPEC §6): nothing here knows a client address or a visited name; the parts hand over
counts per segment and service, and this module buckets them per UTC hour before they leave.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from .errors import ServerError

log = logging.getLogger("lesfocus.agent.reporter")


def agent_version() -> str:
    """The installed lesfocus package version (the agent ships in it)."""
    try:
        return importlib.metadata.version("lesfocus")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


AGENT_VERSION = agent_version()

MAX_PENDING_BUCKETS = 24 * 200  # a day of 200 segment x service pairs; older ones are dropped

CounterKey = tuple[int, str, str]  # segment id, service id, hour as "YYYY-MM-DDTHH:00:00Z"


def hour_of(at: datetime) -> str:
    """The UTC hour bucket `at` falls in, as the heartbeat writes it."""
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:00:00Z")


def aggregate(records: Iterable[Any], now: datetime) -> Counter[CounterKey]:
    """Sum counter records per segment x service x hour; records without an hour count for now.

    A record is a mapping with `segment_id`, `service` (or `service_id`), `count` and optionally
    `hour` (datetime or string), or a tuple (segment_id, service, count[, hour]).
    """
    total: Counter[CounterKey] = Counter()
    for record in records:
        if isinstance(record, Mapping):
            segment = record.get("segment_id")
            service = record.get("service", record.get("service_id"))
            count, hour = record.get("count", 0), record.get("hour")
        else:
            segment, service, count, *rest = record
            hour = rest[0] if rest else None
        if isinstance(hour, datetime):
            hour = hour_of(hour)
        if not isinstance(segment, int) or not isinstance(service, str) \
                or not isinstance(count, int) or count <= 0:
            continue
        total[(segment, service, hour if isinstance(hour, str) else hour_of(now))] += count
    return total


class Reporter:
    """Collects the parts' counters and sends them with each heartbeat; keeps them on failure."""

    def __init__(self, send: Callable[[dict[str, Any]], None],
                 sources: Iterable[Callable[[], Iterable[Any]]],
                 policy_version: Callable[[], str | None],
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.send = send
        self.sources = list(sources)
        self.policy_version = policy_version
        self.clock = clock
        self.pending: Counter[CounterKey] = Counter()
        self.last_ok: datetime | None = None
        self.last_error: str | None = None
        self._kick = threading.Event()

    def kick(self) -> None:
        """Send the next heartbeat now (a new policy is in force: the server wants to know)."""
        self._kick.set()

    def collect(self) -> None:
        """Drain every source into the pending buckets."""
        now = self.clock()
        for source in self.sources:
            try:
                self.pending.update(aggregate(source(), now))
            except (OSError, ValueError, RuntimeError) as err:
                log.warning("counters not read from %s: %s", getattr(source, "__qualname__",
                                                                     source), err)
        if len(self.pending) > MAX_PENDING_BUCKETS:
            for key in sorted(self.pending, key=lambda k: k[2])[:-MAX_PENDING_BUCKETS]:
                del self.pending[key]

    def payload(self) -> dict[str, Any]:
        """The heartbeat body of SPEC §4."""
        return {"policy_version": self.policy_version(), "agent_version": AGENT_VERSION,
                "counters": [{"segment_id": seg, "service": svc, "hour": hour, "count": n}
                             for (seg, svc, hour), n in sorted(self.pending.items())]}

    def beat(self) -> bool:
        """Collect and send one heartbeat; True when the server took it (counters then cleared)."""
        self.collect()
        body = self.payload()
        try:
            self.send(body)
        except ServerError as err:
            self.last_error = str(err)
            log.warning("heartbeat not delivered (counters kept for the next one): %s", err)
            return False
        self.pending.clear()
        self.last_ok, self.last_error = self.clock(), None
        return True

    def run(self, stop: threading.Event, interval: float) -> None:
        """Send a heartbeat at once and then every `interval` seconds until `stop`."""
        while not stop.is_set():
            self.beat()
            self._kick.wait(interval)
            self._kick.clear()


class DeltaCounters:
    """Turns a part's cumulative `counters()` {(segment, service): {kind: n}} into new counts.

    The count of a pair is the sum of its kinds (rejected packets, refused queries...) except byte
    counts; a total that went down (the table was rebuilt) counts from zero again.
    """

    def __init__(self, read: Callable[[], Mapping[tuple[int, str], Mapping[str, int]]]) -> None:
        self.read = read
        self.seen: dict[tuple[int, str], int] = {}

    def __call__(self) -> list[tuple[int, str, int]]:
        """The counts added since the previous call, as (segment id, service, count)."""
        out = []
        for key, kinds in self.read().items():
            total = sum(v for k, v in kinds.items() if "bytes" not in k and isinstance(v, int))
            before = self.seen.get(key, 0)
            delta = total - before if total >= before else total
            self.seen[key] = total
            if delta > 0:
                out.append((key[0], key[1], delta))
        return out
