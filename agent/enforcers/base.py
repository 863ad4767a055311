"""The interface every enforcer backend offers the agent's control plane.

Lifecycle: `start(policy)` once per policy (rebuilds the agent's whole table in one transaction),
`apply(state)` at every boundary of the schedule (and when the policy changes), `learn(...)`
whenever an address of a service is seen (DNS responder, observers), `counters()` for the
heartbeat, `stop()` at shutdown. Every method may be called from several threads; backends
serialize.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from ..state import BlockState, Policy

# Key of counters(): (segment id, service id); values are cumulative since start().
CounterKey = tuple[int, str]


@runtime_checkable
class Enforcer(Protocol):
    """Turns the policy and what is blocked now into kernel state (or a log of it)."""

    def start(self, policy: Policy) -> None:
        """Rebuild the whole table for the policy's services atomically (one batch); sets empty."""

    def apply(self, state: BlockState) -> None:
        """Make the blocked-source sets equal to `state`; each element expires at its block's end.

        Connections of services that became blocked since the previous `apply` are cut (see
        `cut_flows`), so a block starting at the bell also ends flows opened in the break.
        """

    def learn(self, service_id: str, addresses: Iterable[str], ttl: int) -> None:
        """Add addresses (IPv4 or IPv6 text) of a service to its address sets for about `ttl` s.

        `service_id` may also be `agent.domains.DOH` for DNS-over-HTTPS servers. Unknown ids and
        malformed addresses are ignored (they come from the network).
        """

    def cut_flows(self, segment_cidrs: Iterable[str], service_addresses: Iterable[str]) -> int:
        """End open connections from the segments to the addresses; returns how many were found."""

    def counters(self) -> dict[CounterKey, dict[str, int]]:
        """Aggregates per (segment id, service id): {"rejected_packets": n, ...}; no addresses."""

    def stop(self) -> None:
        """Remove the agent's kernel state (the table) and release resources."""
