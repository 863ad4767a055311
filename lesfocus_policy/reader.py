"""The one reader of a policy: for a segment and an instant, what is blocked, until when, and when
that next changes. Used by the agent's loop, the lesson-status API and the dashboard.

Pure: no I/O, no clock; the caller passes the instant.

"Until when" follows adjacent blocks: a service blocked in lesson A (09:00-09:50) and again in
lesson B (09:50-10:40) stays blocked until 10:40, while a service that B's exception allows is
blocked only until 09:50. The next change is the first later instant at which the set of blocked
services differs.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from datetime import datetime

from .model import Block, BlockState, Policy, PolicySegment, SegmentState

_EMPTY: frozenset[str] = frozenset()


def _ends(segment: PolicySegment) -> list[datetime]:
    # Cached on the (frozen) segment: the agent asks every few seconds, for every segment.
    ends = segment.__dict__.get("_ends")
    if ends is None:
        ends = [block.end for block in segment.blocks]
        object.__setattr__(segment, "_ends", ends)
    return ends


def _block_at(blocks: tuple[Block, ...], ends: list[datetime], at: datetime) -> int | None:
    """The index of the block covering `at` (blocks sorted and disjoint), or None."""
    i = bisect.bisect_right(ends, at)
    if i < len(blocks) and blocks[i].start <= at:
        return i
    return None


def _services_at(blocks: tuple[Block, ...], ends: list[datetime], at: datetime) -> frozenset[str]:
    i = _block_at(blocks, ends, at)
    return _EMPTY if i is None else blocks[i].services


def _chain_end(blocks: tuple[Block, ...], i: int, keep: frozenset[str] | None) -> datetime:
    """Where the run of adjacent blocks from `i` ends; with `keep`, only blocks holding all of
    it."""
    until = blocks[i].end
    j = i
    while j + 1 < len(blocks) and blocks[j + 1].start == until \
            and (keep is None or keep <= blocks[j + 1].services):
        j += 1
        until = blocks[j].end
    return until


def _next_change(blocks: tuple[Block, ...], ends: list[datetime], at: datetime,
                 current: frozenset[str]) -> datetime | None:
    i = bisect.bisect_right(ends, at)
    point = blocks[i].end if current else (blocks[i].start if i < len(blocks) else None)
    while point is not None:
        if _services_at(blocks, ends, point) != current:
            return point
        # The same set on both sides of a boundary (adjacent blocks): look further.
        j = bisect.bisect_right(ends, point)
        if j >= len(blocks):
            return None
        point = blocks[j].end if blocks[j].start <= point else blocks[j].start
    return None


def segment_state(segment: PolicySegment, at: datetime,
                  services: Iterable[str] = ()) -> tuple[SegmentState, datetime | None]:
    """What holds on `segment` at `at` (aware), and the next instant its blocked set changes.

    `services`: the policy's service ids whose "allowed until" the caller wants (the dashboard and
    lesson-status ask; the agent does not, to stay cheap on every tick).
    """
    blocks = segment.blocks
    ends = _ends(segment)
    i = _block_at(blocks, ends, at)
    current = _EMPTY if i is None else blocks[i].services
    blocked = {service: _chain_end(blocks, i, frozenset((service,)))
               for service in current} if i is not None else {}
    allowed: dict[str, datetime | None] = {}
    wanted = [s for s in services if s not in current]
    if wanted:
        start = bisect.bisect_right(ends, at)
        for service in wanted:
            allowed[service] = next(
                (max(b.start, at) for b in blocks[start:] if service in b.services), None)
    state = SegmentState(segment_id=segment.id, name=segment.name, cidrs=segment.cidrs,
                         blocked=blocked, allowed=allowed, in_lesson=i is not None,
                         lesson_until=None if i is None else _chain_end(blocks, i, None))
    return state, _next_change(blocks, ends, at, current)


def state_stable_until(segment: PolicySegment, at: datetime) -> datetime | None:
    """Until when `segment_state(segment, t)` reads the same as at `at`: the next start or end of
    a block after `at` (None: none in the policy). Every "until" it answers is an instant, so
    between two boundaries nothing in it changes."""
    blocks = segment.blocks
    i = bisect.bisect_right(_ends(segment), at)
    if i >= len(blocks):
        return None
    return blocks[i].end if blocks[i].start <= at else blocks[i].start


def blocked_at(policy: Policy, now: datetime, services: Iterable[str] = ()) -> BlockState:
    """What `policy` blocks on each segment at `now` (aware), and when that next changes."""
    if now.tzinfo is None:
        raise ValueError("blocked_at needs an aware datetime (UTC)")
    wanted = tuple(services)
    states: list[SegmentState] = []
    changes: list[datetime] = []
    for segment in policy.segments:
        state, change = segment_state(segment, now, wanted)
        states.append(state)
        if change is not None:
            changes.append(change)
    return BlockState(at=now, segments=tuple(states), next_change=min(changes, default=None))


def status_of(policy: Policy, segment_id: int, at: datetime) -> SegmentState:
    """One segment's state at `at`, with "allowed until" for every service of the policy.

    KeyError when the segment is not in the policy.
    """
    if at.tzinfo is None:
        raise ValueError("status_of needs an aware datetime (UTC)")
    return segment_state(policy.segment(segment_id), at, sorted(policy.services))[0]


def next_change(policy: Policy, now: datetime) -> datetime | None:
    """The first instant after `now` at which what `policy` blocks changes on any segment."""
    return blocked_at(policy, now).next_change
