"""The third layer: scapy capture on the LAN interfaces with narrow kernel BPF filters.

It sees TLS ClientHellos (tcp/443), HTTP requests (tcp/80) and DNS answers (udp source port 53,
for segments that are not redirected to the responder). A name of a service teaches the gateway
the address (DNS answer addresses, or the flow's destination for SNI/Host). When the client's
segment has that service blocked, the address is added first and the flow is then reset with
resets built from the seen packet's sequence numbers.

Only aggregate counts are kept (`stats`); nothing records which client asked for what.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..dns_responder import BlockTable
from ..domains import DOH, DomainMatcher, always_blocked_matcher
from ..state import BlockState, Service
from .parsers import parse_client_hello, parse_dns_answer, parse_frame, parse_http_host
from .resets import ResetSender

log = logging.getLogger(__name__)

# The kernel passes only: IPv4/IPv6 tcp/443 segments whose payload starts a TLS handshake record,
# tcp/80 segments with PSH (request data), and DNS answers. libpcap cannot index TCP payloads of
# IPv6 packets, so the IPv6 branch assumes no extension headers (the usual case).
BPF_FILTER = (
    "(ip and tcp dst port 443 and tcp[((tcp[12:1] & 0xf0) >> 2):1] = 0x16)"
    " or (ip6 and ip6[6] = 6 and tcp dst port 443"
    " and ip6[(40 + ((ip6[52] & 0xf0) >> 2)):1] = 0x16)"
    " or (ip and tcp dst port 80 and tcp[tcpflags] & tcp-push != 0)"
    " or (ip6 and ip6[6] = 6 and tcp dst port 80 and ip6[53] & 0x08 != 0)"
    " or (udp src port 53)"
)


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
        self.stats = {"packets": 0, "learned": 0, "resets": 0}
        self._sniffer: Any = None

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

    def handle(self, src: str, dst: str, proto: str, sport: int, dport: int, seq: int, ack: int,
               payload: bytes) -> str | None:
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
        name = parse_client_hello(payload) if dport == 443 else parse_http_host(payload)
        if name is None:
            return None
        service = self._service(name)
        if service is None:
            return None
        # Address first: from now on the forward chain rejects the flow's next packets too.
        self.enforcer.learn(service, [dst], 0)
        self.stats["learned"] += 1
        if self._blocked(src, service):
            if self.resets.reset_flow(src, dst, sport, dport, seq, ack, len(payload)):
                self.stats["resets"] += 1
        return service

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
        sockets = [_RawListenSocket(iface=name, filter=BPF_FILTER)
                   for name in self.interfaces or [None]]
        self._sniffer = AsyncSniffer(opened_socket=sockets, prn=self.on_packet, store=False)
        self._sniffer.start()
        # AsyncSniffer opens its sockets in its thread: wait until it is really listening.
        deadline = time.monotonic() + 5
        while not getattr(self._sniffer, "running", False) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)

    def stop(self) -> None:
        """Stop the capture and close the raw sockets."""
        if self._sniffer is not None:
            try:
                self._sniffer.stop()
            except Exception as err:  # already stopped, or never started
                log.debug("sniffer stop: %s", err)
            self._sniffer = None
        self.resets.close()
