"""The DNS responder: decisions, faithful forwarding on loopback, the redirect in a netns trio."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from agent import dnswire
from agent.dns_responder import BlockTable, DnsResponder, Resolver
from agent.domains import CANARY, DOH
from agent.enforcers.dry_run import DryRunEnforcer
from agent.enforcers.nftables import NftablesEnforcer
from agent.state import BlockState, SegmentState, Service
from tests.support import netns
from tests.support.netns import FakeDnsServer, GatewayLab, TcpServer, dns_query, tcp_connect

SERVICES = {
    "twitter": Service("twitter", "X", ("x.com", "twimg.com")),
    "tiktok": Service("tiktok", "TikTok", ("tiktok.com",)),
}
DOH_NAMES = ("dns.google", "cloudflare-dns.com")
C1, C2 = netns.C1_ADDR, netns.C2_ADDR


def state_blocking(services: dict[str, datetime]) -> BlockState:
    now = datetime.now(timezone.utc)
    return BlockState(now, (SegmentState(1, "lokaal-1", netns.SEG1_CIDRS, services),
                            SegmentState(2, "lokaal-2", netns.SEG2_CIDRS, {})), None)


def in_hour() -> datetime:
    return datetime.now(timezone.utc) + timedelta(hours=1)


def query(name: str, rdtype: str = "A") -> dnswire.Query:
    return dnswire.parse_query(dns.message.make_query(name, rdtype).to_wire())  # type: ignore


@pytest.fixture
def resolver() -> Resolver:
    r = Resolver(SERVICES, DOH_NAMES)
    r.set_table(BlockTable.from_state(state_blocking({"twitter": in_hour()})))
    return r


@pytest.mark.parametrize("client,name,action,service", [
    (C1, "x.com", "nxdomain", "twitter"),
    (C1, "video.pbs.twimg.com", "nxdomain", "twitter"),
    (C1, "X.COM.", "nxdomain", "twitter"),
    (C1, "notx.com", "forward", None),
    (C1, "tiktok.com", "forward", "tiktok"),            # not blocked now: forwarded, learned
    (C1, "use-application-dns.net", "nxdomain", CANARY),
    (C1, "mask-h2.icloud.com", "nxdomain", CANARY),
    (C1, "dns.google", "nxdomain", DOH),
    (C1, "example.org", "forward", None),
    (netns.C1_ADDR6, "x.com", "nxdomain", "twitter"),
    ("::ffff:10.81.1.10", "x.com", "nxdomain", "twitter"),
    (C2, "x.com", "forward", "twitter"),                # the other segment has no lesson
    (C2, "use-application-dns.net", "forward", None),
    (C2, "dns.google", "forward", DOH),                 # forwarded, but its addresses are learned
    ("192.0.2.99", "x.com", "forward", "twitter"),
])
def test_decision(resolver: Resolver, client: str, name: str, action: str,
                  service: str | None) -> None:
    d = resolver.decide(query(name), client, time.time())
    assert (d.action, d.service) == (action, service)


def test_a_block_that_ended_is_not_answered_nxdomain_even_before_the_table_changes() -> None:
    r = Resolver(SERVICES, DOH_NAMES)
    r.set_table(BlockTable.from_state(state_blocking({"twitter": in_hour()})))
    later = time.time() + 3601
    assert r.decide(query("x.com"), C1, later).action == "forward"
    assert r.decide(query("use-application-dns.net"), C1, later).action == "forward"


def test_refused_names_are_resolved_for_learning_at_most_once_a_minute(resolver: Resolver) -> None:
    now = time.time()
    assert resolver.decide(query("x.com"), C1, now).learn_only is True
    assert resolver.decide(query("x.com"), C1, now + 1).learn_only is False
    assert resolver.decide(query("x.com"), C1, now + 61).learn_only is True


@pytest.fixture
def loopback() -> Iterator[tuple[FakeDnsServer, DnsResponder, DryRunEnforcer]]:
    upstream = FakeDnsServer(None, "127.0.0.1", {
        "x.com": ["198.51.100.10", "2001:db8::10"], "example.org": ["192.0.2.80"],
        "big.example.org": ["192.0.2.81"]}, port=0, ttl=120, truncate=("big.example.org",))
    enforcer = DryRunEnforcer(lambda batch: None)
    from tests.support.policies import make_policy
    enforcer.start(make_policy(SERVICES))
    # The loopback client plays segment 1: block twitter for 127.0.0.0/8.
    state = BlockState(datetime.now(timezone.utc),
                       (SegmentState(1, "lo", ("127.0.0.0/8",), {"twitter": in_hour()}),), None)
    responder = DnsResponder(listen=("127.0.0.1", 0), upstream=("127.0.0.1", upstream.port),
                             state_provider=lambda: state, enforcer=enforcer, services=SERVICES,
                             doh=DOH_NAMES)
    responder.start()
    yield upstream, responder, enforcer
    responder.stop()
    upstream.stop()


@pytest.mark.parametrize("tcp", [False, True])
def test_loopback_blocked_name_is_nxdomain_and_others_are_forwarded_faithfully(
        loopback: tuple[FakeDnsServer, DnsResponder, DryRunEnforcer], tcp: bool) -> None:
    upstream, responder, _ = loopback
    port = responder.bound[0][1]
    ask = dns.query.tcp if tcp else dns.query.udp
    for name in ("x.com", "www.x.com", "use-application-dns.net", "dns.google"):
        q = dns.message.make_query(name, "A", use_edns=0)
        r = ask(q, "127.0.0.1", port=port, timeout=2)
        assert r.rcode() == dns.rcode.NXDOMAIN and r.id == q.id and q.is_response(r), name
        assert r.edns == 0
    q = dns.message.make_query("example.org", "A", use_edns=0, payload=1400)
    r = ask(q, "127.0.0.1", port=port, timeout=2)
    direct = dns.message.from_wire(upstream.answer(q.to_wire(), tcp=tcp))
    assert r.id == q.id and r.rcode() == dns.rcode.NOERROR
    assert r.answer == direct.answer and r.flags == direct.flags and r.edns == direct.edns
    assert r.payload == direct.payload
    missing = ask(dns.message.make_query("nothing.example", "A"), "127.0.0.1", port=port, timeout=2)
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert ("nothing.example", 1) in upstream.queries


def test_loopback_truncated_answer_passes_through_and_tcp_retry_gets_it(
        loopback: tuple[FakeDnsServer, DnsResponder, DryRunEnforcer]) -> None:
    _, responder, _ = loopback
    port = responder.bound[0][1]
    q = dns.message.make_query("big.example.org", "A")
    r = dns.query.udp(q, "127.0.0.1", port=port, timeout=2, raise_on_truncation=False)
    assert r.flags & dns.flags.TC and not r.answer
    full = dns.query.tcp(q, "127.0.0.1", port=port, timeout=2)
    assert [rd.address for rd in full.answer[0]] == ["192.0.2.81"]


def test_loopback_refused_name_is_still_learned_and_counted(
        loopback: tuple[FakeDnsServer, DnsResponder, DryRunEnforcer]) -> None:
    upstream, responder, enforcer = loopback
    port = responder.bound[0][1]
    r = dns.query.udp(dns.message.make_query("x.com", "A"), "127.0.0.1", port=port, timeout=2)
    assert r.rcode() == dns.rcode.NXDOMAIN
    deadline = time.monotonic() + 2
    while "198.51.100.10" not in enforcer.addresses_of(["twitter"]):
        assert time.monotonic() < deadline, "the refused name's addresses were not learned"
        time.sleep(0.02)
    assert responder.counters()[(1, "twitter")]["dns_refused"] >= 1


def test_loopback_garbage_gets_no_answer(
        loopback: tuple[FakeDnsServer, DnsResponder, DryRunEnforcer]) -> None:
    import socket
    _, responder, _ = loopback
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.3)
    s.sendto(b"\x12\x34garbage that is no dns", ("127.0.0.1", responder.bound[0][1]))
    with pytest.raises(TimeoutError):
        s.recv(512)
    s.close()


# -- in the netns trio: the redirect, NXDOMAIN vs forwarded, learned addresses blocked -------

TW4, TW6, DOH4 = "198.51.100.10", "2001:db8::10", "198.51.100.53"


@pytest.fixture(params=[1, 2], ids=["one-worker", "two-workers"])
def gateway(request: pytest.FixtureRequest) -> Iterator[tuple[GatewayLab, NftablesEnforcer,
                                                              FakeDnsServer]]:
    from tests.support.realparts import require
    require(netns.available(), "root with ip(8) and nft(8) for network namespaces")
    with GatewayLab() as lab:
        for addr in (TW4, TW6, DOH4):
            lab.add_server_address(addr)
            srv = TcpServer(lab.inet, addr, 443)
            lab.on_close(srv.stop)
        upstream = FakeDnsServer(lab.inet, netns.INET_ADDR, {
            "x.com": [TW4, TW6], "example.org": ["192.0.2.80"], "dns.google": [DOH4]})
        lab.on_close(upstream.stop)
        from tests.support.policies import make_policy
        enforcer = NftablesEnforcer(lan_interfaces=["lan1", "lan2"], dns_port=5353)
        state = state_blocking({"twitter": in_hour()})
        with lab.gw.entered():
            enforcer.start(make_policy(SERVICES))
            enforcer.apply(state)
            responder = DnsResponder(listen=[("0.0.0.0", 5353), ("::", 5353)],
                                     upstream=(netns.INET_ADDR, 53), state_provider=lambda: state,
                                     enforcer=enforcer, services=SERVICES, doh=DOH_NAMES,
                                     workers=request.param)
            responder.start()
        lab.on_close(responder.stop)
        yield lab, enforcer, upstream


@pytest.mark.netns
def test_gateway_redirects_blocked_segment_dns_and_leaves_the_other_alone(
        gateway: tuple[GatewayLab, NftablesEnforcer, FakeDnsServer]) -> None:
    lab, enforcer, upstream = gateway
    # c1 asks the "outside" resolver directly: the gateway intercepts and refuses.
    assert dns_query(lab.c1, netns.INET_ADDR, "x.com").rcode() == dns.rcode.NXDOMAIN
    assert dns_query(lab.c1, netns.INET_ADDR, "x.com", tcp=True).rcode() == dns.rcode.NXDOMAIN
    assert dns_query(lab.c1, netns.INET_ADDR, "use-application-dns.net").rcode() == \
        dns.rcode.NXDOMAIN
    ok = dns_query(lab.c1, netns.INET_ADDR, "example.org")
    assert [rd.address for rd in ok.answer[0]] == ["192.0.2.80"]
    v6 = dns_query(lab.c1, netns.INET_ADDR6, "x.com", "AAAA")
    assert v6.rcode() == dns.rcode.NXDOMAIN
    other = dns_query(lab.c2, netns.INET_ADDR, "x.com")
    assert [rd.address for rd in other.answer[0]] == [TW4]


@pytest.mark.netns
def test_gateway_learns_the_refused_names_addresses_so_a_cached_ip_is_reset(
        gateway: tuple[GatewayLab, NftablesEnforcer, FakeDnsServer]) -> None:
    lab, enforcer, _ = gateway
    assert dns_query(lab.c1, netns.INET_ADDR, "x.com").rcode() == dns.rcode.NXDOMAIN
    assert dns_query(lab.c1, netns.INET_ADDR, "x.com", "AAAA").rcode() == dns.rcode.NXDOMAIN
    deadline = time.monotonic() + 3
    while tcp_connect(lab.c1, TW4, 443, timeout=0.5) != "reset" or \
            tcp_connect(lab.c1, TW6, 443, timeout=0.5) != "reset":
        assert time.monotonic() < deadline, "a hard-coded address of a refused name got through"
        time.sleep(0.1)
    assert tcp_connect(lab.c2, TW4, 443) == "open"


def test_a_block_that_begins_applies_to_the_next_query_despite_the_caches() -> None:
    upstream = FakeDnsServer(None, "127.0.0.1", {"x.com": ["198.51.100.10"]}, port=0)
    current: list[BlockState | None] = [None]
    responder = DnsResponder(listen=("127.0.0.1", 0), upstream=("127.0.0.1", upstream.port),
                             state_provider=lambda: current[0], services=SERVICES,
                             refresh_interval=30)
    responder.start()
    try:
        port = responder.bound[0][1]
        q = dns.message.make_query("x.com", "A")
        assert dns.query.udp(q, "127.0.0.1", port=port, timeout=2).rcode() == dns.rcode.NOERROR
        current[0] = BlockState(datetime.now(timezone.utc), (
            SegmentState(1, "lo", ("127.0.0.0/8",), {"twitter": in_hour()}),), None)
        responder.update()  # what the agent calls when it applies a new state at the bell
        assert dns.query.udp(q, "127.0.0.1", port=port, timeout=2).rcode() == dns.rcode.NXDOMAIN
    finally:
        responder.stop()
        upstream.stop()


@pytest.mark.netns
def test_gateway_refuses_doh_names_and_learns_their_addresses_for_the_doh_set(
        gateway: tuple[GatewayLab, NftablesEnforcer, FakeDnsServer]) -> None:
    lab, _, _ = gateway
    assert tcp_connect(lab.c1, DOH4, 443) == "open"  # no DoH address known yet
    assert dns_query(lab.c1, netns.INET_ADDR, "dns.google").rcode() == dns.rcode.NXDOMAIN
    deadline = time.monotonic() + 3
    while tcp_connect(lab.c1, DOH4, 443, timeout=0.5) != "reset":
        assert time.monotonic() < deadline, "a DoH server's address was not learned"
        time.sleep(0.1)
    assert tcp_connect(lab.c2, DOH4, 443) == "open"  # the segment without a lesson keeps DoH


# -- the wire-level refusal (the hot path) gives exactly the answer of the full path ----------

@pytest.mark.parametrize("name,kwargs", [
    ("x.com", {}),
    ("Video.PBS.TwImg.com", {}),
    ("never-seen-7f3a.x.com", {"use_edns": 0}),
    ("x.com", {"use_edns": 0, "want_dnssec": True}),
    ("x.com", {"use_edns": 0, "payload": 4096}),
])
def test_wire_refusal_is_the_full_paths_negative_answer(resolver: Resolver, name: str,
                                                        kwargs: dict) -> None:
    for flags in (dns.flags.RD, dns.flags.RD | dns.flags.CD, 0):
        q = dns.message.make_query(name, "AAAA", **kwargs)
        q.flags = flags
        wire = q.to_wire()
        decided = resolver.decide(dnswire.parse_query(wire), C1, time.time())  # type: ignore
        assert decided.action == "nxdomain"
        fast = resolver.refuse_wire(wire, C1, time.time())
        assert fast == dnswire.build_negative(dnswire.parse_query(wire))  # type: ignore
        answer = dns.message.from_wire(fast)  # type: ignore[arg-type]
        assert q.is_response(answer) and answer.rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize("client,name,kwargs", [
    (C1, "notx.com", {}),                      # not listed: forwarded
    (C1, "tiktok.com", {}),                    # listed, not blocked now
    (C2, "x.com", {}),                         # the segment without a lesson
    (C1, "dns.google", {}),                    # a DoH name: the full path decides it
    (C1, "x.com", {"use_edns": 0, "options": [dns.edns.GenericOption(10, b"12345678")]}),
])
def test_wire_refusal_leaves_everything_else_to_the_full_path(resolver: Resolver, client: str,
                                                              name: str, kwargs: dict) -> None:
    wire = dns.message.make_query(name, "A", **kwargs).to_wire()
    assert resolver.refuse_wire(wire, client, time.time()) is None


def test_wire_refusal_counts_and_learns_within_the_clients_bound(resolver: Resolver) -> None:
    from agent.dns_learning import LEARN_CLIENT_BURST
    now = time.time()
    for i in range(20):
        wire = dns.message.make_query(f"r{i}.x.com", "A").to_wire()
        assert resolver.refuse_wire(wire, C1, now) is not None
    assert resolver.counts[(1, "twitter")] == 20
    # One client asking random subdomains gets only its burst learned, not 20 names.
    assert list(resolver.learning.waiting) == [f"r{i}.x.com" for i in range(int(LEARN_CLIENT_BURST))]
    assert resolver.learning.take(now + 1) and not resolver.learning.waiting
