"""How many refused names the DNS responder resolves for learning: bounded per client, per
queue and per second, so random subdomains of a blocked domain cannot multiply the gateway's
upstream traffic (docs/agent.md, "DNS speed and learning without amplification").
"""

from __future__ import annotations

# Entries of the per-client table before it is emptied (as the responder's other caches).
CLIENT_LIMIT = 65536
# Learning the addresses of refused names is bounded, so random subdomains of a blocked domain
# cannot multiply the gateway's upstream traffic: a client gets a name learned at most this often
# (a bucket of LEARN_CLIENT_BURST names refilled at LEARN_CLIENT_RATE per second), at most
# LEARN_QUEUE names wait, and the whole responder resolves at most LEARN_RATE names per second
# (two upstream queries each, A and AAAA), spread over its workers. The rest is not learned:
# the client got NXDOMAIN anyway, and the observers still learn from what it connects to.
LEARN_CLIENT_RATE = 0.5
LEARN_CLIENT_BURST = 4.0
LEARN_QUEUE = 256
LEARN_RATE = 20.0


class LearnQueue:
    """Refused names waiting to be resolved for learning, within the bounds above.

    `offer` takes a name when its client has a token left and the queue has room; `take` hands
    out at most `rate` names per second (a bucket of one second's worth). Counts what it turned
    away (`refused`), never which client or name.
    """

    def __init__(self, rate: float = LEARN_RATE) -> None:
        self.rate = rate
        self.waiting: dict[str, str | None] = {}  # name -> service, oldest first
        self._clients: dict[str, tuple[float, float]] = {}  # client -> (tokens, when)
        self._tokens = rate
        self._at = 0.0
        self.refused = 0

    def has_token(self, client: str, now: float) -> bool:
        """Whether the client may have a name learned now (takes nothing)."""
        if len(self.waiting) >= LEARN_QUEUE:
            return False
        tokens, at = self._clients.get(client, (LEARN_CLIENT_BURST, now))
        return tokens + max(0.0, now - at) * LEARN_CLIENT_RATE >= 1.0

    def offer(self, client: str, name: str, service: str | None, now: float) -> bool:
        """Queue a name for learning unless its client or the queue is over its bound."""
        if name in self.waiting:
            return True
        if len(self.waiting) >= LEARN_QUEUE:
            self.refused += 1
            return False
        tokens, at = self._clients.get(client, (LEARN_CLIENT_BURST, now))
        tokens = min(LEARN_CLIENT_BURST, tokens + max(0.0, now - at) * LEARN_CLIENT_RATE)
        if tokens < 1.0:
            self._clients[client] = (tokens, now)
            self.refused += 1
            return False
        if len(self._clients) > CLIENT_LIMIT:
            self._clients.clear()
        self._clients[client] = (tokens - 1.0, now)
        self.waiting[name] = service
        return True

    def take(self, now: float) -> list[tuple[str, str | None]]:
        """The names to resolve now (oldest first), at most `rate` per second."""
        if not self.waiting:
            return []
        self._tokens = min(max(self.rate, 1.0),
                           self._tokens + max(0.0, now - self._at) * self.rate)
        self._at = now
        count = min(int(self._tokens), len(self.waiting))
        if count <= 0:
            return []
        self._tokens -= count
        names = list(self.waiting.items())[:count]
        for name, _ in names:
            del self.waiting[name]
        return names
