"""The observers' pure parsers against scapy's dissection of the same bytes, and fuzzed."""

from __future__ import annotations

import ssl

import dns.message
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.http import HTTP, HTTPRequest
from scapy.layers.tls.extensions import ServerName, TLS_Ext_ServerName
from scapy.layers.tls.handshake import TLSClientHello
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.layers.tls.record import TLS

from agent.observers.parsers import (Observation, Segment, parse_client_hello,
                                     parse_dns_answer, parse_frame, parse_http_host)

from tests.support.clienthello import scapy_client_hello

HOSTS = ["x.com", "video.twimg.com", "www.tiktok.com", "Example.ORG"]


def scapy_sni(data: bytes) -> str | None:
    record = TLS(data)
    for msg in record.msg:
        for ext in getattr(msg, "ext", None) or []:
            if isinstance(ext, TLS_Ext_ServerName):
                return ext.servernames[0].servername.decode().lower()
    return None


def python_client_hello(host: str) -> bytes:
    """A ClientHello as Python's TLS stack (OpenSSL) sends it."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=host)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("before", [0, 40])
def test_sni_matches_scapy(host: str, before: int) -> None:
    data = scapy_client_hello(host, before)
    assert parse_client_hello(data) == scapy_sni(data) == host.lower()


@pytest.mark.parametrize("host", HOSTS)
def test_sni_of_a_real_openssl_client_hello_matches_scapy(host: str) -> None:
    data = python_client_hello(host)
    assert parse_client_hello(data) == scapy_sni(data) == host.lower()


def test_sni_is_found_in_the_first_segment_of_a_split_client_hello() -> None:
    data = scapy_client_hello("x.com", before=10)
    assert parse_client_hello(data[:len(data) - 6]) == "x.com"


@pytest.mark.parametrize("data", [
    # The ClientHellos are named: their random bytes differ per process (the xdist workers' ids
    # must not).
    b"", b"\x16\x03\x01", pytest.param(scapy_client_hello(None), id="client-hello-without-sni"),
    b"GET / HTTP/1.1\r\n\r\n",
    pytest.param(bytes(TLS(msg=[TLSClientHello(ext=[TLS_Ext_ServerName(servernames=[
        ServerName(servername=b"bad host\x00")])])])), id="client-hello-naming-bad-host"),
])
def test_no_sni_gives_none(data: bytes) -> None:
    assert parse_client_hello(data) is None


@pytest.mark.parametrize("host,expected", [
    (b"x.com", "x.com"), (b"X.com:8080", "x.com"), (b"[2001:db8::1]:80", None), (b"a b", None),
])
def test_http_host_matches_scapy(host: bytes, expected: str | None) -> None:
    data = bytes(HTTP() / HTTPRequest(Method=b"GET", Path=b"/", Host=host,
                                       User_Agent=b"test"))
    assert HTTP(data)[HTTPRequest].Host == host
    assert parse_http_host(data) == expected


@pytest.mark.parametrize("data", [
    b"HTTP/1.1 200 OK\r\nHost: x.com\r\n\r\n",      # a response, not a request
    b"GET / HTTP/1.1\r\nUser-Agent: y\r\n\r\n",       # no Host
    b"GET /\r\nHost: x.com\r\n\r\n",                   # HTTP/0.9 has no headers
    b"\x16\x03\x01\x00\x05hello",
])
def test_http_without_a_host_gives_none(data: bytes) -> None:
    assert parse_http_host(data) is None


def test_dns_answer_observation_matches_scapy() -> None:
    pkt = DNS(id=1, qr=1, qd=DNSQR(qname="www.x.com", qtype="A"),
              an=[DNSRR(rrname="www.x.com", type="CNAME", rdata="x.com", ttl=30),
                  DNSRR(rrname="x.com", type="A", rdata="198.51.100.10", ttl=300),
                  DNSRR(rrname="x.com", type="A", rdata="198.51.100.11", ttl=200)])
    data = bytes(pkt)
    ref = DNS(data)
    addrs = tuple(rr.rdata for rr in ref.an if rr.type == 1)
    assert parse_dns_answer(data) == Observation("dns", "www.x.com", addrs, 200)


def test_nxdomain_and_queries_give_no_dns_observation() -> None:
    q = dns.message.make_query("x.com", "A")
    r = dns.message.make_response(q)
    r.set_rcode(3)
    assert parse_dns_answer(r.to_wire()) is None
    assert parse_dns_answer(q.to_wire()) is None


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_parsers_never_crash_on_random_bytes(data: bytes) -> None:
    for result in (parse_client_hello(data), parse_http_host(data)):
        assert result is None or (isinstance(result, str) and result)
    obs = parse_dns_answer(data)
    assert obs is None or (obs.addresses and obs.kind == "dns")


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(HOSTS), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)),
                                        min_size=1, max_size=4))
def test_parsers_never_crash_on_mutated_client_hellos(host: str, flips: list) -> None:
    data = bytearray(scapy_client_hello(host))
    for index, value in flips:
        if index < len(data):
            data[index] = value
    result = parse_client_hello(bytes(data))
    assert result is None or all(c.isalnum() or c in "-._" for c in result)


@pytest.mark.parametrize("frame", [
    Ether() / IP(src="10.81.1.10", dst="198.51.100.10") / TCP(sport=40000, dport=443, seq=7,
                                                             ack=9, flags="PA") / b"hello",
    Ether() / IP(src="10.81.1.10", dst="198.51.100.10", options=b"\x01" * 4)
    / TCP(sport=1, dport=80, options=[("MSS", 1460)]) / b"GET / HTTP/1.1\r\n",
    Ether() / Dot1Q(vlan=5) / IPv6(src="fd81:1::10", dst="2001:db8::10")
    / TCP(sport=5, dport=443, seq=2**32 - 1) / b"x",
    Ether() / IP(src="10.81.0.2", dst="10.81.1.10") / UDP(sport=53, dport=5000) / b"dns-ish",
    Ether() / IPv6(src="fd81::2", dst="fd81:1::10") / UDP(sport=53, dport=5000) / b"",
])
def test_frame_fields_match_scapy(frame) -> None:
    wire = bytes(frame) + b"\x00" * 6  # Ethernet padding must not leak into the payload
    ref = Ether(wire)
    net = ref[IP] if IP in ref else ref[IPv6]
    l4 = ref[TCP] if TCP in ref else ref[UDP]
    seg = parse_frame(wire)
    assert seg is not None
    assert (seg.src, seg.dst, seg.sport, seg.dport) == (net.src, net.dst, l4.sport, l4.dport)
    assert seg.proto == ("tcp" if TCP in ref else "udp")
    if TCP in ref:
        assert (seg.seq, seg.ack) == (l4.seq, l4.ack)
    built = frame[TCP] if TCP in frame else frame[UDP]
    assert seg.payload == bytes(built.payload)


@pytest.mark.parametrize("frame", [
    b"", b"\x00" * 13, bytes(Ether(type=0x0806) / (b"arp" * 10)),
    bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2", frag=3, proto=6) / (b"x" * 30)),
    bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2", proto=1) / (b"icmp" * 10)),
])
def test_frames_without_tcp_or_udp_give_none(frame: bytes) -> None:
    assert parse_frame(frame) is None


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_frame_parser_never_crashes(data: bytes) -> None:
    seg = parse_frame(data)
    assert seg is None or isinstance(seg, Segment)


@pytest.mark.parametrize("request_bytes,expected", [
    (b"GET / HTTP/1.1\nHost: www.instagram.com\n\n", "www.instagram.com"),          # bare LF
    (b"GET / HTTP/1.1\r\nUser-Agent: t\nHost: x.com\r\n\r\n", "x.com"),              # mixed
    (b"GET http://www.instagram.com/ HTTP/1.1\r\nHost: x\r\n\r\n", "www.instagram.com"),
    (b"GET HTTP://WWW.Instagram.com:8080/a?b HTTP/1.1\nHost: example.org\n\n",
     "www.instagram.com"),
    (b"GET http://user:pw@tiktok.com?x HTTP/1.1\r\nHost: example.org\r\n\r\n", "tiktok.com"),
    (b"GET http://[2001:db8::1]/ HTTP/1.1\r\nHost: x.com\r\n\r\n", None),
    (b"CONNECT www.tiktok.com:443 HTTP/1.1\r\nHost: example.org\r\n\r\n", "www.tiktok.com"),
    (b"GET / HTTP/1.1\r\nUser-Agent: t\r\n\r\nHost: x.com\r\n", None),  # Host in the body
    (b"GET / HTTP/1.1\r\nHost: x.com", "x.com"),                        # head still arriving
    (b"GET /a b HTTP/1.1\r\nHost: x.com\r\n\r\n", None),                # not a request line
])
def test_http_host_follows_rfc_9112(request_bytes: bytes, expected: str | None) -> None:
    assert parse_http_host(request_bytes) == expected


def test_frame_parser_reads_the_tcp_flags() -> None:
    syn = Ether(dst="02:00:00:00:00:01") / IP(src="10.81.1.10", dst="198.51.100.10") / TCP(dport=443, flags="S")
    data = Ether(dst="02:00:00:00:00:01") / IP(src="10.81.1.10", dst="198.51.100.10") / TCP(dport=443, flags="PA") / b"x"
    assert parse_frame(bytes(syn)).flags == 0x02
    assert parse_frame(bytes(data)).flags == 0x18


@pytest.mark.parametrize("net", [IP(src="10.81.1.10", dst="198.51.100.10", ttl=3),
                                 IPv6(src="fd81:1::10", dst="2001:db8::10", hlim=3)])
def test_frame_parser_reads_the_ttl(net) -> None:
    frame = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02") / net / TCP(dport=443)
    assert parse_frame(bytes(frame)).ttl == 3
