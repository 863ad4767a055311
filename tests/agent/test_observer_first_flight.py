"""The observer with the reassembler, without a kernel: what it learns, resets and refuses for
first flights split over segments, per segment's block (a dry-run enforcer records the batches)."""

from __future__ import annotations

import ctypes
import functools
from datetime import datetime, timedelta, timezone

import pytest

from agent.enforcers.dry_run import DryRunEnforcer
from agent.observers.capture import (BPF_FILTER, NOTHING, Observer, blocked_networks,
                                     capture_filters)
from agent.observers.firstflight import ANSWER_GRACE, FLIGHT_SECONDS, MAX_SEGMENTS
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
    obs._install_filters()  # the ticker's work (no sockets here)
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


def test_the_filters_widen_to_the_blocked_segments_only(observer: Observer) -> None:
    starts, rest = observer.filters
    assert observer.filters == capture_filters(["10.81.1.0/24", "fd81:1::/64"])
    assert starts.endswith(BPF_FILTER) and "src net 10.81.1.0/24" in rest
    assert "10.81.2.0" not in starts + rest
    observer.apply(BlockState(datetime.now(timezone.utc), (), None))
    observer._install_filters()
    assert observer.filters == (BPF_FILTER, NOTHING)


def test_too_many_networks_for_one_program_let_every_source_through() -> None:
    from scapy.arch.common import compile_filter
    from agent.observers.capture import MAX_FILTER_NETWORKS
    many = [f"10.{i // 250}.{i % 250}.0/24" for i in range(0, 2 * (MAX_FILTER_NETWORKS + 1), 2)]
    starts, rest = capture_filters(many)
    assert "src net" not in starts + rest
    assert compile_filter(starts, linktype=1).bf_len < 4096
    fewer = capture_filters(many[:240] + [f"fd00:{i:x}::/64" for i in range(240)])
    assert all(compile_filter(f, linktype=1).bf_len < 4096 for f in fewer)


def test_the_filters_pass_exactly_the_segments_of_first_flights() -> None:
    from scapy.arch.common import compile_filter
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    starts, rest = capture_filters(["10.81.1.0/24", "fd81:1::/64"])
    programs = {expr: compile_filter(expr, linktype=1) for expr in (starts, rest)}

    def passes(expr: str, frame) -> bool:
        return _bpf_match(programs[expr], bytes(frame))

    def pkt(src: str, flags: str, payload: bytes = b"", dport: int = 443):
        net = IPv6(src=src, dst="2001:db8::1") if ":" in src else IP(src=src, dst="198.51.100.1")
        return Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02") / net / TCP(
            sport=40000, dport=dport, flags=flags) / payload

    for src in ("10.81.1.10", "fd81:1::10"):
        assert passes(starts, pkt(src, "S")) and not passes(rest, pkt(src, "S"))
        assert passes(starts, pkt(src, "PA", b"\x16\x03\x01")) and \
            not passes(rest, pkt(src, "PA", b"\x16\x03\x01"))
        assert passes(rest, pkt(src, "PA", b"end of a ClientHello"))
        assert not passes(rest, pkt(src, "A", b"middle of a bulk upload"))
        assert not passes(starts, pkt(src, "A", b"middle")) and not passes(rest, pkt(src, "A"))
        # The server's ServerHello to the client passes; its other segments do not.
        back = (IPv6(src="2001:db8::1", dst=src) if ":" in src
                else IP(src="198.51.100.1", dst=src))
        mac = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02")
        assert passes(starts, mac / back / TCP(sport=443, dport=40000, flags="PA")
                      / b"\x16\x03\x03\x00\x7a\x02")
        assert not passes(starts, mac / back / TCP(sport=443, dport=40000, flags="PA") / b"data")
        assert not passes(starts, mac / back / TCP(sport=443, dport=40000, flags="SA"))
    for src in ("10.81.2.10", "fd81:2::10"):  # no block on this segment
        assert not passes(starts, pkt(src, "S")) and not passes(rest, pkt(src, "PA", b"mid"))
        assert passes(starts, pkt(src, "PA", b"\x16\x03\x01"))


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


@functools.lru_cache(maxsize=1)
def _libpcap():
    import ctypes.util
    lib = ctypes.CDLL(ctypes.util.find_library("pcap"))  # find_library runs ldconfig: once
    lib.bpf_filter.restype = ctypes.c_uint
    lib.bpf_filter.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint]
    return lib


def _bpf_match(program, frame: bytes) -> bool:
    """Run a compiled classic BPF program on a frame (libpcap's bpf_filter)."""
    return _libpcap().bpf_filter(ctypes.cast(program.bf_insns, ctypes.c_void_p), frame,
                                 len(frame), len(frame)) != 0


def test_the_servers_answer_to_an_unread_flight_refuses_it_soon(observer: Observer) -> None:
    import time
    hello = big_client_hello("www.instagram.com")
    send(observer, netns.C1_ADDR, [hello[:1448]])  # the rest of the flight was missed
    send(observer, netns.C2_ADDR, [hello[:1448]], port=41002)  # no block on this segment
    server_hello = b"\x16\x03\x03\x00\x7a\x02\x00\x00\x76" + b"\x03\x03" + b"r" * 32
    for client, port in ((netns.C1_ADDR, 41000), (netns.C2_ADDR, 41002)):
        observer.handle(SERVER, client, "tcp", 443, port, 88, 5001 + 1448, server_hello,
                        PSH_ACK)
    observer.expire()
    assert observer.stats["refused"] == 0
    observer.expire(time.monotonic() + ANSWER_GRACE + 0.01)  # long before FLIGHT_SECONDS
    assert observer.stats["refused"] == 1 and observer.refused_by_segment == {1: 1}


def test_a_client_hello_in_the_syn_is_read(observer: Observer) -> None:
    hello = python_client_hello("x.com")  # TCP Fast Open carries it in the SYN
    assert observer.handle(netns.C1_ADDR, SERVER, "tcp", 41005, 443, 70, 0, hello, SYN) \
        == "twitter"
    assert observer.stats["resets"] == 1
