"""Hand-written DNS wire format parsing and building for the hot path (RFC 1035 §4, RFC 6891 EDNS).

Only what the agent needs: read a query's question and EDNS record, build a negative answer to it,
and read the addresses (A, AAAA) of an answer. Every reader returns None for malformed input
instead of raising, so bytes from the network can never crash the caller; tests check the results
against scapy's and dnspython's dissection and fuzz them with random bytes.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

HEADER = struct.Struct("!HHHHHH")
RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength after the owner name
QFIXED = struct.Struct("!HH")

TYPE_A, TYPE_CNAME, TYPE_AAAA, TYPE_OPT = 1, 5, 28, 41
RCODE_NOERROR, RCODE_FORMERR, RCODE_SERVFAIL, RCODE_NXDOMAIN = 0, 1, 2, 3
FLAG_QR, FLAG_AA, FLAG_TC, FLAG_RD, FLAG_RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080
FLAG_AD, FLAG_CD = 0x0020, 0x0010
EDNS_DO = 0x8000
OUR_UDP_SIZE = 1232  # the DNS flag day 2020 default: no IP fragmentation
MAX_NAME = 255
MAX_POINTERS = 64


class Query(NamedTuple):
    """The parts of a query the responder decides on."""

    id: int
    flags: int
    name: str           # lower-case, without the root dot ("" for the root)
    qtype: int
    qclass: int
    question: bytes     # the question section exactly as received (for the answer)
    edns: tuple[int, int] | None  # (udp payload size, DO flag) when the query has an OPT record


class Response(NamedTuple):
    """The parts of an answer the agent learns from."""

    id: int
    flags: int
    rcode: int
    name: str
    qtype: int
    question: bytes
    addresses: tuple[tuple[str, int], ...]  # (address, ttl) of every A/AAAA in the answer section


def read_name(data: bytes, offset: int) -> tuple[str, int] | None:
    """A possibly compressed name at offset: (lower-case dotted name, offset after it) or None."""
    labels: list[bytes] = []
    end = -1
    jumps = 0
    total = 0
    size = len(data)
    while True:
        if offset >= size:
            return None
        length = data[offset]
        if length == 0:
            offset += 1
            break
        kind = length & 0xC0
        if kind == 0xC0:
            if offset + 1 >= size:
                return None
            jumps += 1
            if jumps > MAX_POINTERS:
                return None
            if end < 0:
                end = offset + 2
            target = ((length & 0x3F) << 8) | data[offset + 1]
            if target >= offset:  # only backwards, to "a prior occurrence" (§4.1.4): no loops
                return None
            offset = target
            continue
        if kind:  # 0x40 and 0x80 label types are obsolete or unassigned (RFC 6891 §5)
            return None
        start = offset + 1
        offset = start + length
        if offset > size:
            return None
        total += length + 1
        if total > MAX_NAME:
            return None
        labels.append(data[start:offset])
    name = b".".join(labels).lower().decode("latin-1")
    return name, (end if end >= 0 else offset)


def _skip_rr(data: bytes, offset: int) -> tuple[int, int, int, int, int] | None:
    """Skip one resource record: (type, class, ttl, rdata offset, offset after it) or None."""
    named = read_name(data, offset)
    if named is None:
        return None
    offset = named[1]
    if offset + 10 > len(data):
        return None
    rtype, rclass, ttl, rdlen = RR_FIXED.unpack_from(data, offset)
    rdata = offset + 10
    after = rdata + rdlen
    if after > len(data):
        return None
    return rtype, rclass, ttl, rdata, after


def _read_question(data: bytes
                   ) -> tuple[tuple[int, int, int, int, int, int], str, int, int, int] | None:
    """The header and the one question of a message: (header, name, qtype, qclass, end)."""
    if len(data) < 17:
        return None
    header = HEADER.unpack_from(data)
    if header[2] != 1:
        return None
    named = read_name(data, 12)
    if named is None:
        return None
    name, offset = named
    if offset + 4 > len(data):
        return None
    qtype, qclass = QFIXED.unpack_from(data, offset)
    return header, name, qtype, qclass, offset + 4


def parse_query(data: bytes) -> Query | None:
    """A standard query with one question (QR=0, OPCODE=0), else None."""
    read = _read_question(data)
    if read is None:
        return None
    (qid, flags, _, an, ns, ar), name, qtype, qclass, question_end = read
    if flags & FLAG_QR or (flags >> 11) & 0xF:
        return None
    edns = None
    offset = question_end
    # Answer and authority sections are empty in a normal query; a query with records there
    # is still read through so an OPT record in the additional section is found.
    for index in range(an + ns + ar):
        rr = _skip_rr(data, offset)
        if rr is None:
            return None
        rtype, rclass, ttl, _, offset = rr
        if rtype == TYPE_OPT and index >= an + ns:
            if edns is not None:
                return None  # RFC 6891 §6.1.1: more than one OPT is a format error
            edns = (max(rclass, 512), ttl & EDNS_DO)
    if offset != len(data):
        return None
    return Query(qid, flags, name, qtype, qclass, data[12:question_end], edns)


def build_negative(query: Query, rcode: int = RCODE_NXDOMAIN) -> bytes:
    """The answer to `query` with `rcode` and no records (an OPT record when the query had one)."""
    # Keep RD and CD from the query, set QR and RA; AA stays 0: the agent is not authoritative.
    flags = FLAG_QR | FLAG_RA | (query.flags & (FLAG_RD | FLAG_CD)) | rcode
    ar = 1 if query.edns is not None else 0
    out = HEADER.pack(query.id, flags, 1, 0, 0, ar) + query.question
    if query.edns is not None:
        out += b"\x00" + RR_FIXED.pack(TYPE_OPT, OUR_UDP_SIZE, query.edns[1], 0)
    return out


def parse_response(data: bytes) -> Response | None:
    """An answer (QR=1) with one question: its addresses and their TTLs, else None."""
    read = _read_question(data)
    if read is None:
        return None
    (rid, flags, _, an, _, _), name, qtype, _, question_end = read
    if not flags & FLAG_QR:
        return None
    offset = question_end
    addresses: list[tuple[str, int]] = []
    for _ in range(an):
        rr = _skip_rr(data, offset)
        if rr is None:
            return None
        rtype, rclass, ttl, rdata, offset = rr
        if rclass != 1:
            continue
        if rtype == TYPE_A and offset - rdata == 4:
            addresses.append((socket.inet_ntop(socket.AF_INET, data[rdata:offset]), ttl))
        elif rtype == TYPE_AAAA and offset - rdata == 16:
            addresses.append((socket.inet_ntop(socket.AF_INET6, data[rdata:offset]), ttl))
    return Response(rid, flags, flags & 0xF, name, qtype, data[12:question_end], tuple(addresses))


def encode_name(name: str) -> bytes | None:
    """A dotted name in wire form (no compression), or None when a label is empty or too long."""
    out = bytearray()
    for label in name.rstrip(".").split(".") if name.strip(".") else []:
        raw = label.encode("latin-1", errors="replace")
        if not raw or len(raw) > 63:
            return None
        out.append(len(raw))
        out += raw
    out.append(0)
    return bytes(out) if len(out) <= MAX_NAME else None


def build_query(name: str, qtype: int, qid: int) -> bytes | None:
    """A recursive query for one name and type (RD set, no EDNS)."""
    wire = encode_name(name)
    if wire is None:
        return None
    return HEADER.pack(qid, FLAG_RD, 1, 0, 0, 0) + wire + QFIXED.pack(qtype, 1)


def with_id(data: bytes, new_id: int) -> bytes:
    """The same message with another ID (the first two bytes)."""
    return new_id.to_bytes(2, "big") + data[2:]
