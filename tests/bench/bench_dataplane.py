"""Forwarding through the netns gateway with the agent's table and 10,000 learned addresses vs
none (iperf3; target >= 0.95), and the observers' packets per second. Run with `make bench`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import statistics
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest

from agent.enforcers.dry_run import DryRunEnforcer
from agent.enforcers.nftables import NftablesEnforcer
from agent.observers.capture import CapturedFrame, Observer
from agent.state import BlockState, SegmentState
from tests.support import netns
from tests.support.netns import GatewayLab
from tests.support.policies import SERVICES, make_policy
from tests.support.clienthello import scapy_client_hello

SECONDS = 4
ROUNDS = 3


def iperf(lab: GatewayLab, extra: list[str]) -> float:
    out = lab.c1.exec(["iperf3", "-c", netns.INET_ADDR, "-t", str(SECONDS), "-J", *extra],
                      timeout=SECONDS + 30).stdout
    data = json.loads(out)
    return float(data["end"]["sum_received"]["bits_per_second"]
                 if "sum_received" in data["end"] else data["end"]["sum"]["bits_per_second"])


@pytest.mark.netns
def test_bench_forwarding_with_agent_vs_without() -> None:
    if os.geteuid() != 0 or not shutil.which("iperf3"):
        pytest.skip("needs root and iperf3")
    with GatewayLab() as lab:
        lab.inet.popen(["iperf3", "-s", "-B", netns.INET_ADDR], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        runs: dict[str, list[float]] = {"without": [], "with": []}
        udp: dict[str, list[float]] = {"without": [], "with": []}
        enforcer = NftablesEnforcer(lan_interfaces=["lan1", "lan2"], dns_port=5353)
        now = datetime.now(timezone.utc)
        state = BlockState(now, (SegmentState(1, "lokaal-1", netns.SEG1_CIDRS, {
            sid: now + timedelta(hours=1) for sid in SERVICES}),), None)
        base4 = int(ipaddress.ip_address("100.64.0.0"))
        base6 = int(ipaddress.ip_address("2001:db8:1::"))
        for _ in range(ROUNDS):
            # Alternate without/with on a shared machine, and compare neighbours.
            runs["without"].append(iperf(lab, []))
            udp["without"].append(iperf(lab, ["-u", "-b", "0", "-l", "64"]))
            observer = Observer(["lan1", "lan2"], enforcer, SERVICES, lambda: state)
            with lab.gw.entered():
                enforcer.start(make_policy())
                enforcer.apply(state)  # c1 is blocked: its packets take the longest path
                for chunk in range(10):
                    sid = sorted(SERVICES)[chunk % len(SERVICES)]
                    enforcer.learn(sid, [str(ipaddress.ip_address(base4 + chunk * 1000 + i))
                                         for i in range(1000)], 3600)
                    enforcer.learn(sid, [str(ipaddress.ip_address(base6 + chunk * 1000 + i))
                                         for i in range(1000)], 3600)
                observer.start()
            runs["with"].append(iperf(lab, []))
            udp["with"].append(iperf(lab, ["-u", "-b", "0", "-l", "64"]))
            observer.stop()
            with lab.gw.entered():
                enforcer.stop()
        tcp_ratios = [w / wo for w, wo in zip(runs["with"], runs["without"])]
        udp_ratios = [w / wo for w, wo in zip(udp["with"], udp["without"])]
        print(f"\n  iperf3 TCP c1->inet through gw ({ROUNDS} alternating rounds of {SECONDS} s): "
              f"without {statistics.median(runs['without'])/1e9:.2f} Gbit/s, with the table, "
              f"10k v4 + 10k v6 learned addresses and the observers "
              f"{statistics.median(runs['with'])/1e9:.2f} Gbit/s; ratios "
              f"{', '.join(f'{r:.3f}' for r in tcp_ratios)}; median "
              f"{statistics.median(tcp_ratios):.3f}x (target >= 0.95)")
        print(f"  iperf3 UDP 64-byte packets: ratios {', '.join(f'{r:.3f}' for r in udp_ratios)}; "
              f"median {statistics.median(udp_ratios):.3f}x")


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
