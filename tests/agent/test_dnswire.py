"""The hand-written DNS wire code against scapy's and dnspython's dissection, and fuzzed."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR, DNSRR, DNSRROPT

from agent import dnswire

NAMES = ["x.com", "www.x.com", "a.b.c.tiktok.com", "example.org", "xn--bcher-kva.example",
         "UPPER.Case.NL"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("qtype", ["A", "AAAA", "HTTPS", "TXT"])
@pytest.mark.parametrize("edns", [False, True])
def test_query_parse_matches_scapy(name: str, qtype: str, edns: bool) -> None:
    pkt = DNS(id=0x1234, rd=1, qd=DNSQR(qname=name, qtype=qtype),
              ar=DNSRROPT(rclass=4096, z=0x8000) if edns else None)
    wire = bytes(pkt)
    ref = DNS(wire)
    q = dnswire.parse_query(wire)
    assert q is not None
    assert q.id == ref.id == 0x1234
    assert q.name == ref.qd[0].qname.decode().rstrip(".").lower()
    assert q.qtype == ref.qd[0].qtype
    assert q.edns == ((4096, 0x8000) if edns else None)


@pytest.mark.parametrize("edns", [False, True])
@pytest.mark.parametrize("rd", [0, 1])
def test_negative_answer_reads_back_in_scapy_and_dnspython(edns: bool, rd: int) -> None:
    query = dns.message.make_query("Www.X.com", "AAAA", use_edns=0 if edns else None,
                                   want_dnssec=edns)
    query.id = 4242
    if not rd:
        query.flags &= ~dns.flags.RD
    wire = query.to_wire()
    answer = dnswire.build_negative(dnswire.parse_query(wire))  # type: ignore[arg-type]
    parsed = dns.message.from_wire(answer)
    assert parsed.id == 4242
    assert parsed.rcode() == dns.rcode.NXDOMAIN
    assert parsed.flags & dns.flags.QR and parsed.flags & dns.flags.RA
    assert bool(parsed.flags & dns.flags.RD) == bool(rd)
    assert parsed.question[0].name == dns.name.from_text("Www.X.com")  # the case is kept
    assert parsed.question[0].rdtype == dns.rdatatype.AAAA
    assert (parsed.edns == 0) == edns
    assert bool(parsed.ednsflags & dns.flags.DO) == edns
    assert query.is_response(parsed)
    ref = DNS(answer)
    assert ref.qr == 1 and ref.rcode == 3 and ref.ancount == 0 and ref.id == 4242


def make_answer(name: str, addresses: list[str], ttl: int = 300, cname: str | None = None) -> bytes:
    query = dns.message.make_query(name, "A")
    reply = dns.message.make_response(query)
    owner = dns.name.from_text(name)
    if cname:
        reply.answer.append(dns.rrset.from_text(owner, ttl, "IN", "CNAME", cname + "."))
        owner = dns.name.from_text(cname)
    v4 = [a for a in addresses if ":" not in a]
    v6 = [a for a in addresses if ":" in a]
    if v4:
        reply.answer.append(dns.rrset.from_text_list(owner, ttl, "IN", "A", v4))
    if v6:
        reply.answer.append(dns.rrset.from_text_list(owner, ttl + 1, "IN", "AAAA", v6))
    return reply.to_wire()  # dnspython compresses names: the parser must follow pointers


@pytest.mark.parametrize("addresses,cname", [
    (["198.51.100.10"], None),
    (["198.51.100.10", "198.51.100.11", "2001:db8::10"], None),
    (["203.0.113.7"], "edge.x-cdn.example"),
    ([], None),
])
def test_response_addresses_match_dnspython(addresses: list[str], cname: str | None) -> None:
    wire = make_answer("Video.X.com", addresses, cname=cname)
    r = dnswire.parse_response(wire)
    assert r is not None
    ref = dns.message.from_wire(wire)
    expected = sorted((rd.address, rrset.ttl) for rrset in ref.answer
                      if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) for rd in rrset)
    assert sorted(r.addresses) == expected
    assert r.name == "video.x.com" and r.rcode == 0 and r.id == ref.id


def test_response_built_by_scapy_gives_the_same_addresses() -> None:
    pkt = DNS(id=7, qr=1, qd=DNSQR(qname="t.co", qtype="A"),
              an=[DNSRR(rrname="t.co", type="A", rdata="192.0.2.1", ttl=60),
                  DNSRR(rrname="t.co", type="AAAA", rdata="2001:db8::1", ttl=61)])
    r = dnswire.parse_response(bytes(pkt))
    assert r is not None and r.addresses == (("192.0.2.1", 60), ("2001:db8::1", 61))


@pytest.mark.parametrize("wire", [
    b"",
    b"\x00" * 11,
    bytes.fromhex("1234 0100 0002 0000 0000 0000") + b"\x01a\x00\x00\x01\x00\x01" * 2,  # 2 qs
    bytes.fromhex("1234 8100 0001 0000 0000 0000 01 61 00 0001 0001"),  # a response, not a query
    bytes.fromhex("1234 2900 0001 0000 0000 0000 01 61 00 0001 0001"),  # opcode UPDATE
    bytes.fromhex("1234 0100 0001 0000 0000 0000 c0 0c 0001 0001"),  # pointer to itself
    bytes.fromhex("1234 0100 0001 0000 0000 0000 05 61 00 0001 0001"),  # label past the end
    bytes.fromhex("1234 0100 0001 0000 0000 0000 01 61 00 0001"),  # question cut short
    bytes.fromhex("1234 0100 0001 0000 0000 0000 01 61 00 0001 0001 ff"),  # trailing garbage
    bytes.fromhex("1234 0100 0001 0000 0000 0002 01 61 00 0001 0001"
                  "00 0029 1000 00000000 0000 00 0029 1000 00000000 0000"),  # two OPT records
])
def test_malformed_queries_are_refused(wire: bytes) -> None:
    assert dnswire.parse_query(wire) is None


def test_name_longer_than_255_octets_is_refused() -> None:
    name = b"".join(b"\x3f" + b"a" * 63 for _ in range(4)) + b"\x00"
    wire = bytes.fromhex("0001 0100 0001 0000 0000 0000") + name + b"\x00\x01\x00\x01"
    assert dnswire.parse_query(wire) is None


def _check_no_garbage(data: bytes) -> None:
    query = dnswire.parse_query(data)
    dnswire.parse_response(data)
    if query is None:
        return
    answer = dnswire.build_negative(query)
    parsed = dns.message.from_wire(answer)  # a well-formed message, for the same question
    assert parsed.id == int.from_bytes(data[:2], "big")
    assert parsed.rcode() == dns.rcode.NXDOMAIN
    assert answer[12:12 + len(query.question)] == query.question


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_and_never_give_a_garbage_answer(data: bytes) -> None:
    _check_no_garbage(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(NAMES), st.booleans(), st.lists(st.tuples(st.integers(0, 80),
                                                                 st.integers(0, 255)), max_size=4))
def test_mutated_queries_never_crash_and_never_give_a_garbage_answer(
        name: str, edns: bool, flips: list[tuple[int, int]]) -> None:
    wire = bytearray(dns.message.make_query(name, "A", use_edns=0 if edns else None).to_wire())
    for index, value in flips:
        if index < len(wire):
            wire[index] = value
    _check_no_garbage(bytes(wire))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), max_size=4))
def test_mutated_answers_never_crash(flips: list[tuple[int, int]]) -> None:
    wire = bytearray(make_answer("a.x.com", ["192.0.2.1", "2001:db8::2"], cname="b.x.com"))
    for index, value in flips:
        if index < len(wire):
            wire[index] = value
    r = dnswire.parse_response(bytes(wire))
    if r is not None:
        assert all(isinstance(a, str) and 0 <= t < 2**32 for a, t in r.addresses)
