"""TCP resets (RFC 793 §3.4, RFC 5961 §3) built with scapy and sent through raw IP sockets.

A reset ends a connection only with the exact sequence number the receiver expects, so resets are
built from a packet seen on the wire: to the client with the packet's ACK number, to the server
with its sequence number plus payload length. One pair per seen sequence number (repeats are
skipped). Raw IP sockets (IPPROTO_RAW) send in ~2 ms where scapy's layer-2 send takes ~60 ms.

`nudge` covers flows that are idle at the bell: an out-of-window ACK makes the client answer with
a duplicate ACK (RFC 793 p. 69), which meets the forward chain's reject rule and its exact reset.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections import OrderedDict

log = logging.getLogger(__name__)


def _layers():  # scapy is imported lazily: the agent starts fast and tests can skip it
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    return IP, IPv6, TCP


def warm_up() -> None:
    """Load scapy's layers ahead of the first reset."""
    _layers()


def build_reset(src: str, dst: str, sport: int, dport: int, seq: int, ack: int = 0) -> bytes:
    """A TCP RST (with ACK when ack is given) from src:sport to dst:dport, as IP bytes."""
    IP, IPv6, TCP = _layers()
    flags = "RA" if ack else "R"
    net = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    return bytes(net / TCP(sport=sport, dport=dport, seq=seq % 2**32, ack=ack % 2**32,
                           flags=flags, window=0))


def build_nudge(server: str, client: str, sport: int, cport: int) -> bytes:
    """An ACK from the server side with a sequence number far outside any window."""
    IP, IPv6, TCP = _layers()
    net = IPv6(src=server, dst=client) if ":" in server else IP(src=server, dst=client)
    return bytes(net / TCP(sport=sport, dport=cport, seq=0x7FFF0000, ack=0, flags="A",
                           window=0))


class ResetSender:
    """Sends resets through raw IPv4/IPv6 sockets; remembers recently reset sequence numbers."""

    def __init__(self, memory: int = 4096) -> None:
        self._sock4: socket.socket | None = None
        self._sock6: socket.socket | None = None
        self._seen: OrderedDict[tuple, None] = OrderedDict()
        self._memory = memory
        self._lock = threading.Lock()
        self.sent = 0

    def _socket(self, v6: bool) -> socket.socket:
        if v6:
            if self._sock6 is None:
                self._sock6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
            return self._sock6
        if self._sock4 is None:
            self._sock4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        return self._sock4

    def send(self, packet: bytes, dst: str) -> None:
        """Send one complete IP packet to dst."""
        v6 = ipaddress.ip_address(dst).version == 6
        with self._lock:
            self._socket(v6).sendto(packet, (dst, 0))
            self.sent += 1

    def reset_flow(self, client: str, server: str, cport: int, sport: int, seq: int, ack: int,
                   payload_len: int) -> bool:
        """Reset both ends of a flow from one client->server packet; False when already done."""
        key = (client, server, cport, sport, seq)
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = None
            while len(self._seen) > self._memory:
                self._seen.popitem(last=False)
        try:
            if ack:
                self.send(build_reset(server, client, sport, cport, ack), client)
            self.send(build_reset(client, server, cport, sport, seq + payload_len), server)
        except OSError as err:
            log.warning("could not send a TCP reset: %s", err)
            return False
        return True

    def nudge(self, client: str, server: str, cport: int, sport: int) -> None:
        """Provoke an ACK from an idle client so the reject rule resets it."""
        try:
            self.send(build_nudge(server, client, sport, cport), client)
        except OSError as err:
            log.warning("could not nudge a flow: %s", err)

    def close(self) -> None:
        """Close the raw sockets."""
        for sock in (self._sock4, self._sock6):
            if sock is not None:
                sock.close()
        self._sock4 = self._sock6 = None
