"""What the agent's parts pass each other: the policy as verified data and what is blocked now.

The policy source produces a `Policy`; `schedule.blocked_at(policy, now)` turns it into a
`BlockState`; every enforcer and the DNS responder consume `BlockState` and the `Policy`'s services.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Service:
    """A social-media service and its domains (each matched with all its subdomains)."""

    id: str
    name: str
    domains: tuple[str, ...]


@dataclass(frozen=True)
class Block:
    """Services blocked on a segment in the interval [start, end) (UTC, aware)."""

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
    """A verified policy document (SPEC §4, "Policy document")."""

    version: str
    gateway_id: str
    issued_at: datetime
    expires_at: datetime
    timezone: str
    services: dict[str, Service]
    segments: tuple[PolicySegment, ...]


@dataclass(frozen=True)
class SegmentState:
    """What is blocked on one segment now: service id -> the instant its block ends."""

    segment_id: int
    name: str
    cidrs: tuple[str, ...]
    blocked: dict[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class BlockState:
    """What is blocked on every segment at `at`, and when that next changes (None: never)."""

    at: datetime
    segments: tuple[SegmentState, ...]
    next_change: datetime | None
