"""Which segment a client address is in, and what is blocked for it until when.

One table from a BlockState, shared by the DNS responder (its answers) and the observers (whether
a flow's client is in a lesson). Longest prefix wins; an IPv4-mapped IPv6 address counts as its
IPv4 address.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field

from .state import BlockState

__all__ = ["BlockTable"]


@dataclass
class BlockTable:
    """Which services are blocked for a client address, and until when (epoch seconds)."""

    v4: list[tuple[int, int, int, dict[str, float]]] = field(default_factory=list)
    v6: list[tuple[int, int, int, dict[str, float]]] = field(default_factory=list)

    @classmethod
    def from_state(cls, state: BlockState | None) -> "BlockTable":
        """The table for a BlockState (None: nothing blocked)."""
        table = cls()
        if state is None:
            return table
        for seg in state.segments:
            if not seg.blocked:
                continue
            until = {sid: end.timestamp() for sid, end in seg.blocked.items()}
            for cidr in seg.cidrs:
                net = ipaddress.ip_network(cidr, strict=False)
                row = (int(net.network_address), int(net.netmask), seg.segment_id, until)
                (table.v6 if net.version == 6 else table.v4).append(row)
        # Longest prefix first, so the most specific segment wins.
        table.v4.sort(key=lambda r: -r[1])
        table.v6.sort(key=lambda r: -r[1])
        return table

    def lookup(self, address: str) -> tuple[int, dict[str, float]] | None:
        """(segment id, service -> until) for a client address, or None when it has no block."""
        try:
            if ":" in address:
                if address.startswith("::ffff:") and "." in address:
                    return self.lookup(address[7:])
                value = int.from_bytes(socket.inet_pton(socket.AF_INET6, address.split("%")[0]),
                                       "big")
                rows = self.v6
            else:
                value = int.from_bytes(socket.inet_aton(address), "big")
                rows = self.v4
        except OSError:
            return None
        for network, mask, segment_id, until in rows:
            if value & mask == network:
                return segment_id, until
        return None
