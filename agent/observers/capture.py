"""The third layer: scapy capture on the LAN interfaces with narrow kernel BPF filters.

It sees TLS ClientHellos (tcp/443), HTTP requests (tcp/80) and DNS answers (udp source port 53,
for segments that are not redirected to the responder). A name of a service teaches the gateway
the address (DNS answer addresses, or the flow's destination for SNI/Host). When the client's
segment has that service blocked, the address is added first and the flow is then reset with
resets built from the seen packets' sequence numbers.

From segments with a block in force, the kernel filter also passes every SYN and data segment
to tcp/443, and the first flight of each TLS flow is put back together (`firstflight.py`), so
the server name is read wherever it lands: in the second segment of Chromium's 2 KB
post-quantum ClientHello, or after a split made on purpose. A TLS flow from such a segment
whose first flight cannot be read within the reassembler's bounds is refused (fail closed): the
enforcer rejects its further packets and both ends are reset. Segments without a block keep the
narrow filter (one segment per ClientHello, for learning only), so the observer's load grows
only with the traffic of classrooms in a lesson.

Only aggregate counts are kept (`stats`); nothing records which client asked for what.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
import threading
import time
from functools import lru_cache
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..segment_table import BlockTable
from ..domains import DOH, DomainMatcher, always_blocked_matcher
from ..errors import EnforcerError
from ..state import BlockState, Service
from .firstflight import NAME, UNREADABLE, FirstFlightReassembler, Verdict
from .parsers import parse_client_hello, parse_dns_answer, parse_frame, parse_http_host
from .resets import ResetSender

log = logging.getLogger(__name__)

# The kernel passes, from every client: IPv4/IPv6 tcp/443 segments whose payload starts a TLS
# handshake record, tcp/80 segments with PSH (request data), and DNS answers. libpcap cannot
# index TCP payloads of IPv6 packets, so the IPv6 branch assumes no extension headers (the usual
# case). `capture_filters` adds the first flights of blocked segments.
BPF_FILTER = (
    "(ip and tcp dst port 443 and tcp[((tcp[12:1] & 0xf0) >> 2):1] = 0x16)"
    " or (ip6 and ip6[6] = 6 and tcp dst port 443"
    " and ip6[(40 + ((ip6[52] & 0xf0) >> 2)):1] = 0x16)"
    " or (ip and tcp dst port 80 and tcp[tcpflags] & tcp-push != 0)"
    " or (ip6 and ip6[6] = 6 and tcp dst port 80 and ip6[53] & 0x08 != 0)"
    " or (udp src port 53)"
)


# From the blocked networks, to tcp/443: SYNs (where a stream begins) on the socket of flow starts;
# on a socket of their own, segments with PSH that carry data (payload length = IP total length -
# IP header - TCP header) and do not start a TLS record, so an upload that floods it cannot make
# the kernel drop the starts. A sender sets PSH on the last segment of each write (RFC 9293
# §3.9.1.2): a ClientHello of two segments (every browser's, up to 2 x MSS) has its second
# segment marked, and each piece of a split made on purpose is a write of its own; a bulk upload
# marks about one segment in a few dozen. A flight of three or more segments has an unmarked
# middle one: it stays unread and is refused, never let through. Pure ACKs pass neither socket.
_SYN4 = "(ip and tcp dst port 443 and ({nets}) and tcp[13] & 0x02 != 0)"
_SYN6 = "(ip6 and ip6[6] = 6 and tcp dst port 443 and ({nets}) and ip6[53] & 0x02 != 0)"
_REST4 = ("(ip and tcp dst port 443 and ({nets}) and tcp[13] & 0x08 != 0"
          " and ip[2:2] - ((ip[0] & 0x0f) << 2) - ((tcp[12] & 0xf0) >> 2) != 0"
          " and tcp[((tcp[12:1] & 0xf0) >> 2):1] != 0x16)")
_REST6 = ("(ip6 and ip6[6] = 6 and tcp dst port 443 and ({nets}) and ip6[53] & 0x08 != 0"
          " and ip6[4:2] - ((ip6[52] & 0xf0) >> 2) != 0"
          " and ip6[(40 + ((ip6[52] & 0xf0) >> 2)):1] != 0x16)")
# The server's first answer to a client of the blocked networks (a segment from tcp/443 that
# starts a TLS handshake record: its ServerHello), one per connection: it ends the wait for a
# first flight that could not be read (a segment the capture missed).
_ANSWER4 = ("(ip and tcp src port 443 and ({nets})"
            " and ip[2:2] - ((ip[0] & 0x0f) << 2) - ((tcp[12] & 0xf0) >> 2) != 0"
            " and tcp[((tcp[12:1] & 0xf0) >> 2):1] = 0x16)")
_ANSWER6 = ("(ip6 and ip6[6] = 6 and tcp src port 443 and ({nets})"
            " and ip6[4:2] - ((ip6[52] & 0xf0) >> 2) != 0"
            " and ip6[(40 + ((ip6[52] & 0xf0) >> 2)):1] = 0x16)")
NOTHING = "less 1"  # no Ethernet frame is that short: the rest socket's filter without a block
# Networks per family named in the filters; with more (after collapsing), the first-flight
# clauses pass every source. 240 segments of /24 + /64 compile to about 1,100 instructions; the
# kernel takes at most 4,096 (BPF_MAXINSNS).
MAX_FILTER_NETWORKS = 256
TCP_SYN, TCP_ACK = 0x02, 0x10
EXPIRE_EVERY = 0.05  # seconds between looks for first flights whose time is up
# Receive buffer of each capture socket (SO_RCVBUFFORCE, CAP_NET_ADMIN): bursts of new flows at
# the bell must not overflow scapy's default of 64 KiB.
CAPTURE_BUFFER = 4 * 2**20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SOL_PACKET, PACKET_STATISTICS = 263, 6  # <linux/if_packet.h>


def blocked_networks(state: BlockState | None, now: float | None = None) -> list[str]:
    """The source networks of segments with a block in force (collapsed, IPv4 first)."""
    if state is None:
        return []
    at = time.time() if now is None else now
    nets: list[Any] = []
    for seg in state.segments:
        if any(until.timestamp() > at for until in seg.blocked.values()):
            nets += [ipaddress.ip_network(c, strict=False) for c in seg.cidrs]
    out: list[str] = []
    for version in (4, 6):
        out += [str(n) for n in ipaddress.collapse_addresses(
            n for n in nets if n.version == version)]
    return out


def capture_filters(networks: Iterable[str] = ()) -> tuple[str, str]:
    """The kernel filters (starts, rest) for the LAN sockets, first flights of `networks` in.

    starts: BPF_FILTER, the SYNs to tcp/443 from the networks and the servers' first answers to
    them; rest: their other segments with data to tcp/443 (NOTHING without networks).
    """
    nets = list(networks)
    starts, rest = [], []
    for version, syn, data, answer in ((4, _SYN4, _REST4, _ANSWER4),
                                       (6, _SYN6, _REST6, _ANSWER6)):
        mine = [n for n in nets if ipaddress.ip_network(n).version == version]
        if not mine:
            continue
        if len(mine) > MAX_FILTER_NETWORKS:
            # Too long for one classic BPF program: every source passes, the observer sorts.
            sources = destinations = f"ip{'6' if version == 6 else ''}"
        else:
            sources = " or ".join(f"src net {n}" for n in mine)
            destinations = " or ".join(f"dst net {n}" for n in mine)
        starts.append(syn.format(nets=sources))
        starts.append(answer.format(nets=destinations))
        rest.append(data.format(nets=sources))
    # The SYN clauses come first: BPF_FILTER loads a payload byte, and a load beyond the end
    # of a packet (a SYN has no payload) ends a classic BPF program with "reject" at once,
    # whatever the clauses after it would say.
    return " or ".join(starts + [BPF_FILTER]), " or ".join(rest) or NOTHING


class CapturedFrame(bytes):
    """A captured frame's bytes; a bytes subclass, so scapy's sniff loop can tag it."""

    time: float | None = None
    sniffed_on: Any = None


@lru_cache(maxsize=1)
def _raw_listen_socket_class() -> type:
    import scapy.layers.l2  # noqa: F401  (lets the socket name its link type without warning)
    from scapy.arch.linux import L2ListenSocket

    class RawListenSocket(L2ListenSocket):  # type: ignore[misc,valid-type]
        """scapy's capture socket (kernel BPF filter) that hands frames over undissected.

        scapy's per-packet dissection costs milliseconds; `parse_frame` reads the few header
        fields the observers need in microseconds.
        """

        def recv(self, x: int = 65535, **kwargs: Any) -> Any:
            _, frame, ts = self.recv_raw(x)
            if not frame:
                return None
            pkt = CapturedFrame(frame)
            pkt.time = ts
            return pkt

    return RawListenSocket


def _RawListenSocket(iface: str | None, filter: str) -> Any:
    return _raw_listen_socket_class()(iface=iface, filter=filter)


def _grow_buffer(sock: Any) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, CAPTURE_BUFFER)
    except OSError:  # without CAP_NET_ADMIN: as much as net.core.rmem_max allows
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CAPTURE_BUFFER)


class Observer:
    """Learns addresses from the wire and resets flows of blocked services."""

    def __init__(self, interfaces: Iterable[str], enforcer: Any,
                 services: Mapping[str, Service] | Callable[[], Mapping[str, Service]],
                 state_provider: Callable[[], BlockState | None],
                 resets: ResetSender | None = None, doh: Iterable[str] | None = None) -> None:
        self.interfaces = list(interfaces)
        self.enforcer = enforcer
        self._services = services
        self.state_provider = state_provider
        self.resets = resets or ResetSender()
        self.always = always_blocked_matcher(doh)
        self._matcher_for: Any = None
        self.matcher = DomainMatcher()
        self._state_for: Any = None
        self.table = BlockTable()
        self.stats = {"packets": 0, "learned": 0, "resets": 0, "refused": 0, "kernel_drops": 0}
        # First flights refused unread, per segment id (a count, nothing about clients).
        self.refused_by_segment: dict[int, int] = {}
        self.flights = FirstFlightReassembler()
        self._flights_lock = threading.Lock()
        self.filters = capture_filters()
        self._pending: tuple[str, str] | None = None
        self._sniffer: Any = None
        self._sockets: list[tuple[int, Any]] = []  # (0 = starts | 1 = rest, socket)
        self._ticker: threading.Thread | None = None
        self._ticking = threading.Event()

    def _refresh(self) -> None:
        services = self._services() if callable(self._services) else self._services
        if services is not self._matcher_for and services != self._matcher_for:
            self.matcher = DomainMatcher.from_services(services)
            self._matcher_for = services
        state = self.state_provider()
        if state is not self._state_for:
            self.table = BlockTable.from_state(state)
            self._state_for = state

    def _service(self, name: str) -> str | None:
        found = self.matcher.match(name)
        if found is None and self.always.match(name) == DOH:
            return DOH
        return found

    def _blocked(self, client: str, service: str) -> bool:
        found = self.table.lookup(client)
        if found is None:
            return False
        now = time.time()
        if service == DOH:
            return any(end > now for end in found[1].values())
        return found[1].get(service, 0.0) > now

    def _segment_in_lesson(self, client: str) -> int | None:
        """The segment id of a client whose segment has any block in force now, else None."""
        found = self.table.lookup(client)
        if found is None:
            return None
        now = time.time()
        return found[0] if any(end > now for end in found[1].values()) else None

    def apply(self, state: BlockState) -> None:
        """Follow a new block state: the kernel filters will pass the blocked segments' first
        flights (the runner calls this at every change, before the enforcer applies it).

        The filters are compiled and attached by the ticker thread, so that the bell does not
        wait for libpcap (0.1 s for 240 segments); flights are judged by the new state at once.
        """
        with self._flights_lock:
            self._pending = capture_filters(blocked_networks(state))

    def _install_filters(self) -> None:
        with self._flights_lock:
            wanted, self._pending = self._pending, None
        if wanted is None or wanted == self.filters or not self._sockets:
            if wanted is not None and not self._sockets:
                self.filters = wanted
            return
        from scapy.arch.common import compile_filter, free_filter
        from scapy.data import SO_ATTACH_FILTER
        from scapy.libs.structures import sock_fprog
        for role in (0, 1):
            if wanted[role] == self.filters[role]:
                continue
            try:
                program = compile_filter(wanted[role], linktype=1)  # the LANs are Ethernet
            except Exception as err:  # a filter libpcap refuses must not end the capture
                log.error("could not compile the capture filter: %s", err)
                continue
            try:
                for mine, sock in self._sockets:
                    if mine == role:  # replaces the socket's old filter at once
                        sock.ins.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                                            sock_fprog(program.bf_len, program.bf_insns))
            except OSError as err:
                log.error("could not attach the capture filter: %s", err)
                continue
            finally:
                free_filter(program)
            self.filters = (wanted[0], self.filters[1]) if role == 0 else \
                (self.filters[0], wanted[1])

    def handle(self, src: str, dst: str, proto: str, sport: int, dport: int, seq: int, ack: int,
               payload: bytes, flags: int = 0, ttl: int = 0) -> str | None:
        """Act on one captured packet; returns the service it concerned (for tests), else None."""
        self.stats["packets"] += 1
        self._refresh()
        if proto == "udp":
            obs = parse_dns_answer(payload)
            if obs is None:
                return None
            service = self._service(obs.name)
            if service is not None:
                self.enforcer.learn(service, obs.addresses, obs.ttl)
                self.stats["learned"] += 1
            return service
        if sport == 443 and payload[:1] == b"\x16":
            # A server's handshake answer (the filter passes it for segments in a lesson).
            if self._segment_in_lesson(dst) is None:
                return None
            with self._flights_lock:
                self.flights.answered((dst, src, dport, sport), time.monotonic())
            return None
        if dport == 443:
            if self._segment_in_lesson(src) is not None:
                return self._first_flight(src, dst, sport, dport, seq, ack, payload, flags, ttl)
            if flags & TCP_SYN:
                return None
            # No block on this segment: one segment is read, only to learn the address.
            name = parse_client_hello(payload)
        else:
            name = parse_http_host(payload)
        if name is None:
            return None
        return self._name_seen(name, (src, dst, sport, dport), [(seq, ack, len(payload))])

    def _first_flight(self, src: str, dst: str, sport: int, dport: int, seq: int, ack: int,
                      payload: bytes, flags: int, ttl: int) -> str | None:
        key = (src, dst, sport, dport)
        now = time.monotonic()
        with self._flights_lock:
            if flags & TCP_SYN and not flags & TCP_ACK:
                verdicts = self.flights.syn(key, seq, now, ttl)
                if payload:  # TCP Fast Open (RFC 7413): data in the SYN, after its one byte
                    verdicts += self.flights.segment(key, seq + 1, ack, payload, now, ttl)
            else:
                verdicts = self.flights.segment(key, seq, ack, payload, now, ttl)
        found = None
        for verdict in verdicts:
            here = [(seq, ack, len(payload))] if verdict.key == key else []
            service = self._judge(verdict, here)
            if verdict.key == key:
                found = service
        return found

    def _judge(self, verdict: Verdict, here: list[tuple[int, int, int]]) -> str | None:
        """Act on how a first flight ended; `here` is the packet that ended it, if any."""
        # Resets from the packet that ended the flight, and from the end of the data seen (what
        # the server expects when segments came out of order).
        points = here + [(verdict.seq, verdict.ack, 0)]
        if verdict.status == NAME and verdict.name is not None:
            return self._name_seen(verdict.name, verdict.key, points)
        if verdict.status == UNREADABLE:
            self._refuse(verdict, points)
        return None

    def _name_seen(self, name: str, key: tuple[str, str, int, int],
                   points: list[tuple[int, int, int]]) -> str | None:
        service = self._service(name)
        if service is None:
            return None
        src, dst, sport, dport = key
        # Address first: from now on the forward chain rejects the flow's next packets too.
        self.enforcer.learn(service, [dst], 0)
        self.stats["learned"] += 1
        if self._blocked(src, service) and self._reset(key, points):
            self.stats["resets"] += 1
        return service

    def _reset(self, key: tuple[str, str, int, int], points: list[tuple[int, int, int]]) -> bool:
        src, dst, sport, dport = key
        sent = False
        for seq, ack, length in points:
            sent = self.resets.reset_flow(src, dst, sport, dport, seq, ack, length) or sent
        return sent

    def _refuse(self, verdict: Verdict, points: list[tuple[int, int, int]]) -> None:
        """Fail closed: a TLS flow from a segment in a lesson whose first flight stayed unread."""
        client, server, cport, sport = verdict.key
        segment = self._segment_in_lesson(client)
        if segment is None:
            return
        refuse = getattr(self.enforcer, "refuse_flow", None)
        if refuse is not None:
            try:
                refuse(client, cport, server, sport)
            except (EnforcerError, OSError) as err:
                log.warning("could not refuse a flow: %s", str(err).splitlines()[0])
        self._reset(verdict.key, points)
        self.stats["refused"] += 1
        self.refused_by_segment[segment] = self.refused_by_segment.get(segment, 0) + 1
        log.debug("segment %s: refused a TLS flow whose first flight was not readable (%s)",
                  segment, verdict.reason)

    def expire(self, now: float | None = None) -> None:
        """End first flights whose time is up (the ticker thread calls this)."""
        with self._flights_lock:
            verdicts = self.flights.expire(time.monotonic() if now is None else now)
        for verdict in verdicts:
            self._judge(verdict, [])

    def _tick(self) -> None:
        while not self._ticking.wait(EXPIRE_EVERY):
            try:
                self._install_filters()
                self.expire()
            except Exception as err:  # the ticker must outlive one odd flow
                log.warning("first-flight expiry: %s", err)

    def on_packet(self, pkt: Any) -> None:
        """scapy's prn: the captured frame's bytes go through the hand parser to handle()."""
        try:
            seg = parse_frame(pkt if isinstance(pkt, bytes) else bytes(pkt))
            if seg is not None:
                self.handle(*seg)
        except Exception as err:  # one odd packet must never stop the capture
            log.debug("observer skipped a packet: %s", err)

    def start(self) -> None:
        """Start the capture on the LAN interfaces (kernel BPF filter, nothing stored)."""
        from scapy.sendrecv import AsyncSniffer
        self._refresh()
        self._pending = None
        self.filters = capture_filters(blocked_networks(self.state_provider()))
        self._sockets = []
        for name in self.interfaces or [None]:
            for role in (0, 1):
                sock = _RawListenSocket(iface=name, filter=self.filters[role])
                _grow_buffer(sock.ins)
                self._sockets.append((role, sock))
        sockets = [sock for _, sock in self._sockets]
        self._ticking.clear()
        self._ticker = threading.Thread(target=self._tick, daemon=True,
                                        name="lesfocus-first-flights")
        self._ticker.start()
        self._sniffer = AsyncSniffer(opened_socket=sockets, prn=self.on_packet, store=False)
        self._sniffer.start()
        # AsyncSniffer opens its sockets in its thread: wait until it is really listening.
        deadline = time.monotonic() + 5
        while not getattr(self._sniffer, "running", False) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)

    def kernel_drops(self) -> int:
        """Frames the kernel dropped since start() because a capture socket's buffer was full.

        PACKET_STATISTICS (packet(7)) gives the drops since the last read and resets them.
        """
        for _, sock in list(self._sockets):
            try:
                raw = sock.ins.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            except (OSError, AttributeError):
                continue
            self.stats["kernel_drops"] += int.from_bytes(raw[4:8], sys.byteorder)
        return self.stats["kernel_drops"]

    def stop(self) -> None:
        """Stop the capture and close the raw sockets."""
        self._ticking.set()
        if self._ticker is not None:
            self._ticker.join(2)
            self._ticker = None
        if self._sniffer is not None:
            try:
                self._sniffer.stop()
            except Exception as err:  # already stopped, or never started
                log.debug("sniffer stop: %s", err)
            self._sniffer = None
        self._sockets = []
        self.resets.close()
