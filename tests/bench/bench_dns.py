"""DNS responder vs dnsmasq (the DNS-only blocker) with dnsperf on the same netns gateway.

Prints queries/s for blocked names and for mixed traffic, their ratios (targets: >= 1.0 blocked,
>= 0.8 mixed) and the responder's CPU and memory. Run with `make bench`.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import statistics
import socket
import struct
import subprocess
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from agent.state import BlockState, Policy, PolicySegment, SegmentState, Service
from tests.support import netns
from tests.support.netns import GatewayLab

ROOT = Path(__file__).resolve().parents[2]
RESPONDER_PORT, DNSMASQ_PORT = 5353, 5354
DURATION = 4
# The agent's responder workers (SO_REUSEPORT processes); LESFOCUS_BENCH_DNS_WORKERS overrides.
WORKERS = int(os.environ.get("LESFOCUS_BENCH_DNS_WORKERS", "2"))
ROUNDS = 3


def catalog() -> dict[str, Service]:
    data = json.loads((ROOT / "server/data/social-services.json").read_text())
    return {s["id"]: Service(s["id"], s["name"], tuple(s["domains"])) for s in data["services"]}


def fast_upstream(host: str) -> None:
    """A minimal authoritative stand-in: every name has one A record (runs in `inet`)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((host, 53))
    record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + socket.inet_aton("192.0.2.80")
    while True:
        data, peer = sock.recvfrom(4096)
        if len(data) < 17:
            continue
        qd_end = 12 + data[12:].find(b"\x00") + 5
        flags = bytes([0x81 | (data[2] & 0x01), 0x80])
        head = data[:2] + flags + b"\x00\x01\x00\x01\x00\x00\x00\x00"
        sock.sendto(head + data[12:qd_end] + record, peer)


def run_responder(services: dict[str, Service], upstream: str) -> None:
    """The agent's data plane as a gateway runs it: enforcer + responder with WORKERS workers."""
    from agent.dns_responder import DnsResponder
    from agent.enforcers.nftables import NftablesEnforcer

    now = datetime.now(timezone.utc)
    until = now + timedelta(hours=2)
    policy = Policy("bench", "gw", now, until, "UTC", services,
                    (PolicySegment(1, "lokaal-1", netns.SEG1_CIDRS, ()),))
    state = BlockState(now, (SegmentState(1, "lokaal-1", netns.SEG1_CIDRS,
                                          {sid: until for sid in services}),), None)
    enforcer = NftablesEnforcer(lan_interfaces=["lan1", "lan2"], dns_port=RESPONDER_PORT)
    enforcer.start(policy)
    enforcer.apply(state)
    responder = DnsResponder(listen=[("0.0.0.0", RESPONDER_PORT)], upstream=(upstream, 53),
                             state_provider=lambda: state, enforcer=enforcer, services=services,
                             workers=WORKERS)
    responder.start()
    while True:
        time.sleep(3600)


def tree_cpu_and_rss(pid: int) -> tuple[float, int]:
    """CPU seconds and proportional set size (kB; shared pages split) of a process and children."""
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    cpu, rss = 0.0, 0
    tick = os.sysconf("SC_CLK_TCK")
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / tick
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
            rss += int(re.search(r"Pss:\s+(\d+)", rollup).group(1))  # type: ignore[union-attr]
        except (OSError, AttributeError):
            continue
    return cpu, rss


def dnsperf(lab: GatewayLab, port: int, datafile: Path) -> float:
    out = lab.c1.exec(["dnsperf", "-s", netns.GW_LAN1, "-p", str(port), "-d", str(datafile),
                       "-l", str(DURATION), "-c", "8", "-q", "200", "-t", "2"],
                      timeout=DURATION + 30).stdout
    found = re.search(r"Queries per second:\s+([\d.]+)", out)
    assert found, out
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    print(f"    dnsperf port {port} {datafile.name}: {found.group(1)} q/s, "
          f"lost {lost.group(1) if lost else '?'}")
    return float(found.group(1))


@pytest.mark.netns
def test_bench_dns_responder_vs_dnsmasq() -> None:
    if os.geteuid() != 0 or not shutil.which("dnsperf") or not shutil.which("dnsmasq"):
        pytest.skip("needs root, dnsperf and dnsmasq")
    services = catalog()
    domains = sorted({d for s in services.values() for d in s.domains})
    rng = random.Random(7)
    tmp = Path(tempfile.mkdtemp(prefix="lf-bench-dns-"))
    blocked = tmp / "blocked.txt"
    mixed = tmp / "mixed.txt"
    blocked.write_text("".join(f"{rng.choice(['', 'www.', 'api.'])}{rng.choice(domains)} A\n"
                               for _ in range(20000)))
    lines = []
    for i in range(20000):
        if i % 2:
            lines.append(f"www.{rng.choice(domains)} A\n")
        else:
            lines.append(f"host{rng.randrange(1000)}.example.org A\n")
    mixed.write_text("".join(lines))
    conf = tmp / "dnsmasq.conf"
    conf.write_text("".join(f"address=/{d}/\n" for d in domains))
    with GatewayLab() as lab:
        lab.inet.start_process(fast_upstream, netns.INET_ADDR)
        responder = lab.gw.start_process(run_responder, services, netns.INET_ADDR, daemon=False)
        lab.gw.popen(["dnsmasq", "-k", "--no-resolv", "--no-hosts", f"--server={netns.INET_ADDR}",
                      f"--port={DNSMASQ_PORT}", f"--listen-address={netns.GW_LAN1}",
                      "--bind-interfaces", "--cache-size=10000", f"--conf-file={conf}",
                      "--pid-file=", "--user=root"], stderr=subprocess.DEVNULL)
        time.sleep(2.0)
        idle_cpu, idle_rss = tree_cpu_and_rss(responder.pid)
        time.sleep(2.0)
        idle_cpu2, _ = tree_cpu_and_rss(responder.pid)
        print(f"\n  responder idle: {100 * (idle_cpu2 - idle_cpu) / 2.0:.1f}% CPU, "
              f"{idle_rss / 1024:.1f} MiB PSS ({WORKERS} workers)")
        results = {}
        for name, datafile in (("blocked", blocked), ("mixed", mixed)):
            dnsperf(lab, DNSMASQ_PORT, datafile)  # warm dnsmasq's cache, as it would be in a day
            ratios = []
            for _ in range(ROUNDS):
                # Alternate the two servers: the machine is shared, so compare neighbours.
                cpu0, _ = tree_cpu_and_rss(responder.pid)
                ours = dnsperf(lab, RESPONDER_PORT, datafile)
                cpu1, rss = tree_cpu_and_rss(responder.pid)
                theirs = dnsperf(lab, DNSMASQ_PORT, datafile)
                assert ours > 0 and theirs > 0, "a server did not answer"
                ratios.append(ours / theirs)
                print(f"  {name}: lesfocus {ours:,.0f} q/s vs dnsmasq {theirs:,.0f} q/s "
                      f"= {ours / theirs:.2f}x; responder CPU "
                      f"{100 * (cpu1 - cpu0) / DURATION:.0f}% (of one core), "
                      f"PSS {rss / 1024:.1f} MiB")
            results[name] = statistics.median(ratios)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"  {WORKERS} workers; median of {ROUNDS} rounds: "
          f"blocked {results['blocked']:.2f}x (target >= 1.0), "
          f"mixed {results['mixed']:.2f}x (target >= 0.8)")
