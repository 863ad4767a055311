"""The nftables enforcer: one `inet` table the agent owns, changed only by whole transactions.

The ruleset is built as data (`Ruleset`), rendered to nft(8) text and applied through libnftables
in-process, one batch per change; a refused batch raises EnforcerError with the batch in it.

Table layout (names for service index i; the service ids themselves are in set comments):
  src4_i / src6_i    source CIDRs blocked for service i (flags interval, timeout; no auto-merge)
  addr4_i / addr6_i  learned addresses of service i (flags timeout)
  blocked4/blocked6  every source CIDR with any block (the union), for DNS redirect, QUIC, DoT, DoH
  doh4 / doh6        learned addresses of DNS-over-HTTPS servers (flags timeout)
  dns_redirect       port 53 with a short timeout that the running agent keeps renewing
  chain prerouting   nat: udp/tcp to a port in `dns_redirect` from `blocked*` -> redirect to the
                     DNS responder's port; when the agent dies the element expires within
                     REDIRECT_LEASE_SECONDS and DNS goes its usual way again (the address sets
                     still reject the services until each block ends), instead of a classroom
                     without DNS until the end of the lesson
  chain forward      filter: from `blocked*` jump to `blocked_traffic`, where every client->server
                     packet to a blocked address is rejected (tcp reset, else ICMP); the return
                     direction is never matched, so a leaked connection fails at its next packet.
Element timeouts make the kernel end every block at its interval's end even if the agent died.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from datetime import datetime, timezone

from ..domains import DOH
from ..errors import EnforcerError
from ..state import BlockState, Policy
from .base import CounterKey

log = logging.getLogger(__name__)

DEFAULT_TABLE = "lesfocus"
# Learned addresses live at least this long: DNS TTLs are often a minute, while clients cache
# answers longer and services keep their addresses for hours.
MIN_ADDRESS_TIMEOUT = 3600
MAX_ADDRESS_TIMEOUT = 7 * 86400


@dataclass(frozen=True)
class SetSpec:
    """One named set of the table."""

    name: str
    type: str  # ipv4_addr | ipv6_addr
    flags: tuple[str, ...]
    counter: bool = False
    comment: str = ""

    def render(self) -> str:
        """The set's declaration inside `table { ... }`."""
        parts = [f"type {self.type};", f"flags {', '.join(self.flags)};"]
        if self.counter:
            parts.append("counter;")
        if self.comment:
            parts.append(f'comment "{self.comment}";')
        return f"\tset {self.name} {{ {' '.join(parts)} }}"


@dataclass(frozen=True)
class ChainSpec:
    """One chain: a base chain when `hook` is set, else a regular chain for jumps."""

    name: str
    rules: tuple[str, ...]
    type: str = ""
    hook: str = ""
    priority: str = ""

    def render(self) -> str:
        """The chain's declaration inside `table { ... }`."""
        lines = [f"\tchain {self.name} {{"]
        if self.hook:
            lines.append(f"\t\ttype {self.type} hook {self.hook} priority {self.priority}; "
                         "policy accept;")
        lines += [f"\t\t{rule}" for rule in self.rules]
        lines.append("\t}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Ruleset:
    """The agent's whole table as data."""

    table: str
    sets: tuple[SetSpec, ...]
    chains: tuple[ChainSpec, ...]
    service_index: dict[str, int] = field(default_factory=dict)

    def render(self) -> str:
        """One batch that replaces the table atomically: add (so delete cannot fail), delete,
        create."""
        body = [s.render() for s in self.sets] + [c.render() for c in self.chains]
        return "\n".join([f"add table inet {self.table}", f"delete table inet {self.table}",
                          f"table inet {self.table} {{", *body, "}"]) + "\n"


def set_names(index: int) -> dict[str, str]:
    """The four set names of the service with this index."""
    return {"src4": f"src4_{index}", "src6": f"src6_{index}",
            "addr4": f"addr4_{index}", "addr6": f"addr6_{index}"}


def _comment(text: str) -> str:
    # nft comments are quoted strings of at most 128 bytes; keep them plain.
    return "".join(c for c in text if c.isalnum() or c in "-_.@ ")[:120]


# How long the DNS redirect outlives the last renewal by a running agent (see the module doc).
REDIRECT_LEASE_SECONDS = 20.0


def render_redirect_lease(table: str, seconds: float) -> str:
    """Renew the DNS redirect's lease: add (so the delete cannot fail), delete, add afresh."""
    lease = f"{{ 53 timeout {_ms(seconds)}ms }}"
    return (f"add element inet {table} dns_redirect {lease}\n"
            f"delete element inet {table} dns_redirect {{ 53 }}\n"
            f"add element inet {table} dns_redirect {lease}\n")


def build_ruleset(service_ids: Iterable[str], table: str = DEFAULT_TABLE,
                  lan_interfaces: Iterable[str] = (), dns_port: int = 53) -> Ruleset:
    """The table for these services: sets per service, the DNS redirect and the reject rules."""
    ids = sorted(set(service_ids))
    index = {sid: i for i, sid in enumerate(ids)}
    sets: list[SetSpec] = [
        SetSpec("blocked4", "ipv4_addr", ("interval", "timeout"), comment="any block"),
        SetSpec("blocked6", "ipv6_addr", ("interval", "timeout"), comment="any block"),
        SetSpec("doh4", "ipv4_addr", ("timeout",), comment="DoH servers"),
        SetSpec("doh6", "ipv6_addr", ("timeout",), comment="DoH servers"),
        SetSpec("dns_redirect", "inet_service", ("timeout",), comment="renewed while alive"),
    ]
    block_rules: list[str] = []
    for sid in ids:
        names = set_names(index[sid])
        note = _comment(sid)
        # Per-element counters on the source sets give rejects per segment x service.
        sets += [
            SetSpec(names["src4"], "ipv4_addr", ("interval", "timeout"), True, note),
            SetSpec(names["src6"], "ipv6_addr", ("interval", "timeout"), True, note),
            SetSpec(names["addr4"], "ipv4_addr", ("timeout",), comment=note),
            SetSpec(names["addr6"], "ipv6_addr", ("timeout",), comment=note),
        ]
        for fam, saddr, daddr in (("4", "ip saddr", "ip daddr"), ("6", "ip6 saddr", "ip6 daddr")):
            # Destination first: the source lookup (and its counter) only runs for the
            # service's own addresses.
            match = f"{daddr} @{names['addr' + fam]} {saddr} @{names['src' + fam]}"
            block_rules.append(f"meta l4proto tcp {match} reject with tcp reset")
            block_rules.append(f"{match} reject with icmpx admin-prohibited")
    block_rules += [
        # QUIC and DNS over QUIC/TLS: browsers fall back to TCP and to the system resolver.
        "udp dport { 443, 853 } reject with icmpx admin-prohibited",
        "tcp dport 853 reject with tcp reset",
        "meta l4proto tcp ip daddr @doh4 reject with tcp reset",
        "meta l4proto tcp ip6 daddr @doh6 reject with tcp reset",
        "ip daddr @doh4 reject with icmpx admin-prohibited",
        "ip6 daddr @doh6 reject with icmpx admin-prohibited",
    ]
    lans = sorted(set(lan_interfaces))
    iif = f'iifname {{ {", ".join(json.dumps(n) for n in lans)} }} ' if lans else ""
    redirect = [
        f"{iif}ip saddr @blocked4 meta l4proto {{ tcp, udp }} th dport @dns_redirect "
        f"redirect to :{dns_port}",
        f"{iif}ip6 saddr @blocked6 meta l4proto {{ tcp, udp }} th dport @dns_redirect "
        f"redirect to :{dns_port}",
    ]
    chains = (
        ChainSpec("prerouting", tuple(redirect), "nat", "prerouting", "dstnat"),
        ChainSpec("forward", (f"{iif}ip saddr @blocked4 jump blocked_traffic",
                              f"{iif}ip6 saddr @blocked6 jump blocked_traffic"),
                  "filter", "forward", "filter - 10"),
        ChainSpec("blocked_traffic", tuple(block_rules)),
    )
    return Ruleset(table, tuple(sets), chains, index)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _disjoint(elements: dict[ipaddress._BaseNetwork, float]) -> dict[ipaddress._BaseNetwork, float]:
    """Drop networks inside another one of the same set (interval sets refuse overlaps)."""
    out: dict[ipaddress._BaseNetwork, float] = {}
    for net in sorted(elements, key=lambda n: (n.prefixlen, n)):
        outer = next((o for o in out if net.subnet_of(o)), None)  # type: ignore[arg-type]
        if outer is None:
            out[net] = elements[net]
        else:
            # Segments of one gateway never overlap (the server checks); if they did, the wider
            # network keeps the later end rather than failing the whole batch.
            out[outer] = max(out[outer], elements[net])
    return out


Elements = dict[str, dict[ipaddress._BaseNetwork, float]]


def block_elements(ruleset: Ruleset, state: BlockState, now: datetime
                   ) -> tuple[Elements, dict[str, tuple[int, str]]]:
    """Elements (network -> seconds left) per source set, and which (segment, service) each is."""
    sets: dict[str, dict[ipaddress._BaseNetwork, float]] = {}
    owners: dict[str, tuple[int, str]] = {}
    for spec in ruleset.sets:
        if spec.name.startswith(("src", "blocked")):
            sets[spec.name] = {}
    for seg in state.segments:
        for sid, until in seg.blocked.items():
            left = (until - now).total_seconds()
            if left <= 0 or sid not in ruleset.service_index:
                continue
            names = set_names(ruleset.service_index[sid])
            for cidr in seg.cidrs:
                net = ipaddress.ip_network(cidr, strict=False)
                fam = str(net.version)
                target = sets[names["src" + fam]]
                target[net] = max(target.get(net, 0.0), left)
                union = sets["blocked" + fam]
                union[net] = max(union.get(net, 0.0), left)
                owners[f"{names['src' + fam]} {net}"] = (seg.segment_id, sid)
    return {name: _disjoint(elems) for name, elems in sets.items()}, owners


def render_apply(table: str, elements: dict[str, dict[ipaddress._BaseNetwork, float]]) -> str:
    """One batch that makes every source set hold exactly `elements` (flush, then add)."""
    lines = []
    for name in sorted(elements):
        lines.append(f"flush set inet {table} {name}")
        elems = elements[name]
        if elems:
            items = ", ".join(f"{net} timeout {_ms(left)}ms" for net, left in sorted(
                elems.items(), key=lambda kv: (kv[0].version, kv[0])))
            lines.append(f"add element inet {table} {name} {{ {items} }}")
    return "\n".join(lines) + "\n"


def render_learn(table: str, set_name: str, fresh: list[str], refresh: list[str],
                 timeout_s: int) -> str:
    """Add new addresses; refresh known ones by delete + add in the same transaction."""
    lines = []
    if refresh:
        lines.append(f"delete element inet {table} {set_name} {{ {', '.join(refresh)} }}")
    everything = refresh + fresh
    if everything:
        items = ", ".join(f"{a} timeout {timeout_s}s" for a in everything)
        lines.append(f"add element inet {table} {set_name} {{ {items} }}")
    return "\n".join(lines) + "\n" if lines else ""


class NftablesEnforcer:
    """The Enforcer on a real kernel through libnftables (see the module docstring)."""

    def __init__(self, table: str = DEFAULT_TABLE, lan_interfaces: Iterable[str] = (),
                 dns_port: int = 5353, runner: Callable[[str], None] | None = None,
                 clock: Callable[[], datetime] | None = None,
                 cut_on_apply: bool = True,
                 redirect_lease: float = REDIRECT_LEASE_SECONDS) -> None:
        self.table = table
        self.redirect_lease = redirect_lease
        self.lan_interfaces = tuple(lan_interfaces)
        self.dns_port = dns_port
        self.cut_on_apply = cut_on_apply
        self._runner = runner
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._lock = threading.RLock()
        self._nft: Any = None
        self._nft_json: Any = None
        self._nft_pid = 0
        self.ruleset: Ruleset | None = None
        # address -> monotonic expiry, per set: lets learn() skip refreshes that change nothing.
        self._learned: dict[str, dict[str, float]] = {}
        self._owners: dict[str, tuple[int, str]] = {}
        self._carried: dict[CounterKey, int] = {}
        self._blocked_pairs: set[tuple[int, str]] = set()
        self._segments: dict[int, tuple[str, ...]] = {}

    # -- transactions ---------------------------------------------------------------------
    def _context(self, json_output: bool = False) -> Any:
        # Both contexts are made together, so they share the network namespace of the first
        # caller; a forked worker (DNS responder) needs its own netlink sockets.
        if self._nft is None or self._nft_pid != os.getpid():
            from .libnftables import Nftables, NftablesUnavailable
            try:
                self._nft = Nftables()
                self._nft_json = Nftables(json_output=True)
            except NftablesUnavailable as err:
                raise EnforcerError(str(err)) from None
            self._nft_pid = os.getpid()
        return self._nft_json if json_output else self._nft

    def run(self, batch: str) -> str:
        """Apply one batch as a single transaction; EnforcerError (with the batch) if refused."""
        if self._runner is not None:
            self._runner(batch)
            return ""
        with self._lock:
            rc, out, err = self._context().run(batch)
        if rc != 0:
            shown = batch if len(batch) < 4000 else batch[:4000] + "\n[... batch cut ...]\n"
            raise EnforcerError(
                f"nftables refused the batch: {err.strip()}\n--- batch ---\n{shown}")
        return out

    def query(self, command: str) -> dict:
        """Run a read-only command with JSON output (never through the dry-run runner)."""
        with self._lock:
            rc, out, err = self._context(json_output=True).run(command)
        if rc != 0:
            raise EnforcerError(f"nft {command!r} failed: {err.strip()}")
        return json.loads(out) if out.strip() else {"nftables": []}

    # -- Enforcer -------------------------------------------------------------------------
    def start(self, policy: Policy) -> None:
        """Rebuild the table for the policy's services in one batch; every set starts empty."""
        with self._lock:
            ruleset = build_ruleset(policy.services, self.table, self.lan_interfaces,
                                    self.dns_port)
            # The lease is part of the rebuild's one transaction: no moment without the redirect.
            self.run(ruleset.render() + render_redirect_lease(self.table, self.redirect_lease))
            self.ruleset = ruleset
            if self._runner is None and self.cut_on_apply:
                # Import scapy now rather than at the first bell, where its second of loading
                # would delay cutting the open flows.
                from ..observers.resets import warm_up
                warm_up()
            self._learned.clear()
            self._owners.clear()
            self._blocked_pairs.clear()
            log.info("nftables table %s rebuilt for %d services", self.table, len(policy.services))

    def keep_alive(self) -> None:
        """Renew the DNS redirect's lease; the agent's loop calls this every few seconds."""
        with self._lock:
            if self.ruleset is not None:
                self.run(render_redirect_lease(self.table, self.redirect_lease))

    def adopt(self, ruleset: Ruleset | None) -> None:
        """Use a ruleset that another process applied (the DNS responder's forked workers)."""
        with self._lock:
            if ruleset != self.ruleset:
                self.ruleset = ruleset
                self._learned.clear()

    def _require(self) -> Ruleset:
        if self.ruleset is None:
            raise EnforcerError("the enforcer has not been started")
        return self.ruleset

    def apply(self, state: BlockState) -> None:
        """Set every source set to the state (timeouts = block end - now), then cut new blocks."""
        with self._lock:
            ruleset = self._require()
            now = self._clock()
            elements, owners = block_elements(ruleset, state, now)
            self._harvest_counters()
            self.run(render_apply(self.table, elements))
            self._owners = owners
            self._segments = {seg.segment_id: seg.cidrs for seg in state.segments}
            pairs = {(seg.segment_id, sid) for seg in state.segments for sid, until in
                     seg.blocked.items() if until > now and sid in ruleset.service_index}
            new = pairs - self._blocked_pairs
            self._blocked_pairs = pairs
        if new:
            log.info("blocks began: %s", ", ".join(f"segment {s}: {v}" for s, v in sorted(new)))
        if new and self.cut_on_apply:
            for seg_id in sorted({s for s, _ in new}):
                services = [v for s, v in new if s == seg_id]
                self.cut_flows(self._segments.get(seg_id, ()), self.addresses_of(services))

    def learn(self, service_id: str, addresses: Iterable[str], ttl: int) -> None:
        """Add addresses to the service's sets; a known address is refreshed only when due."""
        ruleset = self.ruleset
        if ruleset is None:
            return
        if service_id == DOH:
            names = {"addr4": "doh4", "addr6": "doh6"}
        elif service_id in ruleset.service_index:
            names = set_names(ruleset.service_index[service_id])
        else:
            return
        timeout = min(max(int(ttl), MIN_ADDRESS_TIMEOUT), MAX_ADDRESS_TIMEOUT)
        addresses = list(addresses)
        now = time.monotonic()
        batch = []
        with self._lock:
            plan: list[tuple[str, list[str], list[str]]] = []
            for fam in ("4", "6"):
                set_name = names["addr" + fam]
                known = self._learned.setdefault(set_name, {})
                fresh, refresh = [], []
                for text in addresses:
                    try:
                        addr = ipaddress.ip_address(text)
                    except ValueError:
                        continue
                    if str(addr.version) != fam or addr.is_unspecified or addr.is_loopback:
                        continue
                    key = str(addr)
                    expiry = known.get(key)
                    if expiry is None or expiry <= now:
                        fresh.append(key)
                    elif expiry - now < timeout / 2:
                        refresh.append(key)
                fresh = sorted(set(fresh))
                refresh = sorted(set(refresh))
                if fresh or refresh:
                    plan.append((set_name, fresh, refresh))
                    batch.append(render_learn(self.table, set_name, fresh, refresh, timeout))
            if not batch:
                return
            try:
                self.run("".join(batch))
            except EnforcerError:
                # A refreshed element may have expired in the kernel a moment ago, which makes
                # its delete fail the batch: add everything again without deleting.
                self.run("".join(render_learn(self.table, name, fresh + refresh, [], timeout)
                                 for name, fresh, refresh in plan))
            for set_name, fresh, refresh in plan:
                known = self._learned[set_name]
                for key in fresh + refresh:
                    known[key] = now + timeout

    def addresses_of(self, service_ids: Iterable[str]) -> set[str]:
        """The addresses in the services' sets now.

        Read from the kernel, because the DNS responder's forked workers add addresses this
        process never saw; the dry-run backend answers from what it logged.
        """
        ruleset = self.ruleset
        if ruleset is None:
            return set()
        wanted = [set_names(ruleset.service_index[sid]) for sid in service_ids
                  if sid in ruleset.service_index]
        out: set[str] = set()
        if self._runner is None:
            for names in wanted:
                for key in ("addr4", "addr6"):
                    try:
                        data = self.query(f"list set inet {self.table} {names[key]}")
                    except EnforcerError as err:
                        log.warning("could not read %s: %s", names[key], err)
                        continue
                    for item in data.get("nftables", []):
                        for elem in (item.get("set") or {}).get("elem", []):
                            value = elem.get("elem", {}).get("val") if isinstance(elem, dict) \
                                else elem
                            if isinstance(value, str):
                                out.add(value)
            return out
        now = time.monotonic()
        with self._lock:
            for names in wanted:
                for key in ("addr4", "addr6"):
                    learned = self._learned.get(names[key], {})
                    out.update(a for a, exp in learned.items() if exp > now)
        return out

    def cut_flows(self, segment_cidrs: Iterable[str], service_addresses: Iterable[str]) -> int:
        """End open flows from the segments to the addresses (conntrack + a reset nudge)."""
        from ..conntrack import cut_flows
        return cut_flows(segment_cidrs, service_addresses, dry_run=self._runner is not None)

    def _harvest_counters(self) -> None:
        # Flushing a set drops its element counters: keep what they held before each apply.
        for key, value in self._read_counters().items():
            self._carried[key] = self._carried.get(key, 0) + value

    def _read_counters(self) -> dict[CounterKey, int]:
        if self._runner is not None or self.ruleset is None or not self._owners:
            return {}
        try:
            data = self.query(f"list table inet {self.table}")
        except EnforcerError:
            return {}
        out: dict[CounterKey, int] = {}
        for item in data.get("nftables", []):
            spec = item.get("set")
            if not spec or not spec.get("name", "").startswith("src"):
                continue
            for elem in spec.get("elem", []):
                body = elem.get("elem", {}) if isinstance(elem, dict) else {}
                val = body.get("val", {})
                prefix = val.get("prefix") if isinstance(val, dict) else None
                net = f"{prefix['addr']}/{prefix['len']}" if prefix else str(val)
                try:
                    net = str(ipaddress.ip_network(net, strict=False))
                except ValueError:
                    continue
                owner = self._owners.get(f"{spec['name']} {net}")
                packets = (body.get("counter") or {}).get("packets", 0)
                if owner and packets:
                    out[owner] = out.get(owner, 0) + packets
        return out

    def counters(self) -> dict[CounterKey, dict[str, int]]:
        """Rejected packets per (segment id, service id), cumulative since start()."""
        with self._lock:
            totals = dict(self._carried)
            for key, value in self._read_counters().items():
                totals[key] = totals.get(key, 0) + value
        return {key: {"rejected_packets": value} for key, value in sorted(totals.items())}

    def stop(self) -> None:
        """Delete the table (in one batch that cannot fail when it is already gone)."""
        with self._lock:
            try:
                self.run(f"add table inet {self.table}\ndelete table inet {self.table}\n")
            finally:
                self.ruleset = None
                for ctx in (self._nft, self._nft_json):
                    if ctx is not None:
                        ctx.close()
                self._nft = self._nft_json = None
