"""The agent's counters in the Prometheus text format, on a loopback port (default
127.0.0.1:9464, `lesfocus-agent run --metrics ADDR:PORT`, `off` for none).

Read at scrape time from what the running parts already know: the policy in force (its version,
age and expiry), what is blocked now (segments per service), the DNS responder's decisions, the
addresses in the enforcer's sets, the observers' packets and the frames the kernel dropped.
Applying a block state is timed by a thin wrapper round the enforcer (`TimedEnforcer`).

Privacy (SPEC §6): every value is a total; labels are service ids of the catalog, decisions and
the policy version, never a client address, a segment's network or a visited name.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .errors import ConfigError

log = logging.getLogger("lesfocus.agent.metrics")

DEFAULT_LISTEN = "127.0.0.1:9464"
APPLY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
FAMILIES = ("lesfocus_agent_policy_info", "lesfocus_agent_policy_age_seconds",
            "lesfocus_agent_policy_expires_in_seconds", "lesfocus_agent_blocks_active",
            "lesfocus_agent_segments_in_lesson", "lesfocus_agent_dns_queries",
            "lesfocus_agent_learned_addresses", "lesfocus_agent_observer_packets",
            "lesfocus_agent_observer_dropped_packets", "lesfocus_agent_observer_refused_flows",
            "lesfocus_agent_last_contact_timestamp_seconds",
            "lesfocus_agent_apply_duration_seconds", "lesfocus_agent_apply_failures")


def metric_families() -> list[str]:
    """Every metric family the agent exports (docs/grafana-dashboard.json uses them)."""
    return list(FAMILIES)


def parse_listen(value: str) -> tuple[str, int] | None:
    """`ADDR:PORT` (`[::1]:PORT` for IPv6) on a loopback address, or None for `off`."""
    if value.strip().lower() in ("off", "none", ""):
        return None
    host, _, port = value.strip().rpartition(":")
    host = host.strip("[]")
    try:
        address = ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise ConfigError(f"--metrics {value!r}: write ADDR:PORT (such as {DEFAULT_LISTEN}) "
                          "or off") from None
    if not address.is_loopback:
        raise ConfigError(f"--metrics {value!r}: the counters are served on loopback only "
                          "(127.0.0.1 or ::1); a scraper on the gateway or an SSH tunnel reads "
                          "them from elsewhere")
    if not 0 <= number < 65536:
        raise ConfigError(f"--metrics {value!r}: {number} is not a port number")
    return str(address), number


class TimedEnforcer:
    """The enforcer, with each `apply` timed (and its failures counted) for the metrics."""

    def __init__(self, inner: Any, duration: Histogram, failures: Counter) -> None:
        self._inner = inner
        self._duration = duration
        self._failures = failures

    def apply(self, state: Any) -> None:
        """Apply through the enforcer and observe how long it took."""
        started = time.perf_counter()
        try:
            self._inner.apply(state)
        except BaseException:
            self._failures.inc()
            raise
        self._duration.observe(time.perf_counter() - started)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class AgentCollector:
    """Reads the running agent's parts at scrape time."""

    def __init__(self, agent: Callable[[], Any], enforcer: Any, parts: Iterable[Any],
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.agent = agent
        self.enforcer = enforcer
        self.parts = list(parts)
        self.clock = clock

    def collect(self) -> Iterator[Any]:
        """The agent's gauges and counters (each read failure is logged, the rest still shown)."""
        agent = self.agent()
        now = self.clock()
        policy = getattr(agent, "policy", None)
        info = GaugeMetricFamily("lesfocus_agent_policy_info",
                                 "The policy in force (1), by version", labels=["version"])
        age = GaugeMetricFamily("lesfocus_agent_policy_age_seconds",
                                "Seconds since the policy in force was issued")
        expires = GaugeMetricFamily("lesfocus_agent_policy_expires_in_seconds",
                                    "Seconds until the policy in force expires (negative: expired)")
        if policy is not None:
            info.add_metric([policy.version], 1)
            age.add_metric([], (now - policy.issued_at).total_seconds())
            expires.add_metric([], (policy.expires_at - now).total_seconds())
        yield from (info, age, expires)

        blocks = GaugeMetricFamily("lesfocus_agent_blocks_active",
                                   "Segments in which the service is blocked now",
                                   labels=["service"])
        lessons = GaugeMetricFamily("lesfocus_agent_segments_in_lesson",
                                    "Segments with a block in force now")
        state = getattr(agent, "state", None)
        if state is not None and policy is not None:
            per_service = dict.fromkeys(policy.services, 0)
            busy = 0
            for segment in state.segments:
                live = [s for s, until in segment.blocked.items() if until > now]
                busy += bool(live)
                for service in live:
                    per_service[service] = per_service.get(service, 0) + 1
            for service, count in sorted(per_service.items()):
                blocks.add_metric([service], count)
            lessons.add_metric([], busy)
        yield from (blocks, lessons)

        contact = GaugeMetricFamily("lesfocus_agent_last_contact_timestamp_seconds",
                                    "When the server last answered (epoch seconds)")
        last = getattr(getattr(agent, "source", None), "last_contact", None)
        if last is not None:
            contact.add_metric([], float(last))
        yield contact

        dns = CounterMetricFamily("lesfocus_agent_dns_queries",
                                  "DNS queries the responder answered, by decision",
                                  labels=["decision"])
        packets = CounterMetricFamily("lesfocus_agent_observer_packets",
                                      "Packets the observers read")
        drops = CounterMetricFamily("lesfocus_agent_observer_dropped_packets",
                                    "Frames the kernel dropped before the observers read them")
        refused = CounterMetricFamily("lesfocus_agent_observer_refused_flows",
                                      "TLS flows refused because their first flight was unreadable")
        totals = {"packets": 0, "drops": 0, "refused": 0}
        decisions: dict[str, int] = {}
        for part in self.parts:
            try:
                if hasattr(part, "decisions"):
                    for decision, count in part.decisions().items():
                        decisions[decision] = decisions.get(decision, 0) + count
                if hasattr(part, "kernel_drops"):
                    totals["drops"] += part.kernel_drops()
                    totals["packets"] += part.stats.get("packets", 0)
                    totals["refused"] += part.stats.get("refused", 0)
            except (OSError, ValueError, RuntimeError, KeyError) as err:
                log.warning("metrics: %s not read: %s", type(part).__name__, err)
        for decision in ("refused", "forwarded"):
            dns.add_metric([decision], decisions.get(decision, 0))
        packets.add_metric([], totals["packets"])
        drops.add_metric([], totals["drops"])
        refused.add_metric([], totals["refused"])
        yield from (dns, packets, drops, refused)

        learned = GaugeMetricFamily("lesfocus_agent_learned_addresses",
                                    "Addresses in the enforcer's service sets now")
        reader = getattr(self.enforcer, "addresses_of", None)
        if reader is not None and policy is not None:
            try:
                learned.add_metric([], len(reader(sorted(policy.services))))
            except (OSError, ValueError, RuntimeError) as err:
                log.warning("metrics: the learned addresses were not read: %s", err)
        yield learned


class AgentMetrics:
    """The agent's registry: the collector, the apply timing, and the loopback HTTP server."""

    def __init__(self, agent: Callable[[], Any], enforcer: Any, parts: Iterable[Any],
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.registry = CollectorRegistry()
        self.apply_seconds = Histogram("lesfocus_agent_apply_duration_seconds",
                                       "Time to apply a block state to the kernel",
                                       buckets=APPLY_BUCKETS, registry=self.registry)
        self.apply_failures = Counter("lesfocus_agent_apply_failures",
                                      "Block states the enforcer failed to apply",
                                      registry=self.registry)
        collector = AgentCollector(agent, enforcer, parts, clock)
        self.registry.register(collector)  # type: ignore[arg-type]
        self._server: Any = None
        self.address: tuple[str, int] | None = None

    def timed(self, enforcer: Any) -> TimedEnforcer:
        """The enforcer the agent's loop should use: applies are timed."""
        return TimedEnforcer(enforcer, self.apply_seconds, self.apply_failures)

    def serve(self, listen: tuple[str, int]) -> tuple[str, int] | None:
        """Serve the counters on `listen` (port 0: any free one); returns the bound address.

        A port that is taken is logged and the agent runs on without counters: blocking
        matters more than being watched.
        """
        try:
            server, _thread = start_http_server(listen[1], addr=listen[0], registry=self.registry)
        except OSError as err:
            log.error("metrics not served: cannot listen on %s:%d (%s); choose another port "
                      "with --metrics ADDR:PORT", listen[0], listen[1], err.strerror)
            return None
        self._server = server
        self.address = server.server_address[:2]
        log.info("metrics on http://%s:%d/metrics", *self.address)
        return self.address

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
