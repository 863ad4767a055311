"""The composition root: policy source -> schedule -> enforcer, DNS responder, observers; reporter.

One loop owns the enforcer: it sleeps until the schedule's next change or a new policy, whichever
comes first, then applies what the schedule says for `now`. Logs say what changed and why, never
which client did what (the loop never sees a client).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

from lesfocus_policy import blocked_at

from .errors import EnforcerError
from .policy_source import PolicySource, atomic_write
from .state import BlockState, Policy

log = logging.getLogger("lesfocus.agent")

STATUS_FILE = "status.json"
# Re-read the wall clock (NTP steps, suspend) and renew the DNS redirect's lease this often;
# well below the lease (enforcers/nftables.py REDIRECT_LEASE_SECONDS).
MAX_SLEEP = 5.0
RETRY_SECONDS = 2.0


class Enforcer(Protocol):
    """What the loop needs of a backend (agent/enforcers/)."""

    def start(self, policy: Policy) -> None: ...
    def apply(self, state: BlockState) -> None: ...
    def stop(self) -> None: ...


class Part(Protocol):
    """A helper with a lifecycle that follows the block state (DNS responder, observers)."""

    def start(self) -> None: ...
    def stop(self) -> None: ...


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _z(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe_changes(before: BlockState | None, after: BlockState, why: str) -> list[str]:
    """Log lines for what differs between two block states, per segment and service (no clients)."""
    old = {s.segment_id: s.blocked for s in before.segments} if before else {}
    lines = []
    for segment in after.segments:
        was, now = old.get(segment.segment_id, {}), segment.blocked
        started = sorted(set(now) - set(was))
        ended = sorted(set(was) - set(now))
        extended = sorted(s for s in set(now) & set(was) if now[s] != was[s])
        label = f"segment {segment.segment_id} ({segment.name})"
        if started:
            lines.append(f"{label}: blocking {', '.join(started)} until "
                         f"{', '.join(sorted({_z(now[s]) or '' for s in started}))} ({why})")
        if ended:
            lines.append(f"{label}: unblocked {', '.join(ended)} ({why})")
        if extended:
            lines.append(f"{label}: block of {', '.join(extended)} now ends "
                         f"{', '.join(sorted({_z(now[s]) or '' for s in extended}))} ({why})")
    return lines


def _shape(policy: Policy) -> tuple[Any, ...]:
    """What the enforcer's table is built from: services with domains, segments with networks."""
    return (sorted((s.id, s.domains) for s in policy.services.values()),
            [(s.id, s.cidrs) for s in policy.segments])


def _same(a: BlockState | None, b: BlockState) -> bool:
    if a is None:
        return False
    return [(s.segment_id, s.cidrs, s.blocked) for s in a.segments] == \
        [(s.segment_id, s.cidrs, s.blocked) for s in b.segments]


@dataclass
class AgentStatus:
    """What `lesfocus-agent status` shows of a running agent (nothing about clients)."""

    pid: int
    backend: str
    started_at: str
    policy_version: str | None = None
    applied_at: str | None = None
    next_change: str | None = None
    last_contact: str | None = None
    last_error: str | None = None
    written_at: str | None = None  # by the agent's clock: `status` tells a stopped agent by it


class Agent:
    """Runs the parts: reloads the last policy, follows the schedule, applies policy updates."""

    def __init__(self, source: PolicySource, enforcer: Enforcer, *, backend: str,
                 state_dir: Path, parts: Iterable[Any] = (),
                 background: Iterable[Callable[[threading.Event], None]] = (),
                 clock: Callable[[], datetime] = _utcnow,
                 on_install: Iterable[Callable[[], None]] = ()) -> None:
        self.source = source
        self.enforcer = enforcer
        self.parts = list(parts)
        self.background = list(background)
        self.on_install = list(on_install)
        self.clock = clock
        self.state_dir = state_dir
        self.policy: Policy | None = None
        self.state: BlockState | None = None
        self.stop_event = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._incoming: Policy | None = None
        self._force = False
        self._first = False
        self._announce = False
        self._threads: list[threading.Thread] = []
        self.status = AgentStatus(pid=os.getpid(), backend=backend, started_at=_z(clock()) or "")

    # -- events from other threads ----------------------------------------------------------
    def policy_arrived(self, policy: Policy) -> None:
        """Called by the policy source's thread: hand the new policy to the loop and wake it."""
        with self._lock:
            self._incoming = policy
        log.info("policy %s accepted (issued %s, valid until %s)", policy.version,
                 _z(policy.issued_at), _z(policy.expires_at))
        self._wake.set()

    # -- the loop ---------------------------------------------------------------------------
    def _install(self, policy: Policy, why: str) -> None:
        # Only a policy with other services or segments needs the table rebuilt (one transaction,
        # no gap); a grant or a timetable change only moves blocks, and a rebuild would forget
        # the addresses learned so far.
        if self.policy is None or _shape(self.policy) != _shape(policy):
            self.enforcer.start(policy)
        for part in self.parts:
            update = getattr(part, "set_policy", None)
            if update is not None:
                update(policy)
        self.policy = policy
        self._force = True  # apply even an unchanged state: a rebuilt table starts empty
        log.info("enforcing policy %s (%s)", policy.version, why)
        self._announce = True

    def step(self) -> datetime | None:
        """Apply what is due now; returns the next instant the schedule changes."""
        with self._lock:
            incoming, self._incoming = self._incoming, None
        why = "schedule"
        if incoming is not None and (self.policy is None
                                     or incoming.version != self.policy.version):
            self._install(incoming, "policy update")
            why = f"policy {incoming.version}"
        if self.policy is None:
            return None
        now = self.clock()
        state = blocked_at(self.policy, now)
        if self._force or not _same(self.state, state):
            self._force = False
            before, self._first = (None if self._first else self.state), False
            for line in describe_changes(before, state, why):
                log.info("%s", line)
            previous, self.state = self.state, state
            # The responder learns the new state before the kernel redirects anyone to it.
            for part in self.parts:
                if hasattr(part, "apply"):
                    part.apply(state)
                elif hasattr(part, "update"):
                    part.update()  # the DNS responder reads the state through its provider
            started = time.perf_counter()
            try:
                self.enforcer.apply(state)
            except (EnforcerError, OSError, RuntimeError) as err:
                # Keep the old kernel state (its timeouts still end each block) and retry soon.
                log.error("applying the block state failed: %s; retrying in %.0f s", err,
                          RETRY_SECONDS)
                self.state, self._force = previous, True
                return now + timedelta(seconds=RETRY_SECONDS)
            self.status.applied_at = _z(now)
            if incoming is not None:
                log.info("policy %s: verified in %.0f ms, applied in %.0f ms", self.policy.version,
                         self.source.last_verify_seconds * 1000,
                         (time.perf_counter() - started) * 1000)
        if self._announce:
            # After the apply: the heartbeat reads the enforcer's counters under its lock, and a
            # grant must not wait for that.
            self._announce = False
            for hook in self.on_install:
                hook()
        self.status.policy_version = self.policy.version
        self.status.next_change = _z(state.next_change)
        return state.next_change

    def write_status(self) -> None:
        """Write status.json for `lesfocus-agent status` (atomic; no client data)."""
        self.status.last_contact = (None if self.source.last_contact is None else
                                    _z(datetime.fromtimestamp(self.source.last_contact,
                                                              timezone.utc)))
        self.status.last_error = self.source.last_error
        self.status.written_at = _z(self.clock())
        try:
            atomic_write(self.state_dir / STATUS_FILE,
                         json.dumps(self.status.__dict__, indent=2).encode(), mode=0o644)
        except OSError as err:
            log.warning("status file not written: %s", err)

    def start(self) -> None:
        """Reload the stored policy, start the parts, rebuild the table, start the threads.

        Order matters on a restart: the old table keeps blocking until the rebuild, so the DNS
        responder first learns the state (it answers redirected queries as soon as it is bound),
        then the table is rebuilt and the state applied back to back, then the observers start.
        """
        stored = self.source.load_stored()
        if stored is not None:
            self.state = blocked_at(stored, self.clock())  # for the responder's first answers
        else:
            log.info("no valid stored policy: nothing is blocked until the server sends one")
        observers = [p for p in self.parts if hasattr(p, "on_packet")]
        for part in self.parts:
            if part not in observers and hasattr(part, "start"):
                self._start_part(part)
        if stored is not None:
            self.policy = None  # forces the rebuild: the table of a previous run is replaced
            self._install(stored, f"reloaded from {self.source.store.path}")
            self._first = True
            self.step()
        for part in observers:
            self._start_part(part)
        workers = [lambda stop: self.source.run(self.policy_arrived, stop), *self.background]
        for n, target in enumerate(workers):
            thread = threading.Thread(target=target, args=(self.stop_event,), daemon=True,
                                      name=f"lesfocus-agent-{n}")
            thread.start()
            self._threads.append(thread)

    @staticmethod
    def _start_part(part: Any) -> None:
        try:
            part.start()
        except OSError as err:  # a port taken, an interface missing, a capability not granted
            raise EnforcerError(f"{type(part).__name__} could not start: {err}") from None

    def run(self) -> None:
        """Follow the schedule until `stop()`; sleeps until the next change or a policy update."""
        while not self.stop_event.is_set():
            next_change = self.step()
            self._keep_alive()
            # Iterations happen only at boundaries, on policy updates or every MAX_SLEEP: cheap.
            self.write_status()
            timeout = MAX_SLEEP
            if next_change is not None:
                timeout = min(MAX_SLEEP, max(0.0, (next_change - self.clock()).total_seconds()))
            self._wake.wait(timeout)
            self._wake.clear()

    def _keep_alive(self) -> None:
        renew = getattr(self.enforcer, "keep_alive", None)
        if renew is None or self.policy is None:
            return
        try:
            renew()
        except (EnforcerError, OSError) as err:
            log.error("renewing the DNS redirect failed: %s", err)

    def request_stop(self) -> None:
        """Ask the loop to end (safe from a signal handler: it only sets events)."""
        self.stop_event.set()
        self._wake.set()

    def stop(self, flush: bool = False) -> None:
        """End the loop and the parts; the kernel table stays (its timeouts end each block)
        unless `flush`, so a restart rebuilds it in one transaction without a gap."""
        self.stop_event.set()
        self._wake.set()
        for hook in self.on_install:
            hook()  # wakes the reporter so it sees the stop
        for part in reversed(self.parts):
            stopper = getattr(part, "stop", None)
            if stopper is not None:
                try:
                    stopper()
                except OSError as err:
                    log.warning("stopping %s: %s", type(part).__name__, err)
        if flush:
            self.enforcer.stop()
        for thread in self._threads:
            thread.join(2)


def build_parts(config: Any, state: Callable[[], BlockState | None],
                services: Callable[[], dict[str, Any]]) -> tuple[Any, list[Any]]:
    """The enforcer for `config.backend`, and the DNS responder and observers that feed it.

    `state` and `services` read what the loop last applied. The dry-run backend logs its
    transactions and runs neither the responder nor the observers: nothing is redirected to them,
    and IT watching first wants the gateway untouched.
    """
    from .errors import EnforcerError

    if config.backend == "dry-run":
        from .enforcers.dry_run import DryRunEnforcer
        return DryRunEnforcer(lan_interfaces=config.lan_interfaces, dns_port=config.dns_port), []
    try:
        from .enforcers.libnftables import NftablesUnavailable
        from .enforcers.nftables import NftablesEnforcer
    except ImportError as err:
        raise EnforcerError(f"the nftables backend cannot be loaded: {err}") from None
    try:
        enforcer = NftablesEnforcer(lan_interfaces=config.lan_interfaces, dns_port=config.dns_port)
    except (NftablesUnavailable, OSError) as err:
        raise EnforcerError(f"nftables: {err}") from None
    parts: list[Any] = []
    try:
        from .dns_responder import DnsResponder
    except ImportError as err:
        log.warning("no DNS responder in this build (%s): address sets and observers only", err)
    else:
        host, _, port = config.upstream_dns.partition("#")
        # nftables redirects to the address of the interface the query came in on, so listen on
        # every address of the gateway (IPv4 and IPv6 sockets apart).
        listen = [("0.0.0.0", config.dns_port)]
        if os.path.exists("/proc/net/if_inet6"):  # IPv6 may be disabled on the gateway
            listen.append(("::", config.dns_port))
        parts.append(DnsResponder(listen=listen,
                                  upstream=(host, int(port or 53)), state_provider=state,
                                  enforcer=enforcer, services=services,
                                  workers=config.dns_workers))
    if config.lan_interfaces:
        try:
            from .observers.capture import Observer
        except ImportError as err:
            log.warning("no observers in this build (%s): --lan %s is not watched", err,
                        " ".join(config.lan_interfaces))
        else:
            # scapy maps a capture socket's link type to a layer only for layers already
            # imported; without Ether loaded, captured frames arrive as Raw and nothing is seen
            # ("Unable to guess type (interface=lan1 ...)").
            import scapy.layers.l2  # noqa: F401
            parts.append(Observer(config.lan_interfaces, enforcer, services, state))
    return enforcer, parts
