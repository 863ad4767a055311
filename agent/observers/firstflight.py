"""A TLS client's first flight, put back together per TCP flow, bounded in memory and time.

A ClientHello may span several TCP segments (Chromium's post-quantum ClientHello is about 2 KB)
and several TLS records, and clients that evade inspection split it on purpose (a first segment
of 1 or 5 bytes, segments sent in reverse order, the message split over two records). The
reassembler places each client->server segment by its sequence number (RFC 9293 §3.4: byte 0 of
the stream is the SYN's sequence number + 1, or the first byte of a segment that starts a TLS
record), keeps the first copy of every byte (retransmissions and overlaps add nothing), and reads
the contiguous start of the stream with `client_hello_progress` until the server name is known.

Every flow ends in one `Verdict`: NAME, NO_NAME, NOT_TLS, or UNREADABLE when a bound below was
reached before the name could be read. The caller decides what an unreadable flow means (the
observer refuses it on a blocked segment: docs/agent.md). Flows that only sent a SYN cost no
buffer and end without a verdict.

Nothing here is logged or kept after a flow's verdict; it holds addresses only while a first
flight is in the air.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from .parsers import NAME, NEED_MORE, NO_NAME, NOT_TLS, client_hello_progress

UNREADABLE = "unreadable"

# The bounds. A real ClientHello is 0.2-2.1 KB (OpenSSL about 0.5 KB, Chromium's post-quantum one
# 1.9-2.0 KB) in 1-2 segments, sent right after the TCP handshake.
MAX_FLIGHT_BYTES = 16384        # stream bytes kept per flow; a name not in them is unreadable
MAX_SEGMENTS = 64               # data segments per flow, retransmissions included
FLIGHT_SECONDS = 3.0            # from a flow's first data segment to its name
SYN_SECONDS = 30.0              # a flow that sent only its SYN is remembered this long
ANSWER_GRACE = 0.2              # from the server's answer to an unread flight's end
MAX_FLOWS = 4096                # flows followed at once (both kinds)
MAX_FLOWS_PER_CLIENT = 64       # ... of which one client address may hold
MAX_BUFFERED_BYTES = 8 * 2**20  # payload bytes held over all flows
DONE_MEMORY = 16384             # decided flows remembered, so their later data starts nothing

_SEQ = 2 ** 32

FlowKey = tuple[str, str, int, int]  # client, server, client port, server port


@dataclass(frozen=True)
class Verdict:
    """How a flow's first flight ended.

    `seq` is the sequence number after the contiguous data seen (what the server expects next),
    `ack` the client's latest acknowledgement number (what the client expects next), for resets.
    """

    key: FlowKey
    status: str           # NAME | NO_NAME | NOT_TLS | UNREADABLE
    name: str | None = None
    # for UNREADABLE: bytes | segments | time | answered | flows | client-flows | memory
    reason: str = ""
    seq: int = 0
    ack: int = 0


class _Flow:
    __slots__ = ("key", "base", "since", "data", "pieces", "held", "segments", "ack", "ttl")

    def __init__(self, key: FlowKey, base: int, since: float, ttl: int = 0) -> None:
        self.key = key
        self.ttl = ttl  # of the SYN (or the first data segment): the client's own packets
        self.base = base % _SEQ
        self.since = since
        self.data = bytearray()
        self.pieces: dict[int, bytes] = {}  # out-of-order data by stream offset
        self.held = 0                       # bytes in data + pieces
        self.segments = 0
        self.ack = 0


class FirstFlightReassembler:
    """Follows the first flights of TCP flows and says when each one's server name is known."""

    def __init__(self, max_flows: int = MAX_FLOWS, per_client: int = MAX_FLOWS_PER_CLIENT,
                 max_bytes: int = MAX_BUFFERED_BYTES, flight_bytes: int = MAX_FLIGHT_BYTES,
                 max_segments: int = MAX_SEGMENTS, flight_seconds: float = FLIGHT_SECONDS,
                 syn_seconds: float = SYN_SECONDS) -> None:
        self.max_flows = max_flows
        self.per_client = per_client
        self.max_bytes = max_bytes
        self.flight_bytes = flight_bytes
        self.max_segments = max_segments
        self.flight_seconds = flight_seconds
        self.syn_seconds = syn_seconds
        # Oldest first: flows that sent only a SYN, and flows with data (by first data).
        self._waiting: OrderedDict[FlowKey, _Flow] = OrderedDict()
        self._reading: OrderedDict[FlowKey, _Flow] = OrderedDict()
        self._by_client: dict[str, OrderedDict[FlowKey, None]] = {}
        self._done: OrderedDict[FlowKey, None] = OrderedDict()
        self._answered: OrderedDict[FlowKey, float] = OrderedDict()  # key -> when
        self.held = 0  # payload bytes over all flows

    def __len__(self) -> int:
        return len(self._waiting) + len(self._reading)

    # -- input ----------------------------------------------------------------------------
    def syn(self, key: FlowKey, seq: int, now: float, ttl: int = 0) -> list[Verdict]:
        """A client's SYN: the stream starts at seq + 1. Returns verdicts of flows it pushed out."""
        old = self._waiting.get(key) or self._reading.get(key)
        if old is not None:
            if old.base == (seq + 1) % _SEQ:
                return []  # a retransmitted SYN
            self._drop(old)  # the port was used again
        self._done.pop(key, None)
        out = self._make_room(key[0])
        flow = _Flow(key, seq + 1, now, ttl)
        self._waiting[key] = flow
        self._by_client.setdefault(key[0], OrderedDict())[key] = None
        return out

    def segment(self, key: FlowKey, seq: int, ack: int, payload: bytes,
                now: float, ttl: int = 0) -> list[Verdict]:
        """A client->server data segment; the verdicts it decided (its own flow's, evictions).

        A segment that arrives with a lower TTL (hop limit) than the flow's SYN did was not sent
        by the client's own stack as its other packets were: it is a decoy meant to expire
        between the gateway and the server (a "fake" ClientHello naming another site, sent
        first so that it is read first), and it is passed over.
        """
        if not payload:
            return []
        known = self._reading.get(key) or self._waiting.get(key)
        if known is not None and ttl and known.ttl and ttl < known.ttl:
            return []
        flow = self._reading.get(key)
        out: list[Verdict] = []
        if flow is None:
            flow = self._waiting.pop(key, None)
            if flow is None:
                if payload[:2] not in (b"\x16", b"\x16\x03") or key in self._done:
                    return []  # not the start of a TLS flow: never judged
                out += self._make_room(key[0])
                flow = _Flow(key, seq, now, ttl)
                self._by_client.setdefault(key[0], OrderedDict())[key] = None
            flow.since = now  # the flight's clock starts at its first data
            self._reading[key] = flow
        flow.segments += 1
        flow.ack = ack
        if now - flow.since > self.flight_seconds:
            return out + [self._end(flow, UNREADABLE, reason="time")]
        if flow.segments > self.max_segments:
            return out + [self._end(flow, UNREADABLE, reason="segments")]
        start = (seq - flow.base) % _SEQ
        if start >= _SEQ // 2:  # begins before byte 0 (a retransmission of older data)
            start -= _SEQ
        end = start + len(payload)
        if end <= len(flow.data):
            return out  # nothing new
        if start >= self.flight_bytes:
            return out + [self._end(flow, UNREADABLE, reason="bytes")]
        if start < 0:
            payload, start = payload[-start:], 0
        payload = payload[:self.flight_bytes - start]
        grew = self._place(flow, start, payload)
        if self.held > self.max_bytes:
            out += self._shed(keep=flow)
        if grew:
            status, name = client_hello_progress(bytes(flow.data))
            if status != NEED_MORE:
                return out + [self._end(flow, status, name)]
        if len(flow.data) >= self.flight_bytes:
            return out + [self._end(flow, UNREADABLE, reason="bytes")]
        return out

    def answered(self, key: FlowKey, now: float) -> None:
        """The server sent a TLS handshake record on the flow, so it holds a whole ClientHello:
        a flight still unread ANSWER_GRACE seconds later (a segment the capture missed) is
        unreadable. The grace lets a segment still queued on another capture socket arrive."""
        if key in self._reading or key in self._waiting:
            self._answered.setdefault(key, now)
            while len(self._answered) > self.max_flows:
                self._answered.popitem(last=False)

    def expire(self, now: float) -> list[Verdict]:
        """End the flows whose time is up: verdicts for those that sent data."""
        out: list[Verdict] = []
        while self._answered:
            key, when = next(iter(self._answered.items()))
            if now - when <= ANSWER_GRACE:
                break
            del self._answered[key]
            flow = self._reading.get(key) or self._waiting.get(key)
            if flow is not None:
                out.append(self._end(flow, UNREADABLE, reason="answered"))
        while self._reading:
            flow = next(iter(self._reading.values()))
            if now - flow.since <= self.flight_seconds:
                break
            out.append(self._end(flow, UNREADABLE, reason="time"))
        while self._waiting:
            flow = next(iter(self._waiting.values()))
            if now - flow.since <= self.syn_seconds:
                break
            self._drop(flow)
        return out

    # -- inside ---------------------------------------------------------------------------
    def _place(self, flow: _Flow, start: int, payload: bytes) -> bool:
        """Put payload at stream offset start (first copy wins); True when the start grew."""
        before = flow.held
        data = flow.data
        if start > len(data):
            known = flow.pieces.get(start)
            if known is None or len(known) < len(payload):
                flow.pieces[start] = payload
                flow.held += len(payload) - (len(known) if known else 0)
                self.held += flow.held - before
            return False
        data += payload[len(data) - start:]
        # Pieces that now touch the contiguous start join it.
        while flow.pieces:
            offset = min(flow.pieces)
            if offset > len(data):
                break
            piece = flow.pieces.pop(offset)
            if offset + len(piece) > len(data):
                data += piece[len(data) - offset:]
        flow.held = len(data) + sum(len(p) for p in flow.pieces.values())
        self.held += flow.held - before
        return True

    def _make_room(self, client: str) -> list[Verdict]:
        out: list[Verdict] = []
        mine = self._by_client.get(client)
        if mine is not None and len(mine) >= self.per_client:
            out.append(self._push_out(self._flow(next(iter(mine))), "client-flows"))
        while len(self) >= self.max_flows:
            victim = next(iter(self._waiting.values()), None) or \
                next(iter(self._reading.values()))
            verdict = self._push_out(victim, "flows")
            if verdict is not None:
                out.append(verdict)
        return [v for v in out if v is not None]

    def _shed(self, keep: _Flow) -> list[Verdict]:
        """End the oldest flights (not `keep`) until the held bytes are within the budget."""
        out = []
        while self.held > self.max_bytes:
            victim = None
            for flow in self._reading.values():  # oldest first; `keep` is usually the newest
                if flow is not keep:
                    victim = flow
                    break
            if victim is None:
                break
            out.append(self._end(victim, UNREADABLE, reason="memory"))
        return out

    def _flow(self, key: FlowKey) -> _Flow:
        flow = self._waiting.get(key) or self._reading.get(key)
        assert flow is not None
        return flow

    def _push_out(self, flow: _Flow, reason: str) -> Verdict | None:
        if flow.key in self._waiting:
            self._drop(flow)  # only a SYN: nothing was read, nothing to judge
            return None
        return self._end(flow, UNREADABLE, reason=reason)

    def _end(self, flow: _Flow, status: str, name: str | None = None,
             reason: str = "") -> Verdict:
        self._drop(flow)
        self._done[flow.key] = None
        if len(self._done) > DONE_MEMORY:
            self._done.popitem(last=False)
        return Verdict(flow.key, status, name, reason, (flow.base + len(flow.data)) % _SEQ,
                       flow.ack)

    def _drop(self, flow: _Flow) -> None:
        self._waiting.pop(flow.key, None)
        self._reading.pop(flow.key, None)
        self.held -= flow.held
        flow.held = 0
        mine = self._by_client.get(flow.key[0])
        if mine is not None:
            mine.pop(flow.key, None)
            if not mine:
                del self._by_client[flow.key[0]]


__all__ = ["FirstFlightReassembler", "Verdict", "NAME", "NO_NAME", "NOT_TLS", "UNREADABLE",
           "MAX_FLIGHT_BYTES", "MAX_SEGMENTS", "FLIGHT_SECONDS", "SYN_SECONDS", "MAX_FLOWS",
           "MAX_FLOWS_PER_CLIENT", "MAX_BUFFERED_BYTES", "DONE_MEMORY", "ANSWER_GRACE"]
