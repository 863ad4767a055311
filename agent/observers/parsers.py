"""Pure parsers of what the observers see: TLS ClientHello SNI, HTTP Host, DNS answers.

Each takes the transport payload (bytes) and returns a value or None; none of them raises on any
input. They are tested against scapy's dissection of the same bytes and fuzzed.
References: RFC 8446 §5.1 (records), §4.1.2 (ClientHello), RFC 6066 §3 (server_name), RFC 9112
§2.2, §3.2 (request line, Host),
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
    flags: int = 0  # TCP flags (RFC 9293 §3.1); 0 for UDP
    ttl: int = 0    # IPv4 time to live / IPv6 hop limit as the packet arrived


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
        proto, ttl = frame[offset + 9], frame[offset + 8]
        src = socket.inet_ntop(socket.AF_INET, frame[offset + 12:offset + 16])
        dst = socket.inet_ntop(socket.AF_INET, frame[offset + 16:offset + 20])
        end = min(len(frame), offset + total) if total >= ihl else len(frame)
        offset += ihl
    elif ethertype == 0x86DD:
        if len(frame) < offset + 40 or frame[offset] >> 4 != 6:
            return None
        proto, ttl = frame[offset + 6], frame[offset + 7]
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
                       frame[offset + data_offset:end], frame[offset + 13], ttl)
    if proto == 17:
        if end < offset + 8:
            return None
        return Segment(src, dst, "udp", int.from_bytes(frame[offset:offset + 2], "big"),
                       int.from_bytes(frame[offset + 2:offset + 4], "big"), 0, 0,
                       frame[offset + 8:end], 0, ttl)
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


# What the first flight of a TLS client says so far (client_hello_progress).
NEED_MORE = "need-more"   # a ClientHello has begun and its server_name may still come
NAME = "name"             # the server_name was read
NO_NAME = "no-name"       # the whole ClientHello was read and names no server
NOT_TLS = "not-tls"       # the stream does not begin with a TLS handshake ClientHello
# RFC 8446 §5.1: a record's length MUST NOT exceed 2^14 bytes.
MAX_RECORD_LENGTH = 2 ** 14


def _handshake_bytes(stream: bytes) -> tuple[bytes, bool] | None:
    """The handshake bytes of the TLS records at the start of stream (RFC 8446 §5.1).

    Returns (bytes, ended): `ended` when a record of another content type (or the end of a
    record followed by one that is not a handshake record) stops the handshake stream. None when
    the stream does not start with a TLS handshake record.
    """
    pos, out = 0, bytearray()
    while pos < len(stream):
        if pos + 1 <= len(stream) and stream[pos] != 0x16:
            if pos == 0:
                return None
            return bytes(out), True
        if pos + 2 <= len(stream) and stream[pos + 1] != 0x03:
            return None if pos == 0 else (bytes(out), True)
        if pos + 5 > len(stream):
            break  # a record header cut short: more may come
        length = int.from_bytes(stream[pos + 3:pos + 5], "big")
        if length == 0 or length > MAX_RECORD_LENGTH:
            return None if pos == 0 else (bytes(out), True)
        out += stream[pos + 5:pos + 5 + length]
        pos += 5 + length
    return bytes(out), False


def _server_name(message: bytes) -> tuple[bool, str | None]:
    """Read a ClientHello handshake message (RFC 8446 §4.1.2, RFC 6066 §3) as far as it goes.

    Returns (decided, name): decided when the name was read, or when the bytes prove there is
    none (all extensions read, or the message is malformed); not decided while the bytes end
    before the extensions do.
    """
    data = message
    if len(data) < 4:
        return False, None
    if data[0] != 0x01:
        return True, None
    total = 4 + int.from_bytes(data[1:4], "big")
    complete = len(data) >= total
    avail = min(len(data), total)
    pos = 4 + 2 + 32  # legacy_version, random
    if pos + 1 > avail:
        return complete, None
    pos += 1 + data[pos]  # legacy_session_id
    if pos + 2 > avail:
        return complete, None
    pos += 2 + int.from_bytes(data[pos:pos + 2], "big")  # cipher_suites
    if pos + 1 > avail:
        return complete, None
    pos += 1 + data[pos]  # legacy_compression_methods
    if pos + 2 > avail:
        return complete, None
    ext_end = pos + 2 + int.from_bytes(data[pos:pos + 2], "big")
    if ext_end > total:
        return True, None  # extensions longer than the message: malformed
    pos += 2
    while pos + 4 <= min(ext_end, avail):
        ext_type = int.from_bytes(data[pos:pos + 2], "big")
        ext_len = int.from_bytes(data[pos + 2:pos + 4], "big")
        pos += 4
        if ext_type == 0:  # server_name
            end = pos + ext_len
            if end > ext_end:
                return True, None
            whole = end <= avail
            # Read the names present so far; a name cut short by the end of the bytes waits.
            if pos + 2 > min(end, avail):
                return whole, None
            list_end = min(end, pos + 2 + int.from_bytes(data[pos:pos + 2], "big"))
            item = pos + 2
            while item + 3 <= min(list_end, avail):
                name_type = data[item]
                name_len = int.from_bytes(data[item + 1:item + 3], "big")
                start = item + 3
                if start + name_len > list_end:
                    return True, None
                if start + name_len > avail:
                    return False, None
                if name_type == 0:  # host_name
                    return True, _valid_hostname(data[start:start + name_len])
                item = start + name_len
            return whole, None
        pos += ext_len
    if pos >= ext_end:
        return True, None  # every extension read: no server_name
    return complete, None


def client_hello_progress(stream: bytes) -> tuple[str, str | None]:
    """What the start of a client's TCP stream says about its server name so far.

    The stream may hold several TLS records (a ClientHello split over records) and may end in
    the middle of one (a ClientHello split over segments). Returns (status, name): NAME with the
    name, NO_NAME (the ClientHello names no valid host, or cannot name one any more), NOT_TLS,
    or NEED_MORE while the name may still come.
    """
    read = _handshake_bytes(stream)
    if read is None:
        return NOT_TLS, None
    handshake, ended = read
    if handshake[:1] not in (b"", b"\x01"):
        return NOT_TLS, None
    decided, name = _server_name(handshake)
    if decided:
        return (NAME, name) if name is not None else (NO_NAME, None)
    return (NO_NAME if ended else NEED_MORE), None


def parse_client_hello(payload: bytes) -> str | None:
    """The server_name of a TLS ClientHello at the start of payload, or None.

    The payload may hold only part of a large ClientHello (post-quantum key shares) or several
    records: extensions are read as far as the bytes go.
    """
    status, name = client_hello_progress(payload)
    return name if status == NAME else None


def _host_of(raw: bytes) -> str | None:
    """A host name from a Host value or an authority (userinfo and port removed), or None."""
    host = raw.strip().rpartition(b"@")[2]
    if host.startswith(b"["):  # an IPv6 literal is no name
        return None
    if host.count(b":") == 1:
        host = host.rsplit(b":", 1)[0]
    return _valid_hostname(host)


def parse_http_host(payload: bytes) -> str | None:
    """The host an HTTP/1.x request at the start of payload is for (RFC 9112), or None.

    Lines may end in CRLF or a bare LF (§2.2). The authority of an absolute-form request target
    wins over the Host header field (§3.2.2), as it does for the server; an authority-form
    target (CONNECT, §3.2.3) names the host itself. Otherwise the Host field (§3.2) names it.
    """
    if not payload.startswith(HTTP_METHODS):
        return None
    head = payload[:MAX_HEADER_SCAN]
    lines = [line[:-1] if line.endswith(b"\r") else line for line in head.split(b"\n")]
    if len(lines) < 2:
        return None
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return None
    method, target = parts[0], parts[1]
    scheme, sep, rest = target.partition(b"://")
    if sep and scheme.lower() in (b"http", b"https"):
        authority = rest
        for stop in (b"/", b"?", b"#"):
            authority = authority.split(stop, 1)[0]
        return _host_of(authority)
    if method == b"CONNECT":
        return _host_of(target)
    for line in lines[1:]:
        if not line:
            break  # the empty line that ends the header section
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"host":
            return _host_of(value)
    return None


def parse_dns_answer(payload: bytes) -> Observation | None:
    """The question name and A/AAAA addresses of a DNS answer with addresses, or None."""
    response = dnswire.parse_response(payload)
    if response is None or response.rcode != dnswire.RCODE_NOERROR or not response.addresses:
        return None
    addresses = tuple(dict.fromkeys(a for a, _ in response.addresses))
    ttl = min(t for _, t in response.addresses)
    return Observation("dns", response.name, addresses, ttl)
