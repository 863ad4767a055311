"""What is blocked at an instant: a pure function of the verified policy and the clock.

No I/O and no clock reads here; the runner passes `now`, so the same policy and instant always give
the same `BlockState` (and the tests can compare it with a naive reading of the blocks).
"""

from __future__ import annotations

import bisect
from datetime import datetime

from .state import Block, BlockState, Policy, PolicySegment, SegmentState

_EMPTY: frozenset[str] = frozenset()


def _services_at(blocks: tuple[Block, ...], ends: list[datetime], at: datetime) -> frozenset[str]:
    """The services of the block covering `at` (blocks sorted and disjoint), or none."""
    i = bisect.bisect_right(ends, at)
    if i < len(blocks) and blocks[i].start <= at:
        return blocks[i].services
    return _EMPTY


def _segment_state(segment: PolicySegment, now: datetime) -> tuple[SegmentState, datetime | None]:
    """The segment's blocked services, each with its (chained) block's end, and its next change."""
    blocks = segment.blocks
    ends = [block.end for block in blocks]
    current = _services_at(blocks, ends, now)
    i = bisect.bisect_right(ends, now)
    blocked: dict[str, datetime] = {}
    if current:
        # Follow adjacent blocks: a service blocked in [9:00, 9:50) and again from 9:50 stays
        # blocked until the first instant no block covers it.
        for service in current:
            j, until = i, blocks[i].end
            while j + 1 < len(blocks) and blocks[j + 1].start == until \
                    and service in blocks[j + 1].services:
                j += 1
                until = blocks[j].end
            blocked[service] = until
    # The next instant where this segment's set of blocked services differs from now.
    change: datetime | None = None
    j = i
    point = blocks[i].end if current else (blocks[i].start if i < len(blocks) else None)
    while point is not None:
        if _services_at(blocks, ends, point) != current:
            change = point
            break
        # Same set on both sides of a boundary (unmerged adjacent blocks): look further.
        j = bisect.bisect_right(ends, point)
        if j >= len(blocks):
            point = None
        elif blocks[j].start <= point:
            point = blocks[j].end
        else:
            point = blocks[j].start
    state = SegmentState(segment_id=segment.id, name=segment.name, cidrs=segment.cidrs,
                         blocked=blocked)
    return state, change


def blocked_at(policy: Policy, now: datetime) -> BlockState:
    """What `policy` blocks on each segment at `now` (aware), and when that next changes."""
    if now.tzinfo is None:
        raise ValueError("blocked_at needs an aware datetime (UTC)")
    states: list[SegmentState] = []
    changes: list[datetime] = []
    for segment in policy.segments:
        state, change = _segment_state(segment, now)
        states.append(state)
        if change is not None:
            changes.append(change)
    return BlockState(at=now, segments=tuple(states), next_change=min(changes, default=None))


def next_change(policy: Policy, now: datetime) -> datetime | None:
    """The first instant after `now` at which what `policy` blocks changes on any segment."""
    return blocked_at(policy, now).next_change
