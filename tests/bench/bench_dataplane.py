"""Forwarding through the netns gateway with the agent's table (the shipped 16-service catalog,
20,000 learned IPv4 and 20,000 IPv6 addresses, the client's segment blocked for every service)
and the observers, vs the bare gateway (iperf3; targets: TCP >= 0.95x, 64-byte UDP >= 0.90x);
and the observers' packets per second. Run with `make bench`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from agent.enforcers.dry_run import DryRunEnforcer
from agent.enforcers.nftables import NftablesEnforcer
from agent.observers.capture import CapturedFrame, Observer
from agent.state import BlockState, Policy, PolicySegment, SegmentState, Service
from tests.support import netns
from tests.support.benchstats import load, spread
from tests.support.netns import GatewayLab
from tests.support.policies import SERVICES, make_policy
from tests.support.clienthello import scapy_client_hello

ROOT = Path(__file__).resolve().parents[2]
SECONDS = 4
ROUNDS = int(os.environ.get("LESFOCUS_BENCH_ROUNDS", "5"))
LEARNED = 20_000  # per family


def catalog() -> dict[str, Service]:
    """The catalog the server ships (server/data/social-services.json)."""
    data = json.loads((ROOT / "server/data/social-services.json").read_text())
    return {s["id"]: Service(s["id"], s["name"], tuple(s["domains"])) for s in data["services"]}


def iperf(lab: GatewayLab, extra: list[str]) -> float:
    out = lab.c1.exec(["iperf3", "-c", netns.INET_ADDR, "-t", str(SECONDS), "-J", *extra],
                      timeout=SECONDS + 30).stdout
    data = json.loads(out)
    return float(data["end"]["sum_received"]["bits_per_second"]
                 if "sum_received" in data["end"] else data["end"]["sum"]["bits_per_second"])


def forwarded_packets(lab: GatewayLab) -> int:
    """Packets the gateway has sent out of its uplink (what got through its forward chain)."""
    out = lab.gw.exec(["ip", "-j", "-s", "link", "show", "wan"]).stdout
    return int(json.loads(out)[0]["stats64"]["tx"]["packets"])


def udp_flood(lab: GatewayLab) -> float:
    """Packets per second the gateway forwards of a 64-byte UDP flood from c1.

    Counted at the gateway, not at the receiver: the flood overruns the receiver on these two
    cores, and what the receiver then keeps says more about its overload than the gateway's.
    """
    before, start = forwarded_packets(lab), time.monotonic()
    iperf(lab, ["-u", "-b", "0", "-l", "64"])
    return (forwarded_packets(lab) - before) / (time.monotonic() - start)


def _learn_everything(enforcer: NftablesEnforcer, ids: list[str]) -> None:
    base4 = int(ipaddress.ip_address("100.64.0.0"))
    base6 = int(ipaddress.ip_address("2001:db8:1::"))
    chunk = LEARNED // len(ids)
    for n, sid in enumerate(ids):
        first = n * chunk
        enforcer.learn(sid, [str(ipaddress.ip_address(base4 + first + i)) for i in range(chunk)],
                       3600)
        enforcer.learn(sid, [str(ipaddress.ip_address(base6 + first + i)) for i in range(chunk)],
                       3600)


@pytest.mark.netns
def test_bench_forwarding_with_agent_vs_without() -> None:
    if os.geteuid() != 0 or not shutil.which("iperf3"):
        pytest.skip("needs root and iperf3")
    services = catalog()
    ids = sorted(services)
    print(f"\n  {load()} at the start")
    with GatewayLab() as lab:
        lab.inet.popen(["iperf3", "-s", "-B", netns.INET_ADDR], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        tcp: dict[str, list[float]] = {"bare": [], "agent": []}
        udp: dict[str, list[float]] = {"bare": [], "agent": []}
        enforcer = NftablesEnforcer(lan_interfaces=["lan1", "lan2"], dns_port=5353)
        now = datetime.now(timezone.utc)
        until = now + timedelta(hours=1)
        policy = Policy("bench", "gw", now, until, "UTC", services,
                        (PolicySegment(1, "lokaal-1", netns.SEG1_CIDRS, ()),
                         PolicySegment(2, "lokaal-2", netns.SEG2_CIDRS, ())))
        # c1's segment is blocked for every service: its packets take the longest path.
        state = BlockState(now, (SegmentState(1, "lokaal-1", netns.SEG1_CIDRS,
                                              {sid: until for sid in ids}),
                                 SegmentState(2, "lokaal-2", netns.SEG2_CIDRS, {})), None)

        def measure(side: str) -> None:
            tcp[side].append(iperf(lab, []))
            udp[side].append(udp_flood(lab))

        for n in range(ROUNDS):
            # Alternate the two sides, and their order, on a shared machine: compare neighbours.
            first_bare = n % 2 == 0
            if first_bare:
                measure("bare")
            observer = Observer(["lan1", "lan2"], enforcer, services, lambda: state)
            with lab.gw.entered():
                enforcer.start(policy)
                enforcer.apply(state)
                _learn_everything(enforcer, ids)
                observer.start()
            measure("agent")
            observer.stop()
            with lab.gw.entered():
                enforcer.stop()
            if not first_bare:
                measure("bare")
        tcp_ratios = [w / wo for w, wo in zip(tcp["agent"], tcp["bare"])]
        udp_ratios = [w / wo for w, wo in zip(udp["agent"], udp["bare"])]
        print(f"  iperf3 c1 -> inet through gw, {ROUNDS} alternating rounds of {SECONDS} s; the "
              f"agent's table for the shipped {len(ids)} services, c1 blocked for all of them, "
              f"{LEARNED:,} IPv4 + {LEARNED:,} IPv6 learned addresses, observers running")
        print(f"  TCP bare Gbit/s: {spread([v / 1e9 for v in tcp['bare']], '.2f')}; "
              f"agent: {spread([v / 1e9 for v in tcp['agent']], '.2f')}")
        print(f"  TCP ratio agent/bare: {spread(tcp_ratios, '.3f')} (target >= 0.95)")
        print(f"  UDP 64-byte flood, packets/s forwarded by gw, bare: {spread(udp['bare'])}; "
              f"agent: {spread(udp['agent'])}")
        print(f"  UDP 64-byte ratio agent/bare: {spread(udp_ratios, '.3f')} (target >= 0.90)")
        print(f"  {load()} at the end")


def test_bench_observer_packets_per_second() -> None:
    """Observer.handle on captured-packet fields (parse, match, learn via dry-run enforcer)."""
    enforcer = DryRunEnforcer(lambda batch: None)
    enforcer.start(make_policy())
    now = datetime.now(timezone.utc)
    state = BlockState(now, (SegmentState(2, "lokaal-2", netns.SEG2_CIDRS, {}),), None)
    observer = Observer([], enforcer, SERVICES, lambda: state)
    hello_social = scapy_client_hello("video.x.com")
    hello_other = scapy_client_hello("www.example.org")
    n = 20000
    start = time.perf_counter()
    for i in range(n):
        observer.handle(netns.C2_ADDR, "198.51.100.10", "tcp", 40000 + i % 1000, 443, i, 0,
                        hello_social if i % 2 else hello_other)
    fields_rate = n / (time.perf_counter() - start)
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    wire = bytes(Ether(dst="02:00:00:00:00:01") / IP(src=netns.C2_ADDR, dst="198.51.100.10")
                 / TCP(dport=443, flags="PA")
                 / hello_social)
    m = 20000
    start = time.perf_counter()
    for _ in range(m):
        observer.on_packet(CapturedFrame(wire))  # what the capture socket hands over
    frame_rate = m / (time.perf_counter() - start)
    k = 2000
    start = time.perf_counter()
    for _ in range(k):
        Ether(wire)  # what scapy's own dissection of the same frame would cost
    scapy_rate = k / (time.perf_counter() - start)
    observer.resets.close()
    print(f"\n  observer: {fields_rate:,.0f} packets/s through handle(); "
          f"{frame_rate:,.0f} frames/s "
          f"through on_packet (frame parser + handle); scapy's dissection alone of the same "
          f"frame: {scapy_rate:,.0f}/s")
    assert observer.stats["learned"] > 0
