"""Policies and block states for the gateway lab's two segments, built around a given instant."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from agent.state import BlockState, Policy, PolicySegment, SegmentState, Service

from tests.support import netns

SERVICES = {
    "twitter": Service("twitter", "X", ("x.com", "twimg.com")),
    "tiktok": Service("tiktok", "TikTok", ("tiktok.com",)),
}


def make_policy(services: dict[str, Service] = SERVICES, now: datetime | None = None) -> Policy:
    """A policy for the lab's two segments, valid for a week from `now` (default: the clock's now)."""
    start = now or datetime.now(timezone.utc)
    return Policy("v1", "gw-1", start, start + timedelta(days=7), "Europe/Amsterdam", services,
                  (PolicySegment(1, "lokaal-1", netns.SEG1_CIDRS, ()),
                   PolicySegment(2, "lokaal-2", netns.SEG2_CIDRS, ())))


def make_state(now: datetime, blocked1: dict[str, datetime], blocked2: dict | None = None
               ) -> BlockState:
    """The block state at `now`: services blocked until their instants on segments 1 and 2."""
    return BlockState(now, (SegmentState(1, "lokaal-1", netns.SEG1_CIDRS, blocked1),
                            SegmentState(2, "lokaal-2", netns.SEG2_CIDRS, blocked2 or {})), None)
