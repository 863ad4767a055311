"""The observer with the reassembler, without a kernel: what it learns, resets and refuses for
first flights split over segments, per segment's block (a dry-run enforcer records the batches)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from agent.enforcers.dry_run import DryRunEnforcer
from agent.observers.capture import BPF_FILTER, Observer, blocked_networks, capture_filter
from agent.observers.firstflight import FLIGHT_SECONDS, MAX_SEGMENTS
from agent.state import BlockState, SegmentState
from tests.support import netns
from tests.support.policies import SERVICES, make_policy
from tests.agent.test_firstflight import big_client_hello, python_client_hello, two_records

SERVER, OTHER_SERVER = "198.51.100.12", "198.51.100.20"
SYN, ACK_FLAG, PSH_ACK = 0x02, 0x10, 0x18


class RecordedResets:
    """Stands in for ResetSender: remembers the flows it was asked to reset."""

    def __init__(self) -> None:
        self.flows: list[tuple] = []

    def reset_flow(self, client, server, cport, sport, seq, ack, length) -> bool:
        self.flows.append((client, server, cport, sport, seq + length, ack))
        return True

    def close(self) -> None:
        pass


@pytest.fixture
def observer() -> Observer:
    now = datetime.now(timezone.utc)
    state = BlockState(now, (
        SegmentState(1, "lokaal-1", netns.SEG1_CIDRS, {"twitter": now + timedelta(hours=1)}),
        SegmentState(2, "lokaal-2", netns.SEG2_CIDRS, {})), None)
    enforcer = DryRunEnforcer(lambda batch: None)
    enforcer.start(make_policy())
    obs = Observer([], enforcer, SERVICES, lambda: state, resets=RecordedResets())
    obs.apply(state)
    return obs


def send(obs: Observer, client: str, pieces: list[bytes], port: int = 41000,
         server: str = SERVER, isn: int = 5000, order: list[int] | None = None) -> list:
    """A SYN, then the pieces as data segments (in `order`); the services handle() returned."""
    obs.handle(client, server, "tcp", port, 443, isn, 0, b"", SYN)
    offsets, at = [], isn + 1
    for piece in pieces:
        offsets.append(at)
        at += len(piece)
    return [obs.handle(client, server, "tcp", port, 443, offsets[i], 9999, pieces[i], PSH_ACK)
            for i in (order if order is not None else range(len(pieces)))]


def test_the_filter_widens_to_the_blocked_segments_only(observer: Observer) -> None:
    assert observer.filter == capture_filter(["10.81.1.0/24", "fd81:1::/64"])
    assert "10.81.2.0" not in observer.filter and observer.filter.startswith(BPF_FILTER)
    observer.apply(BlockState(datetime.now(timezone.utc), (), None))
    assert observer.filter == BPF_FILTER


def test_blocked_networks_are_collapsed_and_ended_blocks_left_out() -> None:
    now = datetime.now(timezone.utc)
    state = BlockState(now, (
        SegmentState(1, "a", ("10.0.0.0/25", "10.0.0.128/25"), {"x": now + timedelta(hours=1)}),
        SegmentState(2, "b", ("10.9.0.0/24",), {"x": now - timedelta(seconds=1)})), None)
    assert blocked_networks(state) == ["10.0.0.0/24"]


@pytest.mark.parametrize("cut", [[1], [5], [5, 6], [1448]])
def test_a_split_client_hello_from_a_blocked_segment_is_read_learned_and_reset(
        observer: Observer, cut: list[int]) -> None:
    hello = big_client_hello("video.x.com")
    bounds = [0, *cut, len(hello)]
    pieces = [hello[a:b] for a, b in zip(bounds, bounds[1:])]
    seen = send(observer, netns.C1_ADDR, pieces)
    assert seen == [None] * (len(pieces) - 1) + ["twitter"]
    assert SERVER in observer.enforcer.addresses_of(["twitter"])
    assert observer.stats["resets"] == 1
    assert {f[:4] for f in observer.resets.flows} == {(netns.C1_ADDR, SERVER, 41000, 443)}
    # One reset meets what the server expects next: the byte after the whole flight.
    assert 5001 + len(hello) in {f[4] for f in observer.resets.flows}


def test_segments_sent_in_reverse_order_are_read_too(observer: Observer) -> None:
    hello = two_records(python_client_hello("www.tiktok.com"), 60)
    pieces = [hello[:7], hello[7:200], hello[200:]]
    seen = send(observer, netns.C1_ADDR, pieces, order=[2, 1, 0])
    assert seen == [None, None, "tiktok"]
    assert SERVER in observer.enforcer.addresses_of(["tiktok"])
    assert observer.stats["resets"] == 0  # tiktok is not blocked in this lesson: learned only


def test_an_unreadable_first_flight_from_a_blocked_segment_is_refused(observer: Observer) -> None:
    hello = python_client_hello("www.example.org")
    pieces = [hello[i:i + 1] for i in range(MAX_SEGMENTS + 1)]
    send(observer, netns.C1_ADDR, pieces, server=OTHER_SERVER)
    assert observer.stats["refused"] == 1 and observer.refused_by_segment == {1: 1}
    assert any(f"{netns.C1_ADDR} . 41000 . {OTHER_SERVER} . 443 timeout" in batch
               for batch in observer.enforcer.batches)
    assert observer.resets.flows
    assert OTHER_SERVER not in observer.enforcer.addresses_of(["twitter", "tiktok"])


def test_a_first_flight_whose_time_runs_out_is_refused(observer: Observer) -> None:
    hello = python_client_hello("www.example.org")
    send(observer, netns.C1_ADDR, [hello[:5]])
    observer.expire()
    assert observer.stats["refused"] == 0
    import time
    observer.expire(time.monotonic() + FLIGHT_SECONDS + 1)
    assert observer.stats["refused"] == 1 and observer.refused_by_segment == {1: 1}


def test_a_whole_client_hello_of_another_site_is_left_alone(observer: Observer) -> None:
    hello = big_client_hello("www.example.org")
    assert send(observer, netns.C1_ADDR, [hello[:1448], hello[1448:]]) == [None, None]
    assert observer.stats == {**observer.stats, "resets": 0, "refused": 0, "learned": 0}
    assert len(observer.flights) == 0


def test_segments_without_a_block_are_read_one_segment_at_a_time(observer: Observer) -> None:
    hello = python_client_hello("x.com")
    # Whole in one segment: learned (no reset, no block); split: nothing is followed.
    assert send(observer, netns.C2_ADDR, [hello]) == ["twitter"]
    assert send(observer, netns.C2_ADDR, [hello[:5], hello[5:]], port=41001) == [None, None]
    assert len(observer.flights) == 0
    assert observer.stats["resets"] == 0 and observer.stats["refused"] == 0
    import time
    observer.expire(time.monotonic() + 60)
    assert observer.stats["refused"] == 0
