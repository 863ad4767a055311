"""Pure parsers of what the observers see: TLS ClientHello SNI, HTTP Host, DNS answers.

Each takes the transport payload (bytes) and returns a value or None; none of them raises on any
input. They are tested against scapy's dissection of the same bytes and fuzzed.
References: RFC 8446 §4.1.2 (ClientHello), RFC 6066 §3 (server_name), RFC 9112 §3.2 (Host),
RFC 1035 §4 (DNS, through agent.dnswire).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import NamedTuple

from .. import dnswire

HTTP_METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ",
                b"CONNECT ", b"TRACE ")
MAX_HEADER_SCAN = 8192


@dataclass(frozen=True)
class Observation:
    """A name seen on the wire with the addresses it leads to (empty for SNI/Host: the flow's)."""

    kind: str                      # "dns" | "sni" | "http"
    name: str
    addresses: tuple[str, ...] = ()
    ttl: int = 0


class Segment(NamedTuple):
    """The fields of a captured TCP or UDP packet the observers use."""

    src: str
    dst: str
    proto: str      # "tcp" | "udp"
    sport: int
    dport: int
    seq: int
    ack: int
    payload: bytes


def parse_frame(frame: bytes) -> Segment | None:
    """An Ethernet frame (IEEE 802.1Q tags skipped) with IPv4/IPv6 and TCP/UDP, else None.

    IPv4 options are honoured; IPv6 extension headers are not followed (the BPF filter assumes
    none either). Fragments other than the first carry no transport header and give None.
    """
    if len(frame) < 14:
        return None
    ethertype = int.from_bytes(frame[12:14], "big")
    offset = 14
    while ethertype in (0x8100, 0x88A8) and len(frame) >= offset + 4:
        ethertype = int.from_bytes(frame[offset + 2:offset + 4], "big")
        offset += 4
    if ethertype == 0x0800:
        if len(frame) < offset + 20 or frame[offset] >> 4 != 4:
            return None
        ihl = (frame[offset] & 0x0F) * 4
        total = int.from_bytes(frame[offset + 2:offset + 4], "big")
        if ihl < 20 or int.from_bytes(frame[offset + 6:offset + 8], "big") & 0x1FFF:
            return None
        proto = frame[offset + 9]
        src = socket.inet_ntop(socket.AF_INET, frame[offset + 12:offset + 16])
        dst = socket.inet_ntop(socket.AF_INET, frame[offset + 16:offset + 20])
        end = min(len(frame), offset + total) if total >= ihl else len(frame)
        offset += ihl
    elif ethertype == 0x86DD:
        if len(frame) < offset + 40 or frame[offset] >> 4 != 6:
            return None
        proto = frame[offset + 6]
        src = socket.inet_ntop(socket.AF_INET6, frame[offset + 8:offset + 24])
        dst = socket.inet_ntop(socket.AF_INET6, frame[offset + 24:offset + 40])
        end = min(len(frame), offset + 40 + int.from_bytes(frame[offset + 4:offset + 6], "big"))
        offset += 40
    else:
        return None
    if proto == 6:
        if end < offset + 20:
            return None
        data_offset = (frame[offset + 12] >> 4) * 4
        if data_offset < 20 or offset + data_offset > end:
            return None
        return Segment(src, dst, "tcp", int.from_bytes(frame[offset:offset + 2], "big"),
                       int.from_bytes(frame[offset + 2:offset + 4], "big"),
                       int.from_bytes(frame[offset + 4:offset + 8], "big"),
                       int.from_bytes(frame[offset + 8:offset + 12], "big"),
                       frame[offset + data_offset:end])
    if proto == 17:
        if end < offset + 8:
            return None
        return Segment(src, dst, "udp", int.from_bytes(frame[offset:offset + 2], "big"),
                       int.from_bytes(frame[offset + 2:offset + 4], "big"), 0, 0,
                       frame[offset + 8:end])
    return None


def _valid_hostname(raw: bytes) -> str | None:
    if not raw or len(raw) > 253:
        return None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    name = text.lower().rstrip(".")
    # Letters, digits, hyphen, underscore and dots only: anything else is not a name to match.
    if not name or any(not (c.isalnum() or c in "-._") for c in name):
        return None
    return name


def parse_client_hello(payload: bytes) -> str | None:
    """The server_name of a TLS ClientHello at the start of payload, or None.

    The first TCP segment may hold only part of a large ClientHello (post-quantum key shares):
    extensions are read as far as the bytes go.
    """
    data = payload
    if len(data) < 9 or data[0] != 0x16 or data[1] != 0x03 or data[5] != 0x01:
        return None
    record_end = min(len(data), 5 + int.from_bytes(data[3:5], "big"))
    body_end = min(record_end, 9 + int.from_bytes(data[6:9], "big"))
    pos = 9 + 2 + 32  # legacy_version, random
    if pos >= body_end:
        return None
    pos += 1 + data[pos]  # legacy_session_id
    if pos + 2 > body_end:
        return None
    pos += 2 + int.from_bytes(data[pos:pos + 2], "big")  # cipher_suites
    if pos + 1 > body_end:
        return None
    pos += 1 + data[pos]  # legacy_compression_methods
    if pos + 2 > body_end:
        return None
    ext_end = min(body_end, pos + 2 + int.from_bytes(data[pos:pos + 2], "big"))
    pos += 2
    while pos + 4 <= ext_end:
        ext_type = int.from_bytes(data[pos:pos + 2], "big")
        ext_len = int.from_bytes(data[pos + 2:pos + 4], "big")
        pos += 4
        if ext_type == 0:  # server_name
            end = min(pos + ext_len, ext_end)
            if pos + 2 > end:
                return None
            list_end = min(end, pos + 2 + int.from_bytes(data[pos:pos + 2], "big"))
            item = pos + 2
            while item + 3 <= list_end:
                name_type = data[item]
                name_len = int.from_bytes(data[item + 1:item + 3], "big")
                start = item + 3
                if start + name_len > list_end:
                    return None
                if name_type == 0:  # host_name
                    return _valid_hostname(data[start:start + name_len])
                item = start + name_len
            return None
        pos += ext_len
    return None


def parse_http_host(payload: bytes) -> str | None:
    """The Host header of an HTTP/1.x request at the start of payload (port removed), or None."""
    if not payload.startswith(HTTP_METHODS):
        return None
    head = payload[:MAX_HEADER_SCAN]
    end = head.find(b"\r\n\r\n")
    if end >= 0:
        head = head[:end]
    lines = head.split(b"\r\n")
    if len(lines) < 2 or b" HTTP/1." not in lines[0]:
        return None
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"host":
            host = value.strip()
            if host.startswith(b"["):  # an IPv6 literal is no name
                return None
            host = host.rsplit(b":", 1)[0] if host.count(b":") == 1 else host
            return _valid_hostname(host)
    return None


def parse_dns_answer(payload: bytes) -> Observation | None:
    """The question name and A/AAAA addresses of a DNS answer with addresses, or None."""
    response = dnswire.parse_response(payload)
    if response is None or response.rcode != dnswire.RCODE_NOERROR or not response.addresses:
        return None
    addresses = tuple(dict.fromkeys(a for a, _ in response.addresses))
    ttl = min(t for _, t in response.addresses)
    return Observation("dns", response.name, addresses, ttl)
