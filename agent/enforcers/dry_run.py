"""The dry-run enforcer: builds and logs exactly the nftables transactions, applies nothing.

For gateways where IT wants to watch what the agent would do before it enforces anything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime

from .nftables import DEFAULT_TABLE, NftablesEnforcer

log = logging.getLogger(__name__)


class DryRunEnforcer(NftablesEnforcer):
    """An NftablesEnforcer whose batches go to a log function instead of the kernel."""

    def __init__(self, log_batch: Callable[[str], None] | None = None, table: str = DEFAULT_TABLE,
                 lan_interfaces: Iterable[str] = (), dns_port: int = 5353,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.batches: list[str] = []
        self._log_batch = log_batch or (lambda batch: log.info("dry-run nft batch:\n%s", batch))
        super().__init__(table=table, lan_interfaces=lan_interfaces, dns_port=dns_port,
                         runner=self._record, clock=clock)

    def keep_alive(self) -> None:
        """Nothing to renew: a dry run never redirects DNS (and a renewal every few seconds would
        drown the transactions IT wants to read)."""

    def _record(self, batch: str) -> None:
        # Keep only the last few batches in memory: learn() may run thousands of times a day.
        self.batches.append(batch)
        del self.batches[:-100]
        self._log_batch(batch)
