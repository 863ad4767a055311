"""The agent's configuration: the command line's choices, checked once, as one frozen value."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

DEFAULT_STATE_DIR = Path("/var/lib/lesfocus-agent")
BACKENDS = ("nftables", "dry-run")
RESOLV_CONF = Path("/etc/resolv.conf")
# DNS responder workers (SO_REUSEPORT processes; 1 is a thread of the agent), chosen by
# measurement (tests/bench/bench_dns.py, docs/agent.md).
DNS_WORKERS = 2


@dataclass(frozen=True)
class AgentConfig:
    """What `lesfocus-agent run` was told: where its state lives and what it may touch."""

    state_dir: Path = DEFAULT_STATE_DIR
    backend: str = "nftables"
    lan_interfaces: tuple[str, ...] = ()
    upstream_dns: str = ""
    dns_port: int = 5353  # where the DNS responder listens; nftables redirects port 53 there
    poll_wait: int = 55  # seconds a policy long poll may wait on the server (SPEC: <= 60)
    max_backoff: float = 60.0  # longest pause between retries while the server is unreachable
    heartbeat_interval: float = 60.0
    # Where the Prometheus counters are served (agent/metrics.py); None: not served.
    metrics_listen: tuple[str, int] | None = ("127.0.0.1", 9464)

    dns_workers: int = DNS_WORKERS


def default_state_dir() -> Path:
    """`LESFOCUS_AGENT_STATE_DIR` when set, else /var/lib/lesfocus-agent."""
    value = os.environ.get("LESFOCUS_AGENT_STATE_DIR")
    return Path(value) if value else DEFAULT_STATE_DIR


def system_resolver(resolv_conf: Path = RESOLV_CONF) -> str:
    """The first usable `nameserver` of resolv.conf(5); ConfigError when there is none."""
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError as err:
        raise ConfigError(f"cannot read {resolv_conf} for the upstream resolver: {err}; "
                          "pass --upstream-dns ADDR") from None
    for number, line in enumerate(lines, 1):
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                address = ipaddress.ip_address(words[1])  # keeps an IPv6 zone (fe80::1%eth0)
            except ValueError:
                continue
            if address.is_loopback:
                # A local stub (systemd-resolved, dnsmasq) would see the agent's own redirect.
                continue
            return str(address)
    raise ConfigError(f"{resolv_conf} names no usable nameserver (loopback stubs are skipped); "
                      "pass --upstream-dns ADDR")


def parse_upstream(value: str) -> str:
    """Check an upstream resolver address (`ADDR` or `ADDR#PORT`); ConfigError names the value."""
    address, _, port = value.partition("#")
    try:
        ipaddress.ip_address(address)
        if port and not 0 < int(port) < 65536:
            raise ValueError(port)
    except ValueError:
        raise ConfigError(
            f"--upstream-dns {value!r}: not an IP address (optionally #PORT)") from None
    return value


def make_config(state_dir: Path, backend: str, lan: list[str], upstream_dns: str | None,
                dns_port: int = 5353, poll_wait: int = 55,
                max_backoff: float = 60.0, metrics: str = "127.0.0.1:9464") -> AgentConfig:
    """Check the command line's values and build the configuration."""
    if not 0 < dns_port < 65536:
        raise ConfigError(f"--dns-port {dns_port}: not a port number")
    if not 1 <= poll_wait <= 60:
        raise ConfigError(f"--poll-wait {poll_wait}: choose 1 to 60 seconds")
    if not 0.1 <= max_backoff <= 3600:
        raise ConfigError(f"--max-backoff {max_backoff}: choose 0.1 to 3600 seconds")
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    for name in lan:
        if not name or len(name) > 15 or "/" in name or name.strip() != name:
            raise ConfigError(f"--lan {name!r}: not an interface name")
    upstream = parse_upstream(upstream_dns) if upstream_dns else system_resolver()
    from .metrics import parse_listen
    metrics_listen = parse_listen(metrics)
    return AgentConfig(state_dir=state_dir, backend=backend, lan_interfaces=tuple(lan),
                       upstream_dns=upstream, dns_port=dns_port, poll_wait=poll_wait,
                       max_backoff=max_backoff, metrics_listen=metrics_listen)
