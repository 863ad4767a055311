"""Cut open flows at the bell, using the kernel's connection tracking (conntrack(8)).

The forward chain rejects every client->server packet to a blocked address, so an open TCP flow
dies at its client's next packet. At the bell this module makes that happen at once: it lists the
tracked flows from the segments to the service's addresses and nudges each TCP one (see
`observers.resets.nudge`); it also deletes the segments' tracked DNS flows, because the DNS
redirect (a NAT rule) only applies to flows that are new.
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Flow:
    """A tracked flow's original direction (client -> server)."""

    proto: str
    src: str
    dst: str
    sport: int
    dport: int
    state: str = ""


def parse_conntrack(text: str) -> list[Flow]:
    """Flows from `conntrack -L -o extended` output (lines it cannot read are skipped)."""
    flows = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 6 or words[0] not in ("ipv4", "ipv6"):
            continue
        proto = words[2]
        fields: dict[str, str] = {}
        state = ""
        for word in words[5:]:
            key, sep, value = word.partition("=")
            if sep:
                fields.setdefault(key, value)  # the first tuple is the original direction
            elif word.isupper() and not word.startswith("[") and not state:
                state = word
        try:
            flows.append(Flow(proto, fields["src"], fields["dst"], int(fields.get("sport", 0)),
                              int(fields.get("dport", 0)), state))
        except (KeyError, ValueError):
            continue
    return flows


def source_matcher(segment_cidrs: Iterable[str]) -> Callable[[str], bool]:
    """A test "is this address inside one of the networks?" that costs one set lookup per
    prefix length, not one comparison per network (a thousand classrooms at the bell)."""
    by_length: dict[tuple[int, int], set[int]] = {}
    for cidr in segment_cidrs:
        net = ipaddress.ip_network(cidr, strict=False)
        by_length.setdefault((net.version, net.prefixlen), set()).add(int(net.network_address))

    def inside(text: str) -> bool:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return False
        value, bits = int(address), address.max_prefixlen
        for (version, length), starts in by_length.items():
            if version == address.version and (value >> (bits - length) << (bits - length)
                                               if length else 0) in starts:
                return True
        return False

    return inside


def select_flows(flows: Iterable[Flow], segment_cidrs: Iterable[str],
                 addresses: Iterable[str]) -> list[Flow]:
    """The flows whose source is in a segment and whose destination is one of the addresses."""
    inside = source_matcher(segment_cidrs)
    wanted = set()
    for a in addresses:
        try:
            wanted.add(str(ipaddress.ip_address(a)))
        except ValueError:
            continue
    out = []
    for flow in flows:
        try:
            dst = str(ipaddress.ip_address(flow.dst))
        except ValueError:
            continue
        if dst in wanted and inside(flow.src):
            out.append(flow)
    return out


def list_flows() -> list[Flow]:
    """Every tracked flow of this network namespace (empty when conntrack is missing)."""
    if shutil.which("conntrack") is None:
        log.warning("conntrack(8) is not installed: open flows are cut only at their next packet")
        return []
    flows = []
    for family in ("ipv4", "ipv6"):
        proc = subprocess.run(["conntrack", "-L", "-f", family, "-o", "extended"],
                              capture_output=True, text=True, timeout=10)
        flows += parse_conntrack(proc.stdout)
    return flows


# Above this many networks, every tracked DNS flow of the gateway is forgotten in four calls
# instead of two calls per network (seconds at the bell of a gateway with hundreds of classrooms).
# Forgetting the DNS flow of a classroom that is not blocked is harmless: its next query starts a
# new flow, which goes to its resolver as before.
MAX_NETWORKS_ONE_BY_ONE = 8


def forget_dns_flows(segment_cidrs: Iterable[str]) -> int:
    """Delete the segments' tracked DNS flows so their next query meets the redirect.

    Returns how many conntrack(8) calls it made.
    """
    if shutil.which("conntrack") is None:
        return 0
    nets = [ipaddress.ip_network(c, strict=False) for c in segment_cidrs]
    if len(nets) > MAX_NETWORKS_ONE_BY_ONE:
        selectors = [["-f", family] for family in ("ipv4", "ipv6")]
    else:
        selectors = [["-f", "ipv6" if net.version == 6 else "ipv4", "-s", str(net.network_address),
                      "--mask-src", str(net.netmask)] for net in nets]
    calls = 0
    for selector in selectors:
        for proto in ("udp", "tcp"):
            # Exit status 1 means "nothing matched", which is fine.
            subprocess.run(["conntrack", "-D", *selector, "-p", proto, "--orig-port-dst", "53"],
                           capture_output=True, timeout=10)
            calls += 1
    return calls


def cut_flows(segment_cidrs: Iterable[str], addresses: Iterable[str], dry_run: bool = False,
              sender: object | None = None) -> int:
    """Cut the segments' open flows to the addresses; returns how many flows matched."""
    cidrs = list(segment_cidrs)
    addrs = list(addresses)
    if not cidrs:
        return 0
    flows = select_flows(list_flows(), cidrs, addrs) if addrs else []
    if dry_run:
        log.info("dry-run: would cut %d open flows", len(flows))
        return len(flows)
    forget_dns_flows(cidrs)
    tcp = [f for f in flows if f.proto == "tcp" and f.state in ("ESTABLISHED", "SYN_RECV",
                                                                   "SYN_SENT", "")]
    if tcp:
        from .observers.resets import ResetSender
        own = sender is None
        resets = sender if sender is not None else ResetSender()
        try:
            for flow in tcp:
                nudge = resets.nudge  # type: ignore[attr-defined]
                nudge(flow.src, flow.dst, flow.sport, flow.dport)
        finally:
            if own:
                resets.close()  # type: ignore[attr-defined]
    if flows:
        # Counts only, never which client: the log must not say who visited what.
        log.info("cut %d open flows (%d tcp) of newly blocked services", len(flows), len(tcp))
    return len(flows)
