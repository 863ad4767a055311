"""The schedule: what a policy blocks at an instant, against a naive reading of its blocks."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lesfocus_policy import blocked_at, next_change
from agent.state import Block, Policy, PolicySegment, Service

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=timezone.utc)
SERVICES = ("tiktok", "instagram", "youtube")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def block(start: float, end: float, *services: str) -> Block:
    return Block(start=at(start), end=at(end), services=frozenset(services))


def policy_of(*segments: tuple[Block, ...]) -> Policy:
    return Policy(
        version="v1", gateway_id="gw", issued_at=T0, expires_at=at(7 * 24 * 60),
        timezone="Europe/Amsterdam",
        services={s: Service(id=s, name=s, domains=(f"{s}.com",)) for s in SERVICES},
        segments=tuple(PolicySegment(id=n + 1, name=f"seg{n + 1}", cidrs=(f"10.0.{n}.0/24",),
                                     blocks=blocks) for n, blocks in enumerate(segments)))


LESSONS = (block(0, 50, "tiktok", "instagram"), block(50, 100, "tiktok"),
           block(110, 160, "tiktok", "instagram", "youtube"))


@pytest.mark.parametrize("minute, expected, change", [
    (-10, {}, 0),
    (0, {"tiktok": 100, "instagram": 50}, 50),
    (49.9, {"tiktok": 100, "instagram": 50}, 50),
    (50, {"tiktok": 100}, 100),
    (100, {}, 110),
    (105, {}, 110),
    (110, {"tiktok": 160, "instagram": 160, "youtube": 160}, 160),
    (160, {}, None),
])
def test_blocked_services_end_where_their_chain_of_adjacent_blocks_ends(
        minute: float, expected: dict[str, float], change: float | None) -> None:
    state = blocked_at(policy_of(LESSONS), at(minute))
    assert state.segments[0].blocked == {s: at(m) for s, m in expected.items()}
    assert state.next_change == (None if change is None else at(change))


def test_unmerged_adjacent_blocks_with_the_same_services_are_no_change() -> None:
    policy = policy_of((block(0, 10, "tiktok"), block(10, 20, "tiktok")))
    assert blocked_at(policy, at(5)).segments[0].blocked == {"tiktok": at(20)}
    assert next_change(policy, at(5)) == at(20)


def test_next_change_is_the_earliest_over_all_segments() -> None:
    policy = policy_of((block(0, 50, "tiktok"),), (block(20, 30, "youtube"),), ())
    state = blocked_at(policy, at(10))
    assert [s.blocked for s in state.segments] == [{"tiktok": at(50)}, {}, {}]
    assert state.next_change == at(20)


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        blocked_at(policy_of(LESSONS), datetime(2026, 11, 23, 9, 0))


# --- property: at any t the state equals the naive interpretation of the blocks -------------

@st.composite
def segment_blocks(draw: st.DrawFn) -> tuple[Block, ...]:
    """Sorted, disjoint blocks on a minute grid, often adjacent, sometimes with no services."""
    blocks, t = [], draw(st.integers(0, 30))
    for _ in range(draw(st.integers(0, 6))):
        t += draw(st.sampled_from([0, 0, 1, 5, 17]))
        length = draw(st.integers(1, 40))
        services = draw(st.frozensets(st.sampled_from(SERVICES), max_size=3))
        blocks.append(Block(start=at(t), end=at(t + length), services=services))
        t += length
    return tuple(blocks)


def naive_set(blocks: tuple[Block, ...], t: datetime) -> frozenset[str]:
    covering = [b.services for b in blocks if b.start <= t < b.end]
    return covering[0] if covering else frozenset()


def naive_state(blocks: tuple[Block, ...], t: datetime) -> dict[str, datetime]:
    boundaries = sorted({b.start for b in blocks} | {b.end for b in blocks})
    result = {}
    for service in naive_set(blocks, t):
        result[service] = next(u for u in boundaries
                               if u > t and service not in naive_set(blocks, u))
    return result


@settings(max_examples=300, deadline=None)
@given(segments=st.lists(segment_blocks(), min_size=1, max_size=3),
       minute=st.integers(-5, 300), fraction=st.sampled_from([0, 0.5]))
def test_state_at_any_instant_equals_the_naive_reading_of_the_blocks(
        segments: list[tuple[Block, ...]], minute: int, fraction: float) -> None:
    policy = policy_of(*segments)
    t = at(minute + fraction)
    state = blocked_at(policy, t)
    assert [s.blocked for s in state.segments] == [naive_state(b, t) for b in segments]
    boundaries = sorted({x for b in segments for blk in b for x in (blk.start, blk.end)})
    expected_change = next((u for u in boundaries if u > t and any(
        naive_set(b, u) != naive_set(b, t) for b in segments)), None)
    assert state.next_change == expected_change
