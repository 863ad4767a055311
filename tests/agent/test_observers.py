"""The capture loop in the netns trio: learning from DNS answers, and SNI/Host hits reset flows."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import dns.rcode
import pytest

from agent.enforcers.nftables import NftablesEnforcer
from agent.observers.capture import Observer
from agent.state import BlockState, SegmentState
from tests.support import netns
from tests.support.netns import FakeDnsServer, GatewayLab, TcpServer, dns_query, tcp_connect
from tests.support.clienthello import scapy_client_hello

TW4, UNKNOWN4 = "198.51.100.10", "198.51.100.30"
pytestmark = pytest.mark.netns


@pytest.fixture
def observed() -> Iterator[tuple[GatewayLab, NftablesEnforcer, Observer]]:
    from tests.support.realparts import require
    require(netns.available(), "root with ip(8) and nft(8) for network namespaces")
    with GatewayLab() as lab:
        for addr in (TW4, UNKNOWN4):
            lab.add_server_address(addr)
            for port in (443, 80):
                srv = TcpServer(lab.inet, addr, port)  # echoes: the flow stays open until cut
                lab.on_close(srv.stop)
        upstream = FakeDnsServer(lab.inet, netns.INET_ADDR, {"x.com": [TW4]})
        lab.on_close(upstream.stop)
        state = netns.twitter_lesson_on_lokaal_1(datetime.now(timezone.utc))
        enforcer, observer = netns.start_observed_gateway(lab, lambda: state)
        lab.on_close(observer.stop)
        yield lab, enforcer, observer


def test_dns_answer_on_an_unredirected_segment_teaches_the_gateway(
        observed: tuple[GatewayLab, NftablesEnforcer, Observer]) -> None:
    lab, enforcer, observer = observed
    assert tcp_connect(lab.c1, TW4, 443) == "open"  # nothing learned yet
    answer = dns_query(lab.c2, netns.INET_ADDR, "x.com")
    assert answer.rcode() == dns.rcode.NOERROR
    deadline = time.monotonic() + 3
    while TW4 not in enforcer.addresses_of(["twitter"]):
        assert time.monotonic() < deadline, "the observer did not learn from the DNS answer"
        time.sleep(0.05)
    assert tcp_connect(lab.c1, TW4, 443) == "reset"
    assert tcp_connect(lab.c2, TW4, 443) == "open"


@pytest.mark.parametrize("port,payload", [
    # Named: a ClientHello's random bytes differ per process (the xdist workers' ids must not).
    pytest.param(443, scapy_client_hello("video.x.com"), id="443-client-hello-video.x.com"),
    (80, b"GET / HTTP/1.1\r\nHost: x.com\r\nUser-Agent: t\r\n\r\n"),
])
def test_name_of_a_blocked_service_on_an_unknown_address_resets_the_flow(
        observed: tuple[GatewayLab, NftablesEnforcer, Observer], port: int, payload: bytes) -> None:
    lab, enforcer, observer = observed
    sock = lab.c1.socket()
    sock.settimeout(3)
    sock.connect((UNKNOWN4, port))  # an address no DNS answer ever showed
    sock.sendall(payload)
    outcome = "timeout"
    start = time.monotonic()
    try:
        while time.monotonic() - start < 3:
            if not sock.recv(4096):
                outcome = "closed"
                break
            sock.sendall(b"more\r\n")  # a client that keeps talking meets the reject rule too
    except ConnectionResetError:
        outcome = "reset"
    except (TimeoutError, socket.timeout):
        outcome = "timeout"
    finally:
        sock.close()
    assert outcome == "reset"
    assert UNKNOWN4 in enforcer.addresses_of(["twitter"])
    assert observer.stats["learned"] >= 1
    assert tcp_connect(lab.c2, UNKNOWN4, port) == "open"


def test_name_of_a_service_from_an_unblocked_segment_is_learned_without_reset(
        observed: tuple[GatewayLab, NftablesEnforcer, Observer]) -> None:
    lab, enforcer, observer = observed
    sock = lab.c2.socket()
    sock.settimeout(3)
    sock.connect((UNKNOWN4, 443))
    hello = scapy_client_hello("x.com")
    sock.sendall(hello)
    assert sock.recv(4096) == hello  # the echo server answers: the flow lives
    deadline = time.monotonic() + 3
    while UNKNOWN4 not in enforcer.addresses_of(["twitter"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    sock.sendall(b"still here")
    assert sock.recv(100) == b"still here"
    sock.close()
    assert observer.stats["resets"] == 0


def test_a_block_that_begins_widens_the_kernel_filters_to_split_client_hellos() -> None:
    from tests.support.realparts import require
    from agent.observers.capture import capture_filters
    require(netns.available(), "root with ip(8) and nft(8) for network namespaces")
    with GatewayLab() as lab:
        lab.add_server_address(UNKNOWN4)
        srv = TcpServer(lab.inet, UNKNOWN4, 443)
        lab.on_close(srv.stop)
        now = datetime.now(timezone.utc)
        blocked = BlockState(now, (SegmentState(1, "lokaal-1", netns.SEG1_CIDRS,
                                                {"twitter": now + timedelta(hours=1)}),), None)
        free = BlockState(now, (SegmentState(1, "lokaal-1", netns.SEG1_CIDRS, {}),), None)
        current = [free]
        enforcer, observer = netns.start_observed_gateway(lab, lambda: current[0])
        lab.on_close(observer.stop)
        assert observer.filters == capture_filters()
        # The bell: the state changes, the ticker installs the wider filters.
        current[0] = blocked
        with lab.gw.entered():
            enforcer.apply(blocked)
        observer.apply(blocked)
        deadline = time.monotonic() + 5
        while observer.filters != capture_filters(netns.SEG1_CIDRS):
            assert time.monotonic() < deadline, "the filters were not widened"
            time.sleep(0.02)
        hello = scapy_client_hello("video.x.com", before=480)  # about 2 KB, name at its end
        sock = lab.c1.socket()
        sock.settimeout(3)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect((UNKNOWN4, 443))
        outcome = "open"
        try:
            for piece in (hello[:5], hello[5:]):
                sock.sendall(piece)
                time.sleep(0.05)
            for _ in range(20):  # a client that keeps talking meets the reject rule
                sock.sendall(b"more")
                if not sock.recv(4096):
                    outcome = "closed"
                    break
                time.sleep(0.05)
        except ConnectionResetError:
            outcome = "reset"
        finally:
            sock.close()
        assert outcome == "reset"
        assert UNKNOWN4 in enforcer.addresses_of(["twitter"])
