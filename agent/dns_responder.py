"""The agent's DNS responder: the primary blocking mechanism (SPEC §4 "What the agent enforces").

The nftables table redirects udp/tcp 53 from segments with a block to this responder. For a client
whose segment has services blocked it answers NXDOMAIN for those services' names (and their
subdomains), for the DoH canary and Private Relay names and for known DoH servers. Every other
query is forwarded to the upstream resolver and its answer relayed unchanged except for the ID
(RFC 1035 §4.1.1; EDNS, the TC bit and TCP pass through). Before an answer for a service's name is
relayed, its A/AAAA addresses go into that service's address sets (`Enforcer.learn`), so the
client can never connect before the gateway knows the address.

A refused name in a plain query is answered from the query's bytes (`Resolver.refuse_wire`), with
no cache entry per name; its addresses are resolved for learning only within the bounds of
`dns_learning.LearnQueue` (per client, queue, per second), never once per query.

Workers: `workers=1` serves UDP in a thread; more workers are forked processes that share the port
with SO_REUSEPORT and get the block table and the enforcer's ruleset through a pipe. TCP is served
by threads in the main process (it is rare: truncated answers and some stub resolvers).
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from . import dnswire
from .dns_learning import LEARN_RATE, LearnQueue
from .domains import DOH, DomainMatcher, always_blocked_matcher
from .segment_table import BlockTable
from .state import BlockState, Service

log = logging.getLogger(__name__)

FORWARD_TIMEOUT = 5.0
LEARN_ONLY_INTERVAL = 60.0  # resolve a refused name for learning at most once a minute
CACHE_LIMIT = 65536
MICRO_CACHE = 1.0  # seconds an upstream answer is reused for the same question
DECISION_CACHE = 300.0  # at most this long a decision is reused for the same client and question


class Decision(NamedTuple):
    """What to do with one query (a tuple: made for every query on the hot path)."""

    action: str                 # "nxdomain" | "forward"
    service: str | None         # the service (or DOH) the name belongs to, for learning/counting
    segment: int | None = None  # the client's segment when it has a block
    learn_only: bool = False    # also resolve upstream, only to learn the addresses
    until: float = 0.0          # when a refusal ends (epoch s); 0 for forwarded names


class Resolver:
    """The decisions and the answer path, shared by the UDP and TCP servers."""

    def __init__(self, services: Mapping[str, Service], doh: Iterable[str] | None = None,
                 enforcer: Any = None) -> None:
        self.enforcer = enforcer
        self.table = BlockTable()
        self._cache: dict[str, tuple[int, dict[str, float]] | None] = {}
        self._learn_only_at: dict[str, float] = {}
        self.learning = LearnQueue()
        self.counts: dict[tuple[int, str], int] = {}
        self.forwarded = 0  # queries passed upstream (or answered from the cache): a count only
        self.always = always_blocked_matcher(doh)
        self.set_services(services)

    def set_services(self, services: Mapping[str, Service]) -> None:
        """Use a new service catalog (the policy's)."""
        self.matcher = DomainMatcher.from_services(services)
        # The same domains in wire form (RFC 1035 §3.1, lower case), for refuse_wire().
        wire: dict[bytes, str] = {}
        for domain, service in self.matcher.items():
            encoded = dnswire.encode_name(domain)
            if encoded is not None:
                wire.setdefault(encoded.lower(), service)
        self._wire_domains = wire
        self.clear_caches()

    def set_table(self, table: BlockTable) -> None:
        """Use a new block table."""
        self.table = table
        self._cache = {}
        self.clear_caches()

    def clear_caches(self) -> None:
        """Forget cached decisions and answers (the table or the services changed)."""
        # (client, query bytes after the ID) -> (expiry, decision, negative answer after the ID)
        self.decisions: dict[tuple[str, bytes], tuple[float, Decision, bytes]] = {}
        # query bytes after the ID -> (expiry, upstream answer after the ID)
        self.answers: dict[bytes, tuple[float, bytes]] = {}

    def client_block(self, client: str) -> tuple[int, dict[str, float]] | None:
        """(segment id, service -> until) of a client address, cached until the table changes."""
        cache = self._cache
        if client in cache:
            return cache[client]
        if len(cache) > CACHE_LIMIT:
            cache.clear()
        found = cache[client] = self.table.lookup(client)
        return found

    def refuse_wire(self, data: bytes, client: str, now: float) -> bytes | None:
        """The whole NXDOMAIN answer to a query for a name of a service blocked for this client,
        read straight from the wire; None for anything else (decide() then takes it).

        The hot path for refused names, seen before or not: no parse into a Query, no cache
        entry per name. Only the plain shape is taken: one question with an uncompressed name,
        no answer or authority records, at most an OPT record without options; the answer is
        the one build_negative() gives (tests compare them).
        """
        if len(data) < 17 or data[2] & 0xF8 or data[4:10] != b"\x00\x01\x00\x00\x00\x00":
            return None  # a response, another opcode, or not one question alone
        found = self.client_block(client)
        if found is None:
            return None
        size = len(data)
        pos = 12
        starts = []
        while True:
            if pos >= size:
                return None
            length = data[pos]
            if length == 0:
                break
            if length > 63:
                return None  # a pointer or an obsolete label type: decide() reads it
            starts.append(pos)
            pos += length + 1
        if pos - 12 >= dnswire.MAX_NAME:
            return None
        qend = pos + 5
        name = data[12:pos + 1].lower()  # length bytes are < 64, so only letters change
        domains = self._wire_domains
        service = None
        for start in starts:
            service = domains.get(name[start - 12:])
            if service is not None:
                break
        else:
            return None
        segment, until = found
        if until.get(service, 0.0) <= now:
            return None
        additional = data[10:12]
        if additional == b"\x00\x00":
            if qend != size:
                return None
            opt = b""
        elif additional == b"\x00\x01":
            # An OPT record: root owner, type 41, no options (RFC 6891 §6.1.2).
            if size != qend + 11 or data[qend:qend + 3] != b"\x00\x00\x29" or \
                    data[qend + 9:qend + 11] != b"\x00\x00":
                return None
            opt = _OPT_DO if data[qend + 7] & 0x80 else _OPT
        else:
            return None
        key = (segment, service)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        if self.learning.has_token(client, now):
            text = b".".join(name[start - 11:start - 11 + name[start - 12]]
                             for start in starts).decode("latin-1")
            self._due(text, client, service, now)
        return (data[:2] + bytes((0x80 | (data[2] & 0x01), 0x83 | (data[3] & 0x10)))
                + (b"\x00\x01\x00\x00\x00\x00\x00\x01" if opt else b"\x00\x01\x00\x00\x00\x00\x00\x00")
                + data[12:qend] + opt)

    def decide(self, query: dnswire.Query, client: str, now: float,
               learn: bool = True) -> Decision:
        """NXDOMAIN for blocked names from a blocked client; forward everything else.

        A refused name the responder should resolve for learning goes into `learning` (within
        its bounds) and the decision says `learn_only`; `learn=False` leaves learning out.
        """
        found = self.client_block(client)
        name = query.name
        service = self.matcher.match(name)
        if found is not None:
            segment, until = found
            end = until.get(service, 0.0) if service is not None else 0.0
            if end > now:
                return Decision("nxdomain", service, segment,
                                learn and self._due(name, client, service, now), end)
            latest = max(until.values(), default=0.0)
            if latest > now:
                special = self.always.match(name)
                if special is not None:
                    return Decision("nxdomain", special, segment, learn and special == DOH and
                                    self._due(name, client, special, now), latest)
        if service is None:
            special = self.always.match(name)
            if special == DOH:
                return Decision("forward", DOH)
        return Decision("forward", service)

    def _due(self, name: str, client: str, service: str | None, now: float) -> bool:
        last = self._learn_only_at.get(name, 0.0)
        if now - last < LEARN_ONLY_INTERVAL:
            return False
        if not self.learning.offer(client, name, service, now):
            return False
        if len(self._learn_only_at) > CACHE_LIMIT:
            self._learn_only_at.clear()
        self._learn_only_at[name] = now
        return True

    def count(self, decision: Decision) -> None:
        """Count a refused name per (segment, service): aggregates only, never a client."""
        if decision.segment is not None and decision.service is not None:
            key = (decision.segment, decision.service)
            self.counts[key] = self.counts.get(key, 0) + 1

    def learn_from(self, service: str | None, answer: bytes) -> None:
        """Put the answer's addresses into the service's sets (before the answer is relayed)."""
        if service is None or self.enforcer is None:
            return
        parsed = dnswire.parse_response(answer)
        if parsed is None or not parsed.addresses:
            return
        ttl = min(t for _, t in parsed.addresses)
        try:
            self.enforcer.learn(service, [a for a, _ in parsed.addresses], ttl)
        except Exception as err:  # the answer still goes out; the block falls back to DNS alone
            log.warning("could not learn addresses for %s: %s", service, err)


# build_negative()'s OPT record: our UDP size, the query's DO bit, no options.
_OPT = b"\x00" + dnswire.RR_FIXED.pack(dnswire.TYPE_OPT, dnswire.OUR_UDP_SIZE, 0, 0)
_OPT_DO = b"\x00" + dnswire.RR_FIXED.pack(dnswire.TYPE_OPT, dnswire.OUR_UDP_SIZE,
                                           dnswire.EDNS_DO, 0)


def _bind(host: str, port: int, kind: int, reuseport: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    if kind == socket.SOCK_DGRAM:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        except OSError:
            pass
    sock.bind((host, port))
    return sock


def _bind_udp_and_tcp(host: str, port: int,
                      reuseport: bool) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on one port. Port 0 picks one: the port the kernel gives UDP may be
    taken for TCP, and then another is tried."""
    for _ in range(50 if port == 0 else 1):
        udp = _bind(host, port, socket.SOCK_DGRAM, reuseport)
        try:
            return udp, _bind(host, udp.getsockname()[1], socket.SOCK_STREAM, False)
        except OSError as err:
            udp.close()
            if port != 0 or err.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, f"no port on {host} was free for both UDP and TCP")


class UdpWorker:
    """One event loop: client sockets, one upstream socket, and a control channel."""

    def __init__(self, resolver: Resolver, sockets: list[socket.socket],
                 upstream: tuple[str, int], control: Any) -> None:
        self.resolver = resolver
        self.sockets = sockets
        self.upstream = upstream
        self.control = control
        # new id -> (client socket, client, original id bytes, question, service, sent at,
        #            query bytes after the ID)
        self.pending: dict[int, tuple[Any, Any, bytes, bytes, str | None, float, bytes]] = {}
        self._next_id = int.from_bytes(os.urandom(2), "big")
        self._stop = False

    def _new_id(self) -> int | None:
        for _ in range(16):
            self._next_id = (self._next_id + 1) & 0xFFFF
            if self._next_id not in self.pending:
                return self._next_id
        return None

    def run(self) -> None:
        """Serve until the control channel says stop (or closes)."""
        family = socket.AF_INET6 if ":" in self.upstream[0] else socket.AF_INET
        up = socket.socket(family, socket.SOCK_DGRAM)
        up.connect(self.upstream)
        up.setblocking(False)
        sel = selectors.DefaultSelector()
        for sock in self.sockets:
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ, "client")
        sel.register(up, selectors.EVENT_READ, "upstream")
        sel.register(self.control, selectors.EVENT_READ, "control")
        last_sweep = time.monotonic()
        sent_counts: dict[tuple[int, str], int] = {}
        sent_forwarded = 0
        try:
            while not self._stop:
                for key, _ in sel.select(0.05 if self.resolver.learning.waiting else 1.0):
                    if key.data == "client":
                        self._from_clients(key.fileobj, up)  # type: ignore[arg-type]
                    elif key.data == "upstream":
                        self._from_upstream(up)
                    else:
                        self._control()
                if self.resolver.learning.waiting:
                    for name, service in self.resolver.learning.take(time.time()):
                        self._learn_only(up, name, service)
                mono = time.monotonic()
                if mono - last_sweep >= 1.0:
                    last_sweep = mono
                    self._sweep(mono)
                    if self.resolver.counts != sent_counts \
                            or self.resolver.forwarded != sent_forwarded:
                        sent_counts = dict(self.resolver.counts)
                        sent_forwarded = self.resolver.forwarded
                        self._send_control(("counts", sent_counts, sent_forwarded))
        finally:
            sel.close()
            up.close()

    def _send_control(self, message: Any) -> None:
        try:
            self.control.send(message)
        except (OSError, EOFError, ValueError):
            self._stop = True

    def _control(self) -> None:
        try:
            message = self.control.recv()
        except (EOFError, OSError):
            self._stop = True
            return
        kind = message[0]
        if kind == "stop":
            self._stop = True
        elif kind == "table":
            self.resolver.set_table(message[1])
        elif kind == "services":
            self.resolver.set_services(message[1])
        elif kind == "ruleset":
            adopt = getattr(self.resolver.enforcer, "adopt", None)
            if adopt is not None:
                adopt(message[1])

    def _from_clients(self, sock: socket.socket, up: socket.socket) -> None:
        resolver = self.resolver
        for _ in range(64):
            try:
                data, peer = sock.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            now = time.time()
            refusal = resolver.refuse_wire(data, peer[0], now)
            if refusal is not None:
                try:
                    sock.sendto(refusal, peer)
                except OSError:
                    pass
                continue
            tail = data[2:]
            # Hot path: the same client asking the same question within a second gets the same
            # decision; the tables are cleared whenever the block table or services change.
            hit = resolver.decisions.get((peer[0], tail))
            if hit is not None and hit[0] > now:
                decision, negative = hit[1], hit[2]
                query = None
            else:
                query = dnswire.parse_query(data)
                if query is None:
                    continue  # never answer what we cannot read
                decision = resolver.decide(query, peer[0], now)
                negative = dnswire.build_negative(query)[2:] if decision.action == "nxdomain" \
                    else query.question
                if len(resolver.decisions) > CACHE_LIMIT:
                    resolver.decisions.clear()
                # A refusal holds until its block ends, a forward for a while: any change of
                # the block table or the services clears this cache.
                expiry = decision.until if decision.action == "nxdomain" else now + DECISION_CACHE
                resolver.decisions[(peer[0], tail)] = (min(expiry, now + DECISION_CACHE),
                                                       decision, negative)
            if decision.action == "nxdomain":
                resolver.count(decision)
                try:
                    sock.sendto(data[:2] + negative, peer)
                except OSError:
                    pass
                continue
            resolver.forwarded += 1
            cached = resolver.answers.get(tail)
            if cached is not None and cached[0] > now:
                try:
                    sock.sendto(data[:2] + cached[1], peer)
                except OSError:
                    pass
                continue
            self._forward(up, data, negative, sock, peer, decision.service)

    def _forward(self, up: socket.socket, data: bytes, question: bytes,
                 sock: socket.socket | None, peer: Any, service: str | None) -> None:
        new_id = self._new_id()
        if new_id is None:
            return
        self.pending[new_id] = (sock, peer, data[:2], question, service, time.monotonic(),
                                data[2:])
        try:
            up.send(dnswire.with_id(data, new_id))
        except OSError:
            self.pending.pop(new_id, None)

    def _learn_only(self, up: socket.socket, name: str, service: str | None) -> None:
        # Ask for both families ourselves: the client's own question may be only A or AAAA.
        for qtype in (dnswire.TYPE_A, dnswire.TYPE_AAAA):
            new_id = self._new_id()
            wire = dnswire.build_query(name, qtype, new_id or 0)
            if new_id is None or wire is None:
                return
            self.pending[new_id] = (None, None, b"", wire[12:], service, time.monotonic(), b"")
            try:
                up.send(wire)
            except OSError:
                self.pending.pop(new_id, None)

    def _from_upstream(self, up: socket.socket) -> None:
        resolver = self.resolver
        for _ in range(64):
            try:
                data = up.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(data) < 12:
                continue
            key = int.from_bytes(data[:2], "big")
            entry = self.pending.get(key)
            if entry is None:
                continue
            sock, peer, original_id, question, service, _, query_tail = entry
            # The answer must be for the question we asked (RFC 5452 §9.1), else keep waiting.
            if data[12:12 + len(question)] != question:
                continue
            del self.pending[key]
            if service is not None:
                resolver.learn_from(service, data)
            if sock is None:
                continue
            try:
                sock.sendto(original_id + data[2:], peer)
            except OSError:
                pass
            if data[3] & 0x0F in (dnswire.RCODE_NOERROR, dnswire.RCODE_NXDOMAIN):
                # A micro-cache: identical queries in the next second get this answer; TTLs
                # are then at most a second too long, as from any caching resolver.
                if len(resolver.answers) > CACHE_LIMIT:
                    resolver.answers.clear()
                resolver.answers[query_tail] = (time.time() + MICRO_CACHE, data[2:])

    def _sweep(self, mono: float) -> None:
        # Unanswered queries are dropped: the client retries, as with a lost packet.
        stale = [k for k, v in self.pending.items() if mono - v[5] > FORWARD_TIMEOUT]
        for key in stale:
            del self.pending[key]


def _worker_main(resolver: Resolver, sockets: list[socket.socket], upstream: tuple[str, int],
                 control: Any, parent: int = 0) -> None:
    if threading.current_thread() is threading.main_thread():
        # A forked worker ends with its parent (prctl(2) PR_SET_PDEATHSIG), even on SIGKILL.
        # The parent's own signal handlers came along with the fork: SIGTERM must kill the
        # worker (else an orphan keeps the port, and a restarted agent cannot bind it), and
        # Ctrl-C is the parent's to handle (it stops the workers through their channels).
        import ctypes
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)
        if parent and os.getppid() != parent:
            return  # the parent died before the prctl: nobody would end this worker
    try:
        UdpWorker(resolver, sockets, upstream, control).run()
    except KeyboardInterrupt:
        pass


ServicesSource = Mapping[str, Service] | Callable[[], Mapping[str, Service]]


class DnsResponder:
    """The responder's lifecycle: start() binds and serves, stop() ends every worker it started.

    `state_provider` is polled every `refresh_interval` s; `update()` takes a new state at once
    (call it right after `Enforcer.apply` at a bell). `counters()` gives refused queries per
    (segment, service). `workers > 1` forks SO_REUSEPORT processes: start it before threads that
    hold locks exist, as the agent does.
    """

    def __init__(self, listen: Iterable[tuple[str, int]] | tuple[str, int] = (("0.0.0.0", 53),),
                 upstream: tuple[str, int] = ("127.0.0.1", 53),
                 state_provider: Callable[[], BlockState | None] = lambda: None,
                 enforcer: Any = None,
                 services: ServicesSource | None = None,
                 workers: int = 1, doh: Iterable[str] | None = None,
                 refresh_interval: float = 0.2) -> None:
        if isinstance(listen, tuple) and listen and isinstance(listen[0], str):
            listen = [listen]  # type: ignore[list-item]
        self.listen = [(str(h), int(p)) for h, p in listen]  # type: ignore[misc]
        self.upstream = (upstream[0], int(upstream[1]))
        self.state_provider = state_provider
        self.enforcer = enforcer
        self._services = services if services is not None else {}
        self.workers = max(1, int(workers))
        self.refresh_interval = refresh_interval
        self.resolver = Resolver(self._current_services(), doh, enforcer)
        # The learning budget is the responder's: each forked worker gets its share.
        self.resolver.learning.rate = LEARN_RATE / self.workers
        self._channels: list[Any] = []
        self._procs: list[multiprocessing.Process] = []
        self._threads: list[threading.Thread] = []
        self._tcp: list[socket.socket] = []
        self._udp: list[socket.socket] = []
        self._stop = threading.Event()
        self._last: tuple[Any, Any, Any] = (None, None, None)
        self._worker_counts: dict[int, dict[tuple[int, str], int]] = {}
        self._tcp_counts: dict[tuple[int, str], int] = {}
        self._worker_forwarded: dict[int, int] = {}
        self._tcp_forwarded = 0
        self.bound: list[tuple[str, int]] = []

    def _current_services(self) -> Mapping[str, Service]:
        return self._services() if callable(self._services) else self._services

    def start(self) -> None:
        """Bind UDP and TCP on every listen address and start the workers."""
        reuse = self.workers > 1
        for host, port in self.listen:
            udp, tcp = _bind_udp_and_tcp(host, port, reuse)
            port = udp.getsockname()[1]
            self._udp.append(udp)
            tcp.listen(128)
            self._tcp.append(tcp)
            self.bound.append((host, port))
        self._push(force=True)
        ctx = multiprocessing.get_context("fork")
        for index in range(self.workers):
            parent, child = ctx.Pipe(duplex=True)
            self._channels.append(parent)
            if self.workers == 1:
                resolver = self.resolver
                t = threading.Thread(target=_worker_main, daemon=True, name="dns-udp",
                                     args=(resolver, self._udp, self.upstream, child))
                t.start()
                self._threads.append(t)
            else:
                # Each process binds its own socket to the port: the kernel spreads queries.
                socks = [self._udp[i] if index == 0 else _bind(h, p, socket.SOCK_DGRAM, True)
                         for i, (h, p) in enumerate(self.bound)]
                proc = ctx.Process(target=_worker_main, daemon=True, name=f"dns-udp-{index}",
                                   args=(self.resolver, socks, self.upstream, child,
                                         os.getpid()))
                proc.start()
                if index:
                    for s in socks:
                        s.close()
                child.close()
                self._procs.append(proc)
        for tcp in self._tcp:
            t = threading.Thread(target=self._serve_tcp, args=(tcp,), daemon=True, name="dns-tcp")
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._refresh_loop, daemon=True, name="dns-refresh")
        t.start()
        self._threads.append(t)
        log.info("DNS responder on %s, upstream %s:%d, %d workers",
                 ", ".join(f"{h}:{p}" for h, p in self.bound), *self.upstream, self.workers)

    def update(self) -> None:
        """Take the current block state (and services, ruleset) now instead of at the next poll."""
        self._push(force=False)

    def _push(self, force: bool) -> None:
        state = self.state_provider()
        services = self._current_services()
        ruleset = getattr(self.enforcer, "ruleset", None)
        last_state, last_services, last_ruleset = self._last
        messages = []
        if force or state != last_state:
            table = BlockTable.from_state(state)
            self.resolver.set_table(table)
            messages.append(("table", table))
        if force or (services is not last_services and services != last_services):
            self.resolver.set_services(services)
            messages.append(("services", dict(services)))
        if self.workers > 1 and ruleset is not None and ruleset is not last_ruleset:
            messages.append(("ruleset", ruleset))
        self._last = (state, services, ruleset)
        if self.workers == 1:
            return  # the thread shares self.resolver
        for channel in self._channels:
            for message in messages:
                try:
                    channel.send(message)
                except (OSError, ValueError):
                    pass

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_interval):
            try:
                self._push(force=False)
            except Exception as err:  # keep serving with the last table
                log.warning("DNS responder could not refresh its block table: %s", err)
            for index, channel in enumerate(self._channels):
                try:
                    while channel.poll():
                        message = channel.recv()
                        if message[0] == "counts":
                            self._worker_counts[index] = message[1]
                            self._worker_forwarded[index] = message[2]
                except (OSError, EOFError):
                    continue

    def counters(self) -> dict[tuple[int, str], dict[str, int]]:
        """NXDOMAIN answers per (segment id, service id), cumulative since start()."""
        totals: dict[tuple[int, str], int] = {}
        sources = list(self._worker_counts.values())
        if self.workers == 1:
            sources = [dict(self.resolver.counts)]
        sources.append(dict(self._tcp_counts))
        for counts in sources:
            for key, value in counts.items():
                totals[key] = totals.get(key, 0) + value
        return {key: {"dns_refused": value} for key, value in sorted(totals.items())}

    def decisions(self) -> dict[str, int]:
        """Queries answered since start() by decision (refused, forwarded): totals only."""
        forwarded = self.resolver.forwarded if self.workers == 1 else \
            sum(self._worker_forwarded.values())
        refused = sum(kinds["dns_refused"] for kinds in self.counters().values())
        return {"refused": refused, "forwarded": forwarded + self._tcp_forwarded}

    def _serve_tcp(self, listener: socket.socket) -> None:
        listener.settimeout(0.5)
        while not self._stop.is_set():
            try:
                conn, peer = listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            threading.Thread(target=self._tcp_client, args=(conn, peer), daemon=True).start()

    def _tcp_client(self, conn: socket.socket, peer: Any) -> None:
        conn.settimeout(10)
        with conn:
            while not self._stop.is_set():
                data = _recv_framed(conn)
                if data is None:
                    return
                query = dnswire.parse_query(data)
                if query is None:
                    return  # RFC 7766 §6.2.1 lets a server close on garbage
                # Learning is the UDP workers' (TCP carries few refused names).
                decision = self.resolver.decide(query, peer[0], time.time(), learn=False)
                if decision.action == "nxdomain":
                    if decision.segment is not None and decision.service is not None:
                        key = (decision.segment, decision.service)
                        # Replaced, not mutated: counters() may be reading it in another thread.
                        counts = dict(self._tcp_counts)
                        counts[key] = counts.get(key, 0) + 1
                        self._tcp_counts = counts
                    answer = dnswire.build_negative(query)
                else:
                    self._tcp_forwarded += 1
                    answer = self._forward_tcp(data, query)
                    if answer is None:
                        return
                    self.resolver.learn_from(decision.service, answer)
                try:
                    conn.sendall(len(answer).to_bytes(2, "big") + answer)
                except OSError:
                    return

    def _forward_tcp(self, data: bytes, query: dnswire.Query) -> bytes | None:
        family = socket.AF_INET6 if ":" in self.upstream[0] else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as up:
                up.settimeout(FORWARD_TIMEOUT)
                up.connect(self.upstream)
                up.sendall(len(data).to_bytes(2, "big") + data)
                answer = _recv_framed(up)
        except OSError:
            return None
        if answer is None or answer[:2] != data[:2] or answer[12:12 + len(query.question)] != \
                query.question:
            return None
        return answer

    def stop(self) -> None:
        """Stop every worker this responder started (by its own handles) and close the sockets."""
        self._stop.set()
        for channel in self._channels:
            try:
                channel.send(("stop",))
            except (OSError, ValueError):
                pass
        for proc in self._procs:
            proc.join(2)
            if proc.is_alive():
                proc.terminate()
                proc.join(2)
        for t in self._threads:
            t.join(2)
        for sock in self._udp + self._tcp:
            sock.close()
        for channel in self._channels:
            channel.close()
        self._procs.clear()
        self._threads.clear()
        self._channels.clear()
        self._udp.clear()
        self._tcp.clear()


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        try:
            chunk = conn.recv(size - len(data))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return data


def _recv_framed(conn: socket.socket) -> bytes | None:
    """One DNS message over TCP: two bytes of length, then the message (RFC 1035 §4.2.2)."""
    head = _recv_exact(conn, 2)
    if head is None:
        return None
    size = int.from_bytes(head, "big")
    return _recv_exact(conn, size) if size else None
