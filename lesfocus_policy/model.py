"""The policy as data: what the server compiles and signs, and what the agent verifies and enforces.

These types are shared by the agent, the lesson-status API and the dashboard; they hold no I/O.
Times are aware UTC datetimes with whole seconds.

A block is an interval of a segment in which a lesson runs. `services` are the services blocked in
it; an empty set means a lesson in which an exception allows every service (the agent blocks
nothing then, while the dashboard and the extension still know that a lesson is on).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple


@dataclass(frozen=True)
class Service:
    """A social-media service and its domains (each matched with all its subdomains)."""

    id: str
    name: str
    domains: tuple[str, ...]


class Block(NamedTuple):
    """Services blocked on a segment in the interval [start, end) (UTC, aware).

    A named tuple rather than a dataclass: a policy holds tens of thousands of them, and a
    tuple is made several times faster than a frozen dataclass instance.
    """

    start: datetime
    end: datetime
    services: frozenset[str]


@dataclass(frozen=True)
class PolicySegment:
    """A segment of the gateway: its networks and its block intervals, sorted and disjoint."""

    id: int
    name: str
    cidrs: tuple[str, ...]
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Policy:
    """A verified (or freshly compiled) policy document (SPEC §4, "Policy document").

    `format` is the document format it was read from or is meant for ("major.minor").
    """

    version: str
    gateway_id: str
    issued_at: datetime
    expires_at: datetime
    timezone: str
    services: dict[str, Service]
    segments: tuple[PolicySegment, ...]
    format: str = "2.0"
    issuer: str = "lesfocus"
    window: tuple[datetime, datetime] | None = None

    def segment(self, segment_id: int) -> PolicySegment:
        """The segment with this id; KeyError when the policy has none."""
        index = self.__dict__.get("_index")
        if index is None:
            index = {s.id: s for s in self.segments}
            object.__setattr__(self, "_index", index)
        return index[segment_id]


@dataclass(frozen=True)
class SegmentState:
    """What holds on one segment at an instant (see `lesfocus_policy.reader.segment_state`).

    `blocked`: service id -> the instant its block ends (following adjacent blocks).
    `allowed`: the policy's other services -> the next instant each is blocked (None: not within
    the policy's window); filled only when the caller asked for it.
    `in_lesson`: a lesson runs on the segment now (even when an exception allows everything), and
    `lesson_until` is when the lessons that follow each other without a gap end.
    """

    segment_id: int
    name: str
    cidrs: tuple[str, ...]
    blocked: dict[str, datetime] = field(default_factory=dict)
    allowed: dict[str, datetime | None] = field(default_factory=dict)
    in_lesson: bool = False
    lesson_until: datetime | None = None

    def allowed_until(self, service: str) -> datetime | None:
        """Until when an allowed service stays open: during a lesson at most until the lessons
        end (an exception ends with its lesson), else until it is next blocked (None: not in the
        window)."""
        next_block = self.allowed[service]
        if not self.in_lesson or self.lesson_until is None:
            return next_block
        return self.lesson_until if next_block is None else min(next_block, self.lesson_until)


@dataclass(frozen=True)
class BlockState:
    """What is blocked on every segment at `at`, and when that next changes (None: never)."""

    at: datetime
    segments: tuple[SegmentState, ...]
    next_change: datetime | None
