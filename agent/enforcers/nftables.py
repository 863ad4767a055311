"""The nftables enforcer: one `inet` table the agent owns, changed only by whole transactions.

The ruleset is built as data (`Ruleset`), rendered to nft(8) text and applied through libnftables
in-process, one batch per change; a refused batch raises EnforcerError with the batch in it.

Table layout (names for service index i; the service ids themselves are in set comments):
  src4_i / src6_i    source CIDRs blocked for service i (flags interval, timeout; no auto-merge)
  addr4_i / addr6_i  learned addresses of service i (flags timeout)
  doh4 / doh6        learned addresses of DNS-over-HTTPS servers (flags timeout)
  learned4/learned6  the union of every addr*_i and doh* (flags timeout): one lookup of it tells
                     whether a packet goes to any learned address at all
  blocked4/blocked6  every source CIDR with any block (the union), for DNS redirect, QUIC, DoT, DoH
  dns_redirect       port 53 with a short timeout that the running agent keeps renewing
  flows4 / flows6    single TCP flows refused (client . port . server . port, flags timeout):
                     TLS flows from a blocked segment whose first flight the observer could not
                     read within its bounds (observers/firstflight.py; docs/agent.md)
  chain prerouting   nat: udp/tcp to a port in `dns_redirect` from `blocked*` -> redirect to the
                     DNS responder's port; when the agent dies the element expires within
                     REDIRECT_LEASE_SECONDS and DNS goes its usual way again (the address sets
                     still reject the services until each block ends), instead of a classroom
                     without DNS until the end of the lesson
  chain forward      filter: from `blocked*` jump to `blocked_traffic`, where every client->server
                     packet to a blocked address is rejected (tcp reset, else ICMP); the return
                     direction is never matched, so a leaked connection fails at its next packet.
  blocked_traffic    the refused flows, one lookup in learned4/learned6 (a miss for nearly every
                     packet), one lookup of protocol . port for QUIC and DoT: the same few
                     lookups whatever the number of services. Only a packet to a learned address
                     walks `services4`/`services6` (one rule per service: its addresses, then the
                     source in its src set), and a match goes to `refuse`.
  Why not one verdict map address -> `jump` service chain: the kernel validates every jump
  element of a map at each commit that adds one, so a learn took 2.7 ms with 20k learned
  addresses instead of 0.10 ms (nft 1.0.6, kernel 6.18; docs/agent.md).
Element timeouts make the kernel end every block at its interval's end even if the agent died.

apply() is incremental: the enforcer remembers, per source set, each element and the instant its
block ends, and changes only what differs (delete what went, delete + add what got another end,
add what is new) in one batch; an element whose end passed is gone from the kernel already and is
never deleted. If the kernel refuses the batch anyway, that apply flushes and refills every source
set. Counters come from `list set` of the src* sets only, never from the whole table, whose
learned-address sets hold tens of thousands of elements.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import os
import threading
import time
from collections import defaultdict
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
    size: int = 0

    def render(self) -> str:
        """The set's declaration inside `table { ... }`."""
        parts = [f"type {self.type};", f"flags {', '.join(self.flags)};"]
        if self.size:
            parts.append(f"size {self.size};")
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


# Every refused packet goes to this chain: a tcp reset, else ICMP admin-prohibited.
REFUSE_CHAIN = "refuse"
# How long the DNS redirect outlives the last renewal by a running agent (see the module doc).
REDIRECT_LEASE_SECONDS = 20.0
# A refused flow stays refused this long: longer than a client keeps retrying one connection.
REFUSED_FLOW_SECONDS = 120
# At most this many refused flows at once per family; the kernel refuses more (the add fails).
MAX_REFUSED_FLOWS = 65536


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
        SetSpec("learned4", "ipv4_addr", ("timeout",), comment="every learned address"),
        SetSpec("learned6", "ipv6_addr", ("timeout",), comment="every learned address"),
        SetSpec("dns_redirect", "inet_service", ("timeout",), comment="renewed while alive"),
        SetSpec("flows4", "ipv4_addr . inet_service . ipv4_addr . inet_service", ("timeout",),
                comment="refused flows", size=MAX_REFUSED_FLOWS),
        SetSpec("flows6", "ipv6_addr . inet_service . ipv6_addr . inet_service", ("timeout",),
                comment="refused flows", size=MAX_REFUSED_FLOWS),
    ]
    # Per family, one rule per service, reached only by packets to a learned address.
    service_rules: dict[str, list[str]] = {"4": [], "6": []}
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
            service_rules[fam].append(f"{daddr} @{names['addr' + fam]} {saddr} "
                                      f"@{names['src' + fam]} goto {REFUSE_CHAIN}")
    service_rules["4"].append(f"ip daddr @doh4 goto {REFUSE_CHAIN}")
    service_rules["6"].append(f"ip6 daddr @doh6 goto {REFUSE_CHAIN}")
    block_rules = (
        # A refused flow's next packet meets an exact reset from the kernel.
        "meta l4proto tcp ip saddr . tcp sport . ip daddr . tcp dport @flows4 "
        "reject with tcp reset",
        "meta l4proto tcp ip6 saddr . tcp sport . ip6 daddr . tcp dport @flows6 "
        "reject with tcp reset",
        # One lookup of the destination in the union of every learned address: nearly every
        # packet misses it and goes on; only packets to a service's address walk the services.
        "ip daddr @learned4 jump services4",
        "ip6 daddr @learned6 jump services6",
        # QUIC and DNS over QUIC/TLS: browsers fall back to TCP and to the system resolver.
        f"meta l4proto . th dport vmap {{ udp . 443 : goto {REFUSE_CHAIN}, "
        f"udp . 853 : goto {REFUSE_CHAIN}, tcp . 853 : goto {REFUSE_CHAIN} }}",
    )
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
        ChainSpec(REFUSE_CHAIN, ("meta l4proto tcp reject with tcp reset",
                                 "reject with icmpx admin-prohibited")),
        ChainSpec("services4", tuple(service_rules["4"])),
        ChainSpec("services6", tuple(service_rules["6"])),
        ChainSpec("blocked_traffic", block_rules),
    )
    return Ruleset(table, tuple(sets), chains, index)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


# An element of a source set: a network as canonical text ("10.0.1.0/24", "fd00:1::/64"). Text,
# not ipaddress objects: these are hashed tens of thousands of times per apply, and ipaddress
# networks hash slowly.
Element = str
# Per source set (src4_i, src6_i, blocked4, blocked6): element -> the instant its block ends.
Ends = dict[str, dict[Element, datetime]]
# Per src* set: which (segment, service) each element counts for.
Owners = dict[str, dict[Element, CounterKey]]


def _owner(owners: Owners, key: tuple[str, Element]) -> CounterKey | None:
    return owners.get(key[0], {}).get(key[1])


@functools.lru_cache(maxsize=65536)
def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    # Segment CIDRs and the kernel's listings repeat at every apply: parse each text once.
    return ipaddress.ip_network(text, strict=False)


@functools.lru_cache(maxsize=65536)
def _element(text: str) -> Element:
    """The canonical text of a network (a CIDR from the state or the kernel's listing)."""
    return str(_network(text))


def _disjoint(elements: dict[Element, datetime]) -> dict[Element, datetime]:
    """Drop networks inside another one of the same set (interval sets refuse overlaps)."""
    if len({_network(e).prefixlen for e in elements}) <= 1:
        return elements  # distinct networks of one length never overlap
    out: dict[Element, datetime] = {}
    lengths: list[int] = []  # prefix lengths kept so far, ascending
    for elem in sorted(elements, key=lambda e: _network(e).prefixlen):  # wider ones first
        net = _network(elem)
        outer = next((sup for sup in (str(net.supernet(new_prefix=length)) for length in lengths
                                      if length < net.prefixlen) if sup in out), None)
        if outer is None:
            out[elem] = elements[elem]
            if not lengths or lengths[-1] != net.prefixlen:
                lengths.append(net.prefixlen)
        else:
            # Segments of one gateway never overlap (the server checks); if they did, the wider
            # network keeps the later end rather than failing the whole batch.
            out[outer] = max(out[outer], elements[elem])
    return out


def _family(set_name: str) -> str:
    return "6" if set_name.startswith(("src6", "blocked6")) else "4"


def source_set_names(ruleset: Ruleset) -> list[str]:
    """The sets apply() fills: src4_i, src6_i per service and the unions blocked4, blocked6."""
    return [spec.name for spec in ruleset.sets if spec.name.startswith(("src", "blocked"))]


def block_elements(ruleset: Ruleset, state: BlockState, now: datetime) -> tuple[Ends, Owners]:
    """Elements (network -> block end) per source set, and which (segment, service) each is.

    Blocks that ended at or before `now` and unknown services are left out.
    """
    sets: Ends = {name: {} for name in source_set_names(ruleset)}
    owners: Owners = {name: {} for name in sets if name.startswith("src")}
    src = {fam: {sid: f"src{fam}_{i}" for sid, i in ruleset.service_index.items()}
           for fam in ("4", "6")}
    lengths: dict[str, set[int]] = {"4": set(), "6": set()}
    for seg in state.segments:
        live = {sid: until for sid, until in seg.blocked.items()
                if until > now and sid in ruleset.service_index}
        if not live:
            continue
        last = max(live.values())
        for cidr in seg.cidrs:
            net, network = _element(cidr), _network(cidr)
            fam = str(network.version)
            lengths[fam].add(network.prefixlen)
            union = sets["blocked" + fam]
            before = union.get(net)
            union[net] = last if before is None or last > before else before
            for sid, until in live.items():
                name = src[fam][sid]
                target = sets[name]
                before = target.get(net)
                target[net] = until if before is None or until > before else before
                owners[name][net] = (seg.segment_id, sid)
    # Networks of one length never overlap: only a family with several needs the check.
    return {name: _disjoint(elems) if len(lengths[_family(name)]) > 1 else elems
            for name, elems in sets.items()}, owners


@dataclass(frozen=True)
class ElementDelta:
    """What turns the source sets from the ends applied last into new ones (per set name).

    `removed`: live elements the new state no longer has (deleted); `changed`: live elements with
    another end or owner (deleted and added again); `added`: elements the kernel does not hold;
    `lapsed`: remembered elements whose end has passed and that the new state has again (the
    kernel removed them, or is about to: added, deleted and added, so no step can fail and the new
    timeout holds either way); `ends`: the new ends, for the timeouts.
    """

    removed: dict[str, list[Element]]
    changed: dict[str, list[Element]]
    added: dict[str, list[Element]]
    lapsed: dict[str, list[Element]]
    ends: Ends

    def __bool__(self) -> bool:
        return any(self.removed.values()) or any(self.changed.values()) \
            or any(self.added.values()) or any(self.lapsed.values())

    def deleted(self) -> list[tuple[str, Element]]:
        """The live elements this delta deletes (their kernel counters go with them)."""
        return [(name, net) for part in (self.removed, self.changed)
                for name, nets in part.items() for net in nets]


def diff_elements(old: Ends, new: Ends, now: datetime, old_owners: Owners | None = None,
                  new_owners: Owners | None = None) -> ElementDelta:
    """The delta from `old` (applied last) to `new`; elements of `old` ended by `now` are gone.

    End instants are compared, not seconds left: an element whose end did not move is left
    alone, as its kernel timeout already ends it at that instant.
    """
    old_owners = old_owners or {}
    new_owners = new_owners or {}
    nobody: dict[Element, CounterKey] = {}
    removed: dict[str, list[Element]] = {}
    changed: dict[str, list[Element]] = {}
    added: dict[str, list[Element]] = {}
    lapsed: dict[str, list[Element]] = {}
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name, {}), new.get(name, {})
        was, now_is = old_owners.get(name, nobody), new_owners.get(name, nobody)
        # Most sets are unchanged at a bell: compare them whole before element by element.
        if before == after and was == now_is and (not before or min(before.values()) > now):
            continue
        gone, moved, fresh, back = [], [], [], []
        for net, end in before.items():
            if net not in after:
                if end > now:
                    gone.append(net)
            elif end <= now:
                back.append(net)
            elif after[net] != end or was.get(net) != now_is.get(net):
                moved.append(net)
        fresh = [net for net in after if net not in before]
        for part, nets in ((removed, gone), (changed, moved), (added, fresh), (lapsed, back)):
            if nets:
                part[name] = nets
    return ElementDelta(removed, changed, added, lapsed, new)


def _items(nets: Iterable[Element], ends: dict[Element, datetime], now: datetime) -> str:
    return ", ".join(f"{net} timeout {_ms((ends[net] - now).total_seconds())}ms"
                     for net in nets)


def render_delta(table: str, delta: ElementDelta, now: datetime) -> str:
    """One batch with only the delta's elements (empty when nothing changed); timeouts run from
    `now` to each end."""
    lines = []
    for name in sorted(set(delta.removed) | set(delta.changed) | set(delta.added)
                       | set(delta.lapsed)):
        ends = delta.ends.get(name, {})
        back = delta.lapsed.get(name, [])
        if back:
            lines.append(f"add element inet {table} {name} {{ {_items(back, ends, now)} }}")
        gone = delta.removed.get(name, []) + delta.changed.get(name, []) + back
        if gone:
            lines.append(f"delete element inet {table} {name} "
                         f"{{ {', '.join(gone)} }}")
        fresh = delta.changed.get(name, []) + delta.added.get(name, []) + back
        if fresh:
            lines.append(f"add element inet {table} {name} {{ {_items(fresh, ends, now)} }}")
    return "\n".join(lines) + "\n" if lines else ""


def render_apply(table: str, ends: Ends, now: datetime) -> str:
    """One batch that makes every source set hold exactly `ends` (flush, then add): the fallback
    when a delta is refused."""
    lines = []
    for name in sorted(ends):
        lines.append(f"flush set inet {table} {name}")
        if ends[name]:
            lines.append(f"add element inet {table} {name} "
                         f"{{ {_items(ends[name], ends[name], now)} }}")
    return "\n".join(lines) + "\n"


def render_learn(table: str, set_name: str, fresh: list[str], refresh: list[str],
                 timeout_s: int) -> str:
    """Add new addresses; refresh known ones by delete + add in the same transaction; and the
    same addresses into the family's union `learned4`/`learned6`."""
    lines = []
    if refresh:
        lines.append(f"delete element inet {table} {set_name} {{ {', '.join(refresh)} }}")
    everything = refresh + fresh
    if everything:
        items = ", ".join(f"{a} timeout {timeout_s}s" for a in everything)
        lines.append(f"add element inet {table} {set_name} {{ {items} }}")
        # The union: add (so the delete cannot fail), delete, add. Its element then lasts as
        # long as the latest of the services' elements, whichever process learned them.
        union = f"learned{'6' if set_name.startswith(('addr6', 'doh6')) else '4'}"
        lines += [f"add element inet {table} {union} {{ {items} }}",
                  f"delete element inet {table} {union} {{ {', '.join(everything)} }}",
                  f"add element inet {table} {union} {{ {items} }}"]
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
        # What the last apply put in the kernel: per source set, element -> its block's end.
        self._applied: Ends = {}
        self._owners: Owners = {}
        # Counters: packets of elements that are gone (deleted, or ended by their timeout), and
        # the last packets read of each element still remembered.
        self._carried: dict[CounterKey, int] = {}
        self._seen: dict[tuple[str, Element], int] = {}
        # Counted up by every change of the source sets: counters() reads the kernel without
        # holding the lock, and keeps its readings only if no change came in between.
        self._generation = 0
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
            # The rebuild drops every element's counter: keep what they held.
            read = self._read_counters(self._counted_sets())
            self._carry({key: read.get(key, n) for key, n in self._seen.items()}
                        | {key: n for key, n in read.items() if key not in self._seen},
                        self._owners)
            # The lease is part of the rebuild's one transaction: no moment without the redirect.
            self.run(ruleset.render() + render_redirect_lease(self.table, self.redirect_lease))
            self.ruleset = ruleset
            if self._runner is None and self.cut_on_apply:
                # Import scapy now rather than at the first bell, where its second of loading
                # would delay cutting the open flows.
                from ..observers.resets import warm_up
                warm_up()
            self._learned.clear()
            self._forget_applied()
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
                self._forget_applied()

    def _require(self) -> Ruleset:
        if self.ruleset is None:
            raise EnforcerError("the enforcer has not been started")
        return self.ruleset

    def _forget_applied(self) -> None:
        # The table was (re)built, here or by another process: it holds no source elements.
        self._applied = {}
        self._owners = {}
        self._seen.clear()
        self._generation += 1

    def apply(self, state: BlockState) -> None:
        """Change only the source elements that differ from the last apply (one batch; timeouts
        = block end - now), then cut the flows of blocks that began."""
        with self._lock:
            ruleset = self._require()
            now = self._clock()
            ends, owners = block_elements(ruleset, state, now)
            delta = diff_elements(self._applied, ends, now, self._owners, owners)
            if delta:
                self._apply_delta(delta, ends, owners, now)
            self._segments = {seg.segment_id: seg.cidrs for seg in state.segments}
            pairs = {(seg.segment_id, sid) for seg in state.segments for sid, until in
                     seg.blocked.items() if until > now and sid in ruleset.service_index}
            new = pairs - self._blocked_pairs
            self._blocked_pairs = pairs
        if new:
            log.info("blocks began: %s", ", ".join(f"segment {s}: {v}" for s, v in sorted(new)))
        if new and self.cut_on_apply:
            # One cut per distinct set of newly blocked services, for all the segments that
            # share it: at the bell every classroom starts the same block at once, and a cut
            # per segment read the address sets and the conntrack table a thousand times.
            services_of: dict[int, set[str]] = defaultdict(set)
            for seg_id, service in new:
                services_of[seg_id].add(service)
            segments_of: dict[frozenset[str], list[str]] = defaultdict(list)
            for seg_id in sorted(services_of):
                segments_of[frozenset(services_of[seg_id])].extend(self._segments.get(seg_id, ()))
            for services, cidrs in segments_of.items():
                self.cut_flows(cidrs, self.addresses_of(sorted(services)))

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

    def refuse_flow(self, client: str, client_port: int, server: str, server_port: int,
                    seconds: int = REFUSED_FLOW_SECONDS) -> None:
        """Reject (tcp reset) every further client->server packet of one TCP flow for a while."""
        if self.ruleset is None:
            return
        try:
            fam = ipaddress.ip_address(client).version
            if ipaddress.ip_address(server).version != fam:
                return
        except ValueError:
            return
        elem = f"{client} . {int(client_port)} . {server} . {int(server_port)}"
        self.run(f"add element inet {self.table} flows{fam} {{ {elem} timeout {int(seconds)}s }}\n")

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

    def _apply_delta(self, delta: ElementDelta, ends: Ends, owners: Owners,
                     now: datetime) -> None:
        # Deleting an element drops its kernel counter: read the sets it is in first (only
        # those), and carry the counts once the batch went through.
        deleted = delta.deleted()
        read = self._read_counters(sorted({name for name, _ in deleted
                                           if name.startswith("src")}))
        try:
            self.run(render_delta(self.table, delta, now))
        except EnforcerError as err:
            # An element may have ended in the kernel between our clock and the batch, and its
            # delete refused the whole transaction: set every source set from scratch instead.
            log.warning("incremental update refused, setting every source set afresh: %s",
                        str(err).splitlines()[0])
            read = self._read_counters(self._counted_sets())
            self.run(render_apply(self.table, ends, now))
            deleted = [(name, net) for name, elems in self._applied.items() for net in elems]
        for key in deleted:
            self._seen[key] = read.get(key, self._seen.get(key, 0))
        # Ended elements are gone from the kernel with their counters: keep their last reading.
        gone = set(deleted) | {(name, net) for name, elems in self._applied.items()
                               for net, end in elems.items() if end <= now}
        self._carry({key: self._seen.pop(key) for key in gone if key in self._seen},
                    self._owners)
        # Elements left alone keep their kernel counters; re-added ones start again from zero.
        self._seen.update((key, n) for key, n in read.items()
                          if _owner(owners, key) is not None and key not in gone)
        self._applied = ends
        self._owners = owners
        self._generation += 1

    def _carry(self, packets: dict[tuple[str, Element], int], owners: Owners) -> None:
        for key, value in packets.items():
            owner = _owner(owners, key)
            if owner is not None and value:
                self._carried[owner] = self._carried.get(owner, 0) + value

    def _counted_sets(self) -> list[str]:
        # The src* sets holding elements of ours: no other set has counters worth reading.
        return sorted(name for name, elems in self._applied.items()
                      if elems and name.startswith("src"))

    def _read_counters(self, set_names: Iterable[str]) -> dict[tuple[str, Element], int]:
        """Packets per element of these src* sets (`list set`; never the table, whose learned
        address sets are large); nothing without a kernel."""
        out: dict[tuple[str, Element], int] = {}
        if self._runner is not None or self.ruleset is None:
            return out
        for name in set_names:
            try:
                data = self.query(f"list set inet {self.table} {name}")
            except EnforcerError as err:
                log.warning("could not read the counters of %s: %s", name, err)
                continue
            for item in data.get("nftables", []):
                for elem in (item.get("set") or {}).get("elem", []):
                    body = elem.get("elem", {}) if isinstance(elem, dict) else {}
                    val = body.get("val", {})
                    prefix = val.get("prefix") if isinstance(val, dict) else None
                    text = f"{prefix['addr']}/{prefix['len']}" if prefix else str(val)
                    try:
                        net = _element(text)
                    except ValueError:
                        continue
                    out[(name, net)] = (body.get("counter") or {}).get("packets", 0)
        return out

    def counters(self) -> dict[CounterKey, dict[str, int]]:
        """Rejected packets per (segment id, service id), cumulative since start()."""
        with self._lock:
            generation, names = self._generation, self._counted_sets()
        # Each read takes the lock on its own: an apply at the bell waits for one set at most.
        read = self._read_counters(names)
        with self._lock:
            if generation == self._generation:  # else the elements read may have been replaced
                for key, value in read.items():
                    if _owner(self._owners, key) is not None:
                        self._seen[key] = value
            totals = dict(self._carried)
            for key, value in self._seen.items():
                owner = _owner(self._owners, key)
                assert owner is not None  # _seen only holds elements of ours
                totals[owner] = totals.get(owner, 0) + value
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
