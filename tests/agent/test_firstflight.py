"""The first-flight reassembler: ClientHellos split over segments and records, in any order, and
its bounds (bytes, segments, time, flows per client and in all, buffered bytes)."""

from __future__ import annotations

import ssl
import tracemalloc

import pytest

from agent.observers import firstflight
from agent.observers.firstflight import (ANSWER_GRACE, FLIGHT_SECONDS, MAX_BUFFERED_BYTES,
                                         MAX_FLIGHT_BYTES, MAX_FLOWS, MAX_FLOWS_PER_CLIENT, MAX_SEGMENTS, NAME,
                                         NO_NAME, NOT_TLS, SYN_SECONDS, UNREADABLE,
                                         FirstFlightReassembler, Verdict)
from agent.observers.parsers import client_hello_progress, parse_client_hello
from tests.support.clienthello import scapy_client_hello

KEY = ("10.81.1.10", "198.51.100.12", 40000, 443)
ISN = 1_000_000
ACK = 777


def python_client_hello(host: str) -> bytes:
    """The ClientHello Python's TLS stack (OpenSSL) writes, as bytes."""
    tls = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(),
                                                server_hostname=host)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return out.read()


def big_client_hello(host: str) -> bytes:
    """About 2,000 bytes with the server name after byte 1,448 (Chromium's post-quantum shape)."""
    data = scapy_client_hello(host, before=480)
    assert 1900 < len(data) < 2100
    assert data.find(host.encode()) > 1448
    return data


def two_records(hello: bytes, at: int) -> bytes:
    """The same handshake message split over two TLS records after `at` of its bytes."""
    body = hello[5:5 + int.from_bytes(hello[3:5], "big")]
    first, second = body[:at], body[at:]
    return (b"\x16\x03\x01" + len(first).to_bytes(2, "big") + first
            + b"\x16\x03\x01" + len(second).to_bytes(2, "big") + second)


def cuts(data: bytes, *at: int) -> list[tuple[int, bytes]]:
    """(stream offset, bytes) pieces of data cut at the given offsets."""
    bounds = [0, *at, len(data)]
    return [(a, data[a:b]) for a, b in zip(bounds, bounds[1:]) if b > a]


def feed(r: FirstFlightReassembler, pieces: list[tuple[int, bytes]], now: float = 0.0,
         key: tuple = KEY, base: int = ISN + 1) -> list[list[Verdict]]:
    return [r.segment(key, (base + off) % 2**32, ACK, data, now) for off, data in pieces]


def only_verdict(results: list[list[Verdict]]) -> tuple[int, Verdict]:
    """The single verdict of a run and the index of the segment that gave it."""
    found = [(i, v) for i, vs in enumerate(results) for v in vs]
    assert len(found) == 1, found
    return found[0]


# -- the reader of a reassembled stream -----------------------------------------------------

@pytest.mark.parametrize("make", [python_client_hello, big_client_hello,
                                  lambda h: scapy_client_hello(h)])
def test_every_prefix_of_a_client_hello_either_waits_or_names_the_server(make) -> None:
    data = make("www.instagram.com")
    named_from = None
    for n in range(len(data) + 1):
        status, name = client_hello_progress(data[:n])
        if status == NAME:
            assert name == "www.instagram.com"
            named_from = n if named_from is None else named_from
        else:
            assert named_from is None, f"gave {status} at {n} after naming at {named_from}"
            assert status == "need-more", (n, status)
    assert named_from is not None and named_from <= len(data)


def test_a_client_hello_over_two_records_is_read_at_every_split() -> None:
    hello = python_client_hello("www.tiktok.com")
    for at in range(1, int.from_bytes(hello[3:5], "big")):
        assert parse_client_hello(two_records(hello, at)) == "www.tiktok.com", at


@pytest.mark.parametrize("stream,status", [
    # Named, not shown: a ClientHello's random bytes differ in every process, and the xdist
    # workers of `make test` must collect the same test ids.
    pytest.param(scapy_client_hello(None), NO_NAME, id="client-hello-without-sni"),
    (b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00", NOT_TLS),       # a ServerHello
    (b"\x17\x03\x03\x00\x10" + b"x" * 16, NOT_TLS),                # application data
    (b"GET / HTTP/1.1\r\n", NOT_TLS),
    (b"\x16\x03\x01\x40\x01", NOT_TLS),                            # a record over 2^14 bytes
    (b"\x16\x03\x01\x00\x04\x01\x00\x01\x00" + b"\x15\x03\x03\x00\x02\x02\x28", NO_NAME),
])
def test_streams_that_cannot_name_a_server(stream: bytes, status: str) -> None:
    assert client_hello_progress(stream) == (status, None)


# -- segments -------------------------------------------------------------------------------

@pytest.mark.parametrize("split", [[1], [5], [1, 5], [9], [100], [5, 6, 7, 300], [1448]])
def test_segments_in_order(split: list[int]) -> None:
    hello = python_client_hello("www.instagram.com")
    r = FirstFlightReassembler()
    r.syn(KEY, ISN, 0.0)
    index, verdict = only_verdict(feed(r, cuts(hello, *split)))
    assert (verdict.status, verdict.name, verdict.key) == (NAME, "www.instagram.com", KEY)
    assert verdict.ack == ACK
    assert len(r) == 0 and r.held == 0


@pytest.mark.parametrize("split", [[1], [5], [700, 1448], [1448]])
def test_segments_in_reverse_order_after_a_syn(split: list[int]) -> None:
    hello = big_client_hello("www.instagram.com")
    r = FirstFlightReassembler()
    r.syn(KEY, ISN, 0.0)
    pieces = cuts(hello, *split)
    index, verdict = only_verdict(feed(r, list(reversed(pieces))))
    assert index == len(pieces) - 1  # only the first segment completes the start
    assert (verdict.status, verdict.name) == (NAME, "www.instagram.com")
    # A server that got every piece expects the byte after the whole flight.
    assert verdict.seq == (ISN + 1 + len(hello)) % 2**32


def test_retransmitted_and_overlapping_segments_add_nothing() -> None:
    hello = big_client_hello("video.x.com")
    r = FirstFlightReassembler()
    pieces = [(0, hello[:1448]), (0, hello[:1448]), (3, hello[3:700]), (1000, hello[1000:1800]),
              (1000, hello[1000:1800]), (1448, hello[1448:])]
    index, verdict = only_verdict(feed(r, pieces))
    assert index == len(pieces) - 1 and verdict.name == "video.x.com"


def test_the_first_copy_of_a_byte_wins_over_a_later_overlap() -> None:
    hello = big_client_hello("www.tiktok.com")
    at = hello.find(b"www.tiktok.com")
    forged = hello[:at] + b"www.example.or" + hello[at + 14:]
    r = FirstFlightReassembler()
    results = feed(r, [(0, hello[:at + 14]), (0, forged), (at + 14, hello[at + 14:])])
    _, verdict = only_verdict(results)
    assert verdict.name == "www.tiktok.com"


@pytest.mark.parametrize("at", [1, 4, 40, 200])
def test_a_client_hello_over_two_records_and_two_segments(at: int) -> None:
    stream = two_records(python_client_hello("www.instagram.com"), at)
    for cut in (5, at + 5, at + 7, len(stream) - 1):
        r = FirstFlightReassembler()
        _, verdict = only_verdict(feed(r, cuts(stream, cut)))
        assert verdict.name == "www.instagram.com", (at, cut)


def test_a_2000_byte_client_hello_with_the_name_in_its_second_segment() -> None:
    hello = big_client_hello("www.instagram.com")
    assert parse_client_hello(hello[:1448]) is None  # what one segment says
    r = FirstFlightReassembler()
    head, tail = cuts(hello, 1448)
    assert feed(r, [head]) == [[]] and len(r) == 1
    [second] = feed(r, [tail])
    assert [(v.status, v.name) for v in second] == [(NAME, "www.instagram.com")]


def test_the_sequence_space_wraps() -> None:
    hello = big_client_hello("x.com")
    r = FirstFlightReassembler()
    r.syn(KEY, 2**32 - 700, 0.0)
    pieces = cuts(hello, 1448)
    _, verdict = only_verdict(feed(r, list(reversed(pieces)), base=2**32 - 699))
    assert verdict.name == "x.com"


def test_a_flow_without_a_syn_starts_at_its_tls_record_and_other_data_is_never_judged() -> None:
    hello = python_client_hello("x.com")
    r = FirstFlightReassembler()
    assert r.segment(KEY, 5000, ACK, b"\x17\x03\x03\x00\x20" + b"z" * 32, 0.0) == []
    assert len(r) == 0  # application data of a flow begun before: not followed
    _, verdict = only_verdict(feed(r, cuts(hello, 5), base=9000))
    assert verdict.name == "x.com"
    # After its verdict the flow starts nothing new, even with a segment that looks like TLS.
    assert r.segment(KEY, 9000 + len(hello), ACK, b"\x16\x03\x03\x00\x10", 0.0) == []
    assert len(r) == 0


def test_a_syn_alone_is_forgotten_without_a_verdict() -> None:
    r = FirstFlightReassembler()
    r.syn(KEY, ISN, 0.0)
    r.syn(KEY, ISN, 1.0)  # retransmitted
    assert len(r) == 1 and r.held == 0
    assert r.expire(SYN_SECONDS + 0.5) == []
    assert len(r) == 0


# -- bounds ---------------------------------------------------------------------------------

def test_a_first_flight_that_is_not_done_in_time_is_unreadable() -> None:
    hello = python_client_hello("x.com")
    r = FirstFlightReassembler()
    r.syn(KEY, ISN, 0.0)
    assert feed(r, [(0, hello[:1])], now=10.0) == [[]]  # the clock starts at the first data
    assert r.expire(10.0 + FLIGHT_SECONDS - 0.1) == []
    [verdict] = r.expire(10.0 + FLIGHT_SECONDS + 0.1)
    assert (verdict.status, verdict.reason, verdict.key) == (UNREADABLE, "time", KEY)
    assert verdict.seq == ISN + 2 and verdict.ack == ACK
    assert len(r) == 0 and r.held == 0


def test_a_late_segment_ends_its_flight_as_unreadable() -> None:
    hello = python_client_hello("x.com")
    r = FirstFlightReassembler()
    feed(r, [(0, hello[:5])], now=0.0)
    [[verdict]] = feed(r, [(5, hello[5:])], now=FLIGHT_SECONDS + 1)
    assert (verdict.status, verdict.reason) == (UNREADABLE, "time")


def test_reversed_segments_without_a_syn_end_unreadable() -> None:
    # Without the SYN the later segment has no place and is passed over: the flight stays
    # incomplete and its time runs out (the observer then refuses the flow).
    hello = big_client_hello("www.instagram.com")
    r = FirstFlightReassembler()
    second, first = feed(r, list(reversed(cuts(hello, 1448))), base=ISN + 1)
    assert second == [] and first == []
    [verdict] = r.expire(FLIGHT_SECONDS + 1)
    assert verdict.status == UNREADABLE


def test_one_byte_segments_past_the_segment_bound_are_unreadable() -> None:
    hello = python_client_hello("www.instagram.com")
    r = FirstFlightReassembler()
    results = feed(r, [(i, hello[i:i + 1]) for i in range(MAX_SEGMENTS + 1)])
    assert all(v == [] for v in results[:-1])
    assert [(v.status, v.reason) for v in results[-1]] == [(UNREADABLE, "segments")]


def test_a_server_name_beyond_the_byte_bound_is_unreadable() -> None:
    # A ClientHello of 20,000 bytes over two records, the name at its end.
    hello = scapy_client_hello("www.instagram.com", before=5000)
    assert len(hello) > MAX_FLIGHT_BYTES
    stream = two_records(hello, 16000)
    r = FirstFlightReassembler()
    results = feed(r, [(off, stream[off:off + 1400]) for off in range(0, len(stream), 1400)])
    verdicts = [v for vs in results for v in vs]
    assert [(v.status, v.reason) for v in verdicts] == [(UNREADABLE, "bytes")]
    assert r.held == 0


def test_data_far_beyond_the_byte_bound_ends_the_flight_at_once() -> None:
    r = FirstFlightReassembler()
    r.syn(KEY, ISN, 0.0)
    [[verdict]] = feed(r, [(MAX_FLIGHT_BYTES + 10, b"x" * 100)])
    assert (verdict.status, verdict.reason) == (UNREADABLE, "bytes")


def test_a_flood_of_half_started_flows_stays_within_every_bound() -> None:
    hello = big_client_hello("www.instagram.com")
    r = FirstFlightReassembler()
    tracemalloc.start()
    try:
        verdicts = []
        for i in range(12_000):
            key = (f"10.81.{i % 200}.{i // 200 % 250}", "198.51.100.12", 1024 + i, 443)
            if i % 3 == 0:
                verdicts += r.syn(key, i * 7919, float(i) / 1e4)
            else:
                # A first segment, and a piece far ahead that never joins it.
                verdicts += r.segment(key, i, ACK, hello[:1448], float(i) / 1e4)
                verdicts += r.segment(key, i + 8000, ACK, b"y" * 1400, float(i) / 1e4)
            assert len(r) <= MAX_FLOWS and r.held <= MAX_BUFFERED_BYTES
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Held payload is bounded; so is everything else (flows, indexes, decided-flow memory).
    assert peak < MAX_BUFFERED_BYTES + 24 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    assert verdicts and all(v.status == UNREADABLE for v in verdicts)
    assert {v.reason for v in verdicts} <= {"flows", "memory"}
    # And time ends the rest: nothing stays once every flow's time is up.
    r.expire(10.0 + SYN_SECONDS)
    assert len(r) == 0 and r.held == 0


def test_one_client_cannot_push_out_the_flows_of_others() -> None:
    hello = python_client_hello("www.instagram.com")
    r = FirstFlightReassembler()
    other = ("10.81.1.11", "198.51.100.12", 50000, 443)
    r.syn(other, ISN, 0.0)
    r.segment(other, ISN + 1, ACK, hello[:5], 0.0)
    pushed = []
    for port in range(10_000):
        pushed += r.segment(("10.81.1.10", "198.51.100.12", port, 443), 1, ACK, hello[:5], 0.0)
    assert len(r) == MAX_FLOWS_PER_CLIENT + 1
    assert len(pushed) == 10_000 - MAX_FLOWS_PER_CLIENT
    assert {(v.status, v.reason, v.key[0]) for v in pushed} == {
        (UNREADABLE, "client-flows", "10.81.1.10")}
    [verdict] = r.segment(other, ISN + 6, ACK, hello[5:], 0.1)
    assert verdict.name == "www.instagram.com"


def test_buffered_bytes_are_shed_oldest_first_when_the_budget_is_spent() -> None:
    r = FirstFlightReassembler(max_bytes=20_000)
    hello = big_client_hello("x.com")
    shed = []
    for i in range(30):
        shed += r.segment((f"10.81.1.{i}", "198.51.100.12", 1, 443), 1, ACK, hello[:1448], 0.0)
        assert r.held <= 20_000
    assert {(v.status, v.reason) for v in shed} == {(UNREADABLE, "memory")}
    assert shed[0].key[0] == "10.81.1.0"


def test_the_bounds_are_the_documented_constants() -> None:
    # docs/agent.md states these; change both together.
    assert (firstflight.MAX_FLIGHT_BYTES, firstflight.MAX_SEGMENTS, firstflight.FLIGHT_SECONDS,
            firstflight.SYN_SECONDS, firstflight.MAX_FLOWS, firstflight.MAX_FLOWS_PER_CLIENT,
            firstflight.MAX_BUFFERED_BYTES) == (16384, 64, 3.0, 30.0, 4096, 64, 8 * 2**20)


def test_a_server_answer_ends_a_flight_that_is_still_unread_after_a_grace() -> None:
    hello = big_client_hello("www.instagram.com")
    late = ("10.81.1.11",) + KEY[1:]
    r = FirstFlightReassembler()
    for key in (KEY, late):
        r.syn(key, ISN, 0.0)
        feed(r, [(0, hello[:1448])], key=key)  # KEY's second segment never reaches us
        r.answered(key, 1.0)
    # `late`'s second segment was still queued on the other capture socket: read in time.
    [[named]] = feed(r, [(1448, hello[1448:])], now=1.0 + ANSWER_GRACE / 2, key=late)
    assert named.name == "www.instagram.com"
    assert r.expire(1.0 + ANSWER_GRACE / 2) == []
    [verdict] = r.expire(1.0 + ANSWER_GRACE + 0.01)
    assert (verdict.key, verdict.status, verdict.reason) == (KEY, UNREADABLE, "answered")
    assert len(r) == 0
    # A flight already read is not judged again by its answer.
    feed(r, [(0, hello)], key=late, base=ISN + 1)
    r.answered(late, 2.0)
    assert r.expire(3.0) == []


def test_a_decoy_with_a_lower_ttl_than_the_syn_is_passed_over() -> None:
    # zapret's "fake": a ClientHello naming another site with a TTL that expires before the
    # server, sent first at the same sequence numbers, then the real one.
    real = python_client_hello("www.instagram.com")
    decoy = python_client_hello("www.example.org")
    r = FirstFlightReassembler()
    r.syn(KEY, ISN, 0.0, ttl=64)
    assert r.segment(KEY, ISN + 1, ACK, decoy, 0.0, ttl=3) == []
    [verdict] = r.segment(KEY, ISN + 1, ACK, real, 0.0, ttl=64)
    assert (verdict.status, verdict.name) == (NAME, "www.instagram.com")
