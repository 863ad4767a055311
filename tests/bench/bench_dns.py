"""DNS responder vs dnsmasq (the DNS-only blocker) with dnsperf on the same netns gateway.

The responder runs as the agent ships it (the shipped catalog, `agent.config.DNS_WORKERS`
workers; LESFOCUS_BENCH_DNS_WORKERS overrides, to choose that number), dnsmasq with the same
names. Four clients of the blocked segment (each its own address and dnsperf) ask repeating
names and names never seen before (random subdomains), blocked only or mixed with other names.
Prints queries/s and their ratio per round, min/median/max next to the targets (blocked >= 1.0,
mixed >= 0.8), the responder's CPU and memory, the upstream queries it sent, and the load
average. Run with `make bench`.
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
from typing import Any

from agent.config import DNS_WORKERS
from agent.state import BlockState, Policy, PolicySegment, SegmentState, Service
from tests.support import netns
from tests.support.benchstats import load, spread
from tests.support.netns import GatewayLab

ROOT = Path(__file__).resolve().parents[2]
RESPONDER_PORT, DNSMASQ_PORT = 5353, 5354
DURATION = 3
WORKERS = int(os.environ.get("LESFOCUS_BENCH_DNS_WORKERS", str(DNS_WORKERS)))
ROUNDS = int(os.environ.get("LESFOCUS_BENCH_ROUNDS", "5"))
CLIENTS = [f"10.81.1.{20 + i}" for i in range(4)]  # in the blocked segment 10.81.1.0/24
NAMES_PER_CLIENT = 30_000


def catalog() -> dict[str, Service]:
    data = json.loads((ROOT / "server/data/social-services.json").read_text())
    return {s["id"]: Service(s["id"], s["name"], tuple(s["domains"])) for s in data["services"]}


def fast_upstream(host: str, counter: Any = None) -> None:
    """A minimal authoritative stand-in: every name has one A record (runs in `inet`).

    Counts the queries from the gateway's uplink address (the responder's and dnsmasq's).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((host, 53))
    record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + socket.inet_aton("192.0.2.80")
    while True:
        data, peer = sock.recvfrom(4096)
        if counter is not None:
            counter.value += 1
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


def dnsperf(lab: GatewayLab, port: int, files: list[Path]) -> float:
    """Queries/s answered to all clients together (one dnsperf per client address)."""
    procs = [lab.c1.popen(["dnsperf", "-s", netns.GW_LAN1, "-p", str(port), "-a", client,
                           "-d", str(path), "-l", str(DURATION), "-c", "2", "-q", "60", "-t", "2"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for client, path in zip(CLIENTS, files)]
    total = 0.0
    for proc in procs:
        out, _ = proc.communicate(timeout=DURATION + 30)
        found = re.search(r"Queries per second:\s+([\d.]+)", out)
        assert found, out
        total += float(found.group(1))
    return total


def query_files(tmp: Path, domains: list[str], name: str, unique: bool, mixed: bool,
                rng: random.Random) -> list[list[Path]]:
    """Per round and client a file of queries: repeating names, or names none asked before."""
    rounds = []
    for r in range(ROUNDS * 2 + 1):  # every run (both servers, and the warm-up) its own names
        files = []
        for c in range(len(CLIENTS)):
            path = tmp / f"{name}-{r}-{c}.txt"
            lines = []
            for i in range(NAMES_PER_CLIENT if unique else 5000):
                other = mixed and i % 2 == 1
                if unique:
                    label = f"u{r}c{c}n{i}x{rng.randrange(1 << 30):x}"
                    lines.append(f"{label}.example.org A\n" if other
                                 else f"{label}.{rng.choice(domains)} A\n")
                else:
                    lines.append(f"host{rng.randrange(1000)}.example.org A\n" if other
                                 else f"{rng.choice(['', 'www.', 'api.'])}{rng.choice(domains)} A\n")
            path.write_text("".join(lines))
            files.append(path)
        rounds.append(files if unique else rounds[0] if rounds else files)
    return rounds


@pytest.mark.netns
def test_bench_dns_responder_vs_dnsmasq() -> None:
    if os.geteuid() != 0 or not shutil.which("dnsperf") or not shutil.which("dnsmasq"):
        pytest.skip("needs root, dnsperf and dnsmasq")
    import multiprocessing
    services = catalog()
    domains = sorted({d for s in services.values() for d in s.domains})
    rng = random.Random(7)
    tmp = Path(tempfile.mkdtemp(prefix="lf-bench-dns-"))
    kinds = {"blocked, repeating": (False, False), "blocked, unique": (True, False),
             "mixed, repeating": (False, True), "mixed, unique": (True, True)}
    only = os.environ.get("LESFOCUS_BENCH_DNS_KINDS")  # e.g. "blocked, unique" (; between)
    if only:
        kinds = {k: v for k, v in kinds.items() if k in only.split(";")}
    files = {kind: query_files(tmp, domains, kind.replace(", ", "-"), unique, mixed, rng)
             for kind, (unique, mixed) in kinds.items()}
    conf = tmp / "dnsmasq.conf"
    conf.write_text("".join(f"address=/{d}/\n" for d in domains))
    upstream_queries = multiprocessing.get_context("fork").Value("q", 0, lock=False)
    print(f"\n  {load()} at the start; {WORKERS} responder workers, {len(CLIENTS)} clients")
    with GatewayLab() as lab:
        for client in CLIENTS:
            lab.c1.exec(["ip", "addr", "add", f"{client}/24", "dev", "eth0"])
        lab.inet.start_process(fast_upstream, netns.INET_ADDR, upstream_queries)
        responder = lab.gw.start_process(run_responder, services, netns.INET_ADDR, daemon=False)
        lab.gw.popen(["dnsmasq", "-k", "--no-resolv", "--no-hosts", f"--server={netns.INET_ADDR}",
                      f"--port={DNSMASQ_PORT}", f"--listen-address={netns.GW_LAN1}",
                      "--bind-interfaces", "--cache-size=10000", f"--conf-file={conf}",
                      "--pid-file=", "--user=root"], stderr=subprocess.DEVNULL)
        time.sleep(2.0)
        idle_cpu, idle_rss = tree_cpu_and_rss(responder.pid)
        time.sleep(2.0)
        idle_cpu2, _ = tree_cpu_and_rss(responder.pid)
        print(f"  responder idle: {100 * (idle_cpu2 - idle_cpu) / 2.0:.1f}% CPU, "
              f"{idle_rss / 1024:.1f} MiB PSS")
        summary = []
        for kind, (unique, mixed) in kinds.items():
            rounds = files[kind]
            dnsperf(lab, DNSMASQ_PORT, rounds[0])  # warm dnsmasq's cache, as it would be in a day
            ratios, ours_all, theirs_all, cpu_all, sent_all = [], [], [], [], []
            for n in range(ROUNDS):
                # Alternate the two servers, and which goes first: the machine is shared.
                ours_files, theirs_files = rounds[1 + 2 * n], rounds[2 + 2 * n]
                order = ["ours", "theirs"] if n % 2 == 0 else ["theirs", "ours"]
                got: dict[str, float] = {}
                for side in order:
                    if side == "ours":
                        cpu0, _ = tree_cpu_and_rss(responder.pid)
                        sent0, started = upstream_queries.value, time.monotonic()
                        got[side] = dnsperf(lab, RESPONDER_PORT, ours_files)
                        sent_all.append((upstream_queries.value - sent0)
                                        / (time.monotonic() - started))
                        cpu1, rss = tree_cpu_and_rss(responder.pid)
                        cpu_all.append(100 * (cpu1 - cpu0) / DURATION)
                    else:
                        got[side] = dnsperf(lab, DNSMASQ_PORT, theirs_files)
                assert got["ours"] > 0 and got["theirs"] > 0, "a server did not answer"
                ours_all.append(got["ours"])
                theirs_all.append(got["theirs"])
                ratios.append(got["ours"] / got["theirs"])
            target = 0.8 if mixed else 1.0
            print(f"  {kind}: lesfocus q/s {spread(ours_all)}; dnsmasq q/s {spread(theirs_all)}")
            print(f"    ratio {', '.join(f'{r:.2f}' for r in ratios)}: {spread(ratios, '.2f')} "
                  f"(target >= {target}); responder CPU {spread(cpu_all)} % of one core, "
                  f"PSS {rss / 1024:.1f} MiB; upstream queries/s while lesfocus ran "
                  f"{spread(sent_all)}")
            summary.append(f"{kind} {statistics.median(ratios):.2f}x")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"  medians of {ROUNDS} rounds: {'; '.join(summary)}; {load()} at the end")
